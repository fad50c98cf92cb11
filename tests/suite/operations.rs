//! Every operation of the public API against real files, on every engine.
//!
//! Each test checks data against the file read around the cache
//! (`file_bytes`) and counters against exact values from `stats()`.

use crate::common;
use blockcache::{Cache, Config, DeviceId, EngineKind, Error};
use common::*;
use std::path::Path;

/// Block size used throughout.
const B: usize = 4096;
const BU: u64 = B as u64;

/// The original contents of `len` bytes at `offset` of a `patterned_file`.
fn original(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64).map(pattern).collect()
}

/// The file's block `b`.
fn file_block(path: &Path, b: u64) -> Vec<u8> {
    file_bytes(path, b * BU, B)
}

/// Equal byte slices, reporting the first difference rather than dumping
/// kilobytes.
#[track_caller]
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {i}: got {:#04x}, want {:#04x}",
            got[i], want[i]
        );
    }
}

/// A round trip to the owner: every message this thread sent before (a
/// prefetch, a guard's put) has been handled when it returns.
fn barrier(cache: &Cache, dev: DeviceId) {
    cache.device_blocks(dev).expect("barrier");
}

/// A block's worth of new bytes, different from the file's pattern (tests
/// compare whole blocks, never single bytes, so chance equal bytes are fine).
fn new_data(seed: u8) -> Vec<u8> {
    (0..B).map(|i| (i as u8).wrapping_mul(7) ^ seed ^ 0xa5).collect()
}

// ---- read -----------------------------------------------------------------

#[test]
fn read_returns_file_data_and_counts_misses_then_hits() {
    for kind in engines() {
        let f = patterned_file(64 * BU);
        let cache = cache(kind, B, 64);
        let dev = cache.open(f.path()).unwrap();
        for b in 0..64 {
            let g = cache.read(dev, b).unwrap();
            assert_same(
                &g,
                &file_block(f.path(), b),
                &format!("{kind:?} first read of block {b}"),
            );
        }
        let s = cache.stats();
        assert_eq!(
            (s.read_misses, s.read_hits, s.reads_issued),
            (64, 0, 64),
            "{kind:?} after first pass: {s:?}"
        );
        for b in 0..64 {
            let g = cache.read(dev, b).unwrap();
            assert_same(
                &g,
                &file_block(f.path(), b),
                &format!("{kind:?} second read of block {b}"),
            );
        }
        let s = cache.stats();
        assert_eq!(
            (s.read_misses, s.read_hits, s.reads_issued),
            (64, 64, 64),
            "{kind:?}: a second read of a resident block is a hit with no I/O: {s:?}"
        );
        assert_eq!(
            (
                s.writes_issued,
                s.write_hits,
                s.write_misses,
                s.evictions,
                s.io_errors
            ),
            (0, 0, 0, 0, 0),
            "{kind:?}: {s:?}"
        );
    }
}

#[test]
fn hundred_reads_of_one_block_issue_one_read() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 4);
        let dev = cache.open(f.path()).unwrap();
        let want = file_block(f.path(), 11);
        for i in 0..100 {
            let g = cache.read(dev, 11).unwrap();
            assert_same(&g, &want, &format!("{kind:?} read {i} of block 11"));
        }
        let s = cache.stats();
        assert_eq!(
            (s.reads_issued, s.read_misses, s.read_hits),
            (1, 1, 99),
            "{kind:?}: {s:?}"
        );
    }
}

#[test]
fn reads_through_a_small_cache_evict_and_stay_correct() {
    for kind in engines() {
        let f = patterned_file(64 * BU);
        let cache = cache(kind, B, 8);
        let dev = cache.open(f.path()).unwrap();
        for pass in 0..2 {
            for b in 0..64 {
                let g = cache.read(dev, b).unwrap();
                assert_same(
                    &g,
                    &file_block(f.path(), b),
                    &format!("{kind:?} pass {pass} block {b}"),
                );
            }
        }
        let s = cache.stats();
        // First pass: 8 free slots, then 56 evictions. Second pass: blocks
        // 56..63 are resident but block 0's miss evicts 56 (least recently
        // used) and so on: every read is a miss and evicts.
        assert_eq!(
            (s.read_misses, s.read_hits, s.reads_issued, s.evictions),
            (128, 0, 128, 56 + 64),
            "{kind:?}: {s:?}"
        );
    }
}

// ---- write ----------------------------------------------------------------

#[test]
fn write_reaches_the_file_after_flush() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 16);
        let dev = cache.open(f.path()).unwrap();
        let data = new_data(9);
        {
            let mut w = cache.write(dev, 9).unwrap();
            assert_same(
                &w,
                &original(9 * BU, B),
                &format!("{kind:?}: write guard starts with the file's data"),
            );
            w.copy_from_slice(&data);
        }
        let s = cache.stats();
        assert_eq!(
            (s.write_misses, s.write_hits, s.reads_issued, s.writes_issued),
            (1, 0, 1, 0),
            "{kind:?}: a write miss reads the block first: {s:?}"
        );
        // One dirty block of 16: no writeback yet.
        assert_same(
            &file_block(f.path(), 9),
            &original(9 * BU, B),
            &format!("{kind:?}: file before flush"),
        );
        assert_same(
            &cache.read(dev, 9).unwrap(),
            &data,
            &format!("{kind:?}: read sees the write"),
        );

        cache.flush().unwrap();
        assert_same(
            &file_block(f.path(), 9),
            &data,
            &format!("{kind:?}: file after flush"),
        );
        assert_same(
            &file_block(f.path(), 8),
            &original(8 * BU, B),
            &format!("{kind:?}: block 8 untouched"),
        );
        assert_same(
            &file_block(f.path(), 10),
            &original(10 * BU, B),
            &format!("{kind:?}: block 10 untouched"),
        );
        let s = cache.stats();
        assert_eq!(
            (s.writes_issued, s.syncs, s.read_hits),
            (1, 1, 1),
            "{kind:?}: {s:?}"
        );

        // Nothing dirty: a second flush writes nothing.
        cache.flush().unwrap();
        let s = cache.stats();
        assert_eq!(s.writes_issued, 1, "{kind:?}: {s:?}");
    }
}

/// Capacity 4, 16 blocks written in order, queue depth 1 (one I/O in flight
/// per device, so I/O completes in submission order).
///
/// From src/owner/get.rs: blocks 0..3 take the 4 free slots; every later
/// block must take a clean slot (`take_slot`: no slot is ever freed here),
/// so exactly 12 evictions happen, and only a clean block is evicted, i.e.
/// one whose writeback completed. Writebacks are issued from the head of
/// the Dirty list (oldest release first = block order, by
/// `preemptive_writeback` and `writeback_oldest`); they complete in that
/// order (depth 1), so blocks become clean — and are evicted from the head
/// of Clean — in block order. Hence blocks 0..11 are in the file before any
/// flush.
#[test]
fn write_reaches_the_file_on_eviction() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = Cache::new(Config::new(B, 4).engine(kind).queue_depth(1)).unwrap();
        let dev = cache.open(f.path()).unwrap();
        for b in 0..16u64 {
            let mut w = cache.write(dev, b).unwrap();
            w.copy_from_slice(&new_data(b as u8));
        }
        let s = cache.stats();
        assert_eq!(s.evictions, 12, "{kind:?}: {s:?}");
        assert_eq!((s.write_misses, s.reads_issued), (16, 16), "{kind:?}: {s:?}");
        assert!(
            s.writes_issued >= 12,
            "{kind:?}: every evicted block was written: {s:?}"
        );
        for b in 0..12u64 {
            assert_same(
                &file_block(f.path(), b),
                &new_data(b as u8),
                &format!("{kind:?}: evicted block {b} in the file before flush"),
            );
        }
        cache.flush().unwrap();
        for b in 0..16u64 {
            assert_same(
                &file_block(f.path(), b),
                &new_data(b as u8),
                &format!("{kind:?}: block {b} after flush"),
            );
        }
    }
}

