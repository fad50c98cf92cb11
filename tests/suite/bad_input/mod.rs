//! Bad input is an `Err` of the right variant, never a panic or an abort,
//! and leaves the cache usable: every test ends with a successful read.
//! Here: blocks and byte ranges past a device's end or whose offsets
//! overflow u64, files that are empty or end inside a block, unknown and
//! closed devices, writes to read-only devices, bad configs, pools and
//! per-block tables that cannot be allocated, byte ranges larger than
//! memory, an owner pinned to a CPU, a block size below a device's logical
//! block, and a file on a filesystem without O_DIRECT. Paths the cache
//! cannot or may not open are in `paths`.
//!
//! The tests that limit this process's address space or could abort it
//! run themselves again in a child process of the test binary and set the
//! limit there: a limit is per process, and no other test may allocate
//! under it.

use crate::common;
use blockcache::{Cache, Config, DeviceId, EngineKind, Error};
use common::*;
use std::fmt::Debug;
use std::path::Path;
use std::process::Command;

mod paths;

const B: usize = 4096;
const BU: u64 = B as u64;

/// The original contents of `len` bytes at `offset` of a `patterned_file`.
fn original(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64).map(pattern).collect()
}

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

/// `r` is `Err(OutOfRange { dev, block })`, whose message names the block.
#[track_caller]
fn assert_out_of_range<T: Debug>(r: Result<T, Error>, dev: DeviceId, block: u64, what: &str) {
    match r {
        Err(e @ Error::OutOfRange { dev: d, block: b }) if d == dev && b == block => {
            assert!(e.to_string().contains(&block.to_string()), "{what}: {e}")
        }
        other => panic!("{what}: want OutOfRange {{ {dev:?}, {block} }}, got {other:?}"),
    }
}

/// `r` is `Err(OutOfRange { dev, .. })`.
#[track_caller]
fn assert_range_err<T: Debug>(r: Result<T, Error>, dev: DeviceId, what: &str) {
    match r {
        Err(Error::OutOfRange { dev: d, .. }) if d == dev => {}
        other => panic!("{what}: want OutOfRange on {dev:?}, got {other:?}"),
    }
}

#[track_caller]
fn assert_unknown<T: Debug>(r: Result<T, Error>, what: &str) {
    match r {
        Err(Error::UnknownDevice) => {}
        other => panic!("{what}: want UnknownDevice, got {other:?}"),
    }
}

#[track_caller]
fn assert_read_only<T: Debug>(r: Result<T, Error>, what: &str) {
    match r {
        Err(Error::ReadOnly) => {}
        other => panic!("{what}: want ReadOnly, got {other:?}"),
    }
}

#[track_caller]
pub(super) fn assert_io<T: Debug>(r: Result<T, Error>, what: &str) -> std::io::Error {
    match r {
        Err(Error::Io(e)) => e,
        other => panic!("{what}: want Io, got {other:?}"),
    }
}

/// `Cache::new` failed with `InvalidConfig` and a message.
#[track_caller]
fn assert_invalid_config(r: Result<Cache, Error>, what: &str) {
    match r {
        Err(Error::InvalidConfig(m)) => assert!(!m.is_empty(), "{what}: empty message"),
        Err(e) => panic!("{what}: want InvalidConfig, got {e:?}"),
        Ok(_) => panic!("{what}: want InvalidConfig, got a cache"),
    }
}

/// The cache still works: a read of `block` returns the file's bytes.
#[track_caller]
pub(super) fn still_works(cache: &Cache, dev: DeviceId, path: &Path, block: u64, what: &str) {
    let g = cache
        .read(dev, block)
        .unwrap_or_else(|e| panic!("{what}: read after bad input: {e:?}"));
    assert_same(
        &g,
        &file_bytes(path, block * BU, B),
        &format!("{what}: read after bad input"),
    );
}

/// The cache still reads a fresh file correctly.
#[track_caller]
pub(super) fn still_reads_a_fresh_file(cache: &Cache, what: &str) {
    let f = patterned_file(4 * BU);
    let dev = cache
        .open(f.path())
        .unwrap_or_else(|e| panic!("{what}: open after bad input: {e}"));
    let g = cache.read(dev, 2).unwrap();
    assert!(
        g[..] == file_bytes(f.path(), 2 * BU, B)[..],
        "{what}: read after bad input"
    );
}

// ---- out-of-range blocks ----------------------------------------------------

