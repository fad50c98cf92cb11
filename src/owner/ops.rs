//! The operations that span many blocks and wait for I/O: flush,
//! invalidate, close, abort, shutdown.
//!
//! An [`Op`] lives in a slab while it waits. It counts the I/Os it waits
//! for, and each slot with I/O in flight knows the ops waiting for it
//! (`op_waits`), so a completion reaches exactly those ops, in O(1) each
//! (`completions`). An op with nothing left to wait for moves to its next
//! phase: writes → syncs → (for close) drain → reply. Device-wide steps
//! visit the device's own slots (`device_slots`), never every slot of the
//! cache.

use super::{Answer, OpKind, Owner, Replier, State};
use crate::error::{Error, IoFailure};
use crate::owner::lists::List;
use crate::owner::slot_state::DIRTY;
use crate::DeviceId;
use rustc_hash::FxHashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Writes,
    Syncs,
    /// Close only: wait out reads in flight, then drop the device.
    Drain,
}

pub(crate) struct Op {
    kind: OpKind,
    reply: Option<Replier>,
    phase: Phase,
    /// I/Os in flight that this op waits for. Each one's slot lists the op
    /// in `Owner::op_waits`, which is how its completion finds the op.
    outstanding: u32,
    syncs_pending: u32,
    error: Option<IoFailure>,
    /// Blocks this op could not make durable.
    failed: u64,
    /// Blocks this op wrote, per device (what a failed sync loses).
    written: FxHashMap<DeviceId, u64>,
    /// A block of the device was held: invalidate reports Busy.
    busy: bool,
}

impl Op {
    fn note_error(&mut self, e: &IoFailure) {
        if self.error.is_none() {
            self.error = Some(e.clone());
        }
    }

    fn device(&self) -> Option<DeviceId> {
        self.kind.device()
    }
}

impl Owner {
    pub(super) fn start_op(&mut self, kind: OpKind, reply: Option<Replier>) {
        if let Some(dev) = kind.device() {
            let Some(d) = self.devices.get(&dev).filter(|d| !d.closing) else {
                if let Some(r) = reply {
                    r.send(Err(Error::UnknownDevice));
                }
                return;
            };
            if let OpKind::Invalidate(_, Some(block)) = kind {
                if block >= d.blocks {
                    if let Some(r) = reply {
                        r.send(Err(Error::OutOfRange { dev, block }));
                    }
                    return;
                }
            }
        }
        if let OpKind::Close(dev) | OpKind::Abort(dev) = kind {
            if !self.close_device_slots(dev) {
                return reply.map_or((), |r| r.send(Err(Error::Busy)));
            }
        }
        let id = self.ops.insert(Op {
            kind,
            reply,
            phase: Phase::Writes,
            outstanding: 0,
            syncs_pending: 0,
            error: None,
            failed: 0,
            written: FxHashMap::default(),
            busy: false,
        });
        match kind {
            OpKind::Flush(dev) => self.write_dirty(id, dev),
            OpKind::Shutdown => self.write_dirty(id, None),
            OpKind::Final => {
                self.write_dirty(id, None);
                // With no guard left, wait out reads in flight too
                // (prefetches), so the threads can stop as soon as this op
                // ends. With guards left we will not stop yet: the last
                // handle's drop must not wait for them, nor for reads.
                if !self.any_held() {
                    for slot in self.lists.collect(List::IoPending) {
                        if self.slots[slot as usize].state == State::Reading {
                            self.wait_on(id, slot);
                        }
                    }
                }
            }
            OpKind::Close(dev) => {
                let d = self.devices.get_mut(&dev).expect("checked above");
                d.closing = true;
                d.quiesced = true;
                self.write_dirty(id, Some(dev));
            }
            OpKind::Abort(dev) => {
                self.devices.get_mut(&dev).expect("checked above").quiesced = true;
                for slot in self.device_slots(dev) {
                    match self.slots[slot as usize].state {
                        State::Reading | State::Writing => self.wait_on(id, slot),
                        _ => self.free_slot(slot),
                    }
                }
            }
            OpKind::Invalidate(dev, block) => {
                let slots = match block {
                    Some(b) => self.shared.lookup(dev, b).into_iter().collect(),
                    None => self.device_slots(dev),
                };
                for slot in slots {
                    if matches!(self.slots[slot as usize].state, State::Reading | State::Writing) {
                        self.wait_on(id, slot);
                    } else if !self.shared.try_close(slot) {
                        // Never write back or clean a block someone holds
                        // (LVM bug C); it stays as its holder left it.
                        self.ops[id].busy = true;
                    } else if self.is_dirty(slot) {
                        self.issue_write(slot);
                        self.wait_for_write(id, slot);
                    } else {
                        self.free_slot(slot);
                    }
                }
            }
        }
        self.advance(id);
    }