/// As above with the default queue depth: completions may come out of
/// order, so which 12 blocks were evicted is not fixed, but 12 were (no slot
/// is ever freed, 16 blocks went through 4 slots), and each was clean.
#[test]
fn write_reaches_the_file_on_eviction_default_depth() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 4);
        let dev = cache.open(f.path()).unwrap();
        for b in 0..16u64 {
            let mut w = cache.write(dev, b).unwrap();
            w.copy_from_slice(&new_data(b as u8));
        }
        let s = cache.stats();
        assert_eq!(s.evictions, 12, "{kind:?}: {s:?}");
        // Writebacks still in flight may be read torn here; they are simply
        // not counted.
        let in_file = (0..16u64)
            .filter(|&b| file_block(f.path(), b) == new_data(b as u8))
            .count();
        assert!(
            in_file >= 12,
            "{kind:?}: only {in_file} of 16 blocks in the file; {s:?}"
        );
        cache.flush().unwrap();
        for b in 0..16u64 {
            assert_same(
                &file_block(f.path(), b),
                &new_data(b as u8),
                &format!("{kind:?}: block {b} after flush"),
            );
        }
    }
}

#[test]
fn write_reaches_the_file_after_shutdown() {
    for kind in engines() {
        let f = patterned_file(64 * BU);
        let cache = cache(kind, B, 16);
        let dev = cache.open(f.path()).unwrap();
        for b in [3u64, 40] {
            cache.write(dev, b).unwrap().copy_from_slice(&new_data(b as u8));
        }
        assert_same(
            &file_block(f.path(), 3),
            &original(3 * BU, B),
            &format!("{kind:?}: before shutdown"),
        );
        cache.shutdown().unwrap();
        for b in [3u64, 40] {
            assert_same(
                &file_block(f.path(), b),
                &new_data(b as u8),
                &format!("{kind:?}: block {b} after shutdown"),
            );
        }
        assert_same(
            &file_block(f.path(), 4),
            &original(4 * BU, B),
            &format!("{kind:?}: block 4 untouched"),
        );
    }
}

#[test]
fn write_reaches_the_file_when_the_last_handle_is_dropped() {
    for kind in engines() {
        let f = patterned_file(64 * BU);
        let cache = cache(kind, B, 16);
        let clone = cache.clone();
        let dev = cache.open(f.path()).unwrap();
        for b in [0u64, 63] {
            clone.write(dev, b).unwrap().copy_from_slice(&new_data(b as u8));
        }
        drop(clone);
        // One handle left: nothing written yet.
        assert_same(
            &file_block(f.path(), 63),
            &original(63 * BU, B),
            &format!("{kind:?}: clone dropped"),
        );
        drop(cache);
        for b in [0u64, 63] {
            assert_same(
                &file_block(f.path(), b),
                &new_data(b as u8),
                &format!("{kind:?}: block {b} after drop"),
            );
        }
    }
}

#[test]
fn write_through_a_guard_that_outlives_every_handle_reaches_the_file() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 8);
        let dev = cache.open(f.path()).unwrap();
        let mut w = cache.write(dev, 6).unwrap();
        let clone = cache.clone();
        drop(cache);
        drop(clone);
        w.copy_from_slice(&new_data(6));
        // The last guard's drop returns after the final flush.
        drop(w);
        assert_same(
            &file_block(f.path(), 6),
            &new_data(6),
            &format!("{kind:?}: after last guard"),
        );
    }
}

#[test]
fn write_guard_outliving_handles_is_flushed_when_a_later_read_guard_drops() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 8);
        let dev = cache.open(f.path()).unwrap();
        let mut w = cache.write(dev, 2).unwrap();
        let r = cache.read(dev, 5).unwrap();
        drop(cache);
        w.copy_from_slice(&new_data(2));
        drop(w);
        assert_same(
            &r,
            &original(5 * BU, B),
            &format!("{kind:?}: read guard after handles"),
        );
        // The read guard is the last: its drop does the final flush.
        drop(r);
        assert_same(
            &file_block(f.path(), 2),
            &new_data(2),
            &format!("{kind:?}: after last guard"),
        );
    }
}

// ---- zeroed ---------------------------------------------------------------

#[test]
fn zeroed_never_reads_and_reaches_the_file_as_zeros() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 8);
        let dev = cache.open(f.path()).unwrap();
        {
            let z = cache.zeroed(dev, 3).unwrap();
            assert!(z.iter().all(|&x| x == 0), "{kind:?}: zeroed block not zero");
            assert_eq!((z.device(), z.block()), (dev, 3), "{kind:?}");
        }
        let s = cache.stats();
        assert_eq!(
            (s.reads_issued, s.write_zeroes, s.write_misses, s.write_hits),
            (0, 1, 1, 0),
            "{kind:?}: {s:?}"
        );
        assert!(
            cache.read(dev, 3).unwrap().iter().all(|&x| x == 0),
            "{kind:?}: read after zeroed"
        );
        cache.flush().unwrap();
        assert!(
            file_block(f.path(), 3).iter().all(|&x| x == 0),
            "{kind:?}: file after flush"
        );
        assert_same(
            &file_block(f.path(), 2),
            &original(2 * BU, B),
            &format!("{kind:?}: block 2"),
        );
        assert_same(
            &file_block(f.path(), 4),
            &original(4 * BU, B),
            &format!("{kind:?}: block 4"),
        );
        let s = cache.stats();
        assert_eq!(
            (s.reads_issued, s.writes_issued, s.read_hits),
            (0, 1, 1),
            "{kind:?}: {s:?}"
        );
    }
}

#[test]
fn zeroed_on_a_resident_block_is_a_write_hit() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 8);
        let dev = cache.open(f.path()).unwrap();
        // Clean resident block.
        assert_same(
            &cache.read(dev, 5).unwrap(),
            &original(5 * BU, B),
            &format!("{kind:?}"),
        );
        assert!(
            cache.zeroed(dev, 5).unwrap().iter().all(|&x| x == 0),
            "{kind:?}: clean → zeroed"
        );
        // Dirty resident block.
        cache.write(dev, 6).unwrap().fill(0x77);
        assert!(
            cache.zeroed(dev, 6).unwrap().iter().all(|&x| x == 0),
            "{kind:?}: dirty → zeroed"
        );
        let s = cache.stats();
        assert_eq!(
            (
                s.reads_issued,
                s.read_misses,
                s.write_misses,
                s.write_hits,
                s.write_zeroes
            ),
            (2, 1, 1, 2, 2),
            "{kind:?}: {s:?}"
        );
        cache.flush().unwrap();
        for b in [5u64, 6] {
            assert!(
                file_block(f.path(), b).iter().all(|&x| x == 0),
                "{kind:?}: block {b} in file"
            );
        }
        assert_eq!(cache.stats().writes_issued, 2, "{kind:?}");
    }
}