#[test]
fn blocks_past_the_end_are_out_of_range() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 8);
        let dev = cache.open(f.path()).unwrap();
        let n = cache.device_blocks(dev).unwrap();
        assert_eq!(n, 16, "{kind:?}");
        for b in [n, n + 1, u64::MAX] {
            let what = format!("{kind:?} block {b}");
            assert_out_of_range(cache.read(dev, b), dev, b, &format!("{what} read"));
            assert_out_of_range(cache.write(dev, b), dev, b, &format!("{what} write"));
            assert_out_of_range(cache.zeroed(dev, b), dev, b, &format!("{what} zeroed"));
            assert_out_of_range(cache.try_read(dev, b), dev, b, &format!("{what} try_read"));
            assert_out_of_range(cache.try_write(dev, b), dev, b, &format!("{what} try_write"));
            assert_out_of_range(cache.invalidate(dev, b), dev, b, &format!("{what} invalidate"));
            cache.prefetch(dev, b);
        }
        // A round trip after the prefetches: they were handled, and ignored.
        cache.flush().unwrap();
        let s = cache.stats();
        assert_eq!(
            (
                s.reads_issued,
                s.writes_issued,
                s.prefetches,
                s.read_misses,
                s.write_misses,
                s.write_zeroes
            ),
            (0, 0, 0, 0, 0, 0),
            "{kind:?}: {s:?}"
        );
        still_works(&cache, dev, f.path(), n - 1, &format!("{kind:?}"));
        still_works(&cache, dev, f.path(), 0, &format!("{kind:?}"));
        assert_same(
            &std::fs::read(f.path()).unwrap(),
            &original(0, 16 * B),
            &format!("{kind:?}: file"),
        );
    }
}

#[test]
fn byte_ranges_past_the_end_or_overflowing_are_out_of_range_and_change_nothing() {
    for kind in engines() {
        let size = 16 * BU;
        let f = patterned_file(size);
        let cache = cache(kind, B, 8);
        let dev = cache.open(f.path()).unwrap();
        let cases: [(u64, u64); 6] = [
            (size - 10, 20),    // straddles the end
            (size, 1),          // starts at the end
            (size + 100, 5),    // wholly past
            (0, size + 1),      // the whole device and one more
            (u64::MAX - 3, 10), // offset + len overflows
            (u64::MAX, 1),
        ];
        for (offset, len) in cases {
            let what = format!("{kind:?} {offset}+{len}");
            let mut buf = vec![0u8; len as usize];
            assert_range_err(
                cache.read_bytes(dev, offset, &mut buf),
                dev,
                &format!("{what} read_bytes"),
            );
            assert_range_err(
                cache.write_bytes(dev, offset, &buf),
                dev,
                &format!("{what} write_bytes"),
            );
            assert_range_err(
                cache.zero_bytes(dev, offset, len),
                dev,
                &format!("{what} zero_bytes"),
            );
            assert_range_err(
                cache.set_bytes(dev, offset, len, 0xee),
                dev,
                &format!("{what} set_bytes"),
            );
        }
        cache.flush().unwrap();
        let s = cache.stats();
        assert_eq!(
            (
                s.reads_issued,
                s.writes_issued,
                s.write_misses,
                s.write_zeroes,
                s.read_misses
            ),
            (0, 0, 0, 0, 0),
            "{kind:?}: a range checked first touches no block: {s:?}"
        );
        assert_same(
            &std::fs::read(f.path()).unwrap(),
            &original(0, size as usize),
            &format!("{kind:?}: file"),
        );
        // The in-range part of the straddling range is untouched in the cache too.
        let mut tail = vec![0u8; 10];
        cache.read_bytes(dev, size - 10, &mut tail).unwrap();
        assert_same(&tail, &original(size - 10, 10), &format!("{kind:?}: tail"));
        still_works(&cache, dev, f.path(), 3, &format!("{kind:?}"));
    }
}

// ---- numbers that overflow ---------------------------------------------------

#[test]
fn block_numbers_whose_byte_offset_overflows_are_out_of_range() {
    for kind in engines() {
        for bs in [512usize, 4096, 1 << 20] {
            let f = patterned_file(4 * bs as u64);
            let cache = Cache::new(blockcache::Config::new(bs, 4).engine(kind)).unwrap();
            let dev = cache.open(f.path()).unwrap();
            let last_whole = u64::MAX / bs as u64; // offset fits, barely
            for b in [u64::MAX / 2, last_whole, last_whole + 1, u64::MAX - 1] {
                let what = format!("{kind:?} bs {bs} block {b}");
                assert_out_of_range(cache.read(dev, b), dev, b, &format!("{what} read"));
                assert_out_of_range(cache.write(dev, b), dev, b, &format!("{what} write"));
                assert_out_of_range(cache.zeroed(dev, b), dev, b, &format!("{what} zeroed"));
                assert_out_of_range(cache.try_read(dev, b), dev, b, &format!("{what} try_read"));
                assert_out_of_range(cache.try_write(dev, b), dev, b, &format!("{what} try_write"));
                assert_out_of_range(cache.invalidate(dev, b), dev, b, &format!("{what} invalidate"));
                cache.prefetch(dev, b);
            }
            cache.flush().unwrap();
            let s = cache.stats();
            assert_eq!(
                (s.reads_issued, s.writes_issued, s.prefetches),
                (0, 0, 0),
                "{s:?}"
            );
            let g = cache.read(dev, 3).unwrap();
            assert!(
                g[..] == file_bytes(f.path(), 3 * bs as u64, bs)[..],
                "{kind:?} bs {bs}"
            );
        }
    }
}

