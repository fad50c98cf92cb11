//! Gets, releases and prefetches: handing out slots, waiting, evicting,
//! and the writeback that makes room.
//!
//! Clients take hits themselves (see `shared::slot_state`); what reaches the owner
//! is misses, gets on closed or contended slots, and releases it asked to
//! hear about. Every decision here reads the slot's atomic word, because a
//! client may take or release an open slot at any moment.

use super::lists::List;
use super::{Mode, Owner, QueueId, State, Waiter};
use crate::error::{Error, IoFailure};
use crate::shared::reply::{Answer, Replier};
use crate::shared::slot_state::{free_for, holders, DIRTY, READ_ONLY, REFERENCED};
use crate::stats::bump;
use crate::DeviceId;

/// Blocks written back at once when a get finds no free or clean slot (as
/// LVM's bcache does): enough to keep the device busy, few enough that the
/// first slot comes back soon.
const WRITEBACK_BATCH: u32 = 16;

/// Why a get found no slot.
enum NoSlot {
    /// A slot will come: a guard will be dropped, or I/O will complete.
    Wait,
    /// A slot became free while we looked: try again.
    Retry,
    /// None can: every unheld block is dirty and failed to write.
    Fail(IoFailure),
}

impl Owner {
    /// Check a request against the device table: the device is open (and
    /// not closing), the block inside it, writes allowed.
    fn check(&self, dev: DeviceId, block: u64, mode: Mode) -> Result<(), Error> {
        let d = self.open_device(dev)?;
        if block >= d.blocks {
            return Err(Error::OutOfRange { dev, block });
        }
        if mode != Mode::Read && d.file.is_read_only() {
            return Err(Error::ReadOnly);
        }
        Ok(())
    }

    pub(super) fn get(&mut self, dev: DeviceId, block: u64, mode: Mode, wait: bool, reply: Replier) {
        if let Err(e) = self.check(dev, block, mode) {
            return reply.send(Err(e));
        }
        let resident = self.shared.lookup(dev, block);
        let hit = resident.is_some_and(|s| self.slots[s as usize].state != State::Reading);
        if !wait {
            // try_*: granted now or WouldBlock, never a wait or an I/O.
            if let Some(slot) = resident.filter(|_| hit) {
                if self.slots[slot as usize].waiters.is_empty() && self.grant_now(slot, mode) {
                    self.count_get(mode, true);
                    return reply.send(Ok(Answer::Slot(slot)));
                }
            }
            return reply.send(Err(Error::WouldBlock));
        }
        self.count_get(mode, hit);
        let w = Waiter::new(dev, block, mode, reply);
        match resident {
            Some(slot) => self.get_resident(slot, w),
            // Arrival order: a miss may not overtake gets already waiting
            // for a slot.
            None if !self.slot_queue.is_empty() => self.push_waiter(QueueId::Slots, w),
            None => self.get_new(w),
        }
        if mode == Mode::Read && !hit {
            self.read_ahead(dev, block);
        }
    }

    fn count_get(&self, mode: Mode, hit: bool) {
        let c = &self.counters;
        match (mode, hit) {
            (Mode::Read, true) => c.read_hits.add(1),
            (Mode::Read, false) => bump(&c.read_misses),
            (_, true) => c.write_hits.add(1),
            (_, false) => bump(&c.write_misses),
        }
        if mode == Mode::Zeroed {
            bump(&c.write_zeroes);
        }
    }

    /// The block has a slot: queue behind whoever waits, then serve the
    /// queue (which grants at once when nobody is ahead and it is free).
    fn get_resident(&mut self, slot: u32, w: Waiter) {
        self.push_waiter(QueueId::Block(slot), w);
        self.serve_block(slot);
    }

