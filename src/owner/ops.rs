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
//!
//! # Writebacks in bounded batches
//!
//! An op that writes blocks back lists them when it begins — the dirty
//! blocks, oldest first (invalidate: its device's, in the device's order)
//! — and keeps at most `Op::limit` I/Os in flight, starting the next
//! writeback as each of its I/Os completes. So a flush of a million blocks
//! never has the owner submit a million requests before it reads its
//! channel again: gets, releases and other ops queued meanwhile are
//! answered between two completions, and the engines' queues stay short.
//! An op with writebacks left to start always has an I/O in flight (it
//! stops starting them only at its limit), so a completion always comes to
//! start the rest (rule 4 (b) of the module docs of `owner`).
//!
//! A listed block is looked at when its turn comes: held then, it is
//! skipped (a held block is never written back; the next flush writes it)
//! or, for invalidate, makes the op `Busy`; being written back by someone
//! else, its write is waited for; written meanwhile, it is done. Blocks
//! that become dirty after the op began are not on its list, so writers
//! cannot keep it from ending.
//!
//! # A close's sweep in steps
//!
//! Once a close has written and synced everything it drops every block of
//! its device, which needs no I/O but is a pass over all of them (100 ms
//! for a million). It goes `SWEEP_STEP` blocks at a time: between two
//! steps the owner answers whatever is queued (`Owner::continuing`, read
//! by the run loop only when its channel is empty).

use super::lists::List;
use super::{OpKind, Owner, State};
use crate::error::{Error, IoFailure};
use crate::shared::reply::{Answer, Replier};
use crate::shared::slot_state::DIRTY;
use crate::DeviceId;
use rustc_hash::FxHashMap;

/// The most I/Os one op keeps in flight: the owner's channel holds as many
/// messages, so the completions of a whole batch can queue there at once.
const MAX_OP_IO: u32 = 4096;

/// Slots one step of a sweep visits: well under a millisecond of work, so
/// that requests queued behind a step are answered promptly.
const SWEEP_STEP: usize = 4096;

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
    /// Blocks to write back, by slot, listed when the op began; those
    /// before `next` have had their turn.
    todo: Vec<u32>,
    next: usize,
    /// The most I/Os in flight while writebacks are left to start.
    limit: u32,
    /// Close: the device's slots to drop once all is written and synced,
    /// visited `SWEEP_STEP` at a time; those before `swept` are done.
    sweep: Vec<u32>,
    swept: usize,
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

    /// Writebacks are left to start.
    fn has_todo(&self) -> bool {
        self.next < self.todo.len()
    }
}