#[test]
fn byte_ranges_whose_end_overflows_or_is_empty_are_handled() {
    for kind in engines() {
        let size = 8 * BU;
        let f = patterned_file(size);
        let cache = cache(kind, B, 4);
        let dev = cache.open(f.path()).unwrap();
        let range_err = |r: Result<(), Error>, what: &str| match r {
            Err(Error::OutOfRange { dev: d, .. }) if d == dev => {}
            other => panic!("{kind:?} {what}: want OutOfRange, got {other:?}"),
        };
        // In-range offsets whose end overflows: only the u64 lengths can.
        for (off, len) in [(1, u64::MAX), (size - 1, u64::MAX - size + 2), (0, u64::MAX)] {
            range_err(
                cache.zero_bytes(dev, off, len),
                &format!("zero_bytes {off}+{len}"),
            );
            range_err(
                cache.set_bytes(dev, off, len, 7),
                &format!("set_bytes {off}+{len}"),
            );
        }
        // Empty ranges: fine anywhere up to the end, out of range past it.
        let mut empty = [0u8; 0];
        for off in [0, 5, size] {
            cache.read_bytes(dev, off, &mut empty).unwrap();
            cache.write_bytes(dev, off, &empty).unwrap();
            cache.zero_bytes(dev, off, 0).unwrap();
            cache.set_bytes(dev, off, 0, 1).unwrap();
        }
        for off in [size + 1, u64::MAX] {
            range_err(
                cache.read_bytes(dev, off, &mut empty),
                &format!("read_bytes {off}+0"),
            );
            range_err(
                cache.write_bytes(dev, off, &empty),
                &format!("write_bytes {off}+0"),
            );
            range_err(cache.zero_bytes(dev, off, 0), &format!("zero_bytes {off}+0"));
        }
        cache.flush().unwrap();
        let s = cache.stats();
        assert_eq!(
            (s.reads_issued, s.writes_issued),
            (0, 0),
            "{kind:?}: nothing touched: {s:?}"
        );
        assert!(
            std::fs::read(f.path()).unwrap() == (0..size).map(pattern).collect::<Vec<u8>>(),
            "{kind:?}: file changed"
        );
        still_reads_a_fresh_file(&cache, &format!("{kind:?}"));
    }
}

// ---- files that are empty or end inside a block -----------------------------

#[test]
fn a_zero_length_file_has_no_blocks() {
    for kind in engines() {
        let empty = tempfile::NamedTempFile::new_in("/var/tmp").unwrap();
        let cache = cache(kind, B, 4);
        let dev = cache.open(empty.path()).unwrap();
        assert_eq!(cache.device_blocks(dev).unwrap(), 0, "{kind:?}");
        assert_out_of_range(cache.read(dev, 0), dev, 0, &format!("{kind:?} read"));
        assert_out_of_range(cache.write(dev, 0), dev, 0, &format!("{kind:?} write"));
        assert_out_of_range(cache.zeroed(dev, 0), dev, 0, &format!("{kind:?} zeroed"));
        assert_out_of_range(cache.try_read(dev, 0), dev, 0, &format!("{kind:?} try_read"));
        let mut one = [0u8; 1];
        assert_range_err(
            cache.read_bytes(dev, 0, &mut one),
            dev,
            &format!("{kind:?} read_bytes"),
        );
        assert_range_err(
            cache.write_bytes(dev, 0, &one),
            dev,
            &format!("{kind:?} write_bytes"),
        );
        cache.prefetch(dev, 0);
        cache.flush().unwrap();
        let s = cache.stats();
        assert_eq!(
            (s.reads_issued, s.prefetches, s.writes_issued),
            (0, 0, 0),
            "{kind:?}: {s:?}"
        );
        assert_eq!(
            std::fs::metadata(empty.path()).unwrap().len(),
            0,
            "{kind:?}: file grew"
        );
        cache.close(dev).unwrap();
        let f = patterned_file(4 * BU);
        let dev = cache.open(f.path()).unwrap();
        still_works(&cache, dev, f.path(), 0, &format!("{kind:?}"));
    }
}

#[test]
fn a_partial_last_block_is_not_addressable() {
    for kind in engines() {
        let size = 10 * BU + 1000;
        let f = patterned_file(size);
        let cache = cache(kind, B, 4);
        let dev = cache.open(f.path()).unwrap();
        assert_eq!(cache.device_blocks(dev).unwrap(), 10, "{kind:?}");
        still_works(&cache, dev, f.path(), 9, &format!("{kind:?}"));
        assert_out_of_range(cache.read(dev, 10), dev, 10, &format!("{kind:?} read"));
        assert_out_of_range(cache.write(dev, 10), dev, 10, &format!("{kind:?} write"));
        let mut buf = [0u8; 20];
        assert_range_err(
            cache.read_bytes(dev, 10 * BU - 10, &mut buf),
            dev,
            &format!("{kind:?} read_bytes"),
        );
        assert_range_err(
            cache.set_bytes(dev, 10 * BU - 10, 20, 9),
            dev,
            &format!("{kind:?} set_bytes"),
        );
        cache.read_bytes(dev, 10 * BU - 10, &mut buf[..10]).unwrap();
        assert_same(
            &buf[..10],
            &original(10 * BU - 10, 10),
            &format!("{kind:?}: last whole bytes"),
        );
        // Writing the last whole block leaves the tail and the size alone.
        cache.write(dev, 9).unwrap().fill(0x99);
        cache.flush().unwrap();
        assert!(
            file_bytes(f.path(), 9 * BU, B).iter().all(|&x| x == 0x99),
            "{kind:?}: block 9"
        );
        assert_same(
            &file_bytes(f.path(), 10 * BU, 1000),
            &original(10 * BU, 1000),
            &format!("{kind:?}: tail"),
        );
        assert_eq!(std::fs::metadata(f.path()).unwrap().len(), size, "{kind:?}: size");
        let s = cache.stats();
        // Block 9 was read once (by `still_works`); every later access hit.
        assert_eq!((s.reads_issued, s.writes_issued), (1, 1), "{kind:?}: {s:?}");
    }
}