    /// The block has no slot: find one, then read into it (or zero it).
    fn get_new(&mut self, mut w: Waiter) {
        let slot = loop {
            if let Some(slot) = self.take_slot() {
                break slot;
            }
            match self.no_slot() {
                NoSlot::Retry => continue,
                NoSlot::Wait => self.writeback_oldest(WRITEBACK_BATCH),
                // Every unheld block failed to write: try them once more
                // for this get (the fault may have cleared) before failing.
                NoSlot::Fail(_) if !w.retried => self.retry_errored(),
                NoSlot::Fail(e) => return w.reply.send(Err(e.into())),
            }
            // Whatever this get waits for now is a writeback attempt made
            // after it arrived; if that fails too, so does the get.
            w.retried = true;
            return self.push_waiter(QueueId::Slots, w);
        };
        self.assign(slot, w.dev, w.block);
        if w.mode == Mode::Zeroed {
            // Never read: the guard zero-fills it and its release makes it
            // dirty.
            self.slots[slot as usize].state = State::Resident;
            self.lists.move_to(slot, List::Clean);
            self.get_resident(slot, w);
        } else {
            self.issue_read(slot, Some(w));
        }
    }

    /// Give a slot taken by `take_slot` (closed, unheld) to a block.
    pub(super) fn assign(&mut self, slot: u32, dev: DeviceId, block: u64) {
        let read_only = self.devices[&dev].file.is_read_only();
        let shared = &self.shared.slots[slot as usize];
        shared.key.set(dev.0, block);
        shared.state.set(DIRTY | REFERENCED | READ_ONLY, false);
        shared.state.set(READ_ONLY, read_only);
        self.slots[slot as usize].key = (dev, block);
        self.shared.index.insert(dev, block, slot);
        self.join_device(slot, dev);
    }

    /// Grant `slot` in `mode` if it is resident and free in that mode,
    /// atomically against clients: the slot is closed first, so no client
    /// can take it between the look and the grant.
    fn grant_now(&mut self, slot: u32, mode: Mode) -> bool {
        if self.slots[slot as usize].state != State::Resident {
            return false;
        }
        let st = &self.shared.slots[slot as usize].state;
        self.shared.close(slot);
        let granted = free_for(st.load(), mode != Mode::Read);
        if granted {
            st.grant(mode != Mode::Read);
        }
        self.reopen(slot);
        granted
    }

    /// Serve the waiters at the front of `slot`'s queue that can have it
    /// now — a run of readers, or one writer — and leave the slot closed
    /// with a wake-up armed while any remain.
    pub(super) fn serve_block(&mut self, slot: u32) {
        loop {
            let Some(mode) = self.front_waiter(QueueId::Block(slot)).map(|w| w.mode) else {
                return self.reopen(slot);
            };
            let st = &self.shared.slots[slot as usize].state;
            // Armed before looking: a holder that leaves after our look
            // will see the mark and tell us.
            self.shared.close_and_wake(slot);
            let resident = self.slots[slot as usize].state == State::Resident;
            if !resident || !free_for(st.load(), mode != Mode::Read) {
                return;
            }
            st.grant(mode != Mode::Read);
            let w = self.pop_waiter(QueueId::Block(slot)).expect("front exists");
            w.reply.send(Ok(Answer::Slot(slot)));
        }
    }

    /// Let clients take `slot` themselves again, if nothing the owner does
    /// needs it closed: it is resident and nobody waits for it. The wake
    /// mark stays while gets wait for any slot (a release may free one).
    pub(super) fn reopen(&mut self, slot: u32) {
        let s = &self.slots[slot as usize];
        let quiesced = self.devices.get(&s.key.0).is_some_and(|d| d.quiesced);
        if s.state == State::Resident && s.waiters.is_empty() && !quiesced {
            // Wake marks stay while gets wait for any slot, and for good
            // once the last handle is gone (the last guard must tell us).
            let clear_wake = self.slot_queue.is_empty() && !self.handles_gone;
            self.shared.slots[slot as usize].state.open(clear_wake);
        }
    }

