//! The error contract (`Error`, and the README's "What it promises"),
//! driven through the fault-injecting engine: failed writebacks, failed
//! reads (and everyone waiting on them), a cache whose every block is
//! dirty and unwritable, failed syncs, and shutdown that cannot write
//! everything.

use crate::common;

use blockcache::engine::IoKind::{Fsync, Read, Write};
use blockcache::Error;
use common::fault::*;
use common::*;

const EIO: i32 = libc::EIO;
const ENOSPC: i32 = libc::ENOSPC;

#[test]
fn failed_writeback_stays_dirty_fails_flush_and_next_flush_writes_it() {
    let f = patterned_file(32 * BS as u64);
    let plan = FaultPlan::new();
    let cache = fault_cache(&plan, 8);
    let dev = cache.open(f.path()).unwrap();

    cache.write(dev, 3).unwrap().fill(0xaa);
    plan.take_ops();
    plan.fail(Write, Some(3), 1, EIO);

    assert_eq!(errno_of(cache.flush()), EIO, "flush reports the write's errno");
    assert_eq!(writes(&plan.take_ops()), [3]);
    assert_eq!(cache.stats().io_errors, 1);
    assert_block(&on_disk(f.path(), 3), &original(3), "nothing reached the file");
    // Still cached, with the data: a hit, no read.
    assert_filled(&cache.read(dev, 3).unwrap(), 0xaa, "block 3 from the cache");
    assert!(
        reads(&plan.take_ops()).is_empty(),
        "the dirty block was not dropped"
    );

    cache.flush().unwrap();
    assert_eq!(
        plan.take_ops(),
        [(dev, Write, 3), (dev, Fsync, 0)],
        "the next flush retries, then syncs"
    );
    assert_filled(&on_disk(f.path(), 3), 0xaa, "block 3 on disk");
    assert_eq!(cache.stats().io_errors, 1);

    // Now clean: a third flush has nothing to write.
    cache.flush().unwrap();
    assert!(writes(&plan.take_ops()).is_empty());
    cache.shutdown().unwrap();
}

#[test]
fn read_error_fails_the_get_and_caches_nothing() {
    let f = patterned_file(32 * BS as u64);
    let plan = FaultPlan::new();
    let cache = fault_cache(&plan, 8);
    let dev = cache.open(f.path()).unwrap();
    plan.fail(Read, Some(5), 1, EIO);

    assert_eq!(errno_of(cache.read(dev, 5)), EIO);
    assert_eq!(cache.stats().io_errors, 1);
    // Not cached: the next get reads again, and gets the disk's bytes (not
    // the poisoned buffer of the failed read).
    assert_block(
        &cache.read(dev, 5).unwrap(),
        &original(5),
        "block 5 from the cache",
    );
    assert_eq!(plan.take_ops(), [(dev, Read, 5), (dev, Read, 5)]);
    let s = cache.stats();
    assert_eq!((s.read_misses, s.read_hits, s.reads_issued), (2, 0, 2));

    // Same for a write get: the error, then a fresh read under the guard.
    plan.fail(Read, Some(6), 1, EIO);
    assert_eq!(errno_of(cache.write(dev, 6)), EIO);
    assert_block(
        &cache.write(dev, 6).unwrap(),
        &original(6),
        "block 6 from the cache",
    );
    assert_eq!(plan.take_ops(), [(dev, Read, 6), (dev, Read, 6)]);
    cache.shutdown().unwrap();
}

