//! Shutdown and the drop of the last handle while dirty blocks, I/O in
//! flight and live guards remain (`Cache::shutdown`): in-flight I/O is
//! waited out before the threads stop and memory is freed, dirty data is
//! written, and a shutdown that cannot write says how many blocks it lost.
//!
//! I/O is held in flight with the fault engine (`common::fault`):
//! `hold` keeps the next matching request until `release`. Its rules are
//! given for any block (`None`) throughout.
//! (`errors` covers `Unwritten` for writes that shutdown itself issues,
//! and a failed sync after them.)

use crate::common;
use blockcache::engine::IoKind::{Fsync, Read, Write};
use blockcache::Error;
use common::fault::*;
use common::watchdog::{fds_on, within};
use common::*;
use std::thread;

const EIO: i32 = libc::EIO;

#[test]
fn shutdown_waits_out_a_writeback_in_flight_and_a_live_guard_writes_later() {
    let f = patterned_file(32 * BS as u64);
    let path = f.path().to_path_buf();
    let plan = FaultPlan::new();
    within("shutdown with a held write", move || {
        let base = fds_on(&path);
        let cache = fault_cache(&plan, 16);
        let _release = plan.release_on_drop();
        let dev = cache.open(&path).unwrap();
        cache.write(dev, 1).unwrap().fill(0x11);
        cache.write(dev, 2).unwrap().fill(0x22);
        plan.hold(Write, None, 1);
        let flusher = {
            let c = cache.clone();
            thread::spawn(move || c.flush())
        };
        plan.wait_held(1); // block 1's write, in flight
        cache.write(dev, 3).unwrap().fill(0x33); // dirty, not yet written
        let mut live = cache.write(dev, 5).unwrap(); // a live guard
        let shutdown = thread::spawn(move || cache.shutdown());
        // Shutdown writes block 3, then must wait for block 1's write.
        wait_until(|| plan.ops().contains(&(dev, Write, 3)));
        assert!(
            !shutdown.is_finished(),
            "shutdown returned with a write in flight"
        );
        assert_eq!(plan.held(), 1);
        assert_eq!(plan.release(), 1);
        flusher.join().unwrap().unwrap();
        shutdown.join().unwrap().unwrap();
        for (b, x) in [(1, 0x11), (2, 0x22), (3, 0x33)] {
            assert_filled(&on_disk(&path, b), x, &format!("block {b} after shutdown"));
        }
        let ops = plan.ops();
        let last_write = ops.iter().rposition(|o| o.1 == Write).unwrap();
        assert!(
            ops[last_write..].contains(&(dev, Fsync, 0)),
            "synced after the last write: {ops:?}"
        );
        // The guard outlives every handle; its drop writes it and stops.
        live.fill(0x55);
        drop(live);
        assert_filled(&on_disk(&path, 5), 0x55, "block 5 after the last guard");
        assert_eq!(fds_on(&path), base, "the device is closed");
    });
}

/// A write another operation started, still in flight when shutdown
/// begins, that then fails: shutdown reports it lost.
#[test]
fn shutdown_reports_a_writeback_in_flight_that_fails() {
    let f = patterned_file(32 * BS as u64);
    let path = f.path().to_path_buf();
    let plan = FaultPlan::new();
    within("shutdown with a failing held write", move || {
        let cache = fault_cache(&plan, 16);
        let _release = plan.release_on_drop();
        let dev = cache.open(&path).unwrap();
        cache.write(dev, 1).unwrap().fill(0x11);
        plan.hold_then_fail(Write, None, 1, EIO);
        let flusher = {
            let c = cache.clone();
            thread::spawn(move || c.flush())
        };
        plan.wait_held(1);
        cache.write(dev, 2).unwrap().fill(0x22);
        let shutdown = thread::spawn(move || cache.shutdown());
        wait_until(|| plan.ops().contains(&(dev, Write, 2)));
        // From now on block 1 cannot be written at all (the drop of the
        // last handle, after shutdown, tries once more).
        plan.fail_always(Write, None, EIO);
        assert_eq!(plan.release(), 1);
        assert_eq!(errno_of(flusher.join().unwrap()), EIO);
        match shutdown.join().unwrap() {
            Err(Error::Unwritten { blocks, source }) => {
                assert_eq!(blocks, 1, "block 1 was lost");
                assert_eq!(source.raw_os_error(), Some(EIO));
            }
            other => panic!("want Err(Unwritten), got {other:?}"),
        }
        assert_filled(&on_disk(&path, 2), 0x22, "block 2");
        assert_block(&on_disk(&path, 1), &original(1), "block 1 never reached the file");
    });
}

/// As above, and the sync after shutdown's own writes fails too: every
/// block is lost once, the one in flight and the one shutdown wrote.
#[test]
fn shutdown_counts_a_failed_write_in_flight_and_a_failed_sync_separately() {
    let f = patterned_file(32 * BS as u64);
    let path = f.path().to_path_buf();
    let plan = FaultPlan::new();
    within("shutdown with a failing held write and sync", move || {
        let cache = fault_cache(&plan, 16);
        let _release = plan.release_on_drop();
        let dev = cache.open(&path).unwrap();
        cache.write(dev, 1).unwrap().fill(0x11);
        plan.hold_then_fail(Write, None, 1, EIO);
        let flusher = {
            let c = cache.clone();
            thread::spawn(move || c.flush())
        };
        plan.wait_held(1);
        cache.write(dev, 2).unwrap().fill(0x22);
        plan.fail(Fsync, None, 1, EIO);
        let shutdown = thread::spawn(move || cache.shutdown());
        wait_until(|| plan.ops().contains(&(dev, Write, 2)));
        assert_eq!(plan.release(), 1);
        assert_eq!(errno_of(flusher.join().unwrap()), EIO);
        match shutdown.join().unwrap() {
            Err(Error::Unwritten { blocks, source }) => {
                assert_eq!(source.raw_os_error(), Some(EIO));
                assert_eq!(
                    blocks,
                    2,
                    "block 1's write failed; block 2 was written but its sync failed: {:?}",
                    plan.ops()
                );
            }
            other => panic!("want Err(Unwritten), got {other:?}"),
        }
    });
}