// ---- prefetch -------------------------------------------------------------

#[test]
fn prefetched_blocks_are_read_once() {
    for kind in engines() {
        let f = patterned_file(64 * BU);
        let cache = cache(kind, B, 64);
        let dev = cache.open(f.path()).unwrap();
        const N: u64 = 16;
        for b in 10..10 + N {
            cache.prefetch(dev, b);
        }
        for b in 10..10 + N {
            let g = cache.read(dev, b).unwrap();
            assert_same(
                &g,
                &file_block(f.path(), b),
                &format!("{kind:?}: prefetched block {b}"),
            );
        }
        let s = cache.stats();
        assert_eq!((s.prefetches, s.reads_issued), (N, N), "{kind:?}: {s:?}");
        // Each read either joined the prefetch (miss) or found it done (hit).
        assert_eq!(s.read_hits + s.read_misses, N, "{kind:?}: {s:?}");
    }
}

#[test]
fn prefetch_of_a_resident_or_in_flight_block_does_nothing() {
    for kind in engines() {
        let f = patterned_file(32 * BU);
        let cache = cache(kind, B, 16);
        let dev = cache.open(f.path()).unwrap();
        drop(cache.read(dev, 3).unwrap());
        cache.prefetch(dev, 3); // resident, clean
        cache.prefetch(dev, 7);
        cache.prefetch(dev, 7); // resident or in flight
        cache.write(dev, 12).unwrap().fill(0x12);
        cache.prefetch(dev, 12); // resident, dirty
        let held = cache.write(dev, 13).unwrap();
        cache.prefetch(dev, 13); // held
        barrier(&cache, dev);
        let s = cache.stats();
        assert_eq!((s.prefetches, s.reads_issued), (1, 4), "{kind:?}: {s:?}");
        drop(held);
        assert_same(
            &cache.read(dev, 7).unwrap(),
            &file_block(f.path(), 7),
            &format!("{kind:?}: block 7"),
        );
        assert_same(
            &cache.read(dev, 12).unwrap(),
            &[0x12; B],
            &format!("{kind:?}: block 12 kept its data"),
        );
        let s = cache.stats();
        assert_eq!((s.prefetches, s.reads_issued), (1, 4), "{kind:?}: {s:?}");
    }
}

#[test]
fn prefetch_never_blocks_when_every_slot_is_held() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 2);
        let dev = cache.open(f.path()).unwrap();
        let a = cache.read(dev, 0).unwrap();
        let b = cache.write(dev, 1).unwrap();
        // No free or clean slot: a read would wait; a prefetch must return.
        cache.prefetch(dev, 5);
        barrier(&cache, dev);
        let s = cache.stats();
        assert_eq!((s.prefetches, s.reads_issued), (0, 2), "{kind:?}: {s:?}");
        drop(a);
        drop(b);
        // Block 0 is clean now: the prefetch can take its slot.
        cache.prefetch(dev, 5);
        assert_same(
            &cache.read(dev, 5).unwrap(),
            &file_block(f.path(), 5),
            &format!("{kind:?}: block 5"),
        );
        let s = cache.stats();
        assert_eq!((s.prefetches, s.reads_issued), (1, 3), "{kind:?}: {s:?}");
    }
}

// ---- try_read / try_write -------------------------------------------------

#[test]
fn try_read_and_try_write_never_wait() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 8);
        let dev = cache.open(f.path()).unwrap();

        assert!(
            matches!(cache.try_read(dev, 4), Err(Error::WouldBlock)),
            "{kind:?}: try_read non-resident"
        );
        assert!(
            matches!(cache.try_write(dev, 4), Err(Error::WouldBlock)),
            "{kind:?}: try_write non-resident"
        );
        let s = cache.stats();
        assert_eq!(
            (
                s.reads_issued,
                s.read_misses,
                s.read_hits,
                s.write_misses,
                s.write_hits
            ),
            (0, 0, 0, 0, 0),
            "{kind:?}: a refused try issues no I/O and counts nothing: {s:?}"
        );

        let r1 = cache.read(dev, 4).unwrap();
        let r2 = cache.try_read(dev, 4).expect("try_read alongside a reader");
        assert_same(&r2, &r1, &format!("{kind:?}: both readers"));
        assert_same(&r2, &file_block(f.path(), 4), &format!("{kind:?}: try_read data"));
        assert!(
            matches!(cache.try_write(dev, 4), Err(Error::WouldBlock)),
            "{kind:?}: try_write while read"
        );
        drop(r1);
        assert!(
            matches!(cache.try_write(dev, 4), Err(Error::WouldBlock)),
            "{kind:?}: one reader left"
        );
        drop(r2);

        let mut w = cache
            .try_write(dev, 4)
            .expect("try_write on a resident unheld block");
        w[0] ^= 0xff;
        assert!(
            matches!(cache.try_read(dev, 4), Err(Error::WouldBlock)),
            "{kind:?}: try_read while written"
        );
        assert!(
            matches!(cache.try_write(dev, 4), Err(Error::WouldBlock)),
            "{kind:?}: try_write while written"
        );
        drop(w);
        let r = cache.try_read(dev, 4).expect("try_read after the writer");
        assert_eq!(r[0], pattern(4 * BU) ^ 0xff, "{kind:?}");
        drop(r);

        let s = cache.stats();
        assert_eq!(
            (
                s.reads_issued,
                s.read_misses,
                s.read_hits,
                s.write_misses,
                s.write_hits
            ),
            (1, 1, 2, 0, 1),
            "{kind:?}: {s:?}"
        );
    }
}

// ---- guards ---------------------------------------------------------------

#[test]
fn guards_report_their_device_and_block() {
    for kind in engines() {
        let fa = patterned_file(16 * BU);
        let fb = patterned_file(16 * BU);
        let cache = cache(kind, B, 8);
        let da = cache.open(fa.path()).unwrap();
        let db = cache.open(fb.path()).unwrap();
        assert_ne!(da, db, "{kind:?}");
        let r = cache.read(da, 5).unwrap();
        assert_eq!((r.device(), r.block()), (da, 5), "{kind:?} read");
        let w = cache.write(db, 7).unwrap();
        assert_eq!((w.device(), w.block()), (db, 7), "{kind:?} write");
        let z = cache.zeroed(db, 15).unwrap();
        assert_eq!((z.device(), z.block()), (db, 15), "{kind:?} zeroed");
        let tr = cache.try_read(da, 5).unwrap();
        assert_eq!((tr.device(), tr.block()), (da, 5), "{kind:?} try_read");
        drop((r, w, z, tr));
        let tw = cache.try_write(db, 7).unwrap();
        assert_eq!((tw.device(), tw.block()), (db, 7), "{kind:?} try_write");
        assert_eq!(cache.read(da, 0).unwrap().len(), B, "{kind:?}");
    }
}