impl Owner {
    pub(super) fn start_op(&mut self, kind: OpKind, reply: Option<Replier>) {
        if let Err(e) = self.check_op(kind) {
            if let Some(r) = reply {
                r.send(Err(e));
            }
            return;
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
            todo: Vec::new(),
            next: 0,
            limit: self.op_limit(kind.device()),
            sweep: Vec::new(),
            swept: 0,
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
                    } else if self.is_dirty(slot) {
                        // Written back (or found held) at its turn.
                        self.ops[id].todo.push(slot);
                    } else if !self.drop_unheld(slot) {
                        // Never clean a block someone holds (LVM bug C);
                        // it stays as its holder left it.
                        self.ops[id].busy = true;
                    }
                }
            }
        }
        self.advance(id);
    }

    /// Check an op against the device table: its device (if it has one)
    /// is open and not closing, and a block to invalidate is inside it.
    fn check_op(&self, kind: OpKind) -> Result<(), Error> {
        let Some(dev) = kind.device() else {
            return Ok(());
        };
        let d = self.open_device(dev)?;
        match kind {
            OpKind::Invalidate(_, Some(block)) if block >= d.blocks => Err(Error::OutOfRange { dev, block }),
            _ => Ok(()),
        }
    }

    /// How many I/Os an op over `scope` keeps in flight: twice the queue
    /// depth per device it may write to, so that each device has a queue's
    /// worth waiting while the owner handles the last batch's completions.
    fn op_limit(&self, scope: Option<DeviceId>) -> u32 {
        let devices = match scope {
            Some(_) => 1,
            None => self.devices.len().max(1) as u32,
        };
        (2 * self.depth).saturating_mul(devices).min(MAX_OP_IO)
    }

    /// List every dirty block of `dev` (all devices for `None`) for op
    /// `id` to write, oldest first (failed ones last), and wait for those
    /// already being written.
    fn write_dirty(&mut self, id: usize, dev: Option<DeviceId>) {
        let mine = |o: &Owner, s: u32| dev.is_none_or(|d| o.slots[s as usize].key.0 == d);
        // Writebacks already in flight carry data this op promises too.
        for slot in self.lists.collect(List::IoPending) {
            if mine(self, slot) && self.slots[slot as usize].state == State::Writing {
                self.wait_for_write(id, slot);
            }
        }
        let mut todo = self.lists.collect(List::Dirty);
        todo.extend(self.lists.collect(List::Errored));
        todo.retain(|&s| mine(self, s));
        self.ops[id].todo = todo;
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

    /// Give op `id`'s listed blocks their turns until it has `limit` I/Os
    /// in flight or none is left.
    fn refill(&mut self, id: usize) {
        loop {
            let op = &mut self.ops[id];
            if op.outstanding >= op.limit || !op.has_todo() {
                break;
            }
            let slot = op.todo[op.next];
            op.next += 1;
            self.take_turn(id, slot);
        }
        let op = &mut self.ops[id];
        if !op.has_todo() && !op.todo.is_empty() {
            op.todo = Vec::new(); // done with it: give the memory back
            op.next = 0;
        }
    }

    /// `slot`'s turn in op `id`: write it back if it is dirty and nobody
    /// holds it. It was dirty when the op began; it may since have been
    /// taken, written, or dropped and reused.
    fn take_turn(&mut self, id: usize, slot: u32) {
        let kind = self.ops[id].kind;
        let s = &self.slots[slot as usize];
        if s.state == State::Free || kind.device().is_some_and(|d| d != s.key.0) {
            return; // dropped, or reused for another device
        }
        let invalidate = matches!(kind, OpKind::Invalidate(..));
        match s.state {
            State::Writing => self.wait_for_write(id, slot),
            State::Resident if self.is_dirty(slot) => {
                if self.try_writeback(slot) {
                    self.wait_for_write(id, slot);
                } else if invalidate {
                    self.ops[id].busy = true; // held: never written back
                }
            }
            // Written back meanwhile: invalidate still drops it.
            State::Resident if invalidate => self.ops[id].busy |= !self.drop_unheld(slot),
            // Clean, or reused and being read: nothing to write.
            _ => {}
        }
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
            OpKind::Abort(_) => {
                self.drop_unheld(slot);
            }
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
        self.refill(id);
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
            } else {
                if op.phase != Phase::Drain {
                    // Everything is written and synced; wait out reads in
                    // flight (prefetches), then drop every block and the
                    // device.
                    self.ops[id].phase = Phase::Drain;
                    self.ops[id].sweep = self.device_slots(dev);
                }
                if !self.sweep_step(id) || self.ops[id].outstanding > 0 {
                    return;
                }
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
        self.continuing.retain(|&c| c != id);
        self.finish(op);
    }

    /// Continue op `id`'s sweep (it was on `Owner::continuing`), and the
    /// op itself once the sweep is over.
    pub(super) fn continue_op(&mut self, id: usize) {
        if self.sweep_step(id) {
            self.advance(id);
        }
    }

    /// Drop the next `SWEEP_STEP` slots of close `id`'s sweep, waiting
    /// for those being read. `true` when the sweep is over; otherwise the
    /// op is on `Owner::continuing`, for the run loop to give it the next
    /// step once the requests queued meanwhile are answered. The device is
    /// closing and its blocks are closed to clients, so between two steps
    /// nobody takes a block of it or adds one; but another device's get
    /// may evict one of its clean blocks and reuse the slot, which the
    /// sweep then leaves alone.
    fn sweep_step(&mut self, id: usize) -> bool {
        let OpKind::Close(dev) = self.ops[id].kind else {
            unreachable!("only close sweeps");
        };
        let (start, end) = {
            let op = &self.ops[id];
            (op.swept, (op.swept + SWEEP_STEP).min(op.sweep.len()))
        };
        for i in start..end {
            let slot = self.ops[id].sweep[i];
            let s = &self.slots[slot as usize];
            if s.state == State::Free || s.key.0 != dev {
                continue;
            }
            match s.state {
                State::Reading => self.wait_on(id, slot),
                _ => {
                    self.drop_unheld(slot);
                }
            }
        }
        let op = &mut self.ops[id];
        op.swept = end;
        if op.swept < op.sweep.len() {
            if !self.continuing.contains(&id) {
                self.continuing.push_back(id);
            }
            return false;
        }
        op.sweep = Vec::new();
        op.swept = 0;
        true
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

    /// Drop `slot` unless a guard holds it (dirty data is discarded);
    /// `false` if it was kept (held, or not resident).
    fn drop_unheld(&mut self, slot: u32) -> bool {
        let dropped = self.slots[slot as usize].state == State::Resident && self.shared.try_close(slot);
        if dropped {
            self.free_slot(slot);
        }
        dropped
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
