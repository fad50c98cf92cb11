//! The one error type of the crate.

use crate::DeviceId;
use std::fmt;
use std::io;

/// What went wrong. Every variant leaves the cache usable.
///
/// ```
/// use blockcache::{Cache, Config, Error};
/// let err = Cache::new(Config::new(1000, 16)).unwrap_err();
/// assert!(matches!(err, Error::InvalidConfig(_)));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The kernel refused an open, a read, a write or a sync.
    Io(io::Error),
    /// The block lies past the end of the device (or its byte offset does
    /// not fit in a `u64`).
    OutOfRange {
        /// The device asked for.
        dev: DeviceId,
        /// The block asked for.
        block: u64,
    },
    /// The device was never opened by this cache, or has been closed.
    UnknownDevice,
    /// The block (or a block of the device) is held by a guard.
    Busy,
    /// `try_read`/`try_write` would have had to wait.
    WouldBlock,
    /// A write to a device opened with `open_read_only`.
    ReadOnly,
    /// The configuration cannot work; the message says why.
    InvalidConfig(String),
    /// The cache has shut down.
    Closed,
    /// Shutdown could not write back every dirty block: `blocks` were lost,
    /// `source` is the first error.
    Unwritten {
        /// How many dirty blocks could not be written.
        blocks: u64,
        /// The first write or sync error.
        source: io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::OutOfRange { dev, block } => {
                write!(f, "block {block} is past the end of device {dev:?}")
            }
            Error::UnknownDevice => f.write_str("unknown or closed device"),
            Error::Busy => f.write_str("block is held by a guard"),
            Error::WouldBlock => f.write_str("operation would block"),
            Error::ReadOnly => f.write_str("device is open read-only"),
            Error::InvalidConfig(m) => write!(f, "invalid configuration: {m}"),
            Error::Closed => f.write_str("cache is shut down"),
            Error::Unwritten { blocks, source } => {
                write!(f, "{blocks} dirty blocks could not be written: {source}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) | Error::Unwritten { source: e, .. } => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

/// An I/O failure that can be handed to many waiters: `io::Error` is not
/// `Clone`, so the owner keeps this and makes an `io::Error` per reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IoFailure {
    errno: Option<i32>,
    kind: io::ErrorKind,
    message: String,
}

impl IoFailure {
    pub(crate) fn to_io(&self) -> io::Error {
        match self.errno {
            Some(errno) => io::Error::from_raw_os_error(errno),
            None => io::Error::new(self.kind, self.message.clone()),
        }
    }
}

impl From<&io::Error> for IoFailure {
    fn from(e: &io::Error) -> IoFailure {
        IoFailure {
            errno: e.raw_os_error(),
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl From<IoFailure> for Error {
    fn from(f: IoFailure) -> Error {
        Error::Io(f.to_io())
    }
}