#[test]
fn guards_can_be_sent_to_and_dropped_on_another_thread() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 8);
        let dev = cache.open(f.path()).unwrap();
        let r = cache.read(dev, 3).unwrap();
        let mut w = cache.write(dev, 4).unwrap();
        let path = f.path().to_path_buf();
        std::thread::spawn(move || {
            assert_same(&r, &file_block(&path, 3), "read guard on another thread");
            w.copy_from_slice(&new_data(4));
            drop(r);
            drop(w);
        })
        .join()
        .unwrap();
        // Both guards are gone: block 3 is free for a writer, 4 for a reader.
        drop(
            cache
                .try_write(dev, 3)
                .expect("block 3 released by the other thread"),
        );
        assert_same(
            &cache
                .try_read(dev, 4)
                .expect("block 4 released by the other thread"),
            &new_data(4),
            &format!("{kind:?}: data written on another thread"),
        );
        cache.flush().unwrap();
        assert_same(&file_block(f.path(), 4), &new_data(4), &format!("{kind:?}: file"));
        assert_same(
            &file_block(f.path(), 3),
            &original(3 * BU, B),
            &format!("{kind:?}: block 3 unchanged"),
        );
    }
}

// ---- flush_device, invalidate ---------------------------------------------

#[test]
fn flush_device_flushes_only_that_device() {
    for kind in engines() {
        let fa = patterned_file(16 * BU);
        let fb = patterned_file(16 * BU);
        let cache = cache(kind, B, 16);
        let da = cache.open(fa.path()).unwrap();
        let db = cache.open(fb.path()).unwrap();
        cache.write(da, 2).unwrap().fill(0xa1);
        cache.write(db, 2).unwrap().fill(0xb2);
        cache.flush_device(da).unwrap();
        assert_same(
            &file_block(fa.path(), 2),
            &[0xa1; B],
            &format!("{kind:?}: flushed device"),
        );
        assert_same(
            &file_block(fb.path(), 2),
            &original(2 * BU, B),
            &format!("{kind:?}: other device"),
        );
        let s = cache.stats();
        assert_eq!((s.writes_issued, s.syncs), (1, 1), "{kind:?}: {s:?}");
        // The other device's block stayed dirty: the next flush writes it.
        cache.flush_device(db).unwrap();
        assert_same(
            &file_block(fb.path(), 2),
            &[0xb2; B],
            &format!("{kind:?}: second device"),
        );
        let s = cache.stats();
        assert_eq!((s.writes_issued, s.syncs), (2, 2), "{kind:?}: {s:?}");
    }
}

#[test]
fn invalidate_a_clean_block_makes_the_next_read_issue_io() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 8);
        let dev = cache.open(f.path()).unwrap();
        drop(cache.read(dev, 3).unwrap());
        cache.invalidate(dev, 3).unwrap();
        assert!(
            matches!(cache.try_read(dev, 3), Err(Error::WouldBlock)),
            "{kind:?}: not resident"
        );
        assert_same(
            &cache.read(dev, 3).unwrap(),
            &file_block(f.path(), 3),
            &format!("{kind:?}"),
        );
        let s = cache.stats();
        assert_eq!(
            (s.reads_issued, s.read_misses, s.read_hits, s.writes_issued),
            (2, 2, 0, 0),
            "{kind:?}: {s:?}"
        );
    }
}

#[test]
fn invalidate_a_dirty_block_writes_it_then_drops_it() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 8);
        let dev = cache.open(f.path()).unwrap();
        cache.write(dev, 4).unwrap().copy_from_slice(&new_data(4));
        cache.invalidate(dev, 4).unwrap();
        assert_same(
            &file_block(f.path(), 4),
            &new_data(4),
            &format!("{kind:?}: written by invalidate"),
        );
        let s = cache.stats();
        assert_eq!((s.writes_issued, s.reads_issued), (1, 1), "{kind:?}: {s:?}");
        assert_same(
            &cache.read(dev, 4).unwrap(),
            &new_data(4),
            &format!("{kind:?}: re-read"),
        );
        let s = cache.stats();
        assert_eq!(
            (s.writes_issued, s.reads_issued, s.read_misses),
            (1, 2, 1),
            "{kind:?}: dropped: {s:?}"
        );
    }
}

#[test]
fn invalidate_a_held_block_is_busy() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 8);
        let dev = cache.open(f.path()).unwrap();
        let r = cache.read(dev, 5).unwrap();
        assert!(
            matches!(cache.invalidate(dev, 5), Err(Error::Busy)),
            "{kind:?}: read guard"
        );
        drop(r);
        let mut w = cache.write(dev, 5).unwrap();
        w.fill(0x55);
        assert!(
            matches!(cache.invalidate(dev, 5), Err(Error::Busy)),
            "{kind:?}: write guard"
        );
        // Nothing was written or dropped while held.
        assert_same(
            &file_block(f.path(), 5),
            &original(5 * BU, B),
            &format!("{kind:?}: file while held"),
        );
        drop(w);
        assert_same(
            &cache.try_read(dev, 5).unwrap(),
            &[0x55; B],
            &format!("{kind:?}: still resident"),
        );
        let s = cache.stats();
        assert_eq!((s.reads_issued, s.writes_issued), (1, 0), "{kind:?}: {s:?}");
        cache.invalidate(dev, 5).unwrap();
        assert_same(
            &file_block(f.path(), 5),
            &[0x55; B],
            &format!("{kind:?}: file after invalidate"),
        );
    }
}

#[test]
fn invalidate_a_block_not_resident_is_ok_and_does_no_io() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 8);
        let dev = cache.open(f.path()).unwrap();
        cache.invalidate(dev, 9).unwrap();
        let s = cache.stats();
        assert_eq!(
            (s.reads_issued, s.writes_issued, s.syncs),
            (0, 0, 0),
            "{kind:?}: {s:?}"
        );
        assert_same(
            &cache.read(dev, 9).unwrap(),
            &file_block(f.path(), 9),
            &format!("{kind:?}"),
        );
    }
}

#[test]
fn invalidate_device_writes_dirty_blocks_and_drops_all() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 16);
        let dev = cache.open(f.path()).unwrap();
        for b in 0..5 {
            drop(cache.read(dev, b).unwrap());
        }
        for b in [5u64, 6] {
            cache.write(dev, b).unwrap().copy_from_slice(&new_data(b as u8));
        }
        cache.invalidate_device(dev).unwrap();
        for b in [5u64, 6] {
            assert_same(
                &file_block(f.path(), b),
                &new_data(b as u8),
                &format!("{kind:?}: block {b}"),
            );
        }
        let s = cache.stats();
        assert_eq!((s.writes_issued, s.reads_issued), (2, 7), "{kind:?}: {s:?}");
        for b in 0..7 {
            assert!(
                matches!(cache.try_read(dev, b), Err(Error::WouldBlock)),
                "{kind:?}: block {b} resident"
            );
        }
        for b in 0..7 {
            assert_same(
                &cache.read(dev, b).unwrap(),
                &file_block(f.path(), b),
                &format!("{kind:?}: block {b}"),
            );
        }
        let s = cache.stats();
        assert_eq!(
            (s.writes_issued, s.reads_issued),
            (2, 14),
            "{kind:?}: every block re-read: {s:?}"
        );
    }
}

