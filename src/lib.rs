//! blockcache (work in progress skeleton)
#![warn(missing_docs)]

pub mod config;
pub mod device;
pub mod error;
pub(crate) mod owner;
pub mod stats;

pub use config::{Config, EngineKind};
pub use device::engine;
pub use error::Error;
pub use stats::Stats;

/// Names an open device of one cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub(crate) u64);