#[test]
fn read_error_reaches_every_waiter_of_the_block() {
    const WAITERS: u64 = 4;
    let f = patterned_file(32 * BS as u64);
    let plan = FaultPlan::new();
    let cache = fault_cache(&plan, 8);
    let _release = plan.release_on_drop();
    let dev = cache.open(f.path()).unwrap();
    plan.hold_then_fail(Read, Some(5), 1, EIO);

    let threads: Vec<_> = (0..WAITERS)
        .map(|i| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    cache.read(dev, 5).map(drop)
                } else {
                    cache.write(dev, 5).map(drop)
                }
            })
        })
        .collect();
    // Every get has reached the owner (each counts a miss as it queues),
    // and the one read is in flight, held.
    plan.wait_held(1);
    wait_until(|| {
        let s = cache.stats();
        s.read_misses + s.write_misses == WAITERS
    });
    assert_eq!(plan.ops(), [(dev, Read, 5)], "the waiters joined one read");
    assert_eq!(plan.release(), 1);

    for t in threads {
        assert_eq!(errno_of(t.join().unwrap()), EIO, "every waiter hears the error");
    }
    assert_eq!(cache.stats().io_errors, 1);
    // Nothing cached: the next get reads again and succeeds.
    assert_block(
        &cache.read(dev, 5).unwrap(),
        &original(5),
        "block 5 from the cache",
    );
    assert_eq!(plan.take_ops(), [(dev, Read, 5), (dev, Read, 5)]);
    drop(_release);
    cache.shutdown().unwrap();
}

#[test]
fn every_block_dirty_and_unwritable_fails_a_get_instead_of_hanging() {
    let f = patterned_file(32 * BS as u64);
    let plan = FaultPlan::new();
    let cache = fault_cache(&plan, 4);
    let dev = cache.open(f.path()).unwrap();
    plan.fail_always(Write, None, ENOSPC);

    for b in 0..4u64 {
        cache.write(dev, b).unwrap().fill(0x10 + b as u8);
    }
    // Every slot holds an unheld dirty block whose writeback fails: no slot
    // can come, so the get fails with the write error.
    assert_eq!(errno_of(cache.read(dev, 10)), ENOSPC);
    assert!(
        !reads(&plan.ops()).contains(&10),
        "no slot was taken for block 10"
    );
    assert!(cache.stats().io_errors >= 4);
    // Nothing accepted was lost, and the cache is still usable.
    for b in 0..4u64 {
        assert_filled(
            &cache.read(dev, b).unwrap(),
            0x10 + b as u8,
            &format!("block {b}"),
        );
    }

    plan.clear();
    plan.take_ops();
    cache.flush().unwrap();
    let ops = plan.take_ops();
    let mut written = writes(&ops);
    written.sort_unstable();
    assert_eq!(written, [0, 1, 2, 3], "{ops:?}");
    assert_eq!(ops.last(), Some(&(dev, Fsync, 0)), "{ops:?}");
    for b in 0..4u64 {
        assert_filled(
            &on_disk(f.path(), b),
            0x10 + b as u8,
            &format!("block {b} on disk"),
        );
    }
    // And room again: block 10 can be read now.
    assert_block(
        &cache.read(dev, 10).unwrap(),
        &original(10),
        "block 10 from the cache",
    );
    cache.shutdown().unwrap();
}

#[test]
fn failed_fsync_fails_flush_and_next_flush_syncs_again() {
    let f = patterned_file(32 * BS as u64);
    let plan = FaultPlan::new();
    let cache = fault_cache(&plan, 8);
    let dev = cache.open(f.path()).unwrap();

    cache.write(dev, 2).unwrap().fill(0x22);
    plan.take_ops();
    plan.fail(Fsync, None, 1, EIO);
    assert_eq!(errno_of(cache.flush()), EIO, "the sync's error is the flush's");
    assert_eq!(plan.take_ops(), [(dev, Write, 2), (dev, Fsync, 0)]);
    assert_eq!(cache.stats().syncs, 0);

    cache.flush().unwrap();
    let ops = plan.take_ops();
    assert_eq!(plan.count(Fsync), 2);
    assert_eq!(
        ops.last(),
        Some(&(dev, Fsync, 0)),
        "the next flush syncs again: {ops:?}"
    );
    assert_eq!(cache.stats().syncs, 1);
    assert_filled(&on_disk(f.path(), 2), 0x22, "block 2 on disk");
    cache.shutdown().unwrap();
}

