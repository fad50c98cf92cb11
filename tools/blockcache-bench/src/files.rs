//! The files a run reads: a temporary file it makes (filled with data, so
//! reads hit the disk rather than a hole) or the user's file or block
//! device; aligned buffers and O_DIRECT opens for the baselines.

use anyhow::{anyhow, bail, Context, Result};
use std::alloc::{self, Layout};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::ops::{Deref, DerefMut};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A zeroed, 4096-aligned heap buffer, as O_DIRECT needs.
pub struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: the buffer is uniquely owned plain memory.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// `len` zero bytes aligned to 4096 (len ≥ 1).
    pub fn new(len: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len.max(1), 4096).expect("sane size");
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, layout }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for layout.size() initialised bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we hold the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { alloc::dealloc(self.ptr, self.layout) }
    }
}

/// Open `path` with O_DIRECT (reading, and writing if `write`).
pub fn open_direct(path: &Path, write: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .with_context(|| format!("cannot open {} with O_DIRECT", path.display()))
}

/// Open `path` buffered.
pub fn open_buffered(path: &Path, write: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// Ask the kernel to drop the file's pages from the page cache, so a
/// buffered baseline starts as cold as the cache does.
pub fn drop_page_cache(file: &File) {
    // SAFETY: plain syscall on an open fd; failure only leaves pages cached.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// A file the run reads: the user's or a temporary one.
pub struct TestFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Whether this run made it (and removes it on drop).
    pub temporary: bool,
    _temp: Option<tempfile::TempPath>,
}

impl TestFile {
    /// Whole blocks of `block` bytes.
    pub fn blocks(&self, block: usize) -> u64 {
        self.bytes / block as u64
    }

    /// A temporary file of `bytes` in `dir`, filled with data and synced,
    /// its pages dropped from the page cache.
    pub fn temporary(dir: &Path, bytes: u64) -> Result<TestFile> {
        check_dir(dir)?;
        let tmp = tempfile::Builder::new()
            .prefix(".blockcache-bench-")
            .tempfile_in(dir)
            .with_context(|| format!("cannot make a temporary file in {}", dir.display()))?;
        fill(tmp.as_file(), bytes, dir)?;
        let path = tmp.path().to_path_buf();
        Ok(TestFile {
            path,
            bytes,
            temporary: true,
            _temp: Some(tmp.into_temp_path()),
        })
    }

    /// The user's file or block device: it must be readable (and writable
    /// when `write`), and hold at least `min_blocks` blocks.
    pub fn existing(path: &Path, write: bool, block: usize, min_blocks: u64) -> Result<TestFile> {
        let meta = std::fs::metadata(path).with_context(|| format!("--file {}", path.display()))?;
        let ft = meta.file_type();
        if !(ft.is_file() || ft.is_block_device()) {
            bail!("--file {}: not a regular file or block device", path.display());
        }
        let mut f = open_buffered(path, write).context("--file")?;
        let bytes = f
            .seek(SeekFrom::End(0))
            .with_context(|| format!("size of {}", path.display()))?;
        if bytes / (block as u64) < min_blocks {
            bail!(
                "--file {}: {bytes} bytes is less than the {min_blocks} blocks of {block} bytes this workload needs",
                path.display()
            );
        }
        Ok(TestFile {
            path: path.to_path_buf(),
            bytes,
            temporary: false,
            _temp: None,
        })
    }
}

fn check_dir(dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(dir).with_context(|| format!("directory {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    Ok(())
}

/// Write `bytes` of non-zero data (each 8 bytes: its offset) and sync.
fn fill(file: &File, bytes: u64, dir: &Path) -> Result<()> {
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut off = 0;
    while off < bytes {
        let n = CHUNK.min(bytes - off) as usize;
        for (i, w) in buf[..n].chunks_exact_mut(8).enumerate() {
            w.copy_from_slice(&(off + 8 * i as u64 + 1).to_le_bytes());
        }
        file.write_all_at(&buf[..n], off)
            .with_context(|| format!("writing a {bytes}-byte file in {}", dir.display()))?;
        off += n as u64;
    }
    file.sync_all().context("syncing the test file")?;
    drop_page_cache(file);
    Ok(())
}

/// The `devices` workload's files: `count` files of `bytes` each in a
/// temporary directory inside `dir`, removed on drop.
pub struct DeviceFiles {
    /// The files.
    pub paths: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl DeviceFiles {
    /// Make and fill the files.
    pub fn new(dir: &Path, count: usize, bytes: u64) -> Result<DeviceFiles> {
        check_dir(dir)?;
        let tmp = tempfile::Builder::new()
            .prefix(".blockcache-bench-devices-")
            .tempdir_in(dir)
            .with_context(|| format!("cannot make a directory in {}", dir.display()))?;
        let paths = (0..count)
            .map(|i| {
                let p = tmp.path().join(format!("dev{i:03}"));
                let f = File::create(&p).with_context(|| format!("cannot create {}", p.display()))?;
                fill(&f, bytes, dir)?;
                Ok(p)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(DeviceFiles { paths, _dir: tmp })
    }
}

/// Check that `path` can be written later (the --json and --plot outputs),
/// so a long run does not end in an error.
pub fn check_writable(path: &Path, flag: &str) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map(drop)
        .map_err(|e| anyhow!("{flag} {}: {e}", path.display()))
}
