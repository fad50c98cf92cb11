//! Which slots hold blocks of which device: one intrusive list per device,
//! so that invalidating, closing or aborting a device visits that device's
//! slots only, not every slot of the cache.
//!
//! A slot is on its device's list from the moment it is given a block
//! (`assign`) until it holds none again (`free_slot`, or eviction in
//! `take_slot`), in the order its blocks were assigned. The links live in
//! two arrays indexed by slot and each device keeps its list's ends
//! ([`Chain`]), so linking and unlinking are O(1) and never allocate. A
//! link is `slot + 1`, 0 for none, so that a new cache's links are all
//! zero bytes (`table::Zeroed`).

use super::Owner;
use crate::shared::table::{TooLarge, ZeroedTable};
use crate::DeviceId;

/// No slot: links hold `slot + 1`.
const NIL: u32 = 0;

#[inline]
fn link(slot: u32) -> u32 {
    slot + 1
}

/// One device's list: its first and last slot, and its length.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chain {
    head: u32,
    tail: u32,
    len: u32,
}

impl Default for Chain {
    fn default() -> Chain {
        Chain {
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

impl Chain {
    pub(crate) fn len(&self) -> u32 {
        self.len
    }
}

/// The links of every slot.
pub(crate) struct DeviceSlots {
    prev: ZeroedTable<u32>,
    next: ZeroedTable<u32>,
}

impl DeviceSlots {
    /// Links for `capacity` slots, none on any list; `huge`: ask for
    /// transparent huge pages (`Config::huge_pages`).
    pub(crate) fn new(capacity: u32, huge: bool) -> Result<DeviceSlots, TooLarge> {
        let links = || ZeroedTable::new("the devices' slot chains", capacity as usize, huge);
        Ok(DeviceSlots {
            prev: links()?,
            next: links()?,
        })
    }

    /// Put `slot` (on no list) at the end of `chain`: a chain runs in the
    /// order its blocks were assigned.
    pub(crate) fn link(&mut self, chain: &mut Chain, slot: u32) {
        let i = slot as usize;
        self.prev[i] = chain.tail;
        self.next[i] = NIL;
        match chain.tail {
            NIL => chain.head = link(slot),
            t => self.next[t as usize - 1] = link(slot),
        }
        chain.tail = link(slot);
        chain.len += 1;
    }

    /// Take `slot` off `chain`, the list it is on.
    pub(crate) fn unlink(&mut self, chain: &mut Chain, slot: u32) {
        let i = slot as usize;
        let (p, n) = (self.prev[i], self.next[i]);
        match p {
            NIL => {
                debug_assert_eq!(chain.head, link(slot), "slot {slot} is not on this chain");
                chain.head = n;
            }
            p => self.next[p as usize - 1] = n,
        }
        match n {
            NIL => chain.tail = p,
            n => self.prev[n as usize - 1] = p,
        }
        self.prev[i] = NIL;
        self.next[i] = NIL;
        chain.len -= 1;
    }

    /// Every slot on `chain`. Collected, so the caller may free slots
    /// while it walks them.
    pub(crate) fn collect(&self, chain: &Chain) -> Vec<u32> {
        let mut out = Vec::with_capacity(chain.len as usize);
        let mut at = chain.head;
        while at != NIL {
            out.push(at - 1);
            at = self.next[at as usize - 1];
        }
        out
    }
}

impl Owner {
    /// `slot` was just given a block of `dev`: put it on the device's list.
    pub(crate) fn join_device(&mut self, slot: u32, dev: DeviceId) {
        let d = self
            .devices
            .get_mut(&dev)
            .expect("blocks are assigned on open devices");
        self.dev_slots.link(&mut d.slots, slot);
    }

    /// `slot` no longer holds a block: take it off its device's list.
    pub(crate) fn leave_device(&mut self, slot: u32) {
        let dev = self.slots[slot as usize].key.0;
        let d = self.devices.get_mut(&dev).expect("a device outlives its blocks");
        self.dev_slots.unlink(&mut d.slots, slot);
    }

    /// The slots holding blocks of `dev`, collected (see
    /// [`DeviceSlots::collect`]); none for a device not open.
    pub(crate) fn device_slots(&self, dev: DeviceId) -> Vec<u32> {
        self.devices
            .get(&dev)
            .map_or_else(Vec::new, |d| self.dev_slots.collect(&d.slots))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_hold_their_slots_through_links_and_unlinks() {
        let mut links = DeviceSlots::new(8, false).unwrap();
        let (mut a, mut b) = (Chain::default(), Chain::default());
        for s in [0, 3, 5] {
            links.link(&mut a, s);
        }
        links.link(&mut b, 1);
        links.link(&mut b, 7);
        assert_eq!(links.collect(&a), [0, 3, 5]);
        assert_eq!(links.collect(&b), [1, 7]);
        links.unlink(&mut a, 3); // middle
        links.unlink(&mut a, 0); // head
        assert_eq!(links.collect(&a), [5]);
        links.unlink(&mut b, 7); // tail
        assert_eq!(links.collect(&b), [1]);
        links.link(&mut b, 3); // an unlinked slot can join another chain
        links.link(&mut a, 6); // a chain left with one slot grows at its end
        assert_eq!(links.collect(&b), [1, 3]);
        assert_eq!(links.collect(&a), [5, 6]);
        links.unlink(&mut a, 5);
        links.unlink(&mut a, 6);
        assert!(links.collect(&a).is_empty());
        links.link(&mut a, 2); // an emptied chain starts over
        assert_eq!(links.collect(&a), [2]);
        assert_eq!((a.len(), b.len()), (1, 2));
    }
}