#[test]
fn invalidate_device_leaves_held_blocks_alone_and_is_busy() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 16);
        let dev = cache.open(f.path()).unwrap();
        let r = cache.read(dev, 1).unwrap();
        cache.write(dev, 2).unwrap().copy_from_slice(&new_data(2));
        drop(cache.read(dev, 3).unwrap());
        // Block 4: dirty, then held by a writer again (LVM bug C: must not
        // be written back or cleaned under its holder).
        cache.write(dev, 4).unwrap().copy_from_slice(&new_data(4));
        let w = cache.write(dev, 4).unwrap();
        assert!(
            matches!(cache.invalidate_device(dev), Err(Error::Busy)),
            "{kind:?}"
        );
        assert_same(
            &file_block(f.path(), 2),
            &new_data(2),
            &format!("{kind:?}: unheld dirty block written"),
        );
        assert_same(
            &file_block(f.path(), 4),
            &original(4 * BU, B),
            &format!("{kind:?}: held dirty block"),
        );
        let s = cache.stats();
        assert_eq!((s.writes_issued, s.reads_issued), (1, 4), "{kind:?}: {s:?}");
        // The held blocks are still resident; the clean one was dropped.
        drop(r);
        drop(w);
        drop(cache.try_read(dev, 1).expect("held block 1 stays resident"));
        assert_same(
            &cache.try_read(dev, 4).expect("held block 4 stays resident"),
            &new_data(4),
            &format!("{kind:?}: block 4 kept"),
        );
        assert!(
            matches!(cache.try_read(dev, 3), Err(Error::WouldBlock)),
            "{kind:?}: block 3 dropped"
        );
        assert!(
            matches!(cache.try_read(dev, 2), Err(Error::WouldBlock)),
            "{kind:?}: block 2 dropped"
        );
        // Block 4 is still dirty: a flush writes it.
        cache.flush().unwrap();
        assert_same(
            &file_block(f.path(), 4),
            &new_data(4),
            &format!("{kind:?}: block 4 after flush"),
        );
        assert_eq!(cache.stats().writes_issued, 2, "{kind:?}");
    }
}

// ---- close, abort ---------------------------------------------------------

#[test]
fn close_flushes_then_forgets_the_device() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 8);
        let dev = cache.open(f.path()).unwrap();
        for b in [1u64, 7, 15] {
            cache.write(dev, b).unwrap().copy_from_slice(&new_data(b as u8));
        }
        drop(cache.read(dev, 3).unwrap());
        cache.close(dev).unwrap();
        for b in [1u64, 7, 15] {
            assert_same(
                &file_block(f.path(), b),
                &new_data(b as u8),
                &format!("{kind:?}: block {b}"),
            );
        }
        let s = cache.stats();
        assert_eq!((s.writes_issued, s.syncs), (3, 1), "{kind:?}: {s:?}");
        assert!(
            matches!(cache.read(dev, 3), Err(Error::UnknownDevice)),
            "{kind:?}: read"
        );
        assert!(
            matches!(cache.device_blocks(dev), Err(Error::UnknownDevice)),
            "{kind:?}: device_blocks"
        );
        assert!(
            matches!(cache.close(dev), Err(Error::UnknownDevice)),
            "{kind:?}: close again"
        );
        // Reopening gives a new id; the old one stays dead.
        let again = cache.open(f.path()).unwrap();
        assert_ne!(again, dev, "{kind:?}: ids are never reused");
        assert_same(
            &cache.read(again, 7).unwrap(),
            &new_data(7),
            &format!("{kind:?}: reopened"),
        );
        assert!(
            matches!(cache.read(dev, 7), Err(Error::UnknownDevice)),
            "{kind:?}: old id"
        );
    }
}

#[test]
fn close_while_a_guard_is_held_is_busy_and_the_device_still_works() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 8);
        let dev = cache.open(f.path()).unwrap();
        cache.write(dev, 2).unwrap().copy_from_slice(&new_data(2));
        let r = cache.read(dev, 1).unwrap();
        assert!(matches!(cache.close(dev), Err(Error::Busy)), "{kind:?}");
        // Nothing done: no write, no sync, the device is still open.
        let s = cache.stats();
        assert_eq!((s.writes_issued, s.syncs), (0, 0), "{kind:?}: {s:?}");
        assert_eq!(cache.device_blocks(dev).unwrap(), 16, "{kind:?}");
        assert_same(
            &cache.read(dev, 5).unwrap(),
            &file_block(f.path(), 5),
            &format!("{kind:?}: read"),
        );
        cache.write(dev, 3).unwrap().copy_from_slice(&new_data(3));
        drop(r);
        cache.close(dev).unwrap();
        for b in [2u64, 3] {
            assert_same(
                &file_block(f.path(), b),
                &new_data(b as u8),
                &format!("{kind:?}: block {b}"),
            );
        }
        assert!(
            matches!(cache.read(dev, 1), Err(Error::UnknownDevice)),
            "{kind:?}"
        );
    }
}

#[test]
fn abort_device_drops_dirty_blocks_unwritten() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 8);
        let dev = cache.open(f.path()).unwrap();
        drop(cache.read(dev, 1).unwrap());
        cache.write(dev, 2).unwrap().fill(0xab);
        cache.abort_device(dev).unwrap();
        assert_same(
            &file_block(f.path(), 2),
            &original(2 * BU, B),
            &format!("{kind:?}: file unchanged"),
        );
        assert_same(
            &cache.read(dev, 2).unwrap(),
            &original(2 * BU, B),
            &format!("{kind:?}: old data"),
        );
        assert!(
            matches!(cache.try_read(dev, 1), Err(Error::WouldBlock)),
            "{kind:?}: clean block dropped"
        );
        cache.flush().unwrap();
        assert_same(
            &file_block(f.path(), 2),
            &original(2 * BU, B),
            &format!("{kind:?}: after flush"),
        );
        let s = cache.stats();
        assert_eq!((s.reads_issued, s.writes_issued), (3, 0), "{kind:?}: {s:?}");
    }
}

#[test]
fn abort_device_while_a_guard_is_held_is_busy_and_does_nothing() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 8);
        let dev = cache.open(f.path()).unwrap();
        cache.write(dev, 2).unwrap().fill(0xab);
        let r = cache.read(dev, 1).unwrap();
        assert!(matches!(cache.abort_device(dev), Err(Error::Busy)), "{kind:?}");
        drop(r);
        // Block 2 is still dirty and resident.
        assert_same(
            &cache.try_read(dev, 2).unwrap(),
            &[0xab; B],
            &format!("{kind:?}: kept"),
        );
        cache.flush().unwrap();
        assert_same(
            &file_block(f.path(), 2),
            &[0xab; B],
            &format!("{kind:?}: flushed"),
        );
        let s = cache.stats();
        assert_eq!((s.reads_issued, s.writes_issued), (2, 1), "{kind:?}: {s:?}");
    }
}

// ---- byte helpers ---------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum ByteOp {
    Write,
    Zero,
    Set,
}

fn byte_op_data(op: ByteOp, offset: u64, len: usize) -> Vec<u8> {
    match op {
        ByteOp::Write => (0..len as u64)
            .map(|i| ((offset + i) as u8).wrapping_mul(13) ^ 0x3c)
            .collect(),
        ByteOp::Zero => vec![0; len],
        ByteOp::Set => vec![0xa7; len],
    }
}

/// Blocks of `offset..offset+len` not wholly covered by it.
fn partial_blocks(offset: u64, len: u64) -> u64 {
    let (first, last) = (offset / BU, (offset + len - 1) / BU);
    (first..=last)
        .filter(|b| offset > b * BU || offset + len < (b + 1) * BU)
        .count() as u64
}

