//! The slot lists, named by what they hold, as in LVM's bcache. Every slot
//! is on exactly one list at a time:
//!
//! - `Free`: holds no block;
//! - `Clean`: an unheld block equal to the disk, least recently released
//!   first (the eviction order);
//! - `Dirty`: an unheld block newer than the disk, oldest first (the
//!   writeback order);
//! - `Errored`: an unheld dirty block whose last writeback failed; only a
//!   flush retries it;
//! - `IoPending`: a block being read or written back — never held.
//!
//! Whether a resident block is held is not a list: clients take and
//! release blocks themselves (see `slot_state`), so the owner learns it
//! from the slot's atomic word when it wants to evict or write back.
//!
//! The lists are intrusive (links live in two arrays indexed by slot), so
//! moving a slot between lists is O(1) and never allocates.

use super::table::{self, TooLarge};

/// Which list a slot is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum List {
    Free = 0,
    Clean = 1,
    Dirty = 2,
    Errored = 3,
    IoPending = 4,
}

const LISTS: usize = 5;
const NIL: u32 = u32::MAX;

pub(crate) struct Lists {
    prev: Vec<u32>,
    next: Vec<u32>,
    on: Vec<List>,
    head: [u32; LISTS],
    tail: [u32; LISTS],
    len: [u32; LISTS],
}

impl Lists {
    /// `capacity` slots, all on `Free` in slot order.
    pub(crate) fn new(capacity: u32) -> Result<Lists, TooLarge> {
        let n = capacity as usize;
        let mut l = Lists {
            prev: table::filled("the lists' back links", n, |_| NIL)?,
            next: table::filled("the lists' forward links", n, |_| NIL)?,
            on: table::filled("the lists' membership", n, |_| List::Free)?,
            head: [NIL; LISTS],
            tail: [NIL; LISTS],
            len: [0; LISTS],
        };
        for slot in 0..capacity {
            l.link_tail(List::Free, slot);
        }
        Ok(l)
    }

    pub(crate) fn list_of(&self, slot: u32) -> List {
        self.on[slot as usize]
    }

    pub(crate) fn len(&self, list: List) -> u32 {
        self.len[list as usize]
    }

    pub(crate) fn head(&self, list: List) -> Option<u32> {
        Some(self.head[list as usize]).filter(|&s| s != NIL)
    }

    /// The slot after `slot` on its list.
    pub(crate) fn next(&self, slot: u32) -> Option<u32> {
        Some(self.next[slot as usize]).filter(|&s| s != NIL)
    }

    /// Move `slot` to the tail of `to` (also when it is already on `to`:
    /// that refreshes its place).
    pub(crate) fn move_to(&mut self, slot: u32, to: List) {
        self.unlink(slot);
        self.link_tail(to, slot);
    }

    /// Every slot on `list`, head first. Collected, so the caller may move
    /// slots while it walks them.
    pub(crate) fn collect(&self, list: List) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.len(list) as usize);
        let mut at = self.head(list);
        while let Some(s) = at {
            out.push(s);
            at = self.next(s);
        }
        out
    }

    fn unlink(&mut self, slot: u32) {
        let i = slot as usize;
        let list = self.on[i] as usize;
        let (p, n) = (self.prev[i], self.next[i]);
        if p == NIL {
            self.head[list] = n;
        } else {
            self.next[p as usize] = n;
        }
        if n == NIL {
            self.tail[list] = p;
        } else {
            self.prev[n as usize] = p;
        }
        self.len[list] -= 1;
    }

    fn link_tail(&mut self, list: List, slot: u32) {
        let i = slot as usize;
        let l = list as usize;
        self.on[i] = list;
        self.prev[i] = self.tail[l];
        self.next[i] = NIL;
        if self.tail[l] == NIL {
            self.head[l] = slot;
        } else {
            self.next[self.tail[l] as usize] = slot;
        }
        self.tail[l] = slot;
        self.len[l] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_keep_order_and_counts() {
        let mut l = Lists::new(5).unwrap();
        assert_eq!(l.collect(List::Free), vec![0, 1, 2, 3, 4]);
        l.move_to(2, List::Dirty);
        l.move_to(0, List::Dirty);
        l.move_to(4, List::Dirty);
        l.move_to(0, List::Dirty); // refresh: goes to the tail
        assert_eq!(l.collect(List::Dirty), vec![2, 4, 0]);
        assert_eq!(l.collect(List::Free), vec![1, 3]);
        assert_eq!(l.len(List::Dirty), 3);
        l.move_to(4, List::Clean);
        assert_eq!(l.collect(List::Dirty), vec![2, 0]);
        assert_eq!(l.head(List::Clean), Some(4));
        assert_eq!(l.list_of(4), List::Clean);
        let total: u32 = [
            List::Free,
            List::Clean,
            List::Dirty,
            List::Errored,
            List::IoPending,
        ]
        .iter()
        .map(|&x| l.len(x))
        .sum();
        assert_eq!(total, 5);
    }
}