// ---- unknown and closed devices -------------------------------------------

/// Every device operation on `dev` is `UnknownDevice`; a prefetch is ignored.
fn assert_all_unknown(cache: &Cache, dev: DeviceId, what: &str) {
    assert_unknown(cache.device_blocks(dev), &format!("{what} device_blocks"));
    assert_unknown(cache.read(dev, 0), &format!("{what} read"));
    assert_unknown(cache.write(dev, 0), &format!("{what} write"));
    assert_unknown(cache.zeroed(dev, 0), &format!("{what} zeroed"));
    assert_unknown(cache.try_read(dev, 0), &format!("{what} try_read"));
    assert_unknown(cache.try_write(dev, 0), &format!("{what} try_write"));
    assert_unknown(cache.invalidate(dev, 0), &format!("{what} invalidate"));
    assert_unknown(cache.invalidate_device(dev), &format!("{what} invalidate_device"));
    assert_unknown(cache.flush_device(dev), &format!("{what} flush_device"));
    assert_unknown(cache.close(dev), &format!("{what} close"));
    assert_unknown(cache.abort_device(dev), &format!("{what} abort_device"));
    let mut buf = [0u8; 16];
    assert_unknown(cache.read_bytes(dev, 0, &mut buf), &format!("{what} read_bytes"));
    assert_unknown(cache.write_bytes(dev, 0, &buf), &format!("{what} write_bytes"));
    assert_unknown(cache.zero_bytes(dev, 0, 16), &format!("{what} zero_bytes"));
    assert_unknown(cache.set_bytes(dev, 0, 16, 1), &format!("{what} set_bytes"));
    cache.prefetch(dev, 0);
    cache.flush().unwrap(); // a round trip: the prefetch was handled
}

#[test]
fn a_device_of_another_cache_is_unknown() {
    for kind in engines() {
        let fa = patterned_file(16 * BU);
        let a = cache(kind, B, 8);
        let b = cache(kind, B, 8);
        let da = a.open(fa.path()).unwrap();
        assert_all_unknown(&b, da, &format!("{kind:?}"));
        let s = b.stats();
        assert_eq!(
            (s.reads_issued, s.prefetches, s.writes_issued),
            (0, 0, 0),
            "{kind:?}: {s:?}"
        );
        // Both caches still work.
        still_works(&a, da, fa.path(), 1, &format!("{kind:?} a"));
        let fb = patterned_file(16 * BU);
        let db = b.open(fb.path()).unwrap();
        still_works(&b, db, fb.path(), 1, &format!("{kind:?} b"));
        assert_eq!(a.stats().reads_issued, 1, "{kind:?}: a's counters are a's");
    }
}

/// A `DeviceId` names a device "of one cache": another cache that has
/// devices of its own must not take it for one of them.
#[test]
fn a_device_of_another_cache_is_unknown_even_when_that_cache_has_devices() {
    for kind in engines() {
        let (fa, a, da) = cache_with_file(kind, B, 8, 16);
        let (fb, b, db) = cache_with_file(kind, B, 8, 16);
        assert_unknown(b.read(da, 0), &format!("{kind:?}: b.read(a's device)"));
        assert_unknown(b.write(da, 0), &format!("{kind:?}: b.write(a's device)"));
        assert_unknown(a.close(db), &format!("{kind:?}: a.close(b's device)"));
        still_works(&a, da, fa.path(), 1, &format!("{kind:?} a"));
        still_works(&b, db, fb.path(), 1, &format!("{kind:?} b"));
    }
}

#[test]
fn a_closed_device_is_unknown() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 8);
        let dev = cache.open(f.path()).unwrap();
        drop(cache.read(dev, 2).unwrap());
        cache.close(dev).unwrap();
        assert_all_unknown(&cache, dev, &format!("{kind:?}"));
        let s = cache.stats();
        assert_eq!(
            (s.reads_issued, s.prefetches, s.writes_issued),
            (1, 0, 0),
            "{kind:?}: {s:?}"
        );
        let again = cache.open(f.path()).unwrap();
        assert_ne!(again, dev, "{kind:?}");
        still_works(&cache, again, f.path(), 2, &format!("{kind:?}"));
        assert_eq!(
            cache.stats().reads_issued,
            2,
            "{kind:?}: close dropped the old blocks"
        );
    }
}

// ---- read-only devices ------------------------------------------------------