    /// Start writing every unheld dirty block of `dev` (all devices for
    /// `None`) for op `id`, oldest first, and wait for those already being
    /// written.
    fn write_dirty(&mut self, id: usize, dev: Option<DeviceId>) {
        let mine = |o: &Owner, s: u32| dev.is_none_or(|d| o.slots[s as usize].key.0 == d);
        // Writebacks already in flight carry data this op promises too.
        for slot in self.lists.collect(List::IoPending) {
            if mine(self, slot) && self.slots[slot as usize].state == State::Writing {
                self.wait_for_write(id, slot);
            }
        }
        for list in [List::Dirty, List::Errored] {
            for slot in self.lists.collect(list) {
                // Held blocks are skipped: the next flush writes them.
                if mine(self, slot) && self.try_writeback(slot) {
                    self.wait_for_write(id, slot);
                }
            }
        }
    }

    /// Op `id` waits for the I/O in flight on `slot`.
    fn wait_on(&mut self, id: usize, slot: u32) {
        self.op_waits.add(slot, id);
        self.ops[id].outstanding += 1;
    }

    /// Op `id` waits for the write in flight on `slot`, one of the blocks a
    /// failed sync of its device would lose.
    fn wait_for_write(&mut self, id: usize, slot: u32) {
        self.wait_on(id, slot);
        let dev = self.slots[slot as usize].key.0;
        *self.ops[id].written.entry(dev).or_insert(0) += 1;
    }

    /// A resident block newer than the disk (held or not).
    fn is_dirty(&self, slot: u32) -> bool {
        self.shared.slots[slot as usize].state.load() & DIRTY != 0
    }

    /// Op `id` hears that the I/O it waited for on `slot` of `dev` (a write
    /// if `write`) has ended with `err`.
    pub(super) fn op_io_done(
        &mut self,
        id: usize,
        slot: u32,
        dev: DeviceId,
        err: Option<&IoFailure>,
        write: bool,
    ) {
        let op = &mut self.ops[id];
        op.outstanding -= 1;
        if let (Some(e), true) = (err, write) {
            if !matches!(op.kind, OpKind::Abort(_)) {
                op.note_error(e);
                op.failed += 1;
                // Lost already: a failed sync must not count it again.
                if let Some(w) = op.written.get_mut(&dev) {
                    *w = w.saturating_sub(1);
                }
            }
        }
        match op.kind {
            OpKind::Invalidate(..) => self.drop_if_clean(id, slot),
            OpKind::Abort(_) => self.drop_unheld(slot),
            _ => {}
        }
        self.advance(id);
    }

    pub(super) fn sync_done(&mut self, id: usize, dev: DeviceId, result: Result<(), IoFailure>) {
        match result {
            Ok(()) => {}
            Err(e) => {
                // The kernel may have dropped the writes it was syncing:
                // count them lost and sync again next time.
                if let Some(d) = self.devices.get_mut(&dev) {
                    d.unsynced = true;
                }
                let op = &mut self.ops[id];
                op.note_error(&e);
                op.failed += op.written.get(&dev).copied().unwrap_or(0);
            }
        }
        self.ops[id].syncs_pending -= 1;
        self.advance(id);
    }

    /// Move op `id` on as far as it can go without waiting; reply and
    /// retire it at the end.
    fn advance(&mut self, id: usize) {
        if self.ops[id].outstanding > 0 {
            return;
        }
        let op = &self.ops[id];
        let syncs = matches!(
            op.kind,
            OpKind::Flush(_) | OpKind::Close(_) | OpKind::Shutdown | OpKind::Final
        );
        if op.phase == Phase::Writes && syncs {
            let devs: Vec<DeviceId> = self
                .devices
                .iter()
                .filter(|(d, dev)| dev.unsynced && op.device().is_none_or(|o| o == **d))
                .map(|(d, _)| *d)
                .collect();
            self.ops[id].phase = Phase::Syncs;
            for dev in devs {
                self.ops[id].syncs_pending += 1;
                self.issue_fsync(dev, id);
            }
            // A sync another op started before this one may still be in
            // flight for writes this op counts on (its own sync above only
            // covers writes since): its result is ours too. Without this a
            // flush could report Ok while that sync later fails.
            let scope = self.ops[id].device();
            for (_, sync) in self.syncs.iter_mut() {
                if scope.is_none_or(|d| d == sync.dev) && !sync.ops.contains(&id) {
                    sync.ops.push(id);
                    self.ops[id].syncs_pending += 1;
                }
            }
        }
        let op = &self.ops[id];
        if op.syncs_pending > 0 {
            return;
        }
        if let OpKind::Close(dev) = op.kind {
            if op.error.is_some() {
                let d = self.devices.get_mut(&dev).expect("closing device is open");
                d.closing = false;
                d.quiesced = false;
                self.reopen_device_slots(dev);
            } else if op.phase != Phase::Drain {
                // Everything is written and synced; wait out reads in flight
                // (prefetches), then drop every block and the device.
                self.ops[id].phase = Phase::Drain;
                for slot in self.device_slots(dev) {
                    match self.slots[slot as usize].state {
                        State::Reading => self.wait_on(id, slot),
                        _ => self.drop_unheld(slot),
                    }
                }
                if self.ops[id].outstanding > 0 {
                    return;
                }
            }
            if self.ops[id].error.is_none() {
                for slot in self.device_slots(dev) {
                    self.drop_unheld(slot);
                }
                debug_assert_eq!(
                    self.devices[&dev].slots.len(),
                    0,
                    "close left a block of its device cached"
                );
                if let Some(mut d) = self.devices.remove(&dev) {
                    // No I/O in flight for it (rule 3): stop cannot wait on us.
                    d.engine.stop();
                }
            }
        }
        if let OpKind::Abort(dev) = self.ops[id].kind {
            if let Some(d) = self.devices.get_mut(&dev) {
                d.quiesced = false;
            }
            self.reopen_device_slots(dev);
        }
        let op = self.ops.remove(id);
        self.finish(op);
    }

