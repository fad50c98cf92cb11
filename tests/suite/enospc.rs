//! A real full disk: a small ext4 on a loop device, filled up, with a
//! sparse cache file on it. O_DIRECT writes into the file's holes need
//! blocks allocated, and there are none: the writebacks fail with ENOSPC
//! from the kernel, not from a scripted engine.
//!
//! What must hold (the README's "What it promises": nothing is lost): flush returns the error
//! and `io_errors` counts it; every dirty block stays dirty and readable;
//! gets for new blocks fail promptly once every block is dirty and
//! unwritable; after space is freed the next flush writes everything, and
//! the file holds every byte written through the cache. A shutdown that
//! cannot write says how many blocks it lost.
//!
//! Needs root, a loop device, `mkfs.ext4` and `mount`; prints
//! `skipping: <reason>` and passes without them.

use crate::common;
use blockcache::{Cache, EngineKind, Error};
use common::loopfs::LoopFs;
use common::*;
use std::path::Path;

const BS: usize = 4096;
const BU: u64 = BS as u64;
const ENOSPC: i32 = libc::ENOSPC;
const FILLER: &str = "filler";

fn fs_or_skip() -> Option<LoopFs> {
    match LoopFs::new(16, false) {
        Ok(fs) => Some(fs),
        Err(reason) => {
            println!("skipping: {reason}");
            None
        }
    }
}

/// A sparse file of `blocks` blocks: every block a hole.
fn sparse_file(path: &Path, blocks: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(blocks * BU).unwrap();
}

/// What the test writes into block `b`: differs per block and per engine.
fn data(kind: EngineKind, b: u64) -> Vec<u8> {
    let k = kind as u64 as u8;
    (0..BS)
        .map(|i| (b as u8).wrapping_mul(37) ^ (i as u8).wrapping_mul(11) ^ k ^ 0x5a)
        .collect()
}

/// `r` is `Err(Io)` with ENOSPC.
#[track_caller]
fn assert_enospc<T: std::fmt::Debug>(r: Result<T, Error>, what: &str) {
    match r {
        Err(Error::Io(e)) if e.raw_os_error() == Some(ENOSPC) => {}
        other => panic!("{what}: want Err(Io(ENOSPC)), got {other:?}"),
    }
}

/// Put `data(kind, b)` into block `b` through the cache: by `write` (which
/// reads the hole first) for even blocks, `zeroed` for odd ones.
fn put_block(cache: &Cache, dev: blockcache::DeviceId, kind: EngineKind, b: u64) -> Result<(), Error> {
    let mut g = if b.is_multiple_of(2) {
        cache.write(dev, b)?
    } else {
        cache.zeroed(dev, b)?
    };
    g.copy_from_slice(&data(kind, b));
    Ok(())
}