#[test]
fn writes_to_a_read_only_device_are_refused() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, B, 8);
        let dev = cache.open_read_only(f.path()).unwrap();
        still_works(&cache, dev, f.path(), 0, &format!("{kind:?}"));
        // Block 0 resident and unheld, block 5 not resident.
        for b in [0u64, 5] {
            let what = format!("{kind:?} block {b}");
            assert_read_only(cache.write(dev, b), &format!("{what} write"));
            assert_read_only(cache.zeroed(dev, b), &format!("{what} zeroed"));
            assert_read_only(cache.try_write(dev, b), &format!("{what} try_write"));
        }
        let data = [0x5au8; 100];
        assert_read_only(
            cache.write_bytes(dev, 10, &data),
            &format!("{kind:?} write_bytes"),
        );
        assert_read_only(
            cache.write_bytes(dev, 0, &[0u8; B]),
            &format!("{kind:?} write_bytes block"),
        );
        assert_read_only(
            cache.zero_bytes(dev, BU - 50, 100),
            &format!("{kind:?} zero_bytes"),
        );
        assert_read_only(
            cache.set_bytes(dev, 2 * BU, 3 * BU, 1),
            &format!("{kind:?} set_bytes"),
        );
        let s = cache.stats();
        assert_eq!(
            (s.reads_issued, s.write_misses, s.write_hits, s.write_zeroes),
            (1, 0, 0, 0),
            "{kind:?}: {s:?}"
        );
        cache.flush().unwrap();
        cache.invalidate_device(dev).unwrap();
        assert_same(
            &std::fs::read(f.path()).unwrap(),
            &original(0, 16 * B),
            &format!("{kind:?}: file"),
        );
        let mut buf = vec![0u8; 3 * B];
        cache.read_bytes(dev, BU / 2, &mut buf).unwrap();
        assert_same(&buf, &original(BU / 2, 3 * B), &format!("{kind:?}: read_bytes"));
        still_works(&cache, dev, f.path(), 15, &format!("{kind:?}"));
        cache.close(dev).unwrap();
    }
}

// ---- configs ----------------------------------------------------------------

#[test]
fn bad_configs_are_invalid() {
    for bs in [0usize, 511, 513, 3000, 2 << 20] {
        assert_invalid_config(Cache::new(Config::new(bs, 8)), &format!("block size {bs}"));
        assert_invalid_config(
            Cache::new(Config::new(bs, 8).engine(EngineKind::Sync)),
            &format!("block size {bs}, Sync"),
        );
    }
    assert_invalid_config(Cache::new(Config::new(4096, 0)), "capacity 0");
    assert_invalid_config(Cache::new(Config::new(4096, 8).queue_depth(0)), "queue depth 0");
    assert_invalid_config(
        Cache::new(Config::new(4096, 8).queue_depth(blockcache::config::MAX_QUEUE_DEPTH + 1)),
        "queue depth above the maximum",
    );
    assert_invalid_config(
        Cache::new(Config::new(512, blockcache::config::MAX_CAPACITY + 1)),
        "capacity > MAX_CAPACITY",
    );
    assert_invalid_config(
        Cache::new(Config::new(1 << 20, usize::MAX)),
        "pool size overflows",
    );
    assert_invalid_config(
        Cache::new(Config::new(4096, 8).owner_cpu(Some(1 << 20))),
        "no such CPU",
    );
    // The error says what is wrong.
    match Cache::new(Config::new(511, 8)) {
        Err(e @ Error::InvalidConfig(_)) => {
            assert!(
                e.to_string().contains("511"),
                "message does not name the block size: {e}"
            )
        }
        Err(e) => panic!("block size 511: {e:?}"),
        Ok(_) => panic!("block size 511 accepted"),
    }
    // The process can still make caches.
    let f = patterned_file(4 * BU);
    let cache = cache(EngineKind::Sync, B, 1);
    let dev = cache.open(f.path()).unwrap();
    still_works(&cache, dev, f.path(), 3, "after bad configs");
}

#[test]
fn every_power_of_two_block_size_from_512_to_1mib_works() {
    const FILE: u64 = 4 << 20;
    for kind in engines() {
        let f = patterned_file(FILE);
        let mut bs = 512usize;
        while bs <= 1 << 20 {
            let what = format!("{kind:?} block size {bs}");
            let cache = match Cache::new(Config::new(bs, 2).engine(kind)) {
                Ok(c) => c,
                Err(e) => panic!("{what}: {e:?}"),
            };
            assert_eq!(cache.block_size(), bs, "{what}");
            let dev = cache.open(f.path()).unwrap();
            let n = FILE / bs as u64;
            assert_eq!(cache.device_blocks(dev).unwrap(), n, "{what}");
            for b in [0, 1, n - 1] {
                let g = cache.read(dev, b).unwrap();
                assert_same(
                    &g,
                    &file_bytes(f.path(), b * bs as u64, bs),
                    &format!("{what} block {b}"),
                );
            }
            cache.write(dev, 1).unwrap().fill(bs.trailing_zeros() as u8);
            cache.flush().unwrap();
            assert!(
                file_bytes(f.path(), bs as u64, bs)
                    .iter()
                    .all(|&x| x == bs.trailing_zeros() as u8),
                "{what}: write"
            );
            assert_same(
                &file_bytes(f.path(), 2 * bs as u64, 128),
                &original(2 * bs as u64, 128),
                &format!("{what}: next block untouched"),
            );
            cache.shutdown().unwrap();
            bs *= 2;
        }
    }
}