    fn finish(&mut self, op: Op) {
        let result = match (&op.kind, op.error) {
            (OpKind::Shutdown, Some(e)) => Err(Error::Unwritten {
                blocks: op.failed,
                source: e.to_io(),
            }),
            (OpKind::Final, Some(e)) => {
                log::error!(
                    "blockcache: {} dirty blocks could not be written at shutdown: {}",
                    op.failed,
                    e.to_io()
                );
                Ok(Answer::Unit)
            }
            (_, Some(e)) => Err(e.into()),
            (OpKind::Invalidate(..), None) if op.busy => Err(Error::Busy),
            _ => Ok(Answer::Unit),
        };
        if let OpKind::Final = op.kind {
            // Exit now unless guards are left; the last of them asks us to
            // release it (the wake marks armed at Stop) and runs this again.
            let exiting = self.may_exit();
            if exiting {
                self.request_exit();
            }
            if let Some(r) = op.reply {
                r.send(Ok(Answer::Stopping(exiting)));
            }
            return;
        }
        if let Some(r) = op.reply {
            r.send(result);
        }
    }

    /// Invalidate: drop `slot` now that its I/O is done, if it is clean and
    /// unheld; a failed writeback keeps it (dirty) and fails the op.
    fn drop_if_clean(&mut self, id: usize, slot: u32) {
        if self.slots[slot as usize].state != State::Resident {
            return; // a failed read already freed it
        }
        if !self.shared.try_close(slot) {
            self.ops[id].busy = true;
        } else if self.is_dirty(slot) {
            self.reopen(slot);
        } else {
            self.free_slot(slot);
        }
    }

    /// Drop `slot` unless a guard holds it (dirty data is discarded).
    fn drop_unheld(&mut self, slot: u32) {
        if self.slots[slot as usize].state == State::Resident && self.shared.try_close(slot) {
            self.free_slot(slot);
        }
    }

    /// Close every resident block of `dev` to clients, all or none:
    /// `false` (and nothing closed) when one is held or has gets queued.
    /// Closing them first is what makes the busy check atomic against
    /// clients taking blocks themselves.
    fn close_device_slots(&mut self, dev: DeviceId) -> bool {
        if self.waiters.iter().any(|(_, w)| w.dev == dev) {
            return false;
        }
        let slots = self.device_slots(dev);
        if slots.iter().any(|&s| self.slots[s as usize].read_awaited) {
            return false;
        }
        let resident = |o: &Owner, s: u32| o.slots[s as usize].state == State::Resident;
        for (i, &slot) in slots.iter().enumerate() {
            if resident(self, slot) && !self.shared.try_close(slot) {
                for &undo in &slots[..i] {
                    if resident(self, undo) {
                        self.reopen(undo);
                    }
                }
                return false;
            }
        }
        true
    }

    /// Let clients take `dev`'s resident blocks again (a close failed).
    fn reopen_device_slots(&mut self, dev: DeviceId) {
        for slot in self.device_slots(dev) {
            self.reopen(slot);
        }
    }
}

impl OpKind {
    /// The one device the op acts on; `None` for all of them.
    fn device(&self) -> Option<DeviceId> {
        match *self {
            OpKind::Flush(d) => d,
            OpKind::Invalidate(d, _) | OpKind::Close(d) | OpKind::Abort(d) => Some(d),
            OpKind::Shutdown | OpKind::Final => None,
        }
    }
}
