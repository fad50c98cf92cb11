//! Paths the cache cannot or may not open are `Err(Io)` with a clear
//! message naming the path, never a panic, and the cache stays usable: a
//! missing file, a directory, a FIFO (without blocking), /dev/null, files
//! the caller may not open (permission bits, an immutable file, a
//! read-only filesystem, no descriptor left), and paths that are not what
//! they seem (symlinks, sockets, NUL bytes, overlong names, other
//! character devices).
//!
//! Root bypasses permission bits, so as root the permission test runs its
//! checks on a thread whose file access is user `nobody`'s. The
//! immutable-file and read-only-mount tests need root (and a filesystem
//! with the immutable attribute, a loop device) and skip with a printed
//! reason otherwise. The descriptor limit is per process, so that test
//! re-runs itself in a child process of the test binary and lowers it
//! there.
//!
//! Nothing here depends on other tests or processes: every file and
//! directory is a fresh temporary one, no test changes what the whole
//! process shares (its credentials, its descriptor limit), and no test
//! holds a file on a loop filesystem open for writing, which a process
//! forked meanwhile by another test would inherit until it execs.

use crate::common;
use blockcache::{EngineKind, Error};
use common::loopfs::LoopFs;
use common::*;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::{assert_io, still_reads_a_fresh_file, still_works};

const B: usize = 4096;
const BU: u64 = B as u64;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `r` is `Err(Io)` of `kind` whose message names `path`.
#[track_caller]
fn assert_io_kind<T: std::fmt::Debug>(r: Result<T, Error>, kind: ErrorKind, path: &Path, what: &str) {
    match r {
        Err(Error::Io(e)) if e.kind() == kind => {
            let msg = Error::Io(e).to_string();
            let name = path.file_name().map(|n| n.to_string_lossy().to_string());
            if let Some(name) = name.filter(|n| !n.is_empty() && n.len() < 200) {
                assert!(msg.contains(&name), "{what}: message names no path: {msg}");
            }
        }
        other => panic!("{what}: want Err(Io({kind:?})), got {other:?}"),
    }
}

// ---- permission ----------------------------------------------------------

/// Makes the calling thread's filesystem uid and gid `nobody`'s (65534).
/// The kernel checks file access against those, and a filesystem uid
/// other than 0 loses the capabilities that override permission bits.
/// Credentials are per thread in the kernel: these raw system calls
/// (unlike glibc's set*id wrappers, which change every thread) change only
/// the calling thread's, and so those of the threads it starts later.
fn become_nobody_on_this_thread() {
    const NOBODY: libc::c_long = 65534;
    // SAFETY: setfsgid and setfsuid take one integer and change nothing but
    // the calling thread's credentials.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, NOBODY);
        libc::syscall(libc::SYS_setfsuid, NOBODY);
    }
    // They return the previous id, never an error; an invalid id (-1)
    // changes nothing, so this reads the ids back.
    // SAFETY: as above.
    let now = unsafe {
        (
            libc::syscall(libc::SYS_setfsuid, -1 as libc::c_long),
            libc::syscall(libc::SYS_setfsgid, -1 as libc::c_long),
        )
    };
    assert_eq!(now, (NOBODY, NOBODY), "filesystem uid and gid");
}

/// The checks, run on a thread whose file access is not root's.
fn permission_checks(dir: &Path) {
    let secret = dir.join("secret"); // 0600, someone else's
    let readable = dir.join("readable"); // 0444
    for kind in engines() {
        let cache = cache(kind, B, 4);
        for (path, ro) in [(&secret, false), (&secret, true), (&readable, false)] {
            let r = if ro {
                cache.open_read_only(path)
            } else {
                cache.open(path)
            };
            assert_io_kind(
                r,
                ErrorKind::PermissionDenied,
                path,
                &format!("{kind:?} {} read_only={ro}", path.display()),
            );
        }
        // Read-only access to a readable file works.
        let dev = cache.open_read_only(&readable).unwrap();
        assert!(cache.read(dev, 1).unwrap()[..] == file_bytes(&readable, BU, B)[..]);
        assert!(matches!(cache.write(dev, 1), Err(Error::ReadOnly)));
        cache.close(dev).unwrap();
        // /var/tmp is writable by anyone: the cache still works.
        still_reads_a_fresh_file(&cache, &format!("{kind:?} without permission"));
    }
}

