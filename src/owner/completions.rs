//! Completions: what the owner does when an engine hands back a read, a
//! write or a sync, and how the ops waiting for it hear of it.

use super::lists::List;
use super::{Mode, Owner, QueueId, State};
use crate::engine::{IoKind, IoRequest};
use crate::error::IoFailure;
use crate::shared::slot_state::DIRTY;
use crate::stats::bump;
use crate::DeviceId;

impl Owner {
    pub(super) fn completed(&mut self, mut req: IoRequest, result: Result<(), IoFailure>) {
        if let Some(d) = self.devices.get_mut(&req.dev) {
            d.in_flight -= 1;
        }
        if let Err(e) = &result {
            bump(&self.counters.io_errors);
            log::debug!(
                "blockcache: {:?} of {:?} block {} failed: {:?}",
                req.kind,
                req.dev,
                req.block,
                e
            );
        }
        match req.kind {
            IoKind::Fsync => {
                if result.is_ok() {
                    bump(&self.counters.syncs);
                }
                // Every op that waited for this sync hears its result.
                let waiting = self.syncs.remove(req.tag as usize);
                for id in waiting.ops {
                    self.sync_done(id, req.dev, result.clone());
                }
                return;
            }
            IoKind::Read => {
                // On failure the get that caused the read is still ours to
                // answer (on success it has its block already).
                if let (Some(grant), Err(e)) = (req.grant.take(), &result) {
                    grant.reply.send(Err(e.clone().into()));
                }
                self.read_done(req.tag as u32, result.as_ref().err())
            }
            IoKind::Write => self.write_done(req.tag as u32, req.dev, result.as_ref().err()),
        }
        // Dropping `req` releases the buffer token: the slot is ours again.
        drop(req);
    }

    fn read_done(&mut self, slot: u32, err: Option<&IoFailure>) {
        debug_assert_eq!(self.slots[slot as usize].state, State::Reading);
        self.slots[slot as usize].read_awaited = false;
        match err {
            None => {
                // The get that caused the read may hold the block already,
                // and may even have dirtied and released it: its release
                // found the slot still `Reading` and left the lists to us.
                self.slots[slot as usize].state = State::Resident;
                self.lists.move_to(slot, List::Clean);
                self.released(slot);
            }
            Some(e) => {
                // Every waiter hears the error; nothing stays cached, so a
                // retry reads again (and a failed prefetch is never written
                // back: LVM bug B). A zeroed get never needed the disk's
                // bytes: it starts over (free_slot requeues it).
                let mut zeroed = Vec::new();
                while let Some(w) = self.pop_waiter(QueueId::Block(slot)) {
                    if w.mode == Mode::Zeroed {
                        zeroed.push(w);
                    } else {
                        w.reply.send(Err(e.clone().into()));
                    }
                }
                for w in zeroed {
                    self.push_waiter(QueueId::Block(slot), w);
                }
                self.free_slot(slot);
            }
        }
        self.slot_io_done(slot, err, false);
    }

    fn write_done(&mut self, slot: u32, dev: DeviceId, err: Option<&IoFailure>) {
        debug_assert_eq!(self.slots[slot as usize].state, State::Writing);
        self.writes_in_flight -= 1;
        let s = &mut self.slots[slot as usize];
        s.state = State::Resident;
        match err {
            None => {
                // Written: clean now, and the dirty count drops with it
                // (LVM bug A: its counter never went down).
                self.errors.remove(&slot);
                self.lists.move_to(slot, List::Clean);
                if let Some(d) = self.devices.get_mut(&dev) {
                    d.unsynced = true;
                }
            }
            Some(e) => {
                // Nothing is lost: the block stays dirty, on Errored, until
                // a flush writes it.
                self.errors.insert(slot, e.clone());
                self.lists.move_to(slot, List::Errored);
                self.shared.slots[slot as usize].state.set(DIRTY, true);
            }
        }
        self.serve_block(slot);
        self.slot_io_done(slot, err, true);
    }

    /// Tell every op waiting for `slot`'s I/O that it finished: exactly the
    /// ops the slot lists, first waiter first.
    fn slot_io_done(&mut self, slot: u32, err: Option<&IoFailure>, write: bool) {
        let dev = self.slots[slot as usize].key.0;
        let mut waiting = self.op_waits.take(slot);
        while let Some(id) = self.op_waits.next(&mut waiting) {
            self.op_io_done(id, slot, dev, err, write);
        }
    }
}
