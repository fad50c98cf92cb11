//! # blockcache
//!
//! A block cache for files and block devices, shared by many threads: the
//! multithreaded, io_uring-based successor of LVM2's `bcache`.
//!
//! Worker threads take RAII guards on fixed-size, page-aligned blocks:
//! [`ReadGuard`] (shared) and [`WriteGuard`] (exclusive, marks the block
//! dirty). A get of a resident block is taken in the calling thread, with
//! no message; a miss goes to the one owner thread, which makes every
//! decision (slot assignment, CLOCK eviction, writeback, waiters) and is
//! the only writer of the index. Each open device has an I/O engine (an
//! io_uring ring with O_DIRECT and a reaper thread, or pread/pwrite
//! threads) that reads misses, writes dirty blocks back and syncs; the
//! thread that completes a read hands the block to the get waiting for it.
//!
//! ```
//! use blockcache::{Cache, Config};
//! # fn main() -> Result<(), blockcache::Error> {
//! # let file = tempfile::NamedTempFile::new().unwrap();
//! # file.as_file().set_len(1 << 20).unwrap();
//! # let path = file.path();
//! let cache = Cache::new(Config::new(4096, 1024))?;  // 4 KiB blocks, 4 MiB pool
//! let dev = cache.open(path)?;
//!
//! let workers: Vec<_> = (0..4u64)
//!     .map(|i| {
//!         let cache = cache.clone();                   // handles are cheap to clone
//!         std::thread::spawn(move || -> Result<(), blockcache::Error> {
//!             let mut block = cache.write(dev, i)?;    // exclusive guard
//!             block.fill(i as u8);
//!             Ok(())                                   // dropped: dirty
//!         })
//!     })
//!     .collect();
//! for w in workers {
//!     w.join().unwrap()?;
//! }
//! assert_eq!(cache.read(dev, 3)?[0], 3);
//! cache.flush()?;                                      // written and fdatasync'd
//! assert_eq!(cache.stats().writes_issued, 4);
//! # Ok(()) }
//! ```
//!
//! # Promises
//!
//! - **A held block is never written back or evicted**, and a block the
//!   kernel is filling is never visible to a guard.
//! - **Nothing is lost**: a dirty block leaves memory only after its write
//!   completed; a failed writeback keeps it dirty and makes
//!   [`flush`](Cache::flush) return the error (the next flush retries).
//!   `flush` returning `Ok` means written and fdatasync'd.
//! - **Bad input is an [`Error`]**, never a panic, and leaves the cache
//!   usable: a block past the end, an unknown or closed device, a write to
//!   a read-only device, a config that cannot work.
//! - **No hang**: a get waits only for a guard some thread holds, an I/O in
//!   flight, or a slot that will come; when none can (every unheld block
//!   dirty and failing to write) it returns that error. A thread that waits
//!   for a block while itself holding a conflicting guard waits forever, as
//!   with a `RwLock`: use [`try_read`](Cache::try_read) and
//!   [`try_write`](Cache::try_write), which never wait, where that can
//!   happen.
//!
//! See [`Cache`] for every operation, [`Config`] for the knobs
//! (readahead, huge pages, queue depth), [`engine`] to script or fault the
//! I/O, and the repository's `docs/design.md` for the design.
#![warn(missing_docs)]

mod bytes;
mod cache;
pub mod config;
pub mod device;
pub mod error;
mod guard;
mod idle;
pub(crate) mod owner;
pub(crate) mod shared;
pub mod stats;

pub use cache::Cache;
pub use config::{Config, EngineKind};
pub use device::engine;
pub use error::Error;
pub use guard::{ReadGuard, WriteGuard};
pub use stats::Stats;

/// Names an open device of one cache. Never reused, even after `close`.
///
/// Displays as `device 3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub(crate) u64);

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "device {}", self.0)
    }
}

/// The README's example, compiled and run as a doctest so that it cannot
/// drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
