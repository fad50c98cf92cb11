//! A small, real ext4 filesystem for fault tests: an image file in
//! /var/tmp, attached to a loop device, formatted and mounted on a
//! temporary directory. Needs root, /dev/loop-control, `losetup`,
//! `mkfs.ext4` and `mount`; [`LoopFs::new`] returns the reason to skip
//! when any is missing. Dropping it unmounts and detaches, also when the
//! test fails (files on it must be closed first: bind it before the cache
//! so it drops after it).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// `losetup --find` picks a free device, then configures it: one at a time.
/// Every test of this binary that runs `losetup --find` holds it meanwhile.
pub static ATTACH: Mutex<()> = Mutex::new(());

pub struct LoopFs {
    dev: String,
    mounted: bool,
    /// The mount point (removed after the unmount, by field drop order).
    mnt: tempfile::TempDir,
    _image: tempfile::NamedTempFile,
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl LoopFs {
    /// A fresh, empty ext4 of `mib` MiB (4 KiB blocks, no reserved blocks),
    /// mounted read-write, or read-only when `read_only`. `Err` is the
    /// reason to skip.
    pub fn new(mib: u64, read_only: bool) -> Result<LoopFs, String> {
        LoopFs::with_files(mib, read_only, &[])
    }

    /// [`LoopFs::new`], holding `files` (name and contents) from the
    /// start: `mkfs.ext4 -d` writes them, so a read-only filesystem with
    /// data needs no remount, and this process never holds a file on it
    /// open for writing (a remount to read-only fails with EBUSY while any
    /// process does, including a child forked by another test meanwhile).
    pub fn with_files(mib: u64, read_only: bool, files: &[(&str, &[u8])]) -> Result<LoopFs, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root (needs losetup and mount)".into());
        }
        if !Path::new("/dev/loop-control").exists() {
            return Err("no /dev/loop-control".into());
        }
        let image = tempfile::NamedTempFile::new_in("/var/tmp").map_err(|e| e.to_string())?;
        image.as_file().set_len(mib << 20).map_err(|e| e.to_string())?;
        let mnt = tempfile::tempdir_in("/var/tmp").map_err(|e| e.to_string())?;
        let dev = {
            let _one = ATTACH.lock().unwrap_or_else(|e| e.into_inner());
            run(Command::new("losetup")
                .arg("--find")
                .arg("--show")
                .arg(image.path()))?
        };
        let mut fs = LoopFs {
            dev,
            mounted: false,
            mnt,
            _image: image,
        };
        let contents = tempfile::tempdir_in("/var/tmp").map_err(|e| e.to_string())?;
        for (name, data) in files {
            std::fs::write(contents.path().join(name), data).map_err(|e| e.to_string())?;
        }
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-m", "0"])
            .args(["-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg("-d")
            .arg(contents.path())
            .arg(&fs.dev))?;
        let mut mount = Command::new("mount");
        if read_only {
            mount.args(["-o", "ro"]);
        }
        run(mount.arg(&fs.dev).arg(fs.mnt.path()))?;
        fs.mounted = true;
        Ok(fs)
    }

    /// `name` inside the filesystem.
    pub fn file(&self, name: &str) -> PathBuf {
        self.mnt.path().join(name)
    }

    /// Blocks available to writers right now (statvfs `f_bavail`).
    pub fn blocks_available(&self) -> u64 {
        let c = std::ffi::CString::new(self.mnt.path().as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statvfs is plain integers: all-zero is a valid value.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: the path is a live NUL-terminated string and `st` a live
        // local the kernel fills.
        let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
        assert_eq!(rc, 0, "statvfs: {}", io::Error::last_os_error());
        st.f_bavail as u64
    }

    /// Fill the filesystem with a file `name` until writes fail with
    /// ENOSPC, syncing and trying again until nothing more fits (delayed
    /// allocation may give space back at the sync), then take the blocks
    /// still free with fallocate: afterwards statvfs counts none free.
    /// Returns bytes taken.
    pub fn fill(&self, name: &str) -> u64 {
        let path = self.file(name);
        let mut f = std::fs::File::create(&path).expect("create the filler");
        let chunk = vec![0xf1u8; 1 << 20];
        let mut total = 0;
        for _round in 0..8 {
            let mut added = 0;
            for size in [1 << 20, 64 << 10, 4 << 10, 512] {
                loop {
                    match f.write(&chunk[..size]) {
                        Ok(0) => break,
                        Ok(n) => added += n as u64,
                        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                        Err(e) => panic!("filling {}: {e}", path.display()),
                    }
                }
            }
            f.sync_all().expect("sync the filler");
            total += added;
            if added == 0 {
                break;
            }
        }
        // A buffered write reserves room for the metadata it might need,
        // so the last blocks can refuse it while statvfs still counts them
        // free, and a write into a hole would then find one. Take what is
        // left with fallocate, in files of their own: an extent held in
        // the inode needs no block beyond the data.
        for rest in 0..64 {
            let left = self.blocks_available();
            if left == 0 {
                break;
            }
            let f = std::fs::File::create(self.file(&format!("{name}.rest{rest}")))
                .expect("create a filler for the last blocks");
            let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
            // SAFETY: fallocate on a live descriptor; no memory is passed.
            let whole = unsafe { libc::fallocate(fd, 0, 0, (left * 4096) as libc::off_t) };
            // SAFETY: as above.
            if whole != 0 && unsafe { libc::fallocate(fd, 0, 0, 4096) } != 0 {
                break;
            }
            f.sync_all().expect("sync the filler");
            total += left * 4096;
        }
        assert_eq!(
            self.blocks_available(),
            0,
            "{name}: blocks still free after filling"
        );
        total
    }

    /// Delete `name` and sync the filesystem, so its blocks are free. It is
    /// truncated first: an unlinked file keeps its blocks while any process
    /// still has it open, and a process forked by another test while it was
    /// being written holds it until that process execs.
    pub fn remove(&self, name: &str) {
        let rest = (0..64).map(|n| self.file(&format!("{name}.rest{n}")));
        for path in std::iter::once(self.file(name)).chain(rest.filter(|p| p.exists())) {
            let f = std::fs::OpenOptions::new().write(true).open(&path);
            f.and_then(|f| f.set_len(0)).expect("truncate the filler");
            std::fs::remove_file(&path).expect("remove the filler");
        }
        let dir = std::fs::File::open(self.mnt.path()).unwrap();
        // SAFETY: syncfs on a live descriptor.
        let rc = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
        assert_eq!(rc, 0, "syncfs: {}", io::Error::last_os_error());
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = run(Command::new("umount").arg(self.mnt.path())) {
                eprintln!("warning: {e}; unmounting lazily");
                let _ = run(Command::new("umount").arg("-l").arg(self.mnt.path()));
            }
        }
        if let Err(e) = run(Command::new("losetup").arg("-d").arg(&self.dev)) {
            eprintln!("warning: {e}");
        }
    }
}