    /// The owner let go of a client's share in `slot` for it (it was the
    /// last holder of a slot marked to wake us, or it made the block
    /// dirty): see what that changes.
    pub(super) fn released(&mut self, slot: u32) {
        if self.slots[slot as usize].state != State::Resident {
            return;
        }
        let word = self.shared.slots[slot as usize].state.load();
        let dirty = word & DIRTY != 0;
        if dirty && self.lists.list_of(slot) != List::Dirty {
            // The dirty list runs in the order blocks became dirty: the
            // writeback order.
            self.lists.move_to(slot, List::Dirty);
        }
        self.serve_block(slot);
        if dirty {
            self.preemptive_writeback();
        }
    }

    /// As LVM does: when fewer than a third of the blocks are clean or
    /// free, write back the oldest unheld dirty blocks until two thirds are
    /// (counting writebacks in flight as soon clean).
    fn preemptive_writeback(&mut self) {
        let cap = self.pool.capacity() as u64;
        let ready = |o: &Owner| (o.lists.len(List::Free) + o.lists.len(List::Clean)) as u64;
        if 3 * ready(self) >= cap {
            return;
        }
        let mut soon = ready(self) + self.writes_in_flight;
        let mut at = self.lists.head(List::Dirty);
        while let Some(slot) = at {
            if 3 * soon >= 2 * cap {
                break;
            }
            at = self.lists.next(slot);
            if self.try_writeback(slot) {
                bump(&self.counters.preemptive_writebacks);
                soon += 1;
            }
        }
    }

    /// Write `slot` back if nobody holds it. A held block is never written
    /// back: its holder may be changing it.
    pub(super) fn try_writeback(&mut self, slot: u32) -> bool {
        if !self.shared.try_close(slot) {
            return false;
        }
        self.issue_write(slot);
        true
    }

    /// Write back up to `n` of the oldest unheld dirty blocks.
    pub(super) fn writeback_oldest(&mut self, n: u32) {
        let mut left = n;
        let mut at = self.lists.head(List::Dirty);
        while let (Some(slot), true) = (at, left > 0) {
            at = self.lists.next(slot);
            if self.try_writeback(slot) {
                left -= 1;
            }
        }
    }

    /// Write back every block whose last writeback failed.
    fn retry_errored(&mut self) {
        let mut at = self.lists.head(List::Errored);
        while let Some(slot) = at {
            at = self.lists.next(slot);
            self.try_writeback(slot);
        }
    }

    /// A free slot, or a clean one evicted by CLOCK: the least recently
    /// released clean block whose reference bit is clear and that nobody
    /// holds. Blocks passed over go to the back with their bit cleared.
    fn take_slot(&mut self) -> Option<u32> {
        if let Some(slot) = self.lists.head(List::Free) {
            return Some(slot);
        }
        // Two passes: the first may only clear reference bits.
        for _ in 0..2 * self.lists.len(List::Clean) {
            let slot = self.lists.head(List::Clean)?;
            let st = &self.shared.slots[slot as usize].state;
            let word = st.load();
            if word & DIRTY != 0 {
                // Never evict dirty data (a writer that dirties a clean
                // block has the owner release it, so this should not be).
                self.lists.move_to(slot, List::Dirty);
                continue;
            }
            // A slot with gets queued is spoken for, even between holders.
            let queued = !self.slots[slot as usize].waiters.is_empty();
            if queued || holders(word) > 0 || word & REFERENCED != 0 || !self.shared.try_close(slot) {
                st.set(REFERENCED, false);
                self.lists.move_to(slot, List::Clean);
                continue;
            }
            if st.load() & DIRTY != 0 {
                // A writer came and went between the look and the close.
                self.reopen(slot);
                self.lists.move_to(slot, List::Dirty);
                continue;
            }
            // Closed and unheld, clean, and no get queued on it.
            self.free_slot(slot);
            bump(&self.counters.evictions);
            return Some(slot);
        }
        None
    }

