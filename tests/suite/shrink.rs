//! A device that shrinks under the cache (the file truncated after
//! `open`, or a loop device's capacity reduced): a block now past the end
//! reads short or not at all, and that is an error, never the stale or
//! zero-filled buffer presented as data. Nothing is cached for it, a retry
//! reads again, and writes past the end are not lost.
//!
//! Every test runs on every engine from `engines()`.

use crate::common;
use blockcache::{EngineKind, Error};
use common::fault::wait_until;
use common::*;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

const BS: usize = 4096;
const BU: u64 = BS as u64;

fn original(b: u64) -> Vec<u8> {
    (b * BU..(b + 1) * BU).map(pattern).collect()
}

/// `r` is `Err(Io)` of kind UnexpectedEof (a read that hit the end).
#[track_caller]
fn assert_eof<T: std::fmt::Debug>(r: Result<T, Error>, what: &str) {
    match r {
        Err(Error::Io(e)) if e.kind() == ErrorKind::UnexpectedEof => {}
        other => panic!("{what}: want Err(Io(UnexpectedEof)), got {other:?}"),
    }
}

#[test]
fn a_truncated_file_reads_past_its_new_end_as_errors() {
    for kind in engines() {
        let f = patterned_file(32 * BU);
        let cache = cache(kind, BS, 8);
        let dev = cache.open(f.path()).unwrap();
        drop(cache.read(dev, 15).unwrap()); // resident and clean
                                            // The file now ends 100 bytes into block 10.
        f.as_file().set_len(10 * BU + 100).unwrap();
        assert_eq!(cache.device_blocks(dev).unwrap(), 32, "{kind:?}: size at open");
        let what = |s: &str| format!("{kind:?}: {s}");
        let before = cache.stats();

        // Inside the new end: unaffected.
        assert!(cache.read(dev, 9).unwrap()[..] == original(9)[..], "{kind:?}");
        // A short read (100 bytes, then EOF) and a read wholly past the end.
        assert_eof(cache.read(dev, 10), &what("read of the partial block"));
        assert_eof(cache.read(dev, 20), &what("read past the end"));
        assert_eof(cache.write(dev, 20), &what("write (reads first) past the end"));
        // Nothing was cached for them: a retry reads again and fails again.
        assert!(
            matches!(cache.try_read(dev, 20), Err(Error::WouldBlock)),
            "{kind:?}: a failed read left block 20 resident"
        );
        assert_eof(cache.read(dev, 20), &what("retry"));
        // A failed prefetch caches nothing either: once its read has failed
        // (the fifth error), a get reads again.
        cache.prefetch(dev, 21);
        wait_until(|| cache.stats().io_errors == before.io_errors + 5);
        assert_eof(cache.read(dev, 21), &what("read after a prefetch past the end"));
        // Byte helpers: the edge pieces need a read.
        let mut buf = vec![0u8; 2 * BS];
        assert_eof(
            cache.read_bytes(dev, 9 * BU + 10, &mut buf),
            &what("read_bytes across the end"),
        );
        assert_eof(
            cache.write_bytes(dev, 20 * BU + 10, &[1; 10]),
            &what("write_bytes past the end"),
        );
        // The resident block was read before the truncation; once dropped,
        // it is not served again.
        cache.invalidate(dev, 15).unwrap();
        assert_eof(cache.read(dev, 15), &what("read of a dropped block"));

        let s = cache.stats();
        let failed_reads = 10; // 10, 20, 20 (write), 20, 21 (prefetch), 21, 10, 20, 15
        assert_eq!(
            s.io_errors - before.io_errors,
            failed_reads - 1,
            "{kind:?}: every failed read counted once: {s:?}"
        );
        assert_eq!(
            s.reads_issued - before.reads_issued,
            failed_reads,
            "{kind:?}: block 9 and each failed read issued once: {s:?}"
        );

        // Writes past the end are not lost: they extend the file.
        cache.zeroed(dev, 25).unwrap().copy_from_slice(&original(3));
        cache.write_bytes(dev, 24 * BU, &[0xee; BS]).unwrap();
        cache.flush().unwrap();
        assert_eq!(std::fs::metadata(f.path()).unwrap().len(), 26 * BU, "{kind:?}");
        assert!(
            file_bytes(f.path(), 25 * BU, BS) == original(3),
            "{kind:?}: block 25"
        );
        assert!(
            file_bytes(f.path(), 24 * BU, BS) == [0xee; BS],
            "{kind:?}: block 24"
        );
        // And block 20 is a hole in the file now: it reads as the file's zeros.
        assert!(
            cache.read(dev, 20).unwrap().iter().all(|&x| x == 0),
            "{kind:?}: block 20"
        );

        // Truncated to nothing: every uncached block fails.
        cache.invalidate_device(dev).unwrap();
        f.as_file().set_len(0).unwrap();
        for b in [0u64, 9, 31] {
            assert_eof(cache.read(dev, b), &what(&format!("empty file, block {b}")));
        }
        cache.shutdown().unwrap();
    }
}