#[test]
fn byte_helpers_write_exactly_their_range() {
    const BLOCKS: u64 = 64;
    let size = BLOCKS * BU;
    // (offset, len, partial edge blocks, whole blocks)
    let ranges: [(u64, u64, u64, u64); 6] = [
        (0, BU, 0, 1),                  // first block
        (63 * BU, BU, 0, 1),            // last block
        (5 * BU, 6 * BU, 0, 6),         // blocks 5..=10
        (7 * BU + 3, BU / 2 - 3, 1, 0), // inside block 7
        (13 * BU + 43, BU, 2, 0),       // across one boundary
        (13 * BU + 13, 10 * BU, 2, 9),  // across many
    ];
    for kind in engines() {
        for op in [ByteOp::Write, ByteOp::Zero, ByteOp::Set] {
            for &(offset, len, partial, whole) in &ranges {
                let what = format!("{kind:?} {op:?} {offset}+{len}");
                assert_eq!(partial_blocks(offset, len), partial, "{what}: test table");
                let f = patterned_file(size);
                let cache = cache(kind, B, 32);
                let dev = cache.open(f.path()).unwrap();
                let want = byte_op_data(op, offset, len as usize);
                match op {
                    ByteOp::Write => cache.write_bytes(dev, offset, &want).unwrap(),
                    ByteOp::Zero => cache.zero_bytes(dev, offset, len).unwrap(),
                    ByteOp::Set => cache.set_bytes(dev, offset, len, 0xa7).unwrap(),
                }
                let s = cache.stats();
                assert_eq!(
                    (s.reads_issued, s.write_zeroes, s.write_misses, s.write_hits),
                    (partial, whole, partial + whole, 0),
                    "{what}: only partial edge blocks are read: {s:?}"
                );
                let mut back = vec![0u8; len as usize];
                cache.read_bytes(dev, offset, &mut back).unwrap();
                assert_same(&back, &want, &format!("{what}: read_bytes before flush"));

                cache.flush().unwrap();
                cache.invalidate_device(dev).unwrap();
                assert_same(
                    &file_bytes(f.path(), offset, len as usize),
                    &want,
                    &format!("{what}: file"),
                );
                let before = offset.saturating_sub(128);
                assert_same(
                    &file_bytes(f.path(), before, (offset - before) as usize),
                    &original(before, (offset - before) as usize),
                    &format!("{what}: bytes before the range"),
                );
                let after = (offset + len + 128).min(size);
                assert_same(
                    &file_bytes(f.path(), offset + len, (after - offset - len) as usize),
                    &original(offset + len, (after - offset - len) as usize),
                    &format!("{what}: bytes after the range"),
                );
                assert_eq!(
                    std::fs::metadata(f.path()).unwrap().len(),
                    size,
                    "{what}: file size"
                );
                // Read back through the cache after invalidation: from the file.
                let mut back = vec![0u8; len as usize];
                cache.read_bytes(dev, offset, &mut back).unwrap();
                assert_same(&back, &want, &format!("{what}: read_bytes after invalidate"));
                let touched = (offset + len - 1) / BU - offset / BU + 1;
                assert_eq!(cache.stats().reads_issued, partial + touched, "{what}");
                // A wider read_bytes sees the untouched neighbours too.
                let (lo, hi) = (before, after);
                let mut wide = vec![0u8; (hi - lo) as usize];
                cache.read_bytes(dev, lo, &mut wide).unwrap();
                assert_same(
                    &wide,
                    &file_bytes(f.path(), lo, (hi - lo) as usize),
                    &format!("{what}: wide read"),
                );
            }
        }
    }
}

/// A range much larger than the cache: every piece but the current one has
/// to be written back to make room.
#[test]
fn byte_helpers_through_a_one_block_cache() {
    for kind in engines() {
        let f = patterned_file(32 * BU);
        let cache = cache(kind, B, 1);
        let dev = cache.open(f.path()).unwrap();
        let (offset, len) = (3 * BU + 100, 20 * B);
        let data = byte_op_data(ByteOp::Write, offset, len);
        cache.write_bytes(dev, offset, &data).unwrap();
        let s = cache.stats();
        assert_eq!((s.reads_issued, s.write_zeroes), (2, 19), "{kind:?}: {s:?}");
        assert!(
            s.writes_issued >= 20,
            "{kind:?}: 20 of 21 blocks had to leave: {s:?}"
        );
        let mut back = vec![0u8; len];
        cache.read_bytes(dev, offset, &mut back).unwrap();
        assert_same(&back, &data, &format!("{kind:?}: read_bytes"));
        cache.flush().unwrap();
        assert_same(
            &file_bytes(f.path(), offset, len),
            &data,
            &format!("{kind:?}: file"),
        );
        assert_same(
            &file_bytes(f.path(), offset - 128, 128),
            &original(offset - 128, 128),
            &format!("{kind:?}: before"),
        );
        let end = offset + len as u64;
        assert_same(
            &file_bytes(f.path(), end, 128),
            &original(end, 128),
            &format!("{kind:?}: after"),
        );
    }
}

#[test]
fn read_bytes_returns_the_files_bytes_at_any_offset() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 4);
        let dev = cache.open(f.path()).unwrap();
        for (offset, len) in [
            (0u64, 1usize),
            (1, 4095),
            (4095, 2),
            (3 * BU + 17, 5 * B + 3),
            (16 * BU - 1, 1),
            (0, 16 * B),
        ] {
            let mut buf = vec![0u8; len];
            cache.read_bytes(dev, offset, &mut buf).unwrap();
            assert_same(
                &buf,
                &file_bytes(f.path(), offset, len),
                &format!("{kind:?} {offset}+{len}"),
            );
        }
    }
}

// ---- stats ----------------------------------------------------------------

#[test]
fn evictions_take_the_least_recently_used_clean_block() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 4);
        let dev = cache.open(f.path()).unwrap();
        for b in 0..4 {
            drop(cache.read(dev, b).unwrap());
        }
        assert_eq!(cache.stats().evictions, 0, "{kind:?}: free slots first");
        drop(cache.read(dev, 0).unwrap()); // 0 is now the most recently used
        drop(cache.read(dev, 4).unwrap()); // evicts 1
        assert_eq!(cache.stats().evictions, 1, "{kind:?}");
        assert!(
            matches!(cache.try_read(dev, 1), Err(Error::WouldBlock)),
            "{kind:?}: 1 evicted"
        );
        drop(cache.try_read(dev, 0).expect("0 kept"));
        drop(cache.read(dev, 5).unwrap()); // evicts 2
        drop(cache.read(dev, 6).unwrap()); // evicts 3
        assert!(
            matches!(cache.try_read(dev, 2), Err(Error::WouldBlock)),
            "{kind:?}: 2 evicted"
        );
        assert!(
            matches!(cache.try_read(dev, 3), Err(Error::WouldBlock)),
            "{kind:?}: 3 evicted"
        );
        // Clean, least recently used first: 4, 0, 5, 6. Holding 4 takes it
        // off the Clean list: the next three misses evict 0, 5 and 6.
        let held = cache.read(dev, 4).unwrap();
        for b in 7..10 {
            drop(cache.read(dev, b).unwrap());
        }
        drop(held);
        drop(cache.try_read(dev, 4).expect("held block 4 never evicted"));
        let s = cache.stats();
        assert_eq!(s.evictions, 6, "{kind:?}: {s:?}");
        assert_eq!(
            (s.reads_issued, s.read_misses, s.read_hits),
            (10, 10, 4),
            "{kind:?}: {s:?}"
        );
        for b in [0u64, 5, 6] {
            assert!(
                matches!(cache.try_read(dev, b), Err(Error::WouldBlock)),
                "{kind:?}: {b} evicted"
            );
        }
    }
}

