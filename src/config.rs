//! Cache configuration: block size, capacity, I/O engine, owner pinning.

use crate::engine::EngineFactory;
use crate::error::Error;
use std::fmt;
use std::sync::Arc;

/// Smallest block size accepted: the smallest logical block of any disk.
pub const MIN_BLOCK_SIZE: usize = 512;
/// Largest block size accepted.
pub const MAX_BLOCK_SIZE: usize = 1 << 20;
/// Per-device I/O depth used when [`Config::queue_depth`] is not called.
pub const DEFAULT_QUEUE_DEPTH: u32 = 64;
/// Largest per-device I/O depth accepted (io_uring's own limit is 32768).
pub const MAX_QUEUE_DEPTH: u32 = 4096;
/// Most blocks a cache can hold: slot numbers (plus one) must fit in 31
/// bits, the width of a visible reader's entry (`shared::readers`).
pub const MAX_CAPACITY: usize = (1 << 31) - 1;

/// Which I/O engine the cache uses for its devices.
///
/// ```
/// use blockcache::{Config, EngineKind};
/// let cfg = Config::new(4096, 256).engine(EngineKind::Sync);
/// assert_eq!(cfg.engine_kind(), EngineKind::Sync);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// io_uring where the kernel allows it, otherwise the sync engine
    /// (logged once through the `log` crate).
    #[default]
    Auto,
    /// io_uring, or `Err` from [`Cache::new`](crate::Cache::new) when it
    /// cannot be set up.
    Uring,
    /// `pread`/`pwrite`/`fdatasync` on worker threads: always available.
    Sync,
}

/// How a [`Cache`](crate::Cache) is built. Checked by
/// [`Cache::new`](crate::Cache::new), which returns
/// [`Error::InvalidConfig`] for a config that cannot work.
///
/// ```
/// use blockcache::{Config, EngineKind};
/// let cfg = Config::new(4096, 1024)   // 4 KiB blocks, 1024 of them: a 4 MiB pool
///     .engine(EngineKind::Auto)
///     .queue_depth(32)
///     .owner_cpu(None);
/// assert_eq!(cfg.block_size(), 4096);
/// assert_eq!(cfg.capacity(), 1024);
/// ```
#[derive(Clone)]
pub struct Config {
    pub(crate) block_size: usize,
    pub(crate) capacity: usize,
    pub(crate) engine: EngineKind,
    pub(crate) queue_depth: u32,
    pub(crate) owner_cpu: Option<usize>,
    pub(crate) custom_engine: Option<Arc<dyn EngineFactory>>,
    pub(crate) fast_hits: bool,
    pub(crate) readahead: u32,
    pub(crate) huge_pages: bool,
}

impl Config {
    /// A cache of `capacity` blocks of `block_size` bytes each.
    ///
    /// `block_size` must be a power of two from 512 to 1 MiB and a multiple
    /// of the logical block size of every device opened; `capacity` from
    /// 1 to [`MAX_CAPACITY`]. Nothing is checked until
    /// [`Cache::new`](crate::Cache::new).
    #[must_use]
    pub fn new(block_size: usize, capacity: usize) -> Config {
        Config {
            block_size,
            capacity,
            engine: EngineKind::Auto,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            owner_cpu: None,
            custom_engine: None,
            fast_hits: true,
            readahead: 0,
            huge_pages: true,
        }
    }

    /// Choose the I/O engine (default [`EngineKind::Auto`]).
    #[must_use]
    pub fn engine(mut self, kind: EngineKind) -> Config {
        self.engine = kind;
        self
    }

    /// Most I/Os in flight per device (default 64). Prefetches beyond it
    /// are dropped; reads and writebacks beyond it queue in the engine.
    #[must_use]
    pub fn queue_depth(mut self, depth: u32) -> Config {
        self.queue_depth = depth;
        self
    }

    /// Pin the owner thread to this CPU (default `None`: unpinned).
    #[must_use]
    pub fn owner_cpu(mut self, cpu: Option<usize>) -> Config {
        self.owner_cpu = cpu;
        self
    }

    /// Whether a client thread takes a resident, unheld block itself (with
    /// one compare-and-swap, or for a hot block's reader an entry in its
    /// own thread's record) instead of asking the owner thread (default
    /// `true`). `false` sends every get through the owner: slower, and
    /// there to measure what the fast path buys.
    #[must_use]
    pub fn fast_hits(mut self, on: bool) -> Config {
        self.fast_hits = on;
        self
    }

    /// Read ahead of a device read in order: up to `max_blocks` blocks
    /// past a run of in-order read misses are read before they are asked
    /// for (default 0: off, a get reads exactly its block, as LVM's bcache
    /// does).
    ///
    /// A run starts reading ahead on its second miss in order, with a
    /// window of 8 blocks (or `max_blocks` if smaller) that doubles with
    /// each window up to `max_blocks`; the next window starts when the
    /// reader comes within half a window of the end. Each device tracks a
    /// few runs, so threads reading separate ranges of one device in order
    /// each get their own. Readahead never waits: it stops at the device's
    /// [`queue_depth`](Config::queue_depth), when a get waits for a slot,
    /// and when no block is free or clean to evict. Blocks read ahead are
    /// counted in [`Stats::readaheads`](crate::Stats::readaheads) and
    /// [`Stats::reads_issued`](crate::Stats::reads_issued).
    ///
    /// ```
    /// use blockcache::Config;
    /// let cfg = Config::new(4096, 1024).readahead(64); // up to 256 KiB ahead
    /// assert_eq!(cfg.readahead_blocks(), 64);
    /// ```
    #[must_use]
    pub fn readahead(mut self, max_blocks: u32) -> Config {
        self.readahead = max_blocks;
        self
    }