#[test]
fn a_full_filesystem_fails_flush_keeps_every_dirty_block_and_recovers() {
    const CAPACITY: usize = 32;
    const FIRST: u64 = 24;
    const BLOCKS: u64 = 96;
    let Some(fs) = fs_or_skip() else { return };
    let mut faults = 0;
    for kind in engines() {
        let path = fs.file(&format!("cache-{kind:?}"));
        sparse_file(&path, BLOCKS);
        let cache = cache(kind, BS, CAPACITY);
        let dev = cache.open(&path).unwrap();
        let filled = fs.fill(FILLER);
        println!(
            "{kind:?}: filler {filled} bytes, {} blocks left",
            fs.blocks_available()
        );

        // Phase 1: fewer dirty blocks than slots; flush cannot write them.
        for b in 0..FIRST {
            put_block(&cache, dev, kind, b).unwrap();
        }
        assert_enospc(cache.flush(), &format!("{kind:?}: flush on a full disk"));
        let s = cache.stats();
        assert!(s.io_errors > 0, "{kind:?}: io_errors not counted: {s:?}");
        // Every block is still there, dirty, with its data: all hits.
        for b in 0..FIRST {
            let g = cache.read(dev, b).unwrap();
            assert!(
                g[..] == data(kind, b)[..],
                "{kind:?}: block {b} changed in the cache"
            );
        }
        assert_eq!(
            cache.stats().reads_issued,
            s.reads_issued,
            "{kind:?}: a dirty block was dropped and read again"
        );
        assert_enospc(cache.flush(), &format!("{kind:?}: second flush, still full"));

        // Phase 2: keep writing new blocks. Once every slot is dirty and
        // unwritable, a get must fail promptly instead of waiting forever.
        let mut accepted: Vec<u64> = (0..FIRST).collect();
        let mut refused = 0;
        for b in FIRST..BLOCKS {
            match put_block(&cache, dev, kind, b) {
                Ok(()) => accepted.push(b),
                Err(e) => {
                    assert_enospc::<()>(Err(e), &format!("{kind:?}: get of block {b}"));
                    refused += 1;
                }
            }
        }
        assert!(
            refused > 0,
            "{kind:?}: {} blocks accepted into {CAPACITY} slots on a full disk",
            accepted.len()
        );
        assert!(accepted.len() >= CAPACITY, "{kind:?}: free slots were not used");
        // The refused gets cost nothing accepted.
        for &b in &accepted {
            let g = cache.read(dev, b).unwrap();
            assert!(g[..] == data(kind, b)[..], "{kind:?}: accepted block {b} lost");
        }
        faults += cache.stats().io_errors;

        // Phase 3: space again. The next flush writes everything.
        fs.remove(FILLER);
        cache.flush().unwrap();
        let file = std::fs::read(&path).unwrap();
        assert_eq!(file.len() as u64, BLOCKS * BU, "{kind:?}: file size");
        for b in 0..BLOCKS {
            let on_disk = &file[(b * BU) as usize..((b + 1) * BU) as usize];
            if accepted.contains(&b) {
                assert!(
                    on_disk == &data(kind, b)[..],
                    "{kind:?}: block {b} not in the file"
                );
            } else {
                assert!(
                    on_disk.iter().all(|&x| x == 0),
                    "{kind:?}: refused block {b} written"
                );
            }
        }
        // The refused blocks can be written now.
        for b in 0..BLOCKS {
            if !accepted.contains(&b) {
                put_block(&cache, dev, kind, b).unwrap();
            }
        }
        cache.shutdown().unwrap();
        let file = std::fs::read(&path).unwrap();
        for b in 0..BLOCKS {
            assert!(
                file[(b * BU) as usize..((b + 1) * BU) as usize] == data(kind, b)[..],
                "{kind:?}: block {b} after shutdown"
            );
        }
        std::fs::remove_file(&path).unwrap();
        println!(
            "{kind:?}: {} blocks accepted on a full disk, {refused} gets refused, {BLOCKS} blocks verified",
            accepted.len()
        );
    }
    println!("ENOSPC faults counted by io_errors: {faults}");
}

#[test]
fn shutdown_on_a_full_filesystem_reports_the_unwritten_blocks() {
    const DIRTY: u64 = 10;
    let Some(fs) = fs_or_skip() else { return };
    for kind in engines() {
        let path = fs.file(&format!("cache-{kind:?}"));
        sparse_file(&path, 16);
        let cache = cache(kind, BS, 16);
        let dev = cache.open(&path).unwrap();
        fs.fill(FILLER);
        for b in 0..DIRTY {
            put_block(&cache, dev, kind, b).unwrap();
        }
        match cache.shutdown() {
            Err(Error::Unwritten { blocks, source }) => {
                assert_eq!(source.raw_os_error(), Some(ENOSPC), "{kind:?}: {source}");
                assert_eq!(blocks, DIRTY, "{kind:?}: every dirty block was lost");
            }
            other => panic!("{kind:?}: want Err(Unwritten), got {other:?}"),
        }
        // Lost, as reported: the file's blocks are still holes.
        let file = std::fs::read(&path).unwrap();
        assert!(file.iter().all(|&x| x == 0), "{kind:?}: file changed");
        fs.remove(FILLER);
        std::fs::remove_file(&path).unwrap();
    }
}
