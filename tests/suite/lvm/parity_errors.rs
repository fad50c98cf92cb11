//! LVM parity when things fail or are thrown away: the read-error,
//! write-error, invalidate and abort scenarios of lvm2's bcache unit tests
//! (`test/unit/bcache_t.c`) on the scripted engine, 64 KiB blocks, 16 of
//! them. Then a few checks that the script itself fails a test the way it
//! should.
//!
//! "Fails at submission" is an I/O the engine completes with an error
//! inside `submit` (LVM: `issue` returns false); "completes with EIO" is
//! one held in flight and then completed with the error from the test
//! thread (LVM: `wait` reports -EIO). The cache sees both as a failed
//! completion.

use crate::common;

use blockcache::Error;
use common::fault::{assert_block, assert_filled, errno_of, wait_until};
use common::scripted::{pattern_block, Answer, Call, ScriptedCache};
use common::spawn;

const EIO: i32 = libc::EIO;

// ---- read errors ------------------------------------------------------------

/// LVM read-bad-issue: a read that fails to submit fails the get at once
/// (nothing was released: the get waited for nothing).
#[test]
fn read_that_fails_to_submit_fails_the_get() {
    let mut fx = ScriptedCache::new(16);
    let dev = fx.open_device(16);
    fx.script.expect(Call::Read(dev, 0), Answer::Fail(EIO));
    assert_eq!(errno_of(fx.read(dev, 0)), EIO);
    fx.script.assert_met();
    assert_eq!(fx.stats().io_errors, 1);
    fx.finish();
}

/// LVM read-bad-issue-intermittent: after a failed submission, the next get
/// reads again and succeeds (the failed buffer was not kept).
#[test]
fn read_that_failed_to_submit_is_read_again_by_the_next_get() {
    let mut fx = ScriptedCache::new(16);
    let dev = fx.open_device(16);
    fx.script.expect(Call::Read(dev, 0), Answer::Fail(EIO));
    assert_eq!(errno_of(fx.write(dev, 0)), EIO);
    fx.script.read(dev, 0);
    assert_block(&fx.read(dev, 0).unwrap(), &pattern_block(dev, 0), "block 0");
    fx.script.assert_met();
    fx.finish(); // the failed write get dirtied nothing
}

/// LVM read-bad-io: a read that completes with EIO fails the get that
/// waited for it.
#[test]
fn read_that_completes_with_eio_fails_the_get() {
    let mut fx = ScriptedCache::new(16);
    let dev = fx.open_device(16);
    fx.script.expect(Call::Read(dev, 0), Answer::HoldThenFail(EIO));
    let get = spawn(&fx, move |c| c.read(dev, 0).map(drop));
    fx.script.wait_held(1);
    assert!(!get.is_finished(), "the get waits for its read");
    fx.script.release(Call::Read(dev, 0));
    assert_eq!(errno_of(get.join().unwrap()), EIO);
    fx.script.assert_met();
    fx.finish();
}

/// LVM read-bad-io-intermittent: after a read completed with EIO, the next
/// get reads again and succeeds.
#[test]
fn read_that_completed_with_eio_is_read_again_by_the_next_get() {
    let mut fx = ScriptedCache::new(16);
    let dev = fx.open_device(16);
    fx.script.expect(Call::Read(dev, 0), Answer::HoldThenFail(EIO));
    let get = spawn(&fx, move |c| c.read(dev, 0).map(drop));
    fx.script.wait_held(1);
    fx.script.release(Call::Read(dev, 0));
    assert_eq!(errno_of(get.join().unwrap()), EIO);

    fx.script.read(dev, 0);
    assert_block(&fx.read(dev, 0).unwrap(), &pattern_block(dev, 0), "block 0");
    fx.script.assert_met();
    fx.finish();
}

/// Every get waiting on a read (readers and a writer alike) hears its
/// error; they shared one read; nothing is cached, so the next get reads.
#[test]
fn every_waiter_on_a_failed_read_gets_the_error() {
    let mut fx = ScriptedCache::new(16);
    let dev = fx.open_device(16);
    fx.script.expect(Call::Read(dev, 0), Answer::HoldThenFail(EIO));
    let getters: Vec<_> = (0..4)
        .map(|i| {
            spawn(&fx, move |c| match i {
                3 => c.write(dev, 0).map(drop),
                _ => c.read(dev, 0).map(drop),
            })
        })
        .collect();
    // A state wait: each get counts as a miss when it joins the read.
    wait_until(|| {
        let s = fx.stats();
        s.read_misses + s.write_misses == 4
    });
    assert_eq!(fx.script.held(), [Call::Read(dev, 0)], "one read for all four");
    fx.script.release(Call::Read(dev, 0));
    for g in getters {
        assert_eq!(errno_of(g.join().unwrap()), EIO);
    }
    fx.script.read(dev, 0);
    assert_block(&fx.read(dev, 0).unwrap(), &pattern_block(dev, 0), "block 0");
    fx.script.assert_met();
    assert_eq!(fx.stats().io_errors, 1);
    fx.finish();
}

// ---- write errors -----------------------------------------------------------

