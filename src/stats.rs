//! Counters: kept by the owner thread in atomics, read without a round trip.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// A snapshot of the cache's counters. Counters count blocks, not requests.
///
/// ```
/// use blockcache::Stats;
/// let s = Stats::default();
/// assert_eq!(s.read_hits + s.read_misses, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Read gets that found the block resident.
    pub read_hits: u64,
    /// Read gets that had to read the block or join a read in flight.
    pub read_misses: u64,
    /// Write (and zeroed) gets that found the block resident.
    pub write_hits: u64,
    /// Write (and zeroed) gets of a block not resident.
    pub write_misses: u64,
    /// Blocks handed out zero-filled by `zeroed` (never read).
    pub write_zeroes: u64,
    /// Reads started by `prefetch`.
    pub prefetches: u64,
    /// Reads started by readahead ([`Config::readahead`](crate::Config::readahead)).
    pub readaheads: u64,
    /// Blocks read from devices.
    pub reads_issued: u64,
    /// Blocks written to devices.
    pub writes_issued: u64,
    /// Reads, writes and syncs that failed.
    pub io_errors: u64,
    /// Clean blocks dropped to make room for others.
    pub evictions: u64,
    /// Writebacks started because fewer than a third of blocks were clean
    /// or free.
    pub preemptive_writebacks: u64,
    /// Syncs (fdatasync) completed.
    pub syncs: u64,
}

macro_rules! counters {
    (striped: $($hot:ident),* ; owner: $($name:ident),* $(,)?) => {
        /// The live counters behind [`Stats`]. Hit counters are bumped by
        /// client threads on the fast path, so they are striped; the rest
        /// only by the owner thread. Each counter is exact; a snapshot is
        /// not atomic across counters.
        #[derive(Default)]
        pub(crate) struct Counters {
            $(pub(crate) $hot: Striped,)*
            $(pub(crate) $name: AtomicU64,)*
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> Stats {
                Stats {
                    $($hot: self.$hot.sum(),)*
                    $($name: self.$name.load(Relaxed),)*
                }
            }
        }
    };
}

counters!(
    striped: read_hits, write_hits;
    owner: read_misses,
    write_misses,
    write_zeroes,
    prefetches,
    readaheads,
    reads_issued,
    writes_issued,
    io_errors,
    evictions,
    preemptive_writebacks,
    syncs,
);

/// Add one to a counter. Only the owner thread writes these, so a load +
/// store is exact and cheaper than a locked add.
#[inline]
pub(crate) fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed) + 1, Relaxed);
}

const STRIPES: usize = 16;

#[derive(Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

/// A counter many threads add to: one cache line per stripe, each thread
/// on its own stripe (round-robin), summed when read. A shared counter
/// would bounce one cache line between every pair of hitting threads.
#[derive(Default)]
pub(crate) struct Striped([Stripe; STRIPES]);

impl Striped {
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static MINE: usize = NEXT.fetch_add(1, Relaxed) % STRIPES;
        }
        let i = MINE.try_with(|m| *m).unwrap_or(0);
        self.0[i].0.fetch_add(n, Relaxed);
    }

    pub(crate) fn sum(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Relaxed)).sum()
    }
}