/// Run test `name` of this module again in a child process of the test
/// binary, with `var` set to `value`,
/// and assert that it passed there: a scenario that could abort the
/// process (a failed allocation) takes down only the child.
///
/// The child's glibc malloc keeps one arena: an arena for a thread other
/// than the main one reserves 64 MiB of address space up front, and a
/// large allocation that finds no room for a mapping of its own is carved
/// from that reserve, which would blur the address-space limits the tests
/// set by up to 64 MiB.
fn passes_in_a_child(name: &str, var: &str, value: &str) {
    let full = test_name(module_path!(), name);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &full,
            "--include-ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(var, value)
        .env("MALLOC_ARENA_MAX", "1")
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} with {var}={value}: child {:?}:\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A pool that cannot be allocated (2 PiB: more than the address space,
/// though the size fits an `isize`) is out of memory: `Err(Io)` of kind
/// `OutOfMemory` from `Cache::new` naming the sizes, with the kernel's
/// error as its source, not an abort of the process.
#[test]
fn a_pool_too_large_to_allocate_is_an_error_not_an_abort() {
    const CHILD: &str = "BLOCKCACHE_TEST_HUGE_POOL_CHILD";
    if std::env::var_os(CHILD).is_none() {
        return passes_in_a_child(
            "a_pool_too_large_to_allocate_is_an_error_not_an_abort",
            CHILD,
            "1",
        );
    }
    let capacity = blockcache::config::MAX_CAPACITY;
    match Cache::new(Config::new(1 << 20, capacity).engine(EngineKind::Sync)) {
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::OutOfMemory => {
            let m = e.to_string();
            assert!(m.contains("pool"), "the message does not name the pool: {m}");
            for size in [
                capacity.to_string(),
                (1 << 20).to_string(),
                (capacity << 20).to_string(),
            ] {
                assert!(m.contains(&size), "the message does not name {size}: {m}");
            }
            let os = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .and_then(|s| s.raw_os_error());
            assert_eq!(os, Some(libc::ENOMEM), "the kernel's error is the source: {e:?}");
        }
        other => panic!("2 PiB pool: want Io(OutOfMemory), got {other:?}"),
    }
    // And the process can still make caches.
    let f = patterned_file(2 * BU);
    let cache = cache(EngineKind::Sync, B, 1);
    let dev = cache.open(f.path()).unwrap();
    still_works(&cache, dev, f.path(), 1, "after a huge pool");
}

// ---- allocations that do not fit an address-space limit -------------------

const MIB: u64 = 1 << 20;

/// The address space this process has mapped (VmSize), in bytes.
fn address_space_in_use() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("VmSize in /proc/self/status");
    kib * 1024
}

fn rlimit_as() -> libc::rlimit {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the rlimit it is given, which lives
    // for the call.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) }, 0);
    lim
}