/// LVM write-bad-issue-stops-flush: a zeroed block whose write fails to
/// submit makes flush fail (and sync nothing: nothing was written); the
/// next flush writes it again and succeeds.
#[test]
fn write_that_fails_to_submit_fails_flush_and_the_next_flush_writes_it() {
    let mut fx = ScriptedCache::new(16);
    let dev = fx.open_device(16);
    fx.zeroed(dev, 0).unwrap().fill(0x77);
    fx.script.expect(Call::Write(dev, 0), Answer::Fail(EIO));
    assert_eq!(errno_of(fx.flush()), EIO);
    fx.script.assert_met();
    assert_block(
        &fx.script.device_block(dev, 0),
        &pattern_block(dev, 0),
        "unwritten",
    );

    fx.script.write(dev, 0);
    fx.script.fsync(dev);
    fx.flush().unwrap();
    fx.script.assert_met();
    assert_filled(&fx.script.device_block(dev, 0), 0x77, "block 0 on the device");
    fx.finish();
}

/// LVM write-bad-io-stops-flush: the same when the write completes with EIO.
#[test]
fn write_that_completes_with_eio_fails_flush_and_the_next_flush_writes_it() {
    let mut fx = ScriptedCache::new(16);
    let dev = fx.open_device(16);
    fx.zeroed(dev, 0).unwrap().fill(0x78);
    fx.script.expect(Call::Write(dev, 0), Answer::HoldThenFail(EIO));
    let flush = spawn(&fx, |c| c.flush());
    fx.script.wait_held(1);
    fx.script.release(Call::Write(dev, 0));
    assert_eq!(errno_of(flush.join().unwrap()), EIO);
    fx.script.assert_met();

    fx.script.write(dev, 0);
    fx.script.fsync(dev);
    fx.flush().unwrap();
    fx.script.assert_met();
    assert_filled(&fx.script.device_block(dev, 0), 0x78, "block 0 on the device");
    fx.finish();
}

// ---- invalidate -------------------------------------------------------------

/// LVM invalidate-not-present.
#[test]
fn invalidate_of_a_block_not_cached_is_ok_without_io() {
    let mut fx = ScriptedCache::new(16);
    let dev = fx.open_device(16);
    fx.invalidate(dev, 0).unwrap();
    assert!(fx.script.calls().is_empty());
    fx.finish();
}

/// LVM invalidate-present: a clean block is dropped without I/O; the next
/// get reads it again.
#[test]
fn invalidate_of_a_clean_block_is_ok_without_io() {
    let mut fx = ScriptedCache::new(16);
    let dev = fx.open_device(16);
    fx.script.read(dev, 0);
    drop(fx.read(dev, 0).unwrap());
    fx.invalidate(dev, 0).unwrap();
    fx.script.assert_met();
    assert_eq!(fx.script.calls(), [Call::Read(dev, 0)]);
    fx.script.read(dev, 0);
    drop(fx.read(dev, 0).unwrap());
    fx.script.assert_met();
    fx.finish();
}

/// LVM invalidate-read-error.
#[test]
fn invalidate_after_a_read_error_is_ok_without_io() {
    let mut fx = ScriptedCache::new(16);
    let dev = fx.open_device(16);
    fx.script.expect(Call::Read(dev, 0), Answer::Fail(EIO));
    assert_eq!(errno_of(fx.read(dev, 0)), EIO);
    fx.invalidate(dev, 0).unwrap();
    fx.script.assert_met();
    assert_eq!(fx.script.calls(), [Call::Read(dev, 0)]);
    fx.finish();
}

/// LVM invalidate-write-error: invalidating a dirty block whose write fails
/// fails and keeps the block (dirty, its bytes intact); again, it writes it
/// again and drops it; the next get reads it (and sees what was written).
/// Invalidate does not sync: the teardown's shutdown does.
#[test]
fn invalidate_of_a_dirty_block_whose_write_fails_fails_then_succeeds() {
    let mut fx = ScriptedCache::new(16);
    let dev = fx.open_device(16);
    fx.zeroed(dev, 0).unwrap().fill(0x11);
    fx.script.expect(Call::Write(dev, 0), Answer::HoldThenFail(EIO));
    let inv = spawn(&fx, move |c| c.invalidate(dev, 0));
    fx.script.wait_held(1);
    fx.script.release(Call::Write(dev, 0));
    assert_eq!(errno_of(inv.join().unwrap()), EIO);
    fx.script.assert_met();
    assert_filled(&fx.try_read(dev, 0).unwrap(), 0x11, "still cached, no read");

    fx.script.write(dev, 0);
    fx.invalidate(dev, 0).unwrap();
    fx.script.assert_met();
    assert_filled(&fx.script.device_block(dev, 0), 0x11, "block 0 on the device");

    fx.script.read(dev, 0);
    assert_filled(&fx.read(dev, 0).unwrap(), 0x11, "block 0 read back");
    fx.script.assert_met();
    fx.script.fsync(dev);
    fx.finish();
}

