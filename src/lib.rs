//! # blockcache
//!
//! A block cache for files and block devices, shared by many threads: the
//! multithreaded, io_uring-based successor of LVM2's `bcache`.
//!
//! Worker threads take RAII guards on fixed-size, page-aligned blocks:
//! [`ReadGuard`] (shared) and [`WriteGuard`] (exclusive, marks the block
//! dirty). One owner thread keeps all cache state — index, LRU lists,
//! waiters — and each open device has an I/O engine (an io_uring ring
//! thread with O_DIRECT, or pread/pwrite threads) that reads misses, writes
//! dirty blocks back and syncs.
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
//! See [`Cache`] for every operation, [`engine`] to script or fault the
//! I/O, and the README for the design and measured performance.
#![warn(missing_docs)]

mod bytes;
mod cache;
pub mod config;
pub mod device;
pub mod error;
mod guard;
mod idle;
pub(crate) mod owner;
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