#[test]
fn shutdown_with_unwritable_dirty_blocks_reports_how_many() {
    let f = patterned_file(32 * BS as u64);
    let plan = FaultPlan::new();
    let cache = fault_cache(&plan, 8);
    let dev = cache.open(f.path()).unwrap();
    for b in [1u64, 2, 3] {
        cache.write(dev, b).unwrap().fill(b as u8);
    }
    plan.fail_always(Write, Some(1), EIO);
    plan.fail_always(Write, Some(3), EIO);

    match cache.shutdown() {
        Err(Error::Unwritten { blocks, source }) => {
            assert_eq!(blocks, 2, "blocks 1 and 3 could not be written");
            assert_eq!(source.raw_os_error(), Some(EIO));
        }
        other => panic!("expected Err(Unwritten), got {other:?}"),
    }
    // Block 2 was written and synced; 1 and 3 never reached the file.
    assert_filled(&on_disk(f.path(), 2), 2, "block 2 on disk");
    assert_block(&on_disk(f.path(), 1), &original(1), "block 1 on disk");
    assert_block(&on_disk(f.path(), 3), &original(3), "block 3 on disk");
    assert!(plan.ops().contains(&(dev, Fsync, 0)));
}

/// `flush` returning `Ok` means the data is on stable storage. A flush
/// that starts while another flush's fdatasync is still in flight must
/// wait for that sync (and fail with it) or sync again itself: the data
/// the first flush wrote is not durable until a sync after it succeeds.
#[test]
fn flush_does_not_report_ok_for_data_whose_sync_is_in_flight() {
    let (f1, f2) = (patterned_file(32 * BS as u64), patterned_file(32 * BS as u64));
    let plan = FaultPlan::new();
    let cache = fault_cache(&plan, 16);
    let _release = plan.release_on_drop();
    let dev1 = cache.open(f1.path()).unwrap();
    let dev2 = cache.open(f2.path()).unwrap();

    cache.write(dev1, 2).unwrap().fill(0x21);
    plan.take_ops();
    plan.hold_then_fail(Fsync, None, 1, EIO);
    let first = {
        let cache = cache.clone();
        std::thread::spawn(move || cache.flush())
    };
    plan.wait_held(1);
    assert_eq!(plan.ops(), [(dev1, Write, 2), (dev1, Fsync, 0)]);

    // A second flush, with something of its own on another device, so
    // the test can see it reach its sync phase.
    cache.write(dev2, 4).unwrap().fill(0x42);
    let second = {
        let cache = cache.clone();
        std::thread::spawn(move || cache.flush())
    };
    wait_until(|| plan.ops().contains(&(dev2, Fsync, 0)));
    // dev1's sync now fails: block 2 is not known to be durable.
    assert_eq!(plan.release(), 1);

    assert_eq!(errno_of(first.join().unwrap()), EIO);
    let dev1_syncs = plan.ops().iter().filter(|o| **o == (dev1, Fsync, 0)).count();
    match second.join().unwrap() {
        Ok(()) => assert!(
            dev1_syncs >= 2,
            "the second flush returned Ok, but dev1's only sync (covering block 2, \
             written before that flush began) failed: {:?}",
            plan.ops()
        ),
        Err(e) => assert_eq!(errno_of::<()>(Err(e)), EIO),
    }
    drop(_release);
    cache.shutdown().unwrap();
}

/// Unwritten counts blocks, each once: a block whose write failed is not
/// counted again when the sync after the other writes fails too.
#[test]
fn shutdown_counts_each_lost_block_once() {
    let f = patterned_file(32 * BS as u64);
    let plan = FaultPlan::new();
    let cache = fault_cache(&plan, 8);
    let dev = cache.open(f.path()).unwrap();
    for b in [1u64, 2, 3] {
        cache.write(dev, b).unwrap().fill(b as u8);
    }
    plan.fail_always(Write, Some(1), EIO);
    plan.fail(Fsync, None, 1, EIO);

    match cache.shutdown() {
        Err(Error::Unwritten { blocks, source }) => {
            assert_eq!(source.raw_os_error(), Some(EIO));
            // 1 was never written; 2 and 3 were, but their sync failed.
            assert_eq!(blocks, 3, "3 dirty blocks, each lost once");
        }
        other => panic!("expected Err(Unwritten), got {other:?}"),
    }
    let ops = plan.ops();
    assert_eq!(writes(&ops)[..3], [1, 2, 3], "{ops:?}");
}

