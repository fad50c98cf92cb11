//! Which ops wait for which slot's I/O: per slot, a FIFO of the ops
//! waiting for the read or write in flight on it.
//!
//! An op only counts the I/O it waits for; the slot knows the ops. So a
//! completion visits exactly the ops waiting for that slot, in the order
//! they began to wait, and an op waiting for a million writebacks costs
//! each completion O(1), not a search of its list.
//!
//! The links live in a slab (reused, so steady-state waiting does not
//! allocate); each slot keeps the first and last of its own, as the link's
//! slab key plus one, so that a new cache's ends are all zero bytes
//! (`table::Zeroed`).

use crate::shared::table::{TooLarge, ZeroedTable};
use slab::Slab;

/// No link: the ends and a link's `next` hold the slab key plus one.
const NIL: u32 = 0;

struct Link {
    op: usize,
    next: u32,
}

/// The ops waiting for each slot's I/O.
pub(crate) struct OpWaits {
    head: ZeroedTable<u32>,
    tail: ZeroedTable<u32>,
    links: Slab<Link>,
}

/// The ops that waited for one completed I/O, taken off its slot: see
/// [`OpWaits::take`].
pub(crate) struct Taken(u32);

impl OpWaits {
    /// No op waiting on any of `capacity` slots; `huge`: ask for
    /// transparent huge pages (`Config::huge_pages`).
    pub(crate) fn new(capacity: u32, huge: bool) -> Result<OpWaits, TooLarge> {
        let ends = || ZeroedTable::new("the ops' wait queues", capacity as usize, huge);
        Ok(OpWaits {
            head: ends()?,
            tail: ends()?,
            links: Slab::new(),
        })
    }

    /// Op `op` waits for the I/O in flight on `slot`.
    pub(crate) fn add(&mut self, slot: u32, op: usize) {
        debug_assert!(!self.has(slot, op), "op {op} already waits for slot {slot}");
        let link = self.links.insert(Link { op, next: NIL }) + 1;
        let link = u32::try_from(link).expect("fewer than 2^32 - 1 waits");
        let i = slot as usize;
        match self.tail[i] {
            NIL => self.head[i] = link,
            t => self.links[t as usize - 1].next = link,
        }
        self.tail[i] = link;
    }

    /// Whether op `op` waits for `slot` (O(ops waiting for it)).
    pub(crate) fn has(&self, slot: u32, op: usize) -> bool {
        let mut at = self.head[slot as usize];
        while at != NIL {
            let l = &self.links[at as usize - 1];
            if l.op == op {
                return true;
            }
            at = l.next;
        }
        false
    }

    /// The I/O on `slot` has completed: take its waiting ops off it, to be
    /// handed out by [`next`](OpWaits::next). Ops that start waiting for a
    /// new I/O on the slot meanwhile wait for that one, not this.
    pub(crate) fn take(&mut self, slot: u32) -> Taken {
        let i = slot as usize;
        self.tail[i] = NIL;
        Taken(std::mem::replace(&mut self.head[i], NIL))
    }

    /// The next op of `taken`, first waiter first.
    pub(crate) fn next(&mut self, taken: &mut Taken) -> Option<usize> {
        if taken.0 == NIL {
            return None;
        }
        let l = self.links.remove(taken.0 as usize - 1);
        taken.0 = l.next;
        Some(l.op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_hand_out_their_ops_in_order_and_only_theirs() {
        let mut w = OpWaits::new(4, false).unwrap();
        w.add(1, 10);
        w.add(1, 11);
        w.add(2, 10);
        assert!(w.has(1, 11) && w.has(2, 10) && !w.has(2, 11) && !w.has(0, 10));
        let mut t = w.take(1);
        assert_eq!(w.next(&mut t), Some(10));
        // A new I/O on slot 1 started while its old waiters are handed out.
        w.add(1, 12);
        assert_eq!(w.next(&mut t), Some(11));
        assert_eq!(w.next(&mut t), None);
        let mut t = w.take(1);
        assert_eq!(w.next(&mut t), Some(12));
        assert_eq!(w.next(&mut t), None);
        let mut t = w.take(3);
        assert_eq!(w.next(&mut t), None, "nobody waited");
        let mut t = w.take(2);
        assert_eq!(w.next(&mut t), Some(10));
        assert!(w.links.is_empty(), "every link is freed");
    }
}