    /// No free or clean slot could be taken: will one come? Held slots are
    /// marked to wake us when released (marked before looking, so a
    /// release cannot slip between).
    fn no_slot(&mut self) -> NoSlot {
        let mut wait = self.lists.len(List::Dirty) + self.lists.len(List::IoPending) > 0;
        for slot in 0..self.slots.len() as u32 {
            if self.slots[slot as usize].state != State::Resident {
                continue;
            }
            let st = &self.shared.slots[slot as usize].state;
            self.shared.wake_on_release(slot);
            let word = st.load();
            // Gets queued on an unheld slot: its last holder's Release is
            // on its way (serve_block armed the wake).
            let queued = !self.slots[slot as usize].waiters.is_empty();
            // (take_slot, which runs first, has moved any dirty slot off
            // the clean list.)
            if holders(word) > 0 || queued {
                wait = true;
            } else if self.lists.list_of(slot) == List::Clean {
                // Released quietly after take_slot looked.
                return NoSlot::Retry;
            }
        }
        if wait {
            return NoSlot::Wait;
        }
        let slot = self
            .lists
            .head(List::Errored)
            .expect("every slot is on some list");
        NoSlot::Fail(
            self.errors
                .get(&slot)
                .cloned()
                .expect("errored slots keep their error"),
        )
    }

    /// Hand freed or cleaned slots to the gets waiting for one, in order;
    /// fail them when no slot can ever come.
    pub(super) fn serve_slot_queue(&mut self) {
        while let Some(w) = self.front_waiter(QueueId::Slots) {
            let (dev, block, mode) = (w.dev, w.block, w.mode);
            if let Err(e) = self.check(dev, block, mode) {
                let w = self.pop_waiter(QueueId::Slots).expect("front exists");
                w.reply.send(Err(e));
                continue;
            }
            if let Some(slot) = self.shared.lookup(dev, block) {
                let w = self.pop_waiter(QueueId::Slots).expect("front exists");
                self.get_resident(slot, w);
                continue;
            }
            let Some(slot) = self.take_slot() else {
                match self.no_slot() {
                    NoSlot::Retry => continue,
                    NoSlot::Wait => {
                        if self.writes_in_flight == 0 {
                            self.writeback_oldest(WRITEBACK_BATCH);
                        }
                    }
                    NoSlot::Fail(e) => {
                        if self.front_waiter(QueueId::Slots).is_some_and(|w| w.retried) {
                            let w = self.pop_waiter(QueueId::Slots).expect("front exists");
                            w.reply.send(Err(e.into()));
                            continue;
                        }
                        self.retry_errored();
                        self.mark_slot_waiters_retried();
                    }
                }
                break;
            };
            // The slot is on Free now, where get_new takes it from.
            debug_assert_eq!(self.lists.list_of(slot), List::Free);
            let w = self.pop_waiter(QueueId::Slots).expect("front exists");
            self.get_new(w);
        }
    }

    /// Start a read for a block not resident, if it costs no waiting: the
    /// device has fewer than `queue_depth` I/Os in flight, no get is
    /// waiting for a slot, and a slot is free or clean.
    pub(super) fn prefetch(&mut self, dev: DeviceId, block: u64) {
        if self.check(dev, block, Mode::Read).is_err() || self.shared.lookup(dev, block).is_some() {
            return;
        }
        if self.start_read(dev, block) {
            bump(&self.counters.prefetches);
        }
    }

    /// Read `dev`'s `block`, checked and not resident, for no get
    /// (a prefetch or readahead), if that costs no waiting. False when it
    /// could not be started.
    pub(super) fn start_read(&mut self, dev: DeviceId, block: u64) -> bool {
        if self.devices[&dev].in_flight >= self.depth || !self.slot_queue.is_empty() {
            return false;
        }
        let Some(slot) = self.take_slot() else {
            return false;
        };
        self.assign(slot, dev, block);
        self.issue_read(slot, None);
        true
    }
}