fn set_rlimit_as(lim: libc::rlimit) {
    // SAFETY: setrlimit only reads the rlimit it is given.
    let r = unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) };
    assert_eq!(r, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// Limit this process's address space (RLIMIT_AS) to what it maps now
/// plus `headroom` bytes, until the returned guard is dropped. Only the
/// soft limit is lowered, so it can be raised again. The limit is on
/// address space, not memory in use: it does not depend on what else runs
/// on the machine, and untouched mappings (a zeroed pool) cost no memory.
#[must_use]
fn limit_address_space(headroom: u64) -> impl Drop {
    struct Lift(libc::rlimit);
    impl Drop for Lift {
        fn drop(&mut self) {
            set_rlimit_as(self.0);
        }
    }
    let old = rlimit_as();
    let in_use = address_space_in_use();
    set_rlimit_as(libc::rlimit {
        rlim_cur: in_use + headroom,
        rlim_max: old.rlim_max,
    });
    Lift(old)
}

/// The tables a cache keeps per block (its index, each slot's shared word
/// and the owner's own slot records and lists) are allocated fallibly:
/// when the pool fits the address space but a table does not, `Cache::new`
/// is `Err(Io)` of kind `OutOfMemory` naming the capacity and the table,
/// whether the table is one clients share or one of the owner thread's.
/// Each limit runs in its own child. The pool (256 MiB) always fits; the tables of 2^19 blocks are
/// MiBs each (the index 8 MiB, the slot words 32 MiB, the owner's records
/// more), so every limit below falls well inside one table's allocation.
#[test]
fn per_block_tables_that_do_not_fit_are_an_error_not_an_abort() {
    const CHILD: &str = "BLOCKCACHE_TEST_TABLE_HEADROOM_MIB";
    const NAME: &str = "per_block_tables_that_do_not_fit_are_an_error_not_an_abort";
    const BLOCK: usize = 512;
    const CAPACITY: usize = 1 << 19;
    const POOL: u64 = (BLOCK * CAPACITY) as u64;
    let Some(headroom) = std::env::var_os(CHILD) else {
        // Past the pool: 4 MiB is short of the index; 24 MiB holds the
        // index but not the slot words; 56 MiB holds what clients share
        // (40 MiB) but not the owner's records. 1 GiB holds everything.
        for mib in ["4", "24", "56", "1024"] {
            passes_in_a_child(NAME, CHILD, mib);
        }
        return;
    };
    let headroom: u64 = headroom.to_str().unwrap().parse().unwrap();
    let config = Config::new(BLOCK, CAPACITY).engine(EngineKind::Sync);
    let limit = limit_address_space(POOL + headroom * MIB);
    let r = Cache::new(config);
    drop(limit);
    let what = format!("{CAPACITY} blocks of {BLOCK} bytes, {headroom} MiB past the pool");
    // The table each limit is short of, as the message names it.
    let table = match headroom {
        4 => "index",
        24 => "shared",
        _ => "owner",
    };
    match r {
        Err(Error::Io(e)) if headroom < 1024 && e.kind() == std::io::ErrorKind::OutOfMemory => {
            let m = e.to_string();
            println!("{what}: {m}");
            assert!(m.contains(&format!("{CAPACITY} blocks")), "{what}: {m}");
            assert!(m.contains(table), "{what}: want the {table} table: {m}");
        }
        Ok(cache) if headroom >= 1024 => {
            let f = patterned_file(4 * BLOCK as u64);
            let dev = cache.open(f.path()).unwrap();
            let g = cache.read(dev, 3).unwrap();
            assert_same(&g, &file_bytes(f.path(), 3 * BLOCK as u64, BLOCK), &what);
        }
        other => panic!("{what}: {other:?}"),
    }
    // The process can still make caches.
    let f = patterned_file(2 * BU);
    let cache = cache(EngineKind::Sync, B, 1);
    let dev = cache.open(f.path()).unwrap();
    still_works(&cache, dev, f.path(), 1, &what);
}

/// The byte helpers walk a range block by block and stop at the first
/// error: a range far larger than the address space is never laid out in
/// memory. A 64 GiB device (a sparse file) of 512-byte blocks under an
/// address-space limit of 32 MiB more than the process maps: a read-only
/// device refuses `set_bytes` at its first block, a failed read ends
/// `read_bytes` into a 1 GiB buffer at its first block, and writebacks
/// that fail end `set_bytes` once the cache's 64 blocks are dirty, having
/// set exactly those.
#[test]
fn byte_ranges_larger_than_memory_are_walked_not_materialised() {
    use blockcache::engine::IoKind;
    use common::fault::FaultPlan;
    const CHILD: &str = "BLOCKCACHE_TEST_HUGE_RANGE";
    const NAME: &str = "byte_ranges_larger_than_memory_are_walked_not_materialised";
    const BLOCK: usize = 512;
    const SIZE: u64 = 64 << 30;
    let Some(case) = std::env::var_os(CHILD) else {
        for case in ["read-only", "read", "write"] {
            passes_in_a_child(NAME, CHILD, case);
        }
        return;
    };
    let case = case.to_str().unwrap().to_string();
    let sparse = sparse_file(SIZE);
    let plan = FaultPlan::new();
    let cache =
        Cache::new(Config::new(BLOCK, 64).custom_engine(std::sync::Arc::new(plan.factory()))).unwrap();
    let dev = match case.as_str() {
        "read-only" => cache.open_read_only(sparse.path()).unwrap(),
        _ => cache.open(sparse.path()).unwrap(),
    };
    let mut buf = Vec::new();
    if case == "read" {
        buf = vec![0u8; 1 << 30];
        plan.fail_always(IoKind::Read, None, libc::EIO);
    } else if case == "write" {
        plan.fail_always(IoKind::Write, None, libc::EIO);
    }
    let limit = limit_address_space(32 * MIB);
    let r = match case.as_str() {
        "read-only" => cache.set_bytes(dev, 0, SIZE, 0),
        "read" => cache.read_bytes(dev, 0, &mut buf),
        "write" => cache.set_bytes(dev, 0, SIZE, 7),
        other => panic!("unknown case {other}"),
    };
    drop(limit);
    match (case.as_str(), r) {
        ("read-only", Err(Error::ReadOnly)) => {}
        ("read" | "write", Err(Error::Io(e))) if e.raw_os_error() == Some(libc::EIO) => {}
        (case, other) => panic!("{case}: {other:?}"),
    }
    let s = cache.stats();
    match case.as_str() {
        "read-only" => assert_eq!((s.reads_issued, s.writes_issued), (0, 0), "{s:?}"),
        "read" => assert_eq!((s.reads_issued, s.writes_issued), (1, 0), "{s:?}"),
        _ => assert_eq!(s.reads_issued, 0, "{s:?}"),
    }
    // The cache still works (a flush writes what failed to write back).
    plan.clear();
    cache.flush().unwrap();
    if case == "write" {
        let set = file_bytes(sparse.path(), 0, 65 * BLOCK);
        assert!(
            set[..64 * BLOCK].iter().all(|&b| b == 7),
            "the first 64 blocks are set"
        );
        assert!(set[64 * BLOCK..].iter().all(|&b| b == 0), "nothing past them is");
    }
    let f = patterned_file(4 * BU);
    let other = cache.open(f.path()).unwrap();
    let g = cache.read(other, 5).unwrap();
    assert_same(&g, &file_bytes(f.path(), 5 * BLOCK as u64, BLOCK), &case);
}

/// The first CPU this process may run on (from /proc/self/status).
fn an_allowed_cpu() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in /proc/self/status");
    let first = list.trim().split([',', '-']).next().unwrap();
    first.parse().unwrap()
}