    /// Whether to ask the kernel for transparent huge pages (2 MiB on
    /// x86-64) for the pool and the large per-block tables (default
    /// `true`). A hit on a big cache then misses the TLB less: one huge
    /// page maps what takes 512 small ones. It is advice (`madvise`): where
    /// the kernel has them off or lacks them the memory keeps small pages
    /// and nothing fails. Memory is still taken only where blocks are
    /// used, but in huge-page steps, so a cache holding few blocks may keep
    /// more resident; `false` keeps small pages throughout.
    ///
    /// ```
    /// use blockcache::{Cache, Config, EngineKind};
    /// # fn main() -> Result<(), blockcache::Error> {
    /// let cfg = Config::new(4096, 1 << 16).engine(EngineKind::Sync).huge_pages(false);
    /// assert!(!cfg.huge_pages_enabled());
    /// assert!(Config::new(4096, 16).huge_pages_enabled(), "on by default");
    /// let cache = Cache::new(cfg)?;   // 256 MiB of small pages, none touched yet
    /// assert_eq!(cache.capacity(), 1 << 16);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn huge_pages(mut self, on: bool) -> Config {
        self.huge_pages = on;
        self
    }

    /// Whether transparent huge pages are asked for
    /// ([`huge_pages`](Config::huge_pages)).
    pub fn huge_pages_enabled(&self) -> bool {
        self.huge_pages
    }

    /// Use a caller-supplied engine for every device instead of
    /// [`EngineKind`]: for tests that script or fault the I/O the cache
    /// issues. See [`engine`](crate::engine).
    #[must_use]
    pub fn custom_engine(mut self, factory: Arc<dyn EngineFactory>) -> Config {
        self.custom_engine = Some(factory);
        self
    }

    /// Bytes per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks in the pool.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The engine asked for.
    pub fn engine_kind(&self) -> EngineKind {
        self.engine
    }

    /// Per-device I/O depth.
    pub fn depth(&self) -> u32 {
        self.queue_depth
    }

    /// Most blocks read ahead of a run (0: no readahead).
    pub fn readahead_blocks(&self) -> u32 {
        self.readahead
    }

    /// Every rule a config must meet, with a message naming the one broken.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bs = self.block_size;
        if !bs.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs) {
            return Err(Error::InvalidConfig(format!(
                "block size {bs} must be a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE} bytes"
            )));
        }
        if self.capacity == 0 {
            return Err(Error::InvalidConfig("capacity must be at least 1 block".into()));
        }
        if self.capacity > MAX_CAPACITY {
            return Err(Error::InvalidConfig(format!(
                "capacity {} blocks exceeds the limit of {MAX_CAPACITY} blocks",
                self.capacity
            )));
        }
        if self
            .capacity
            .checked_mul(bs)
            .is_none_or(|b| b > isize::MAX as usize)
        {
            return Err(Error::InvalidConfig(format!(
                "a pool of {} blocks of {bs} bytes does not fit in memory",
                self.capacity
            )));
        }
        if self.queue_depth == 0 || self.queue_depth > MAX_QUEUE_DEPTH {
            return Err(Error::InvalidConfig(format!(
                "queue depth {} must be from 1 to {MAX_QUEUE_DEPTH}",
                self.queue_depth
            )));
        }
        if let Some(cpu) = self.owner_cpu {
            let known = core_affinity::get_core_ids().unwrap_or_default();
            if !known.iter().any(|c| c.id == cpu) {
                return Err(Error::InvalidConfig(format!(
                    "owner_cpu {cpu} is not a CPU this process may run on ({} available)",
                    known.len()
                )));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("block_size", &self.block_size)
            .field("capacity", &self.capacity)
            .field("engine", &self.engine)
            .field("queue_depth", &self.queue_depth)
            .field("owner_cpu", &self.owner_cpu)
            .field("custom_engine", &self.custom_engine.is_some())
            .field("fast_hits", &self.fast_hits)
            .field("readahead", &self.readahead)
            .field("huge_pages", &self.huge_pages)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_power_of_two_from_512_to_1mib_is_accepted() {
        let mut bs = 512;
        while bs <= MAX_BLOCK_SIZE {
            assert!(Config::new(bs, 1).validate().is_ok(), "{bs}");
            bs *= 2;
        }
    }

    #[test]
    fn bad_sizes_name_the_rule() {
        for bs in [0, 1, 256, 511, 513, 4095, 3 * 4096, 2 << 20] {
            match Config::new(bs, 8).validate() {
                Err(Error::InvalidConfig(m)) => assert!(m.contains("power of two"), "{m}"),
                other => panic!("block size {bs}: {other:?}"),
            }
        }
        match Config::new(4096, 0).validate() {
            Err(Error::InvalidConfig(m)) => assert!(m.contains("capacity"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Config::new(4096, 1).queue_depth(0).validate(),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            Config::new(4096, 1).owner_cpu(Some(1 << 20)).validate(),
            Err(Error::InvalidConfig(_))
        ));
    }
}
