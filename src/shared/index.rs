//! The index `(device, block) → slot`: searched by every client thread
//! without a lock and without a write, changed only by the owner.
//!
//! # Why not a lock
//!
//! A hit that took a shard's `RwLock` for reading would write the lock
//! word, and with hits spread over the shards the word would be as likely
//! as not last written by another core: about one cross-core cache-line
//! transfer per hit. Sharding does not help: with hits spread evenly,
//! whichever shard a hit lands on was last taken by any thread alike. Here a lookup only
//! loads, so the table's cache lines stay shared in every core's cache
//! between misses.
//!
//! # The table
//!
//! Open addressing with linear probing over a power-of-two array of
//! `AtomicU64`, at most half full (it holds at most one entry per slot and
//! has at least twice as many places), so a probe ends at an empty place
//! within a few steps. An entry packs a 32-bit tag of the key's hash with
//! the slot number; the key itself lives in the slot ([`SlotKey`]) and
//! every match is confirmed there. Removal shifts the rest of the probe
//! run back (no tombstones, so the table never needs rebuilding).
//!
//! # Why a stale or torn view is harmless
//!
//! Only the owner writes the table, so the owner's own lookups are exact.
//! A client's lookup races the owner's writes, and may:
//! - find an entry for a slot that has since been reassigned: the client
//!   confirms the key again *after* acquiring the slot (see `slot_state`),
//!   so it never holds a block it did not ask for;
//! - miss an entry an owner's backward shift was moving past it: the
//!   client then asks the owner, whose lookup is exact. This costs a round
//!   trip, rarely; it is never wrong.
//!
//! [`SlotKey`]: super::slot_state::SlotKey

use super::table::{TooLarge, ZeroedTable};
use crate::DeviceId;
use std::sync::atomic::{AtomicU64, Ordering::*};

/// No entry.
const EMPTY: u64 = 0;

pub(crate) struct Index {
    places: ZeroedTable<AtomicU64>,
    mask: usize,
}

/// The key's hash: a full-avalanche mix (the MurmurHash3 finalizer), since
/// linear probing degrades on clustered hashes and callers' block numbers
/// are as clustered as it gets (sequential).
#[inline]
fn hash(dev: DeviceId, block: u64) -> u64 {
    let mut h = block ^ dev.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
}

/// The key's tag: the hash's high half, kept in its entry and where its
/// probe starts ([`Index::home`]).
#[inline]
fn tag(dev: DeviceId, block: u64) -> u32 {
    (hash(dev, block) >> 32) as u32
}

/// An entry: the tag in the high half, slot + 1 in the low half (so that
/// no entry is `EMPTY`).
#[inline]
fn entry(tag: u32, slot: u32) -> u64 {
    (tag as u64) << 32 | (slot as u64 + 1)
}

#[inline]
fn tag_of(e: u64) -> u32 {
    (e >> 32) as u32
}

#[inline]
fn slot_of(e: u64) -> u32 {
    (e as u32).wrapping_sub(1)
}

impl Index {
    /// A table for a cache of `capacity` slots, every place `EMPTY` (zero
    /// bytes: untouched pages); `huge`: ask for transparent huge pages.
    pub(crate) fn new(capacity: usize, huge: bool) -> Result<Index, TooLarge> {
        let len = (capacity.max(1) * 2).next_power_of_two().max(16);
        Ok(Index {
            places: ZeroedTable::new("an index", len, huge)?,
            mask: len - 1,
        })
    }

    /// Where a tag's probe starts. The tag is the hash's high half; a place
    /// taken from it keeps the home findable from the entry alone, which
    /// the backward shift needs.
    #[inline]
    fn home(&self, tag: u32) -> usize {
        tag as usize & self.mask
    }