/// From src/owner/get.rs `preemptive_writeback`: when fewer than a third of
/// the slots are free or clean after a put, the oldest dirty blocks are
/// written until two thirds will be. Capacity 9: the 7th dirty block leaves
/// 2 free slots (6 < 9), and 4 writebacks bring it to 6 (18 >= 18).
#[test]
fn preemptive_writeback_starts_at_a_third_and_stops_at_two_thirds() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 9);
        let dev = cache.open(f.path()).unwrap();
        for b in 0..6u64 {
            cache.write(dev, b).unwrap().copy_from_slice(&new_data(b as u8));
        }
        barrier(&cache, dev);
        let s = cache.stats();
        assert_eq!(
            (s.preemptive_writebacks, s.writes_issued),
            (0, 0),
            "{kind:?}: 6 dirty of 9: {s:?}"
        );
        cache.write(dev, 6).unwrap().copy_from_slice(&new_data(6));
        barrier(&cache, dev);
        let s = cache.stats();
        assert_eq!(
            (s.preemptive_writebacks, s.writes_issued),
            (4, 4),
            "{kind:?}: 7 dirty of 9: {s:?}"
        );
        // The flush writes the other three and waits for the four.
        cache.flush().unwrap();
        let s = cache.stats();
        assert_eq!(
            (s.preemptive_writebacks, s.writes_issued),
            (4, 7),
            "{kind:?}: {s:?}"
        );
        for b in 0..7u64 {
            assert_same(
                &file_block(f.path(), b),
                &new_data(b as u8),
                &format!("{kind:?}: block {b}"),
            );
        }
    }
}

/// `flush` returning `Ok` means on stable storage: writes made earlier by
/// `invalidate` or to make room are synced too, even with nothing dirty.
#[test]
fn flush_syncs_writes_made_by_invalidate_and_eviction() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 2);
        let dev = cache.open(f.path()).unwrap();
        cache.write(dev, 1).unwrap().fill(0x01);
        cache.invalidate(dev, 1).unwrap();
        let s = cache.stats();
        assert_eq!((s.writes_issued, s.syncs), (1, 0), "{kind:?}: {s:?}");
        cache.flush().unwrap();
        let s = cache.stats();
        assert_eq!(
            (s.writes_issued, s.syncs),
            (1, 1),
            "{kind:?}: flush synced the invalidate's write: {s:?}"
        );
        cache.flush().unwrap();
        assert_eq!(cache.stats().syncs, 1, "{kind:?}: nothing new to sync");

        // Write 3 blocks through 2 slots: the second put leaves no slot
        // free or clean, so blocks 2 and 3 are written preemptively; block
        // 4 evicts one of them once it is clean. Block 4 is written
        // preemptively too if, when its guard goes, the other writeback
        // has not completed yet (no slot clean or free then): a race with
        // the device, so either count is right. Every write so far was
        // preemptive but the invalidate's.
        for b in 2..5u64 {
            cache.write(dev, b).unwrap().fill(b as u8);
        }
        let s = cache.stats();
        assert_eq!(s.evictions, 1, "{kind:?}: {s:?}");
        assert!(matches!(s.preemptive_writebacks, 2 | 3), "{kind:?}: {s:?}");
        assert_eq!(s.writes_issued, 1 + s.preemptive_writebacks, "{kind:?}: {s:?}");
        cache.flush().unwrap();
        let s = cache.stats();
        assert_eq!((s.writes_issued, s.syncs), (4, 2), "{kind:?}: {s:?}");
        for b in 2..5u64 {
            assert_same(
                &file_block(f.path(), b),
                &[b as u8; B],
                &format!("{kind:?}: block {b}"),
            );
        }
    }
}

// ---- independence ---------------------------------------------------------

#[test]
fn two_caches_in_one_process_are_independent() {
    for kind in engines() {
        let (fa, a, da) = cache_with_file(kind, B, 8, 16);
        let (fb, b, db) = cache_with_file(kind, B, 8, 16);
        a.write(da, 0).unwrap().fill(0x11);
        b.write(db, 0).unwrap().fill(0x22);
        drop(b.read(db, 1).unwrap());
        let (sa, sb) = (a.stats(), b.stats());
        assert_eq!(
            (sa.write_misses, sa.read_misses, sa.reads_issued),
            (1, 0, 1),
            "{kind:?} a: {sa:?}"
        );
        assert_eq!(
            (sb.write_misses, sb.read_misses, sb.reads_issued),
            (1, 1, 2),
            "{kind:?} b: {sb:?}"
        );

        // Closing a's device leaves b's alone, whatever their ids.
        a.close(da).unwrap();
        assert_same(
            &file_block(fa.path(), 0),
            &[0x11; B],
            &format!("{kind:?}: a closed"),
        );
        assert_same(
            &file_block(fb.path(), 0),
            &original(0, B),
            &format!("{kind:?}: b still dirty"),
        );
        assert_same(
            &b.read(db, 0).unwrap(),
            &[0x22; B],
            &format!("{kind:?}: b's block"),
        );
        assert_eq!(b.device_blocks(db).unwrap(), 16, "{kind:?}");
        assert_eq!(
            b.stats().writes_issued,
            0,
            "{kind:?}: a's close wrote nothing of b"
        );

        // Shutting a down leaves b working.
        a.shutdown().unwrap();
        b.write(db, 3).unwrap().fill(0x33);
        b.flush().unwrap();
        assert_same(
            &file_block(fb.path(), 0),
            &[0x22; B],
            &format!("{kind:?}: b block 0"),
        );
        assert_same(
            &file_block(fb.path(), 3),
            &[0x33; B],
            &format!("{kind:?}: b block 3"),
        );
        assert_eq!(b.stats().writes_issued, 2, "{kind:?}");
    }
}

#[test]
fn engine_kind_auto_works() {
    let f = patterned_file(8 * BU);
    let cache = cache(EngineKind::Auto, B, 4);
    let dev = cache.open(f.path()).unwrap();
    assert_same(&cache.read(dev, 7).unwrap(), &file_block(f.path(), 7), "Auto");
}

// ---- resources and ops with I/O in flight ---------------------------------

/// How many of this process's descriptors are open on `path`.
fn fds_on(path: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l == path)
        .count()
}

/// Prefetches of large blocks are most likely still in flight when the
/// last handle goes; its drop must still return with the threads stopped
/// (the device's descriptor closed). Passes trivially if they finished.
#[test]
fn dropping_the_last_handle_with_prefetches_in_flight_stops_everything() {
    const MB: u64 = 1 << 20;
    for kind in engines() {
        let f = patterned_file(4 * MB);
        let base = fds_on(f.path());
        let cache = cache(kind, MB as usize, 4);
        let dev = cache.open(f.path()).unwrap();
        assert_eq!(fds_on(f.path()), base + 1, "{kind:?}: open");
        for b in 0..4 {
            cache.prefetch(dev, b);
        }
        drop(cache);
        assert_eq!(
            fds_on(f.path()),
            base,
            "{kind:?}: descriptor still open after the last drop"
        );
    }
}

