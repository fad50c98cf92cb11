//! The waiter queues: gets waiting for a block (one FIFO per slot) or for
//! any slot, linked through one slab.

use super::{Mode, Owner, Replier};
use crate::DeviceId;

/// A FIFO of waiters, linked through the waiter slab.
#[derive(Clone, Copy, Default)]
pub(crate) struct WaitQueue {
    head: Option<usize>,
    tail: Option<usize>,
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
        let id = self.waiters.insert(w);
        let queue = self.queue_mut(q);
        let tail = queue.tail.replace(id);
        match tail {
            Some(t) => self.waiters[t].next = Some(id),
            None => self.queue_mut(q).head = Some(id),
        }
    }

    pub(crate) fn front_waiter(&self, q: QueueId) -> Option<&Waiter> {
        let head = match q {
            QueueId::Block(s) => self.slots[s as usize].waiters.head,
            QueueId::Slots => self.slot_queue.head,
        };
        head.map(|id| &self.waiters[id])
    }

    pub(crate) fn pop_waiter(&mut self, q: QueueId) -> Option<Waiter> {
        let id = self.queue_mut(q).head?;
        let w = self.waiters.remove(id);
        let queue = self.queue_mut(q);
        queue.head = w.next;
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
        let mut at = self.slot_queue.head;
        while let Some(id) = at {
            self.waiters[id].retried = true;
            at = self.waiters[id].next;
        }
    }
}