    /// The slot holding `(dev, block)`, by `holds(slot)`: the caller's check
    /// of the slot's key. Exact for the owner; a hint for clients (module
    /// docs).
    #[inline]
    pub(crate) fn get(&self, dev: DeviceId, block: u64, holds: impl Fn(u32) -> bool) -> Option<u32> {
        let tag = tag(dev, block);
        let mut at = self.home(tag);
        // Bounded only against a table corrupted by a bug: a half-empty
        // table always ends a probe at an empty place.
        for _ in 0..=self.mask {
            // Acquire pairs with the owner's Release store of the entry.
            // Nothing here depends on it for safety (the slot's own word
            // does), but a fresh entry then points at a set key.
            let e = self.places[at].load(Acquire);
            if e == EMPTY {
                return None;
            }
            if tag_of(e) == tag && holds(slot_of(e)) {
                return Some(slot_of(e));
            }
            at = (at + 1) & self.mask;
        }
        None
    }

    /// Owner only: record that `slot` now holds `(dev, block)`, which is
    /// not in the table.
    pub(crate) fn insert(&self, dev: DeviceId, block: u64, slot: u32) {
        let tag = tag(dev, block);
        let mut at = self.home(tag);
        while self.places[at].load(Relaxed) != EMPTY {
            debug_assert_ne!(self.places[at].load(Relaxed), entry(tag, slot), "inserted twice");
            at = (at + 1) & self.mask;
        }
        self.places[at].store(entry(tag, slot), Release);
    }

    /// Owner only: forget that `slot` holds `(dev, block)`.
    pub(crate) fn remove(&self, dev: DeviceId, block: u64, slot: u32) {
        let wanted = entry(tag(dev, block), slot);
        let mut hole = self.home(tag_of(wanted));
        loop {
            match self.places[hole].load(Relaxed) {
                e if e == wanted => break,
                EMPTY => {
                    debug_assert!(false, "removing slot {slot}, which is not in the index");
                    return;
                }
                _ => hole = (hole + 1) & self.mask,
            }
        }
        // Backward shift: walk the rest of the run; an entry whose home is
        // not cyclically in (hole, at] may move back into the hole. Each
        // move writes the entry's new place before its old one is reused,
        // so an entry is never absent from the table, only briefly twice.
        let mut at = hole;
        loop {
            at = (at + 1) & self.mask;
            let e = self.places[at].load(Relaxed);
            if e == EMPTY {
                break;
            }
            let home = self.home(tag_of(e));
            let stays = if hole <= at {
                hole < home && home <= at
            } else {
                hole < home || home <= at
            };
            if !stays {
                self.places[hole].store(e, Release);
                hole = at;
            }
        }
        self.places[hole].store(EMPTY, Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A model check against a HashMap: random inserts and removes over a
    /// tiny table (so runs wrap around the end and collide), every key
    /// looked up after each step.
    #[test]
    fn agrees_with_a_map_under_churn() {
        let capacity = 24;
        let index = Index::new(capacity, false).unwrap();
        let mut keys: Vec<Option<(DeviceId, u64)>> = vec![None; capacity];
        let mut map: HashMap<(DeviceId, u64), u32> = HashMap::new();
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for step in 0..200_000 {
            let slot = (next() % capacity as u64) as u32;
            match keys[slot as usize] {
                Some((dev, block)) => {
                    index.remove(dev, block, slot);
                    map.remove(&(dev, block));
                    keys[slot as usize] = None;
                }
                None => {
                    let key = (DeviceId(next() % 3), next() % 64);
                    if map.contains_key(&key) {
                        continue;
                    }
                    index.insert(key.0, key.1, slot);
                    map.insert(key, slot);
                    keys[slot as usize] = Some(key);
                }
            }
            if step % 97 == 0 {
                for dev in 0..3 {
                    for block in 0..64 {
                        let k = (DeviceId(dev), block);
                        let found = index.get(k.0, k.1, |s| keys[s as usize] == Some(k));
                        assert_eq!(found, map.get(&k).copied(), "step {step}, key {k:?}");
                    }
                }
            }
        }
        assert!(map.len() <= capacity);
    }

    #[test]
    fn a_tag_collision_is_resolved_by_the_key() {
        let index = Index::new(4, false).unwrap();
        index.insert(DeviceId(1), 7, 0);
        // The slot's key says it holds something else: not a match.
        assert_eq!(index.get(DeviceId(1), 7, |_| false), None);
        assert_eq!(index.get(DeviceId(1), 7, |s| s == 0), Some(0));
    }
}
