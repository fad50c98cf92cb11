//! The waiter queues: gets waiting for a block (one FIFO per slot) or for
//! any slot, linked through one slab.

use super::{Mode, Owner};
use crate::shared::reply::Replier;
use crate::DeviceId;
use std::num::NonZeroUsize;

/// A FIFO of waiters, linked through the waiter slab. Its ends are slab
/// ids plus one, so that an empty queue is all zero bytes (it sits in
/// every slot's record, a `table::Zeroed` table).
#[derive(Clone, Copy, Default)]
pub(crate) struct WaitQueue {
    head: Option<NonZeroUsize>,
    tail: Option<NonZeroUsize>,
}

// SAFETY: `Option<NonZeroUsize>` is guaranteed to be `None` as zero bytes,
// and neither field needs a drop: zero is the empty queue.
unsafe impl crate::shared::table::Zeroed for WaitQueue {}

/// A waiter id as a queue end.
fn end(id: usize) -> Option<NonZeroUsize> {
    NonZeroUsize::new(id + 1)
}

/// The waiter id of a queue end.
fn id(end: Option<NonZeroUsize>) -> Option<usize> {
    end.map(|e| e.get() - 1)
}

impl WaitQueue {
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_none()
    }
}

pub(crate) struct Waiter {
    pub(crate) dev: DeviceId,
    pub(crate) block: u64,
    pub(crate) mode: Mode,
    pub(crate) reply: Replier,
    /// A writeback was attempted on this get's behalf; when every unheld
    /// block has failed to write, it fails rather than try again.
    pub(crate) retried: bool,
    next: Option<usize>,
}

/// Which waiter queue.
#[derive(Clone, Copy, Debug)]
pub(crate) enum QueueId {
    Block(u32),
    Slots,
}

impl Waiter {
    pub(crate) fn new(dev: DeviceId, block: u64, mode: Mode, reply: Replier) -> Waiter {
        Waiter {
            dev,
            block,
            mode,
            reply,
            retried: false,
            next: None,
        }
    }
}

impl Owner {
    pub(crate) fn push_waiter(&mut self, q: QueueId, mut w: Waiter) {
        // A waiter moved from another queue still links into that one.
        w.next = None;
        let new = self.waiters.insert(w);
        let queue = self.queue_mut(q);
        let tail = id(queue.tail.replace(end(new).expect("ids fit")));
        match tail {
            Some(t) => self.waiters[t].next = Some(new),
            None => self.queue_mut(q).head = end(new),
        }
    }

    pub(crate) fn front_waiter(&self, q: QueueId) -> Option<&Waiter> {
        let head = match q {
            QueueId::Block(s) => self.slots[s as usize].waiters.head,
            QueueId::Slots => self.slot_queue.head,
        };
        id(head).map(|at| &self.waiters[at])
    }

    pub(crate) fn pop_waiter(&mut self, q: QueueId) -> Option<Waiter> {
        let first = id(self.queue_mut(q).head)?;
        let w = self.waiters.remove(first);
        let queue = self.queue_mut(q);
        queue.head = w.next.and_then(end);
        if queue.head.is_none() {
            queue.tail = None;
        }
        Some(w)
    }

    fn queue_mut(&mut self, q: QueueId) -> &mut WaitQueue {
        match q {
            QueueId::Block(s) => &mut self.slots[s as usize].waiters,
            QueueId::Slots => &mut self.slot_queue,
        }
    }

    pub(crate) fn mark_slot_waiters_retried(&mut self) {
        let mut at = id(self.slot_queue.head);
        while let Some(w) = at {
            self.waiters[w].retried = true;
            at = self.waiters[w].next;
        }
    }
}