#[test]
fn shutdown_with_prefetches_in_flight_stops_everything() {
    const MB: u64 = 1 << 20;
    for kind in engines() {
        let f = patterned_file(4 * MB);
        let base = fds_on(f.path());
        let cache = cache(kind, MB as usize, 4);
        let dev = cache.open(f.path()).unwrap();
        for b in 0..4 {
            cache.prefetch(dev, b);
        }
        cache.shutdown().unwrap();
        assert_eq!(
            fds_on(f.path()),
            base,
            "{kind:?}: descriptor still open after shutdown"
        );
    }
}

#[test]
fn close_with_a_prefetch_in_flight_waits_it_out_and_releases_the_device() {
    for kind in engines() {
        let f = patterned_file(64 * BU);
        let base = fds_on(f.path());
        let cache = cache(kind, B, 64);
        let dev = cache.open(f.path()).unwrap();
        for b in 0..64 {
            cache.prefetch(dev, b);
        }
        cache.close(dev).unwrap();
        assert_eq!(
            fds_on(f.path()),
            base,
            "{kind:?}: descriptor still open after close"
        );
        assert!(
            matches!(cache.read(dev, 0), Err(Error::UnknownDevice)),
            "{kind:?}"
        );
        let s = cache.stats();
        assert_eq!(
            (s.prefetches, s.reads_issued, s.writes_issued),
            (64, 64, 0),
            "{kind:?}: {s:?}"
        );
        // The slots came back: another device can use all of them.
        let g = patterned_file(64 * BU);
        let d2 = cache.open(g.path()).unwrap();
        for b in 0..64 {
            assert_same(
                &cache.read(d2, b).unwrap(),
                &file_block(g.path(), b),
                &format!("{kind:?}: block {b}"),
            );
        }
        assert_eq!(cache.stats().evictions, 0, "{kind:?}: close freed every slot");
    }
}

#[test]
fn invalidate_and_abort_with_a_prefetch_in_flight_drop_the_block() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 16);
        let dev = cache.open(f.path()).unwrap();
        cache.prefetch(dev, 5);
        cache.invalidate(dev, 5).unwrap();
        assert!(
            matches!(cache.try_read(dev, 5), Err(Error::WouldBlock)),
            "{kind:?}: invalidate"
        );
        for b in 0..16 {
            cache.prefetch(dev, b);
        }
        cache.invalidate_device(dev).unwrap();
        for b in 0..16 {
            assert!(
                matches!(cache.try_read(dev, b), Err(Error::WouldBlock)),
                "{kind:?}: invalidate_device {b}"
            );
        }
        for b in 0..16 {
            cache.prefetch(dev, b);
        }
        cache.abort_device(dev).unwrap();
        for b in 0..16 {
            assert!(
                matches!(cache.try_read(dev, b), Err(Error::WouldBlock)),
                "{kind:?}: abort_device {b}"
            );
        }
        let s = cache.stats();
        assert_eq!((s.prefetches, s.reads_issued), (33, 33), "{kind:?}: {s:?}");
        assert_same(
            &cache.read(dev, 5).unwrap(),
            &file_block(f.path(), 5),
            &format!("{kind:?}"),
        );
        assert_eq!(cache.stats().reads_issued, 34, "{kind:?}");
    }
}

#[test]
fn close_releases_the_devices_descriptor() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let base = fds_on(f.path());
        let cache = cache(kind, B, 8);
        let dev = cache.open(f.path()).unwrap();
        let ro = cache.open_read_only(f.path()).unwrap();
        assert_eq!(fds_on(f.path()), base + 2, "{kind:?}");
        drop(cache.read(ro, 1).unwrap());
        cache.close(dev).unwrap();
        assert_eq!(fds_on(f.path()), base + 1, "{kind:?}: after close");
        assert_same(
            &cache.read(ro, 1).unwrap(),
            &file_block(f.path(), 1),
            &format!("{kind:?}: other device"),
        );
        drop(cache);
        assert_eq!(fds_on(f.path()), base, "{kind:?}: after the last handle");
    }
}

// ---- held blocks and other devices ---------------------------------------

#[test]
fn flush_skips_held_blocks_and_the_next_flush_writes_them() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 8);
        let dev = cache.open(f.path()).unwrap();
        cache.write(dev, 2).unwrap().fill(0x22);
        cache.write(dev, 3).unwrap().fill(0x33);
        let mut w = cache.write(dev, 2).unwrap(); // dirty and held
        cache.flush().unwrap();
        assert_same(
            &file_block(f.path(), 3),
            &[0x33; B],
            &format!("{kind:?}: unheld block"),
        );
        assert_same(
            &file_block(f.path(), 2),
            &original(2 * BU, B),
            &format!("{kind:?}: held block"),
        );
        w.fill(0x44);
        drop(w);
        cache.flush().unwrap();
        assert_same(
            &file_block(f.path(), 2),
            &[0x44; B],
            &format!("{kind:?}: after release"),
        );
        let s = cache.stats();
        assert_eq!((s.writes_issued, s.reads_issued), (2, 2), "{kind:?}: {s:?}");
    }
}

#[test]
fn shutdown_with_a_live_guard_flushes_when_the_guard_drops() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 8);
        let dev = cache.open(f.path()).unwrap();
        cache.write(dev, 1).unwrap().fill(0x11);
        let mut w = cache.write(dev, 7).unwrap();
        cache.shutdown().unwrap();
        assert_same(
            &file_block(f.path(), 1),
            &[0x11; B],
            &format!("{kind:?}: unheld block at shutdown"),
        );
        assert_same(
            &file_block(f.path(), 7),
            &original(7 * BU, B),
            &format!("{kind:?}: held block"),
        );
        w.fill(0x77);
        drop(w);
        assert_same(
            &file_block(f.path(), 7),
            &[0x77; B],
            &format!("{kind:?}: after the last guard"),
        );
    }
}

#[test]
fn a_held_block_of_one_device_does_not_make_another_busy() {
    for kind in engines() {
        let fa = patterned_file(16 * BU);
        let fb = patterned_file(16 * BU);
        let cache = cache(kind, B, 16);
        let da = cache.open(fa.path()).unwrap();
        let db = cache.open(fb.path()).unwrap();
        let held = cache.write(da, 0).unwrap();
        cache.write(db, 1).unwrap().fill(0xb1);
        cache.invalidate_device(db).unwrap();
        assert_same(
            &file_block(fb.path(), 1),
            &[0xb1; B],
            &format!("{kind:?}: invalidate_device"),
        );
        cache.write(db, 2).unwrap().fill(0xb2);
        cache.abort_device(db).unwrap();
        assert_same(
            &file_block(fb.path(), 2),
            &original(2 * BU, B),
            &format!("{kind:?}: abort_device"),
        );
        cache.write(db, 3).unwrap().fill(0xb3);
        cache.close(db).unwrap();
        assert_same(&file_block(fb.path(), 3), &[0xb3; B], &format!("{kind:?}: close"));
        assert!(
            matches!(cache.close(da), Err(Error::Busy)),
            "{kind:?}: the held device"
        );
        drop(held);
        cache.close(da).unwrap();
    }
}
