//! Gets, puts and prefetches: handing out slots, waiting, evicting, and the
//! writeback that makes room.

use super::{Answer, Mode, Owner, QueueId, Replier, State, Waiter};
use crate::error::{Error, IoFailure};
use crate::owner::lists::List;
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
    /// None can: every unheld block is dirty and failed to write.
    Fail(IoFailure),
}

impl Owner {
    /// Check a request against the device table: the device is open (and
    /// not closing), the block inside it, writes allowed.
    fn check(&self, dev: DeviceId, block: u64, mode: Mode) -> Result<(), Error> {
        let d = match self.devices.get(&dev) {
            Some(d) if !d.closing => d,
            _ => return Err(Error::UnknownDevice),
        };
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
        let resident = self.index.get(&(dev, block)).copied();
        let hit = resident.is_some_and(|s| self.slots[s as usize].state != State::Reading);
        if !wait {
            // try_*: granted now or WouldBlock, never a wait or an I/O.
            return match resident {
                Some(slot)
                    if hit && self.slots[slot as usize].waiters.is_empty() && self.grantable(slot, mode) =>
                {
                    self.count_get(mode, true);
                    self.grant(slot, mode, reply);
                }
                _ => reply.send(Err(Error::WouldBlock)),
            };
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
    }

    fn count_get(&self, mode: Mode, hit: bool) {
        let c = &self.counters;
        bump(match (mode, hit) {
            (Mode::Read, true) => &c.read_hits,
            (Mode::Read, false) => &c.read_misses,
            (_, true) => &c.write_hits,
            (_, false) => &c.write_misses,
        });
        if mode == Mode::Zeroed {
            bump(&c.write_zeroes);
        }
    }

    /// The block has a slot: take it now if nobody is ahead and it is free
    /// in this mode, else queue behind the others.
    fn get_resident(&mut self, slot: u32, w: Waiter) {
        if self.slots[slot as usize].waiters.is_empty() && self.grantable(slot, w.mode) {
            self.grant(slot, w.mode, w.reply);
        } else {
            self.push_waiter(QueueId::Block(slot), w);
        }
    }

    /// The block has no slot: find one, then read into it (or zero it).
    fn get_new(&mut self, mut w: Waiter) {
        let Some(slot) = self.take_slot() else {
            match self.no_slot() {
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
        let s = &mut self.slots[slot as usize];
        s.key = (w.dev, w.block);
        s.dirty = false;
        self.index.insert((w.dev, w.block), slot);
        if w.mode == Mode::Zeroed {
            // Never read: the guard zero-fills it and its drop makes it dirty.
            s.state = State::Resident;
            self.grant(slot, Mode::Zeroed, w.reply);
        } else {
            self.issue_read(slot);
            self.push_waiter(QueueId::Block(slot), w);
        }
    }

    fn grantable(&self, slot: u32, mode: Mode) -> bool {
        let s = &self.slots[slot as usize];
        s.state == State::Resident && !s.writer && (mode == Mode::Read || s.readers == 0)
    }

    fn grant(&mut self, slot: u32, mode: Mode, reply: Replier) {
        let s = &mut self.slots[slot as usize];
        if mode == Mode::Read {
            s.readers += 1;
        } else {
            s.writer = true;
        }
        self.live_guards += 1;
        if self.lists.list_of(slot) != List::Held {
            self.lists.move_to(slot, List::Held);
        }
        reply.send(Ok(Answer::Slot(slot)));
    }

    /// Serve the waiters at the front of `slot`'s queue that can have it
    /// now: a run of readers, or one writer.
    pub(super) fn serve_block(&mut self, slot: u32) {
        while let Some(mode) = self.front_waiter(QueueId::Block(slot)).map(|w| w.mode) {
            if !self.grantable(slot, mode) {
                break;
            }
            let w = self.pop_waiter(QueueId::Block(slot)).expect("front exists");
            self.grant(slot, mode, w.reply);
        }
    }

    /// A guard was dropped.
    pub(super) fn put(&mut self, slot: u32, write: bool) {
        let s = &mut self.slots[slot as usize];
        if write {
            debug_assert!(s.writer);
            s.writer = false;
            s.dirty = true;
        } else {
            debug_assert!(s.readers > 0);
            s.readers -= 1;
        }
        self.live_guards -= 1;
        if !s.held() {
            // An errored block that was held again goes back to Dirty: the
            // next writeback retries it with its new contents.
            let to = if s.dirty { List::Dirty } else { List::Clean };
            self.lists.move_to(slot, to);
            self.serve_block(slot);
            if to == List::Dirty && self.lists.list_of(slot) == List::Dirty {
                self.preemptive_writeback();
            }
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
        while 3 * soon < 2 * cap {
            let Some(slot) = self.lists.head(List::Dirty) else {
                break;
            };
            self.issue_write(slot);
            bump(&self.counters.preemptive_writebacks);
            soon += 1;
        }
    }

    /// Write back up to `n` of the oldest unheld dirty blocks.
    pub(super) fn writeback_oldest(&mut self, n: u32) {
        for _ in 0..n {
            let Some(slot) = self.lists.head(List::Dirty) else {
                break;
            };
            self.issue_write(slot);
        }
    }

    /// Write back every block whose last writeback failed.
    fn retry_errored(&mut self) {
        while let Some(slot) = self.lists.head(List::Errored) {
            self.issue_write(slot);
        }
    }

    /// A free slot, or the least recently used clean one, evicted.
    fn take_slot(&mut self) -> Option<u32> {
        if let Some(slot) = self.lists.head(List::Free) {
            return Some(slot);
        }
        let slot = self.lists.head(List::Clean)?;
        let key = self.slots[slot as usize].key;
        self.index.remove(&key);
        self.slots[slot as usize].state = State::Free;
        self.lists.move_to(slot, List::Free);
        bump(&self.counters.evictions);
        Some(slot)
    }

    /// No free or clean slot: will one come?
    fn no_slot(&self) -> NoSlot {
        let l = &self.lists;
        if l.len(List::Held) + l.len(List::Dirty) + l.len(List::IoPending) > 0 {
            return NoSlot::Wait;
        }
        let slot = l.head(List::Errored).expect("every slot is on some list");
        NoSlot::Fail(
            self.slots[slot as usize]
                .error
                .clone()
                .expect("errored slots keep their error"),
        )
    }

    /// Hand freed or cleaned slots to the gets waiting for one, in order;
    /// fail them all when no slot can ever come.
    pub(super) fn serve_slot_queue(&mut self) {
        while let Some(w) = self.front_waiter(QueueId::Slots) {
            let (dev, block, mode) = (w.dev, w.block, w.mode);
            if let Err(e) = self.check(dev, block, mode) {
                let w = self.pop_waiter(QueueId::Slots).expect("front exists");
                w.reply.send(Err(e));
                continue;
            }
            if let Some(&slot) = self.index.get(&(dev, block)) {
                let w = self.pop_waiter(QueueId::Slots).expect("front exists");
                self.get_resident(slot, w);
                continue;
            }
            if self.lists.len(List::Free) + self.lists.len(List::Clean) > 0 {
                let w = self.pop_waiter(QueueId::Slots).expect("front exists");
                self.get_new(w);
                continue;
            }
            match self.no_slot() {
                NoSlot::Wait => {
                    if self.writes_in_flight == 0 {
                        self.writeback_oldest(WRITEBACK_BATCH);
                    }
                    break;
                }
                NoSlot::Fail(e) => {
                    if self.front_waiter(QueueId::Slots).is_some_and(|w| w.retried) {
                        let w = self.pop_waiter(QueueId::Slots).expect("front exists");
                        w.reply.send(Err(e.into()));
                        continue;
                    }
                    self.retry_errored();
                    self.mark_slot_waiters_retried();
                    break;
                }
            }
        }
    }

    /// Start a read for a block not resident, if it costs no waiting: the
    /// device has fewer than `queue_depth` I/Os in flight, no get is
    /// waiting for a slot, and a slot is free or clean.
    pub(super) fn prefetch(&mut self, dev: DeviceId, block: u64) {
        if self.check(dev, block, Mode::Read).is_err() || self.index.contains_key(&(dev, block)) {
            return;
        }
        if self.devices[&dev].in_flight >= self.depth || !self.slot_queue.is_empty() {
            return;
        }
        let Some(slot) = self.take_slot() else {
            return;
        };
        let s = &mut self.slots[slot as usize];
        s.key = (dev, block);
        s.dirty = false;
        self.index.insert((dev, block), slot);
        self.issue_read(slot);
        bump(&self.counters.prefetches);
    }
}
