//! The transfer rules both built-in engines share: when a short transfer
//! is continued and when it is an error.

use super::engine::IoKind;
use super::DeviceFile;
use std::io;

/// The error for a read or write the owner sent without a buffer.
pub(super) fn no_buffer() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "read or write without a buffer")
}

/// Whether a short transfer that stopped at `done` bytes can only be the end
/// of the file. Direct I/O moves whole logical blocks except at EOF, so a
/// read that stopped off that alignment hit EOF; continuing it would only
/// earn EINVAL for the misaligned remainder and hide the real cause.
pub(super) fn ends_at_eof(device: &DeviceFile, kind: IoKind, done: usize) -> bool {
    kind == IoKind::Read && device.is_direct() && !done.is_multiple_of(device.logical_block_size() as usize)
}

/// The error for a transfer that cannot be finished after `done` of `len`
/// bytes at `offset`. Never success: the cache would take a torn block for
/// data (one of LVM bcache's bugs).
pub(super) fn short_transfer(kind: IoKind, offset: u64, done: usize, len: usize) -> io::Error {
    let end = offset + done as u64;
    match kind {
        IoKind::Read => io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("end of file at byte {end}: read of {len} bytes at offset {offset} got {done}"),
        ),
        _ => io::Error::new(
            io::ErrorKind::WriteZero,
            format!(
                "device took no more data at byte {end}: write of {len} bytes at offset {offset} sent {done}"
            ),
        ),
    }
}