#[test]
fn a_file_without_permission_is_an_error() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, mode) in [("secret", 0o600), ("readable", 0o444)] {
        let p = dir.path().join(name);
        let data: Vec<u8> = (0..8 * BU).map(pattern).collect();
        std::fs::write(&p, data).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    if !is_root() {
        return permission_checks(dir.path());
    }
    // Root ignores permission bits: run the checks as `nobody`, on a thread
    // of their own (no other test's thread is affected).
    let path = dir.path().to_path_buf();
    let checks = std::thread::spawn(move || {
        become_nobody_on_this_thread();
        permission_checks(&path)
    });
    if let Err(panic) = checks.join() {
        std::panic::resume_unwind(panic);
    }
}

/// The immutable attribute (`FS_IMMUTABLE_FL`, the `i` of `chattr`). The
/// `libc` crate (0.2) does not export it; the value is `<linux/fs.h>`'s.
const FS_IMMUTABLE_FL: libc::c_int = 0x10;

/// Sets or clears the immutable attribute of `file`, as `chattr +i` or
/// `chattr -i` would, without starting a process.
fn set_immutable(file: &std::fs::File, on: bool) -> std::io::Result<()> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(file);
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int through the pointer, which
    // points at a live local.
    if unsafe { libc::ioctl(fd, libc::FS_IOC_GETFLAGS, &mut flags) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if on {
        flags |= FS_IMMUTABLE_FL;
    } else {
        flags &= !FS_IMMUTABLE_FL;
    }
    // SAFETY: FS_IOC_SETFLAGS reads one int through the pointer, which
    // points at a live local.
    if unsafe { libc::ioctl(fd, libc::FS_IOC_SETFLAGS, &flags) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Clears the immutable attribute on drop, so the file can be removed.
struct Immutable<'a>(&'a std::fs::File);

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        if let Err(e) = set_immutable(self.0, false) {
            eprintln!("warning: cannot clear the immutable attribute: {e}");
        }
    }
}

#[test]
fn an_immutable_file_cannot_be_opened_for_writing_even_by_root() {
    let f = patterned_file(8 * BU);
    if let Err(e) = set_immutable(f.as_file(), true) {
        return println!("skipping: cannot make a file immutable: {e}");
    }
    let _undo = Immutable(f.as_file());
    for kind in engines() {
        let cache = cache(kind, B, 4);
        assert_io_kind(
            cache.open(f.path()),
            ErrorKind::PermissionDenied,
            f.path(),
            &format!("{kind:?}: immutable, read-write"),
        );
        let dev = cache.open_read_only(f.path()).unwrap();
        assert!(cache.read(dev, 7).unwrap()[..] == file_bytes(f.path(), 7 * BU, B)[..]);
        still_reads_a_fresh_file(&cache, &format!("{kind:?}"));
    }
}

#[test]
fn a_file_on_a_read_only_filesystem_cannot_be_opened_for_writing() {
    let data: Vec<u8> = (0..8 * BU).map(pattern).collect();
    let fs = match LoopFs::with_files(8, true, &[("data", &data)]) {
        Ok(fs) => fs,
        Err(reason) => return println!("skipping: {reason}"),
    };
    let path = fs.file("data");
    for kind in engines() {
        let cache = cache(kind, B, 4);
        assert_io_kind(
            cache.open(&path),
            ErrorKind::ReadOnlyFilesystem,
            &path,
            &format!("{kind:?}: read-only mount"),
        );
        let dev = cache.open_read_only(&path).unwrap();
        assert!(cache.read(dev, 5).unwrap()[..] == data[5 * B..6 * B], "{kind:?}");
        cache.close(dev).unwrap();
        still_reads_a_fresh_file(&cache, &format!("{kind:?}"));
    }
}

// ---- no descriptor left ----------------------------------------------------

