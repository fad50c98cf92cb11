//! The operations that span many blocks and wait for I/O: flush,
//! invalidate, close, abort, shutdown.
//!
//! An [`Op`] lives in a slab while it waits. It records the slots whose I/O
//! it waits for; each completion removes its slot from every op waiting on
//! it, and an op with nothing left to wait for moves to its next phase:
//! writes → syncs → (for close) drain → reply.

use super::{Answer, OpKind, Owner, Replier, State};
use crate::error::{Error, IoFailure};
use crate::owner::lists::List;
use crate::owner::slot_state::DIRTY;
use crate::DeviceId;

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
    /// Slots with I/O in flight this op waits for.
    waiting: Vec<u32>,
    syncs_pending: u32,
    error: Option<IoFailure>,
    /// Blocks this op could not make durable.
    failed: u64,
    /// Blocks this op wrote, per device (what a failed sync loses).
    written: Vec<(DeviceId, u64)>,
    /// A block of the device was held: invalidate reports Busy.
    busy: bool,
}

impl Op {
    /// Wait for a write of `slot` (to `dev`), and count it among the
    /// blocks a failed sync of `dev` would lose.
    fn wait_for_write(&mut self, slot: u32, dev: DeviceId) {
        self.waiting.push(slot);
        match self.written.iter_mut().find(|w| w.0 == dev) {
            Some(w) => w.1 += 1,
            None => self.written.push((dev, 1)),
        }
    }

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
    /// Tell every op waiting for `slot`'s I/O that it finished.
    pub(super) fn slot_io_done(&mut self, slot: u32, err: Option<&IoFailure>, write: bool) {
        let dev = self.slots[slot as usize].key.0;
        let ids: Vec<usize> = self
            .ops
            .iter()
            .filter(|(_, op)| op.waiting.contains(&slot))
            .map(|(id, _)| id)
            .collect();
        for id in ids {
            let op = &mut self.ops[id];
            op.waiting.retain(|&s| s != slot);
            if let (Some(e), true) = (err, write) {
                if !matches!(op.kind, OpKind::Abort(_)) {
                    op.note_error(e);
                    op.failed += 1;
                    // Lost already: a failed sync must not count it again.
                    if let Some(w) = op.written.iter_mut().find(|w| w.0 == dev) {
                        w.1 = w.1.saturating_sub(1);
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
                op.failed += op.written.iter().filter(|w| w.0 == dev).map(|w| w.1).sum::<u64>();
            }
        }
        self.ops[id].syncs_pending -= 1;
        self.advance(id);
    }

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
        let mut op = Op {
            kind,
            reply,
            phase: Phase::Writes,
            waiting: Vec::new(),
            syncs_pending: 0,
            error: None,
            failed: 0,
            written: Vec::new(),
            busy: false,
        };
        match op.kind {
            OpKind::Flush(dev) => self.write_dirty(&mut op, dev),
            OpKind::Shutdown => self.write_dirty(&mut op, None),
            OpKind::Final => {
                self.write_dirty(&mut op, None);
                // With no guard left, wait out reads in flight too
                // (prefetches), so the threads can stop as soon as this op
                // ends. With guards left we will not stop yet: the last
                // handle's drop must not wait for them, nor for reads.
                if !self.any_held() {
                    for slot in self.lists.collect(List::IoPending) {
                        if self.slots[slot as usize].state == State::Reading {
                            op.waiting.push(slot);
                        }
                    }
                }
            }
            OpKind::Close(dev) => {
                if !self.close_device_slots(dev) {
                    return op.reply.take().map_or((), |r| r.send(Err(Error::Busy)));
                }
                let d = self.devices.get_mut(&dev).expect("checked above");
                d.closing = true;
                d.quiesced = true;
                self.write_dirty(&mut op, Some(dev));
            }
            OpKind::Abort(dev) => {
                if !self.close_device_slots(dev) {
                    return op.reply.take().map_or((), |r| r.send(Err(Error::Busy)));
                }
                self.devices.get_mut(&dev).expect("checked above").quiesced = true;
                for slot in self.device_slots(dev) {
                    match self.slots[slot as usize].state {
                        State::Reading | State::Writing => op.waiting.push(slot),
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
                        op.waiting.push(slot);
                    } else if !self.shared.try_close(slot) {
                        // Never write back or clean a block someone holds
                        // (LVM bug C); it stays as its holder left it.
                        op.busy = true;
                    } else if self.shared.slots[slot as usize].state.load() & DIRTY != 0 {
                        self.issue_write(slot);
                        op.wait_for_write(slot, dev);
                    } else {
                        self.free_slot(slot);
                    }
                }
            }
        }
        let id = self.ops.insert(op);
        self.advance(id);
    }

    /// Start writing every unheld dirty block of `dev` (all devices for
    /// `None`), oldest first, and wait for those already being written.
    fn write_dirty(&mut self, op: &mut Op, dev: Option<DeviceId>) {
        let mine = |o: &Owner, s: u32| dev.is_none_or(|d| o.slots[s as usize].key.0 == d);
        for list in [List::Dirty, List::Errored] {
            for slot in self.lists.collect(list) {
                // Held blocks are skipped: the next flush writes them.
                if mine(self, slot) && self.try_writeback(slot) {
                    op.wait_for_write(slot, self.slots[slot as usize].key.0);
                }
            }
        }
        // Writebacks already in flight carry data this op promises too.
        for slot in self.lists.collect(List::IoPending) {
            if mine(self, slot)
                && self.slots[slot as usize].state == State::Writing
                && !op.waiting.contains(&slot)
            {
                op.wait_for_write(slot, self.slots[slot as usize].key.0);
            }
        }
    }

    /// Move op `id` on as far as it can go without waiting; reply and
    /// retire it at the end.
    fn advance(&mut self, id: usize) {
        if !self.ops[id].waiting.is_empty() {
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
                        State::Reading => self.ops[id].waiting.push(slot),
                        _ => self.drop_unheld(slot),
                    }
                }
                if !self.ops[id].waiting.is_empty() {
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
        let st = &self.shared.slots[slot as usize].state;
        if !self.shared.try_close(slot) {
            self.ops[id].busy = true;
        } else if st.load() & DIRTY != 0 {
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
