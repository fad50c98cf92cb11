//! Devices: opening a file or block device for direct I/O, its size, and
//! the engines that do its I/O.

#[cfg(test)]
mod conformance;
pub mod engine;
mod runs;
pub(crate) mod sync;
mod transfer;
pub(crate) mod uring;

use crate::error::Error;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// An open device: a regular file or a block device, opened with O_DIRECT
/// where its filesystem accepts it.
#[derive(Debug)]
pub struct DeviceFile {
    file: File,
    path: PathBuf,
    read_only: bool,
    direct: bool,
    block_device: bool,
    logical_block_size: u32,
    size_bytes: u64,
}

/// A block device's size in bytes. The `libc` crate (0.2) has `BLKSSZGET`
/// but not this one, so it is encoded here as `<linux/fs.h>` defines it,
/// `_IOR(0x12, 114, size_t)`: the read direction (2), the argument's size,
/// the type and the number, laid out as in `<asm-generic/ioctl.h>`
/// (0x8008_1272 on x86_64), except that mips, powerpc and sparc put the
/// direction bits at 29 instead of 30 (their `<asm/ioctl.h>`).
const BLKGETSIZE64: libc::Ioctl = {
    const DIR_SHIFT: u32 = if cfg!(any(
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "powerpc",
        target_arch = "powerpc64",
        target_arch = "sparc",
        target_arch = "sparc64"
    )) {
        29
    } else {
        30
    };
    let size = size_of::<libc::size_t>() as u32;
    // `as`: `Ioctl` is a signed int on musl, whose ioctl takes the same
    // bits as an `int`.
    ((2 << DIR_SHIFT) | (size << 16) | (0x12 << 8) | 114) as libc::Ioctl
};

impl DeviceFile {
    /// Open `path` for block I/O. O_DIRECT is used where the filesystem
    /// accepts it (not tmpfs, for one); buffered I/O otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] for a missing or forbidden path, or one whose size
    /// cannot be read (the OS error is the `source()`); `Io` with kind
    /// `InvalidInput` for a directory, FIFO, socket or character device.
    pub fn open(path: &Path, read_only: bool) -> Result<DeviceFile, Error> {
        // Refuse what is not a file or block device before opening it: an
        // open of a FIFO would block until a writer appears.
        let meta = std::fs::metadata(path).map_err(|e| with_path(e, "cannot open", path))?;
        let ft = meta.file_type();
        if !(ft.is_file() || ft.is_block_device()) {
            let what = if ft.is_dir() {
                "a directory"
            } else if ft.is_fifo() {
                "a FIFO"
            } else if ft.is_char_device() {
                "a character device"
            } else if ft.is_socket() {
                "a socket"
            } else {
                "not a regular file or block device"
            };
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is {what}: only files and block devices can be cached",
                    path.display()
                ),
            )));
        }
        let open = |direct: bool| {
            let mut o = OpenOptions::new();
            o.read(true).write(!read_only);
            if direct {
                o.custom_flags(libc::O_DIRECT);
            }
            o.open(path)
        };
        let (file, direct) = match open(true) {
            Ok(f) => (f, true),
            // EINVAL: the filesystem has no O_DIRECT (tmpfs, some FUSE).
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                (open(false).map_err(|e| with_path(e, "cannot open", path))?, false)
            }
            Err(e) => return Err(Error::Io(with_path(e, "cannot open", path))),
        };
        let block_device = ft.is_block_device();
        let sizes = if block_device {
            ioctl_u64(&file, BLKGETSIZE64)
                .and_then(|size| Ok((size, ioctl_int(&file, libc::BLKSSZGET)? as u32)))
        } else {
            let align = if direct { dio_alignment(&file) } else { 1 };
            file.metadata().map(|m| (m.len(), align))
        };
        let (size_bytes, logical_block_size) =
            sizes.map_err(|e| with_path(e, "cannot read the size of", path))?;
        Ok(DeviceFile {
            file,
            path: path.to_path_buf(),
            read_only,
            direct,
            block_device,
            logical_block_size,
            size_bytes,
        })
    }

    /// The path it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw descriptor, for engines.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Opened without write access.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Opened with O_DIRECT.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// A block device (as opposed to a regular file).
    pub fn is_block_device(&self) -> bool {
        self.block_device
    }

    /// The alignment direct I/O needs on this device, in bytes (1 when
    /// buffered).
    pub fn logical_block_size(&self) -> u32 {
        self.logical_block_size
    }

    /// Size in bytes when opened.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
}

/// `e`, as met by `what` (`"cannot open"`) on `path`: the new error says
/// what failed on which path, keeps the kind, and has the original error
/// (with its `raw_os_error`) as its `source()`. Its own message does not
/// repeat the source's, so a report walking the chain says each once:
/// "cannot open /x: No such file or directory (os error 2)".
pub(crate) fn with_path(e: io::Error, what: &'static str, path: &Path) -> io::Error {
    let message = format!("{what} {}", path.display());
    io::Error::new(e.kind(), crate::error::Context { message, source: e })
}

fn ioctl_u64(file: &File, request: libc::Ioctl) -> io::Result<u64> {
    let mut v: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points
    // at a live local.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request, &mut v as *mut u64) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

fn ioctl_int(file: &File, request: libc::Ioctl) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points at
    // a live local.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request, &mut v as *mut libc::c_int) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// The offset alignment O_DIRECT needs on a regular file: statx's
/// `stx_dio_offset_align` (Linux 6.1+), or 512 where the kernel does not say.
fn dio_alignment(file: &File) -> u32 {
    // SAFETY: statx is a plain struct of integers; all-zero is valid.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: empty path + AT_EMPTY_PATH stats the fd itself; stx is a live
    // local the kernel fills.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc == 0 && stx.stx_mask & libc::STATX_DIOALIGN != 0 && stx.stx_dio_offset_align != 0 {
        stx.stx_dio_offset_align
    } else {
        512
    }
}

#[cfg(test)]
mod tests {
    /// The encoding gives the value `<linux/fs.h>` has on x86_64.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn blkgetsize64_is_the_kernel_headers_value() {
        assert_eq!(super::BLKGETSIZE64, 0x8008_1272);
    }
}
