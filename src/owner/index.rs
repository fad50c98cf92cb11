//! The index `(device, block) → slot`, readable by every client thread and
//! written only by the owner: shards of `RwLock<HashMap>`, as dm-bufio does
//! since Linux 6.4. A hit takes one shard's read lock for a lookup; the
//! owner takes a write lock only to insert or remove. What a lookup finds
//! may be stale by the time the client uses it: see `slot_state` for why
//! that is safe.

use crate::DeviceId;
use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use std::hash::BuildHasher;

/// Enough shards that two threads rarely share one (each lock word is its
/// own cache line's worth of contention).
const SHARDS: usize = 64;

#[repr(align(128))]
struct Shard(RwLock<FxHashMap<(DeviceId, u64), u32>>);

pub(crate) struct Index {
    shards: Box<[Shard]>,
}

impl Index {
    /// Sized so that no shard grows for a cache of `capacity` blocks spread
    /// evenly; a skewed shard may still grow (on the miss path, not hits).
    pub(crate) fn new(capacity: usize) -> Index {
        let per_shard = capacity.div_ceil(SHARDS) * 2;
        Index {
            shards: (0..SHARDS)
                .map(|_| {
                    let mut m = FxHashMap::default();
                    m.reserve(per_shard);
                    Shard(RwLock::new(m))
                })
                .collect(),
        }
    }

    fn shard(&self, key: &(DeviceId, u64)) -> &RwLock<FxHashMap<(DeviceId, u64), u32>> {
        // High bits: FxHash mixes them best.
        let h = rustc_hash::FxBuildHasher.hash_one(key);
        &self.shards[(h >> 58) as usize % SHARDS].0
    }

    #[inline]
    pub(crate) fn get(&self, dev: DeviceId, block: u64) -> Option<u32> {
        self.shard(&(dev, block)).read().get(&(dev, block)).copied()
    }

    pub(crate) fn contains(&self, dev: DeviceId, block: u64) -> bool {
        self.get(dev, block).is_some()
    }

    /// Owner only.
    pub(crate) fn insert(&self, dev: DeviceId, block: u64, slot: u32) {
        self.shard(&(dev, block)).write().insert((dev, block), slot);
    }

    /// Owner only.
    pub(crate) fn remove(&self, dev: DeviceId, block: u64) {
        self.shard(&(dev, block)).write().remove(&(dev, block));
    }
}