/// The drop of the last handle, with a writeback in flight that no client
/// waits for (a preemptive one): it returns only after that write, its own
/// writes and the sync, with the threads stopped.
#[test]
fn dropping_the_last_handle_waits_out_a_preemptive_writeback() {
    let f = patterned_file(32 * BS as u64);
    let path = f.path().to_path_buf();
    let plan = FaultPlan::new();
    within("last handle with a held write", move || {
        let base = fds_on(&path);
        let cache = fault_cache(&plan, 3);
        let _release = plan.release_on_drop();
        let dev = cache.open(&path).unwrap();
        plan.hold(Write, None, 1);
        // The third dirty block of three slots starts preemptive writeback.
        for b in 0..3u64 {
            cache.write(dev, b).unwrap().fill(0xa0 + b as u8);
        }
        plan.wait_held(1);
        wait_until(|| cache.stats().preemptive_writebacks == 2);
        let dropper = thread::spawn(move || drop(cache));
        wait_until(|| plan.ops().contains(&(dev, Write, 2)));
        assert!(
            !dropper.is_finished(),
            "the last drop returned with a write in flight"
        );
        assert_eq!(plan.release(), 1);
        dropper.join().unwrap();
        assert_eq!(fds_on(&path), base, "threads stopped, device closed");
        for b in 0..3u64 {
            assert_filled(&on_disk(&path, b), 0xa0 + b as u8, &format!("block {b}"));
        }
        assert_eq!(plan.ops().last().map(|o| o.1), Some(Fsync));
    });
}

/// The last handle and the last guard go while a read is in flight: the
/// last drop returns only after that read completed, the guard's block was
/// written and synced, and the threads stopped.
#[test]
fn the_last_guard_dropped_with_a_read_in_flight_still_writes_its_block() {
    let f = patterned_file(32 * BS as u64);
    let path = f.path().to_path_buf();
    let plan = FaultPlan::new();
    within("last guard with a held read", move || {
        let base = fds_on(&path);
        let cache = fault_cache(&plan, 8);
        let _release = plan.release_on_drop();
        let dev = cache.open(&path).unwrap();
        let mut w = cache.write(dev, 2).unwrap();
        plan.hold(Read, None, 1);
        cache.prefetch(dev, 9);
        plan.wait_held(1);
        cache.shutdown().unwrap(); // nothing unheld is dirty; reads are not waited for
        w.fill(0x22);
        let dropper = thread::spawn(move || drop(w)); // the last guard
        wait_until(|| plan.ops().contains(&(dev, Write, 2)));
        assert!(
            !dropper.is_finished(),
            "the last drop returned with a read in flight"
        );
        assert_eq!(fds_on(&path), base + 1, "threads stopped with a read in flight");
        assert_eq!(plan.release(), 1);
        dropper.join().unwrap();
        assert_eq!(fds_on(&path), base, "threads stopped when the last drop returned");
        assert_filled(&on_disk(&path, 2), 0x22, "block 2");
        let ops = plan.ops();
        assert_eq!(
            ops,
            [(dev, Read, 2), (dev, Read, 9), (dev, Write, 2), (dev, Fsync, 0)],
            "{ops:?}"
        );
    });
}

#[test]
fn dropping_the_last_handle_with_unwritable_blocks_returns_and_keeps_the_file() {
    let f = patterned_file(32 * BS as u64);
    let path = f.path().to_path_buf();
    let plan = FaultPlan::new();
    within("last handle, unwritable blocks", move || {
        let base = fds_on(&path);
        let cache = fault_cache(&plan, 8);
        let dev = cache.open(&path).unwrap();
        for b in [1u64, 2] {
            cache.write(dev, b).unwrap().fill(0xee);
        }
        plan.fail_always(Write, None, EIO);
        drop(cache); // logs the loss; must not hang or panic
        assert_eq!(fds_on(&path), base, "threads stopped");
        assert!(plan.count(Write) >= 2, "both blocks were tried: {:?}", plan.ops());
        assert_block(&on_disk(&path, 1), &original(1), "block 1 unchanged");
    });
}

/// `shutdown` releases one handle: clones keep working, and the last of
/// them writes what they dirtied.
#[test]
fn shutdown_of_one_handle_leaves_the_clones_working() {
    for kind in engines() {
        let f = patterned_file(32 * BS as u64);
        let base = fds_on(f.path());
        let cache = cache(kind, BS, 4);
        let dev = cache.open(f.path()).unwrap();
        let other = cache.clone();
        cache.write(dev, 1).unwrap().fill(0x11);
        cache.shutdown().unwrap();
        assert_filled(&on_disk(f.path(), 1), 0x11, &format!("{kind:?}: block 1"));
        for b in 2..10u64 {
            other.write(dev, b).unwrap().fill(b as u8);
        }
        assert_filled(&other.read(dev, 1).unwrap(), 0x11, &format!("{kind:?}"));
        drop(other);
        assert_eq!(fds_on(f.path()), base, "{kind:?}: threads stopped");
        for b in 2..10u64 {
            assert_filled(&on_disk(f.path(), b), b as u8, &format!("{kind:?}: block {b}"));
        }
    }
}