/// A block with a read in flight is not held: invalidating it waits the
/// read out, then drops the block.
#[test]
fn invalidate_waits_out_a_read_in_flight() {
    let f = patterned_file(32 * BS as u64);
    let plan = FaultPlan::new();
    let cache = fault_cache(&plan, 8);
    let _release = plan.release_on_drop();
    let dev = cache.open(f.path()).unwrap();

    cache.write(dev, 3).unwrap().fill(0x33);
    plan.take_ops();
    plan.hold(Read, Some(9), 1);
    cache.prefetch(dev, 9);
    plan.wait_held(1);

    let inval = {
        let cache = cache.clone();
        std::thread::spawn(move || cache.invalidate_device(dev))
    };
    // The invalidate has started (it wrote the dirty block) and now waits
    // for the held read.
    wait_until(|| plan.ops().contains(&(dev, Write, 3)));
    assert!(!inval.is_finished(), "invalidate returned with a read in flight");
    assert_eq!(plan.release(), 1);
    inval.join().unwrap().unwrap();

    assert_eq!(plan.take_ops(), [(dev, Read, 9), (dev, Write, 3)]);
    assert_filled(&on_disk(f.path(), 3), 0x33, "block 3 on disk");
    // Both dropped: getting them reads them again.
    assert_block(
        &cache.read(dev, 9).unwrap(),
        &original(9),
        "block 9 from the cache",
    );
    assert_filled(&cache.read(dev, 3).unwrap(), 0x33, "block 3 from the cache");
    assert_eq!(reads(&plan.take_ops()), [9, 3]);
    drop(_release);
    cache.shutdown().unwrap();
}

/// `e` and every `source()` under it, joined by ": ", as a report that
/// walks the chain prints it.
fn chain_text(e: &Error) -> String {
    std::iter::successors(Some(e as &dyn std::error::Error), |e| e.source())
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// `needle` occurs exactly once in `text`.
#[track_caller]
fn once(text: &str, needle: &str) {
    assert_eq!(text.matches(needle).count(), 1, "{needle:?} once in {text:?}");
}

/// Every layer of an error either displays its source or returns it from
/// `source()`, never both: the chain says the OS error once.
#[test]
fn an_error_chain_names_each_os_error_once() {
    // A failed open names the path, and keeps the OS error as the source.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let enoent = std::io::Error::from_raw_os_error(libc::ENOENT).to_string();
    for kind in engines() {
        let cache = cache(kind, BS, 4);
        for e in [cache.open(&missing), cache.open_read_only(&missing)].map(Result::unwrap_err) {
            let text = chain_text(&e);
            once(&text, &enoent);
            once(&text, &missing.display().to_string());
            assert!(matches!(e, Error::Io(_)), "{e:?}");
        }
    }

    // A failed read: an OS error with nothing under it.
    let eio = std::io::Error::from_raw_os_error(EIO).to_string();
    let f = patterned_file(32 * BS as u64);
    let plan = FaultPlan::new();
    let cache = fault_cache(&plan, 8);
    let dev = cache.open(f.path()).unwrap();
    plan.fail(Read, Some(5), 1, EIO);
    let e = cache.read(dev, 5).unwrap_err();
    once(&chain_text(&e), &eio);

    // Shutdown's count, then the first error.
    cache.write(dev, 1).unwrap().fill(1);
    plan.fail_always(Write, Some(1), EIO);
    let e = cache.shutdown().unwrap_err();
    assert!(matches!(e, Error::Unwritten { blocks: 1, .. }), "{e:?}");
    let text = chain_text(&e);
    once(&text, &eio);
    assert!(text.starts_with("1 dirty block could not be written: "), "{text}");
}
