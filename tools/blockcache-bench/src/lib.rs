//! # blockcache-bench
//!
//! Latency histograms of [`blockcache`] next to what a program would use
//! instead, measured in one process run, on the same file, with the same
//! block size and threads:
//!
//! - **pread**: buffered `pread`/`pwrite` through the page cache;
//! - **direct**: `O_DIRECT` `pread`/`pwrite`, no cache (LVM's sync engine);
//! - **uring**: raw io_uring `O_DIRECT` reads at the same queue depth, no
//!   cache (the device ceiling);
//! - **map**: a `parking_lot::Mutex<HashMap<u64, Box<[u8]>>>` (the floor a
//!   cache hit is judged against).
//!
//! Workloads ([`cli::Workload`]): `hot`, `random`, `mixed`, `scan`,
//! `devices`, and `flush` (the cache alone: what writing back N dirty
//! blocks costs the owner thread). Every case is run in each of several rounds, the systems of a
//! round back to back in a rotating order, and every reported number is the
//! median over the rounds; a ratio is the median of the per-round ratios, so
//! it compares runs made seconds apart. Absolute numbers from different runs
//! are not comparable on a shared machine; ratios within a run are.
//!
//! The binary (`src/main.rs`) is the command-line front end; the benchmark
//! `benches/suite.rs` runs [`suite`] so that `cargo bench` prints the same
//! tables in a short form. Both drive this library, so a workload or a
//! baseline exists exactly once.
#![warn(missing_docs)]

pub mod cli;
pub mod drive;
pub mod files;
pub mod handoff;
pub mod keys;
pub mod measure;
pub mod plot;
pub mod report;
pub mod rig;
pub mod suite;
pub mod uring;
pub mod workloads;

pub use anyhow::{Error, Result};
