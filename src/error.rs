//! The one error type of the crate.

use crate::DeviceId;
use std::fmt;
use std::io;

/// What went wrong. Every variant leaves the cache usable.
///
/// An error's [`Display`](fmt::Display) says what went wrong at its own
/// level, and [`source()`](std::error::Error::source) gives the cause
/// under it: a report that walks the chain names each cause once.
///
/// ```
/// use blockcache::{Cache, Config, Error};
/// let err = Cache::new(Config::new(1000, 16)).unwrap_err();
/// assert!(matches!(err, Error::InvalidConfig(_)));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The kernel refused an open, a read, a write or a sync; or
    /// [`Cache::new`](crate::Cache::new) could not get the memory for the
    /// pool or a per-block table (kind [`io::ErrorKind::OutOfMemory`], the
    /// message naming the pool or table and its size).
    ///
    /// Displays as the `io::Error` does, and its `source()` is the
    /// `io::Error`'s: an open's error says what failed on which path
    /// ("cannot open /x") and has the OS error as its source.
    Io(io::Error),
    /// The block lies past the end of the device (or its byte offset does
    /// not fit in a `u64`). From every call that names a block or a byte
    /// range (`prefetch` reports nothing).
    OutOfRange {
        /// The device asked for.
        dev: DeviceId,
        /// The block asked for (of a byte range, the first block past the
        /// device's end).
        block: u64,
    },
    /// The device was never opened by this cache, or has been closed.
    /// From every call that names a device (`prefetch` reports nothing).
    UnknownDevice,
    /// A block is held by a guard, so the call did nothing to it:
    /// [`invalidate`](crate::Cache::invalidate) (that block), and
    /// [`invalidate_device`](crate::Cache::invalidate_device),
    /// [`close`](crate::Cache::close) and
    /// [`abort_device`](crate::Cache::abort_device) (a block of the
    /// device, held or waited for).
    Busy,
    /// [`try_read`](crate::Cache::try_read) or
    /// [`try_write`](crate::Cache::try_write) would have had to wait or
    /// read the device.
    WouldBlock,
    /// The device was opened with
    /// [`open_read_only`](crate::Cache::open_read_only) and the call
    /// writes: [`write`](crate::Cache::write),
    /// [`try_write`](crate::Cache::try_write),
    /// [`zeroed`](crate::Cache::zeroed) and the byte helpers that write
    /// ([`write_bytes`](crate::Cache::write_bytes),
    /// [`zero_bytes`](crate::Cache::zero_bytes),
    /// [`set_bytes`](crate::Cache::set_bytes)).
    ReadOnly,
    /// The configuration cannot work; the message says why. From
    /// [`Cache::new`](crate::Cache::new), and from
    /// [`open`](crate::Cache::open) when the block size is not a multiple
    /// of the device's logical block size.
    InvalidConfig(String),
    /// The cache's owner thread has stopped: it panicked (a bug), so every
    /// call is refused; or the cache has shut down.
    Closed,
    /// Shutdown could not write back every dirty block: `blocks` were lost,
    /// `source` is the first error (and the `source()`).
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
            // Transparent: the `io::Error` says it all (an open's error
            // names the path), and `source()` goes on from the `io::Error`'s
            // own source rather than repeat it.
            Error::Io(e) => fmt::Display::fmt(e, f),
            Error::OutOfRange { dev, block } => {
                write!(f, "block {block} is past the end of {dev}")
            }
            Error::UnknownDevice => f.write_str("device not open in this cache (never opened, or closed)"),
            Error::Busy => f.write_str("a block is held by a guard or waited for, and was left as it is"),
            Error::WouldBlock => f.write_str("taking the block would wait: it is not resident, or is held"),
            Error::ReadOnly => f.write_str("the device is open read-only: it cannot be written"),
            Error::InvalidConfig(m) => write!(f, "invalid configuration: {m}"),
            Error::Closed => f.write_str("the cache is shut down or its owner thread has stopped"),
            // The first error is the `source()`, not part of this message.
            Error::Unwritten { blocks: 1, .. } => f.write_str("1 dirty block could not be written"),
            Error::Unwritten { blocks, .. } => {
                write!(f, "{blocks} dirty blocks could not be written")
            }
        }
    }
}

/// Each layer of the chain either displays the error below it or returns it
/// from `source()`, never both, so a report that walks the chain (`anyhow`'s
/// `{:#}`, for one) names each cause once.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => e.source(),
            Error::Unwritten { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

/// What failed (the message) and the error under it (the `source()`): the
/// payload of an `io::Error` that adds context to an OS error (the path an
/// open failed on, the size of a pool that could not be mapped) without
/// repeating it.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) message: String,
    pub(crate) source: io::Error,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Context {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
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
    /// An error that is not an OS error is kept as its message, so the
    /// message takes in its sources too: the copy has none.
    fn from(e: &io::Error) -> IoFailure {
        IoFailure {
            errno: e.raw_os_error(),
            kind: e.kind(),
            message: chain(e),
        }
    }
}

/// `e` and its sources, joined by ": ".
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        text.push_str(": ");
        text.push_str(&s.to_string());
        next = s.source();
    }
    text
}

impl From<IoFailure> for Error {
    fn from(f: IoFailure) -> Error {
        Error::Io(f.to_io())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_names_the_device_by_its_display() {
        let e = Error::OutOfRange {
            dev: DeviceId(3),
            block: 7,
        };
        assert_eq!(e.to_string(), "block 7 is past the end of device 3");
        assert_eq!(format!("{:?}", DeviceId(3)), "DeviceId(3)");
    }
}