#[test]
fn a_pinned_owner_works() {
    let f = patterned_file(4 * BU);
    let cpu = an_allowed_cpu();
    for kind in engines() {
        let cache = Cache::new(Config::new(B, 2).engine(kind).owner_cpu(Some(cpu))).unwrap();
        let dev = cache.open(f.path()).unwrap();
        still_works(&cache, dev, f.path(), 3, &format!("{kind:?}"));
    }
}

// ---- logical block size -----------------------------------------------------

/// A read-only loop device with 4096-byte logical blocks over a file,
/// detached on drop.
struct Loop {
    dev: String,
}

impl Loop {
    fn new(backing: &Path) -> Option<Loop> {
        let out = {
            // One `losetup --find` at a time (see `ATTACH`).
            let _one = common::loopfs::ATTACH.lock().unwrap_or_else(|e| e.into_inner());
            Command::new("losetup")
                .args(["--find", "--show", "--read-only", "--sector-size", "4096"])
                .arg(backing)
                .output()
                .ok()?
        };
        if !out.status.success() {
            eprintln!("losetup failed: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        Some(Loop {
            dev: String::from_utf8(out.stdout).ok()?.trim().to_string(),
        })
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

#[test]
fn a_block_size_below_the_devices_logical_block_is_invalid() {
    let f = patterned_file(1 << 20);
    let Some(lo) = Loop::new(f.path()) else {
        eprintln!("skipping: cannot set up a loop device with 4096-byte sectors (needs root)");
        return;
    };
    let dev_path = Path::new(&lo.dev);
    for kind in engines() {
        for bs in [512usize, 1024, 2048] {
            let cache = cache(kind, bs, 4);
            match cache.open_read_only(dev_path) {
                Err(Error::InvalidConfig(m)) => assert!(!m.is_empty(), "{kind:?} {bs}"),
                other => panic!("{kind:?} block size {bs} on 4096-byte sectors: {other:?}"),
            }
            // The cache still works on a file.
            let g = patterned_file(4 * BU);
            let d = cache.open(g.path()).unwrap();
            let blk = cache.read(d, 1).unwrap();
            assert_same(
                &blk,
                &file_bytes(g.path(), bs as u64, bs),
                &format!("{kind:?} {bs}"),
            );
        }
        // A multiple of it works.
        let cache = cache(kind, B, 4);
        let d = cache.open_read_only(dev_path).unwrap();
        assert_eq!(cache.device_blocks(d).unwrap(), (1 << 20) / BU, "{kind:?}");
        let blk = cache.read(d, 3).unwrap();
        assert_same(
            &blk,
            &file_bytes(f.path(), 3 * BU, B),
            &format!("{kind:?}: loop block 3"),
        );
        drop(blk);
        assert_read_only(cache.write(d, 3), &format!("{kind:?}: loop write"));
        cache.close(d).unwrap();
    }
}

// ---- a filesystem without O_DIRECT -------------------------------------------

/// tmpfs refuses O_DIRECT: the device falls back to buffered I/O and works
/// the same.
#[test]
fn a_file_on_tmpfs_works_without_o_direct() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("skipping: no /dev/shm");
        return;
    }
    for kind in engines() {
        let mut f = tempfile::NamedTempFile::new_in(shm).unwrap();
        let data = original(0, 8 * B);
        std::io::Write::write_all(&mut f, &data).unwrap();
        let probe = blockcache::device::DeviceFile::open(f.path(), true).unwrap();
        if probe.is_direct() {
            eprintln!("skipping: /dev/shm accepts O_DIRECT here");
            return;
        }
        let cache = cache(kind, B, 4);
        let dev = cache.open(f.path()).unwrap();
        assert_eq!(cache.device_blocks(dev).unwrap(), 8, "{kind:?}");
        for b in 0..8 {
            still_works(&cache, dev, f.path(), b, &format!("{kind:?}"));
        }
        cache.write_bytes(dev, 3 * BU - 5, &[0xcd; 10]).unwrap();
        cache.flush().unwrap();
        assert_same(
            &file_bytes(f.path(), 3 * BU - 5, 10),
            &[0xcd; 10],
            &format!("{kind:?}: write"),
        );
        assert_same(
            &file_bytes(f.path(), 3 * BU - 133, 128),
            &original(3 * BU - 133, 128),
            &format!("{kind:?}"),
        );
        // Out-of-range is still out of range.
        assert_out_of_range(cache.read(dev, 8), dev, 8, &format!("{kind:?}"));
    }
}