/// LVM invalidate-fails-in-held: invalidating a held block is `Busy` (our
/// error for LVM's `false`) and does no I/O; the holder's change is written
/// at teardown.
#[test]
fn invalidate_of_a_held_block_is_busy_without_io() {
    let mut fx = ScriptedCache::new(16);
    let dev = fx.open_device(16);
    let mut z = fx.zeroed(dev, 0).unwrap();
    assert!(matches!(fx.invalidate(dev, 0), Err(Error::Busy)));
    fx.barrier();
    assert!(fx.script.calls().is_empty());
    z.fill(0x22);
    drop(z);
    fx.script.write(dev, 0);
    fx.script.fsync(dev);
    let script = fx.script.clone();
    fx.finish();
    assert_filled(&script.device_block(dev, 0), 0x22, "block 0 on the device");
}

// ---- abort ------------------------------------------------------------------

/// LVM abort-with-no-blocks.
#[test]
fn abort_with_no_blocks_issues_no_io() {
    let mut fx = ScriptedCache::new(16);
    let dev = fx.open_device(16);
    fx.abort_device(dev).unwrap();
    assert!(fx.script.calls().is_empty());
    fx.finish();
}

/// LVM abort-single-block: an aborted dirty block is never written: the
/// flush after it writes (and syncs) nothing, nor does the teardown.
#[test]
fn aborted_dirty_block_is_never_written() {
    let mut fx = ScriptedCache::new(16);
    let dev = fx.open_device(16);
    fx.zeroed(dev, 0).unwrap().fill(0x33);
    fx.abort_device(dev).unwrap();
    fx.flush().unwrap();
    assert!(fx.script.calls().is_empty(), "{:?}", fx.script.calls());
    let script = fx.script.clone();
    fx.finish();
    assert_block(&script.device_block(dev, 0), &pattern_block(dev, 0), "untouched");
}

/// LVM abort-forces-reread: a block dirtied and aborted is read again by
/// the next get, which sees the device's bytes, not the aborted change.
#[test]
fn aborted_dirty_block_is_read_again_by_the_next_get() {
    let mut fx = ScriptedCache::new(16);
    let dev = fx.open_device(16);
    fx.script.read(dev, 0);
    fx.write(dev, 0).unwrap().fill(0x44);
    fx.abort_device(dev).unwrap();
    fx.script.read(dev, 0);
    assert_block(&fx.read(dev, 0).unwrap(), &pattern_block(dev, 0), "block 0");
    fx.script.assert_met();
    fx.finish();
}

/// LVM abort-only-specific-dev: aborting device B leaves device A's dirty
/// blocks, which flush writes in the order they were dirtied, then syncs A
/// only; B's changes are gone.
#[test]
fn abort_of_one_device_leaves_anothers_dirty_blocks() {
    let mut fx = ScriptedCache::new(16);
    let a = fx.open_device(16);
    let b = fx.open_device(16);
    for (dev, block) in [(a, 5), (b, 1), (a, 2), (b, 7), (a, 9)] {
        fx.zeroed(dev, block).unwrap().fill(block as u8);
    }
    fx.abort_device(b).unwrap();
    for block in [5, 2, 9] {
        fx.script.write(a, block);
    }
    fx.script.fsync(a);
    fx.flush().unwrap();
    fx.script.assert_met();
    for block in [5u64, 2, 9] {
        assert_filled(
            &fx.script.device_block(a, block),
            block as u8,
            &format!("A {block}"),
        );
    }
    fx.script.read(b, 1);
    assert_block(&fx.read(b, 1).unwrap(), &pattern_block(b, 1), "B 1 read again");
    fx.script.assert_met();
    fx.finish();
}

// ---- the script itself ------------------------------------------------------

/// A call the script does not expect fails the test, naming it, even when
/// the cache ignores the error it got.
#[test]
#[should_panic(expected = "is read(")]
fn script_fails_an_unexpected_call() {
    let mut fx = ScriptedCache::new(16);
    let dev = fx.open_device(16);
    fx.prefetch(dev, 3); // an unexpected read the cache reports to nobody
    fx.barrier();
    fx.finish();
}

/// A call out of order fails the test.
#[test]
#[should_panic(expected = "the script expects read(")]
fn script_fails_a_call_out_of_order() {
    let mut fx = ScriptedCache::new(16);
    let dev = fx.open_device(16);
    fx.script.read(dev, 1);
    fx.script.read(dev, 0);
    let _ = fx.read(dev, 0);
    fx.script.check();
}

/// An expected call never issued fails the teardown.
#[test]
#[should_panic(expected = "expected calls never issued")]
fn script_fails_a_leftover_expectation() {
    let mut fx = ScriptedCache::new(16);
    let dev = fx.open_device(16);
    fx.script.write(dev, 0);
    fx.finish();
}

/// An I/O still held at teardown fails it (and the teardown does not hang).
#[test]
#[should_panic(expected = "still in flight")]
fn script_fails_a_teardown_with_io_in_flight() {
    let mut fx = ScriptedCache::new(16);
    let dev = fx.open_device(16);
    fx.script.expect(Call::Read(dev, 0), Answer::Hold);
    fx.prefetch(dev, 0);
    fx.script.wait_held(1);
    fx.finish();
}