/// The owner serves many waiters on a block whose read comes back short.
#[test]
fn every_waiter_on_a_short_read_gets_the_error() {
    const WAITERS: usize = 6;
    for kind in engines() {
        let f = patterned_file(32 * BU);
        let cache = cache(kind, BS, 8);
        let dev = cache.open(f.path()).unwrap();
        f.as_file().set_len(4 * BU + 512).unwrap();
        let hs: Vec<_> = (0..WAITERS)
            .map(|i| {
                let c = cache.clone();
                std::thread::spawn(move || {
                    if i % 2 == 0 {
                        c.read(dev, 4).map(|g| g.to_vec())
                    } else {
                        c.write(dev, 4).map(|g| g.to_vec())
                    }
                })
            })
            .collect();
        for h in hs {
            assert_eof(h.join().unwrap(), &format!("{kind:?}: waiter"));
        }
        let s = cache.stats();
        assert!(
            s.reads_issued >= 1 && s.reads_issued <= WAITERS as u64,
            "{kind:?}: {s:?}"
        );
        assert_eq!(s.io_errors, s.reads_issued, "{kind:?}: every read failed: {s:?}");
        // Still usable.
        assert!(cache.read(dev, 3).unwrap()[..] == original(3)[..], "{kind:?}");
    }
}

// ---- a block device whose capacity shrinks ---------------------------------

/// A loop device over a file, detached on drop.
struct Loop(PathBuf);

impl Loop {
    fn attach(file: &Path) -> Result<Loop, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/loop-control").exists() {
            return Err("needs root and /dev/loop-control".into());
        }
        let out = {
            // One `losetup --find` at a time (see `ATTACH`).
            let _one = common::loopfs::ATTACH.lock().unwrap_or_else(|e| e.into_inner());
            Command::new("losetup")
                .args(["--find", "--show"])
                .arg(file)
                .output()
                .map_err(|e| format!("cannot run losetup: {e}"))?
        };
        if !out.status.success() {
            return Err(format!(
                "losetup: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Loop(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())))
    }

    /// Make the device's size follow its backing file's.
    fn set_capacity(&self) {
        let st = Command::new("losetup").arg("-c").arg(&self.0).status().unwrap();
        assert!(st.success(), "losetup -c");
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

fn block_device_shrinks(kind: EngineKind, f: &tempfile::NamedTempFile, lo: &Loop) {
    const MB: u64 = 1 << 20;
    let cache = cache(kind, BS, 8);
    let dev = cache.open(&lo.0).unwrap();
    let blocks = cache.device_blocks(dev).unwrap();
    assert_eq!(blocks, 4 * MB / BU, "{kind:?}");
    f.as_file().set_len(2 * MB).unwrap();
    lo.set_capacity();
    let past = 3 * MB / BU;
    assert_eof(
        cache.read(dev, past),
        &format!("{kind:?}: read past the shrunk device"),
    );
    assert!(cache.read(dev, 5).unwrap()[..] == original(5)[..], "{kind:?}");
    // A write past the end cannot land: flush fails, the block stays dirty.
    cache.zeroed(dev, past).unwrap().fill(0x3c);
    // (The kernel refuses a block device write past its end with ENOSPC.)
    match cache.flush() {
        Err(Error::Io(e)) if e.raw_os_error() == Some(libc::ENOSPC) => {}
        other => panic!("{kind:?}: flush past the shrunk device: {other:?}"),
    }
    assert!(cache.stats().io_errors >= 2, "{kind:?}");
    assert!(
        cache.read(dev, past).unwrap().iter().all(|&x| x == 0x3c),
        "{kind:?}: the unwritten block was dropped"
    );
    // The device grows back: the next flush writes it.
    f.as_file().set_len(4 * MB).unwrap();
    lo.set_capacity();
    cache.flush().unwrap();
    cache.close(dev).unwrap();
    assert!(
        file_bytes(f.path(), past * BU, BS).iter().all(|&x| x == 0x3c),
        "{kind:?}: block {past} after the device grew back"
    );
    // Restore the pattern there for the next engine.
    let mut file = f.as_file();
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(past * BU)).unwrap();
    std::io::Write::write_all(&mut file, &original(past)).unwrap();
}

#[test]
fn a_loop_device_that_shrinks_fails_reads_and_writes_past_its_end() {
    let f = patterned_file(4 << 20);
    let lo = match Loop::attach(f.path()) {
        Ok(lo) => lo,
        Err(reason) => return println!("skipping: {reason}"),
    };
    for kind in engines() {
        block_device_shrinks(kind, &f, &lo);
    }
}
