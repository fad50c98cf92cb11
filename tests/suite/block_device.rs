//! A real block device: a loop device over a file in /var/tmp.
//!
//! Needs root, `losetup` and /dev/loop-control; without them each test
//! prints `skipping: <reason>` and passes. Every loop device attached here
//! is detached again by a Drop guard, also when an assertion fails.

use crate::common;
use common::*;

use blockcache::Error;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

const SIZE: u64 = 16 << 20;

/// A loop device, detached on drop.
struct LoopDev {
    path: PathBuf,
}

impl LoopDev {
    /// Attach `file`, with `sector_size` as the logical block size if given.
    /// `Err` is the reason to skip.
    fn attach(file: &Path, sector_size: Option<u32>) -> Result<LoopDev, String> {
        if !Path::new("/dev/loop-control").exists() {
            return Err("no /dev/loop-control".into());
        }
        let mut cmd = Command::new("losetup");
        cmd.arg("--find").arg("--show");
        if let Some(s) = sector_size {
            cmd.arg("--sector-size").arg(s.to_string());
        }
        cmd.arg(file);
        let out = {
            // `losetup --find` picks a free device and then configures it:
            // keep two tests from picking the same one.
            let _one_at_a_time = common::loopfs::ATTACH.lock().unwrap_or_else(|e| e.into_inner());
            cmd.output().map_err(|e| format!("cannot run losetup: {e}"))?
        };
        if !out.status.success() {
            return Err(format!(
                "losetup failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if !path.starts_with("/dev") {
            return Err(format!("losetup printed no device: {path:?}"));
        }
        Ok(LoopDev { path })
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        match Command::new("losetup").arg("-d").arg(&self.path).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: losetup -d {} failed: {}",
                self.path.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("warning: cannot run losetup -d {}: {e}", self.path.display()),
        }
    }
}

/// A loop device over a fresh patterned 16 MiB file, or the reason to skip.
fn setup(sector_size: Option<u32>) -> Option<(tempfile::NamedTempFile, LoopDev)> {
    let file = patterned_file(SIZE);
    match LoopDev::attach(file.path(), sector_size) {
        Ok(l) => Some((file, l)),
        Err(reason) => {
            println!("skipping: {reason}");
            None
        }
    }
}

/// The whole of `path` (file or device), read buffered.
fn whole(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    std::fs::File::open(path).unwrap().read_to_end(&mut v).unwrap();
    v
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

#[test]
fn a_loop_device_reads_writes_and_sizes_like_its_file() {
    let Some((file, lo)) = setup(None) else { return };
    let mut expect: Vec<u8> = (0..SIZE).map(pattern).collect();
    for (e, kind) in engines().into_iter().enumerate() {
        for bs in [4096usize, 512] {
            let cache = cache(kind, bs, 64);
            let dev = cache.open(&lo.path).unwrap();
            // BLKGETSIZE64, not the inode size (0 for a device node).
            assert_eq!(
                cache.device_blocks(dev).unwrap(),
                SIZE / bs as u64,
                "{kind:?} bs {bs}"
            );

            // Reads: a spread of blocks, including the first and last.
            let n = SIZE / bs as u64;
            let step = if bs == 4096 { 1 } else { 7 };
            let mut blocks: Vec<u64> = (0..n).step_by(step).collect();
            blocks.push(n - 1);
            for &b in &blocks {
                let g = cache.read(dev, b).unwrap();
                let at = b as usize * bs;
                assert!(
                    g[..] == expect[at..at + bs],
                    "{kind:?} bs {bs}: block {b} differs from the file"
                );
            }
            assert!(
                matches!(cache.read(dev, n), Err(Error::OutOfRange { .. })),
                "{kind:?} bs {bs}: past the end"
            );

            // Writes: whole blocks, a zeroed one, and a byte range across
            // blocks; distinct per engine and block size.
            let tag = (e * 2 + usize::from(bs == 512)) as u8 + 1;
            for b in [0, 1, n / 2, n - 1] {
                let mut w = cache.write(dev, b).unwrap();
                w.fill(tag.wrapping_mul(17));
                w[..8].copy_from_slice(&b.to_le_bytes());
                let at = b as usize * bs;
                expect[at..at + bs].copy_from_slice(&w);
            }
            drop(cache.zeroed(dev, 3).unwrap());
            expect[3 * bs..4 * bs].fill(0);
            let off = 5 * bs as u64 + 100;
            let data: Vec<u8> = (0..3 * bs).map(|i| (i as u8) ^ tag).collect();
            cache.write_bytes(dev, off, &data).unwrap();
            expect[off as usize..off as usize + data.len()].copy_from_slice(&data);
            cache.flush().unwrap();
            cache.shutdown().unwrap();

            // After shutdown, through the device node...
            let device = whole(&lo.path);
            assert_eq!(device.len() as u64, SIZE);
            if let Some(i) = first_difference(&device, &expect) {
                panic!(
                    "{kind:?} bs {bs}: {} differs at byte {i} (block {})",
                    lo.path.display(),
                    i / bs
                );
            }
            // ...and in the backing file.
            let backing = whole(file.path());
            if let Some(i) = first_difference(&backing, &expect) {
                panic!(
                    "{kind:?} bs {bs}: backing file differs at byte {i} (block {})",
                    i / bs
                );
            }
        }
    }
}

#[test]
fn a_loop_device_opened_read_only_refuses_writes() {
    let Some((_file, lo)) = setup(None) else { return };
    for kind in engines() {
        let cache = cache(kind, 4096, 8);
        let dev = cache.open_read_only(&lo.path).unwrap();
        assert_eq!(cache.device_blocks(dev).unwrap(), SIZE / 4096);
        let want: Vec<u8> = (7 * 4096..8 * 4096).map(pattern).collect();
        assert!(cache.read(dev, 7).unwrap()[..] == want[..], "{kind:?}");
        assert!(matches!(cache.write(dev, 7), Err(Error::ReadOnly)), "{kind:?}");
        assert!(matches!(cache.zeroed(dev, 7), Err(Error::ReadOnly)), "{kind:?}");
        cache.shutdown().unwrap();
    }
}

#[test]
fn a_block_smaller_than_the_logical_block_is_refused() {
    let Some((file, lo)) = setup(Some(4096)) else {
        return;
    };
    for kind in engines() {
        for bs in [512usize, 1024, 2048] {
            let cache = cache(kind, bs, 8);
            match cache.open(&lo.path) {
                Err(Error::InvalidConfig(m)) => println!("{kind:?} bs {bs}: refused: {m}"),
                Err(e) => panic!("{kind:?} bs {bs}: want InvalidConfig, got {e:?}"),
                Ok(_) => {
                    panic!("{kind:?} bs {bs}: a {bs}-byte block on a 4096-byte-sector device was accepted")
                }
            }
            assert!(
                matches!(cache.open_read_only(&lo.path), Err(Error::InvalidConfig(_))),
                "{kind:?} bs {bs}"
            );
            // Refused, and the cache still works: a file it can use.
            let dev = cache.open(file.path()).unwrap();
            let want: Vec<u8> = (bs as u64..2 * bs as u64).map(pattern).collect();
            assert!(
                cache.read(dev, 1).unwrap()[..] == want[..],
                "{kind:?} bs {bs}: cache unusable after the refusal"
            );
            cache.shutdown().unwrap();
        }
        // Multiples of the sector size are fine.
        for bs in [4096usize, 8192] {
            let cache = cache(kind, bs, 8);
            let dev = cache.open(&lo.path).unwrap();
            assert_eq!(
                cache.device_blocks(dev).unwrap(),
                SIZE / bs as u64,
                "{kind:?} bs {bs}"
            );
            let want: Vec<u8> = (2 * bs as u64..3 * bs as u64).map(pattern).collect();
            assert!(cache.read(dev, 2).unwrap()[..] == want[..], "{kind:?} bs {bs}");
            cache.shutdown().unwrap();
        }
    }
}