const FD_CHILD: &str = "BLOCKCACHE_TEST_FD_LIMIT";

/// Runs `f` with the soft RLIMIT_NOFILE set so that exactly `free` more
/// descriptors can be opened, then puts the limit back. The kernel hands
/// out the lowest free number and refuses numbers at or past the limit, so
/// a limit of the lowest free number plus `free` allows exactly `free`
/// more, however the open ones are numbered, as long as no other thread
/// opens or closes descriptors meanwhile.
fn with_free_fds<T>(free: u64, f: impl FnOnce() -> T) -> T {
    let lowest = {
        let probe = std::fs::File::open("/dev/null").expect("open /dev/null");
        std::os::fd::AsRawFd::as_raw_fd(&probe) as u64
    };
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a pointer to a live local.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
    let low = libc::rlimit {
        rlim_cur: lowest + free,
        ..old
    };
    // SAFETY: setrlimit reads one rlimit through a pointer to a live local.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
    let out = f();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) }, 0);
    out
}

/// The checks, run in a process of their own: the limit is per process,
/// and no other test may open descriptors while it is low.
fn fd_limit_checks() {
    for kind in engines() {
        let cache = cache(kind, B, 4);
        let f = patterned_file(8 * BU);
        let name = f.path().display().to_string();
        // Allow 0, 1, 2, ... more descriptors until the open succeeds: each
        // step that fails is stopped by one more descriptor the open needs,
        // first the file's, then those of the engine.
        let mut opened = None;
        for free in 0..16 {
            let what = format!("{kind:?} with {free} descriptors free");
            match with_free_fds(free, || cache.open(f.path())) {
                Ok(dev) => {
                    cache.close(dev).unwrap();
                    opened = Some(free);
                    break;
                }
                Err(Error::Io(e)) => {
                    let os = std::error::Error::source(&e)
                        .and_then(|s| s.downcast_ref::<std::io::Error>())
                        .unwrap_or_else(|| panic!("{what}: no OS error as source: {e:?}"));
                    assert_eq!(os.raw_os_error(), Some(libc::EMFILE), "{what}: {e:?}");
                    assert_eq!(e.kind(), os.kind(), "{what}: kind kept");
                    let msg = Error::Io(e).to_string();
                    assert!(msg.contains(&name), "{what}: message names no path: {msg}");
                }
                Err(other) => panic!("{what}: want Err(Io(EMFILE)), got {other:?}"),
            }
        }
        let opened = opened.unwrap_or_else(|| panic!("{kind:?}: never opened"));
        assert!(opened >= 1, "{kind:?}: opened without a descriptor");
        if kind == EngineKind::Uring {
            // The ring: a failure after the file opened.
            assert!(opened >= 2, "{kind:?}: opened with only {opened} descriptors");
        }
        // At the usual limit the same cache opens it again and reads it.
        let dev = cache.open(f.path()).unwrap();
        assert!(cache.read(dev, 5).unwrap()[..] == file_bytes(f.path(), 5 * BU, B)[..]);
        cache.close(dev).unwrap();
        still_reads_a_fresh_file(&cache, &format!("{kind:?} after EMFILE"));
    }
}

#[test]
fn an_open_without_a_descriptor_left_names_the_path() {
    if std::env::var_os(FD_CHILD).is_some() {
        return fd_limit_checks();
    }
    let name = test_name(module_path!(), "an_open_without_a_descriptor_left_names_the_path");
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &name, "--test-threads=1"])
        .env(FD_CHILD, "1")
        .output()
        .expect("run the test binary");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "child with a low descriptor limit: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- paths that are not files -----------------------------------------------

