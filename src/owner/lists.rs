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
//! release blocks themselves (see `shared::slot_state`), so the owner learns it
//! from the slot's atomic word when it wants to evict or write back.
//!
//! The lists are intrusive (links live in two arrays indexed by slot), so
//! moving a slot between lists is O(1) and never allocates.
//!
//! A new cache's tables are all zero bytes (`table::Zeroed`), untouched
//! until used: a link is `slot + 1`, 0 for none, and `Free` is 0. The
//! slots never used yet are not linked at all: they are the end of the
//! `Free` list, from a bump counter (`fresh`) to the capacity, in slot
//! order. Slots freed later are linked ahead of them, so a freed slot,
//! whose memory is already resident, is reused before a never-used one.

use crate::shared::table::{self, TooLarge, ZeroedTable};

/// Which list a slot is on. `Free` is 0: see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum List {
    Free = 0,
    Clean = 1,
    Dirty = 2,
    Errored = 3,
    IoPending = 4,
}

// SAFETY: a `repr(u8)` enum whose zero discriminant is `Free`, the list
// every slot starts on; no drop.
unsafe impl table::Zeroed for List {}

const LISTS: usize = 5;
/// No slot: links hold `slot + 1`.
const NIL: u32 = 0;

#[inline]
fn link(slot: u32) -> u32 {
    slot + 1
}

#[inline]
fn slot_of(link: u32) -> Option<u32> {
    link.checked_sub(1)
}

pub(crate) struct Lists {
    prev: ZeroedTable<u32>,
    next: ZeroedTable<u32>,
    on: ZeroedTable<List>,
    head: [u32; LISTS],
    tail: [u32; LISTS],
    /// Linked slots per list (the never-used ones not included).
    len: [u32; LISTS],
    /// The first slot never used: it and every slot after it are on
    /// `Free`, after the linked ones, and not linked.
    fresh: u32,
    capacity: u32,
}

impl Lists {
    /// `capacity` slots, all on `Free` in slot order; `huge`: ask for
    /// transparent huge pages (`Config::huge_pages`).
    pub(crate) fn new(capacity: u32, huge: bool) -> Result<Lists, TooLarge> {
        let n = capacity as usize;
        Ok(Lists {
            prev: ZeroedTable::new("the lists' back links", n, huge)?,
            next: ZeroedTable::new("the lists' forward links", n, huge)?,
            on: ZeroedTable::new("the lists' membership", n, huge)?,
            head: [NIL; LISTS],
            tail: [NIL; LISTS],
            len: [0; LISTS],
            fresh: 0,
            capacity,
        })
    }

    pub(crate) fn list_of(&self, slot: u32) -> List {
        self.on[slot as usize]
    }

    pub(crate) fn len(&self, list: List) -> u32 {
        let never_used = if list == List::Free {
            self.capacity - self.fresh
        } else {
            0
        };
        self.len[list as usize] + never_used
    }

    /// The first never-used slot, if one is left.
    fn first_fresh(&self) -> Option<u32> {
        (self.fresh < self.capacity).then_some(self.fresh)
    }

    pub(crate) fn head(&self, list: List) -> Option<u32> {
        match slot_of(self.head[list as usize]) {
            None if list == List::Free => self.first_fresh(),
            head => head,
        }
    }

    /// The slot after `slot` on its list.
    pub(crate) fn next(&self, slot: u32) -> Option<u32> {
        if slot >= self.fresh {
            return (slot + 1 < self.capacity).then_some(slot + 1);
        }
        match slot_of(self.next[slot as usize]) {
            // The last linked free slot: the never-used ones follow.
            None if self.on[slot as usize] == List::Free => self.first_fresh(),
            next => next,
        }
    }

    /// Move `slot` to the tail of `to` (also when it is already on `to`:
    /// that refreshes its place).
    pub(crate) fn move_to(&mut self, slot: u32, to: List) {
        if slot >= self.fresh {
            // Never used: link the never-used slots before it where they
            // are (on `Free`, in order), and it leaves the range. The
            // owner takes free slots from the head, so there are none.
            for s in self.fresh..slot {
                self.link_tail(List::Free, s);
            }
            self.fresh = slot + 1;
        } else {
            self.unlink(slot);
        }
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
        match slot_of(p) {
            None => self.head[list] = n,
            Some(p) => self.next[p as usize] = n,
        }
        match slot_of(n) {
            None => self.tail[list] = p,
            Some(n) => self.prev[n as usize] = p,
        }
        self.len[list] -= 1;
    }

    fn link_tail(&mut self, list: List, slot: u32) {
        let i = slot as usize;
        let l = list as usize;
        self.on[i] = list;
        self.prev[i] = self.tail[l];
        self.next[i] = NIL;
        match slot_of(self.tail[l]) {
            None => self.head[l] = link(slot),
            Some(t) => self.next[t as usize] = link(slot),
        }
        self.tail[l] = link(slot);
        self.len[l] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_keep_order_and_counts() {
        let mut l = Lists::new(5, false).unwrap();
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

    /// Never-used slots are the end of `Free` without being linked; a slot
    /// freed later goes ahead of them.
    #[test]
    fn never_used_slots_end_the_free_list() {
        let mut l = Lists::new(6, false).unwrap();
        assert_eq!(l.len(List::Free), 6);
        assert_eq!(l.head(List::Free), Some(0));
        l.move_to(0, List::Clean);
        l.move_to(1, List::Clean);
        assert_eq!(l.collect(List::Free), vec![2, 3, 4, 5]);
        l.move_to(0, List::Free);
        assert_eq!(l.collect(List::Free), vec![0, 2, 3, 4, 5]);
        assert_eq!(l.head(List::Free), Some(0), "freed first, then never used");
        // A never-used slot taken out of order: the ones before it stay free.
        l.move_to(4, List::Dirty);
        assert_eq!(l.collect(List::Free), vec![0, 2, 3, 5]);
        assert_eq!(l.len(List::Free), 4);
        l.move_to(3, List::Dirty);
        l.move_to(5, List::Dirty);
        assert_eq!(l.collect(List::Free), vec![0, 2]);
        assert_eq!(l.collect(List::Dirty), vec![4, 3, 5]);
        assert_eq!(l.list_of(5), List::Dirty);
        assert_eq!(l.list_of(2), List::Free);
    }
}