#[test]
fn paths_that_are_not_files_or_block_devices_are_io_errors() {
    for kind in engines() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let missing = dir.path().join("missing");
        let fifo = dir.path().join("fifo");
        let ok = Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
        assert!(ok.success(), "mkfifo failed");
        let cache = cache(kind, B, 4);
        for read_only in [false, true] {
            let open = |p: &Path| {
                if read_only {
                    cache.open_read_only(p)
                } else {
                    cache.open(p)
                }
            };
            let what = format!("{kind:?} read_only={read_only}");
            let e = assert_io(open(&missing), &format!("{what} missing"));
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{what}: {e}");
            assert!(e.to_string().contains("missing"), "names the path: {e}");
            // The OS error itself is the source, errno and all.
            let os = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .and_then(|s| s.raw_os_error());
            assert_eq!(os, Some(libc::ENOENT), "{what}: {e}");
            assert_io(open(dir.path()), &format!("{what} directory"));
            // Must not block waiting for a writer.
            assert_io(open(&fifo), &format!("{what} FIFO"));
            assert_io(open(Path::new("/dev/null")), &format!("{what} /dev/null"));
        }
        let f = patterned_file(4 * BU);
        let dev = cache.open(f.path()).unwrap();
        still_works(&cache, dev, f.path(), 2, &format!("{kind:?}"));
    }
}

// ---- paths that are not what they seem -------------------------------------

#[test]
fn symlinks_sockets_nul_bytes_and_overlong_paths_are_errors() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let target = patterned_file(4 * BU);
    let to_file = dir.path().join("to-file");
    let to_dir = dir.path().join("to-dir");
    let dangling = dir.path().join("dangling");
    let socket = dir.path().join("socket");
    std::os::unix::fs::symlink(target.path(), &to_file).unwrap();
    std::os::unix::fs::symlink(dir.path(), &to_dir).unwrap();
    std::os::unix::fs::symlink(dir.path().join("nothing"), &dangling).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let nul = Path::new(std::ffi::OsStr::from_bytes(b"/var/tmp/a\0b"));
    let long = dir.path().join("x".repeat(300));
    let deep = dir.path().join("d/".repeat(3000));
    for kind in engines() {
        let cache = cache(kind, B, 4);
        for read_only in [false, true] {
            let open = |p: &Path| {
                if read_only {
                    cache.open_read_only(p)
                } else {
                    cache.open(p)
                }
            };
            let what = |s: &str| format!("{kind:?} read_only={read_only}: {s}");
            assert_io_kind(
                open(&dangling),
                ErrorKind::NotFound,
                &dangling,
                &what("dangling link"),
            );
            assert_io_kind(
                open(&to_dir),
                ErrorKind::InvalidInput,
                &to_dir,
                &what("link to a dir"),
            );
            assert_io_kind(open(&socket), ErrorKind::InvalidInput, &socket, &what("socket"));
            assert_io_kind(
                open(nul),
                ErrorKind::InvalidInput,
                Path::new(""),
                &what("NUL byte"),
            );
            assert_io_kind(
                open(Path::new("")),
                ErrorKind::NotFound,
                Path::new(""),
                &what("empty"),
            );
            for p in [&long, &deep] {
                match open(p) {
                    // The error says what failed on which path; the OS
                    // error, strerror's text and errno, is its source.
                    Err(Error::Io(e)) => {
                        let os = std::error::Error::source(&e)
                            .and_then(|s| s.downcast_ref::<std::io::Error>())
                            .unwrap_or_else(|| panic!("no OS error as source: {e:?}"));
                        assert!(os.to_string().contains("too long"), "{e}: {os}");
                        assert_eq!(os.raw_os_error(), Some(libc::ENAMETOOLONG), "{e}: {os}");
                    }
                    other => panic!("{}: {other:?}", what("overlong path")),
                }
            }
            for c in ["/dev/zero", "/dev/urandom", "/dev/full"] {
                let p = Path::new(c);
                if p.exists() {
                    assert_io_kind(open(p), ErrorKind::InvalidInput, p, &what(c));
                }
            }
            // A link to a file is that file.
            let dev = open(&to_file).unwrap();
            assert_eq!(cache.device_blocks(dev).unwrap(), 4);
            assert!(cache.read(dev, 3).unwrap()[..] == file_bytes(target.path(), 3 * BU, B)[..]);
            cache.close(dev).unwrap();
        }
        still_reads_a_fresh_file(&cache, &format!("{kind:?}"));
    }
}
