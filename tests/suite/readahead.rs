//! Sequential readahead (`Config::readahead`): exactly which reads a run
//! of in-order gets starts, on the scripted engine; and on real files with
//! both engines, that a scan through readahead returns the file's bytes.
//!
//! Reads answered at once complete inside the engine's `submit`, but the
//! owner counts them done only when it handles their completion, after
//! the message being handled: so "in flight" below is what the owner has
//! started while handling one get.

use crate::common;

use blockcache::{Config, EngineKind, Error};
use common::fault::{assert_block, wait_until};
use common::scripted::{pattern_block, Answer, Call, ScriptedCache};
use common::watchdog::within;
use common::{engines, file_bytes, patterned_file, spawn};

fn reads(dev: blockcache::DeviceId, blocks: impl IntoIterator<Item = u64>) -> Vec<Call> {
    blocks.into_iter().map(|b| Call::Read(dev, b)).collect()
}

/// Expect a read of each of `blocks`, answered at once.
fn expect_reads(fx: &ScriptedCache, dev: blockcache::DeviceId, blocks: impl IntoIterator<Item = u64>) {
    for b in blocks {
        fx.script.read(dev, b);
    }
}

/// The second get in order starts a window of 8 after it; the blocks
/// read ahead are hits; the get right after the window starts the next,
/// twice as large, up to the maximum; the bytes are the device's.
#[test]
fn an_in_order_run_reads_ahead_in_growing_windows() {
    let mut fx = ScriptedCache::with_config(|c| c.readahead(16), 64);
    let dev = fx.open_device(100);
    expect_reads(&fx, dev, 0..10);
    for b in 0..2 {
        assert_block(&fx.read(dev, b).unwrap(), &pattern_block(dev, b), "run start");
    }
    fx.barrier();
    assert_eq!(fx.script.calls(), reads(dev, 0..10), "block 1 read 2..=9 ahead");
    for b in 2..10 {
        assert_block(&fx.read(dev, b).unwrap(), &pattern_block(dev, b), "read ahead");
    }
    fx.barrier();
    assert_eq!(fx.script.calls().len(), 10, "blocks read ahead are hits");

    // Block 10 continues the run: its read, then a window of 16.
    expect_reads(&fx, dev, 10..27);
    assert_block(&fx.read(dev, 10).unwrap(), &pattern_block(dev, 10), "window end");
    fx.barrier();
    assert_eq!(fx.script.calls(), reads(dev, 0..27));
    // And the next window stays at the maximum of 16.
    for b in 11..27 {
        drop(fx.read(dev, b).unwrap());
    }
    expect_reads(&fx, dev, 27..44);
    drop(fx.read(dev, 27).unwrap());
    fx.barrier();
    assert_eq!(fx.script.calls(), reads(dev, 0..44));

    let s = fx.stats();
    assert_eq!(s.readaheads, 8 + 16 + 16);
    assert_eq!(s.reads_issued, 44);
    assert_eq!(s.read_misses, 4, "blocks 0, 1, 10 and 27");
    fx.script.assert_met();
    fx.finish();
}

/// Readahead is off unless configured: gets in order read exactly their
/// blocks.
#[test]
fn without_readahead_a_get_reads_exactly_its_block() {
    let mut fx = ScriptedCache::new(64);
    let dev = fx.open_device(100);
    expect_reads(&fx, dev, 0..6);
    for b in 0..6 {
        drop(fx.read(dev, b).unwrap());
    }
    fx.barrier();
    assert_eq!(fx.script.calls(), reads(dev, 0..6));
    assert_eq!(fx.stats().readaheads, 0);
    fx.finish();
}

/// Misses out of order start no window.
#[test]
fn random_gets_read_nothing_ahead() {
    let mut fx = ScriptedCache::with_config(|c| c.readahead(64), 64);
    let dev = fx.open_device(1000);
    let blocks = [500, 7, 900, 3, 42, 100, 8];
    expect_reads(&fx, dev, blocks);
    for b in blocks {
        drop(fx.read(dev, b).unwrap());
    }
    fx.barrier();
    assert_eq!(fx.script.calls(), reads(dev, blocks));
    assert_eq!(fx.stats().readaheads, 0);
    fx.finish();
}

/// Readahead stops at the queue depth; the run's next miss reads on from
/// where it stopped. Writes never read ahead.
#[test]
fn readahead_stops_at_the_queue_depth_and_resumes() {
    let mut fx = ScriptedCache::with_config(|c| c.readahead(16).queue_depth(4), 64);
    let dev = fx.open_device(100);
    // Block 1's read and 3 ahead fill the depth of 4.
    expect_reads(&fx, dev, 0..5);
    drop(fx.read(dev, 0).unwrap());
    drop(fx.read(dev, 1).unwrap());
    fx.barrier();
    assert_eq!(fx.script.calls(), reads(dev, 0..5));
    // Block 5, just past what was read ahead, reads itself and 3 more.
    for b in 2..5 {
        drop(fx.read(dev, b).unwrap());
    }
    expect_reads(&fx, dev, 5..9);
    drop(fx.read(dev, 5).unwrap());
    fx.barrier();
    assert_eq!(fx.script.calls(), reads(dev, 0..9));
    // A write miss in order reads its block, and nothing ahead.
    fx.script.read(dev, 9);
    drop(fx.write(dev, 9).unwrap());
    fx.barrier();
    assert_eq!(fx.script.calls(), reads(dev, 0..10));
    fx.script.assert_met();
    fx.script.write(dev, 9);
    fx.script.fsync(dev);
    fx.finish();
}

/// A failed read ahead caches nothing and fails nobody: the get of that
/// block later reads it again and has its bytes.
#[test]
fn a_failed_read_ahead_is_read_again_by_its_get() {
    let mut fx = ScriptedCache::with_config(|c| c.readahead(4), 64);
    let dev = fx.open_device(100);
    expect_reads(&fx, dev, 0..3);
    fx.script
        .expect(Call::Read(dev, 3), Answer::HoldThenFail(libc::EIO));
    expect_reads(&fx, dev, 4..6);
    drop(fx.read(dev, 0).unwrap());
    drop(fx.read(dev, 1).unwrap());
    fx.barrier();
    assert_eq!(fx.script.calls(), reads(dev, 0..6));
    fx.script.release(Call::Read(dev, 3));
    drop(fx.read(dev, 2).unwrap());
    // Block 3 is read again for its get (which continues the run: the
    // next window starts after what was read ahead).
    fx.script.read(dev, 3);
    expect_reads(&fx, dev, 6..10);
    assert_block(&fx.read(dev, 3).unwrap(), &pattern_block(dev, 3), "re-read");
    fx.barrier();
    let want: Vec<Call> = [reads(dev, 0..6), reads(dev, [3]), reads(dev, 6..10)].concat();
    assert_eq!(fx.script.calls(), want);
    assert_eq!(fx.stats().io_errors, 1);
    fx.script.assert_met();
    fx.finish();
}

/// A close while blocks read ahead are still in flight waits them out:
/// the device's engine is stopped only once every read has completed (the
/// scripted engine records a stop with I/O in flight as a violation), and
/// the blocks go with the device.
#[test]
fn a_close_waits_out_the_reads_ahead_in_flight() {
    within("close during readahead", || {
        let mut fx = ScriptedCache::with_config(|c| c.readahead(4), 64);
        let dev = fx.open_device(100);
        let other = fx.open_device(4);
        expect_reads(&fx, dev, 0..2);
        for b in 2..6 {
            fx.script.expect(Call::Read(dev, b), Answer::Hold);
        }
        drop(fx.read(dev, 0).unwrap());
        drop(fx.read(dev, 1).unwrap());
        fx.script.wait_held(4);
        let close = spawn(&fx, move |c| c.close(dev));
        // The close has begun once the device refuses gets.
        wait_until(|| matches!(fx.device_blocks(dev), Err(Error::UnknownDevice)));
        for b in 2..6 {
            fx.script.release(Call::Read(dev, b));
            assert_eq!(fx.device_blocks(other).unwrap(), 4, "other devices are served");
        }
        close.join().unwrap().unwrap();
        fx.script.assert_met();
        assert_eq!(
            fx.script.calls(),
            reads(dev, 0..6),
            "no write, no sync: nothing was dirty"
        );
        assert!(matches!(fx.device_blocks(dev), Err(Error::UnknownDevice)));
        assert_eq!(fx.stats().readaheads, 4);
        fx.finish();
    });
}

/// On real files, both engines: a scan through readahead, with a cache a
/// quarter of the file, returns every block's bytes.
#[test]
fn a_scan_through_readahead_returns_the_files_bytes() {
    const BS: usize = 4096;
    const BLOCKS: u64 = 512;
    let file = patterned_file(BLOCKS * BS as u64);
    for kind in engines() {
        let cache =
            blockcache::Cache::new(Config::new(BS, 128).engine(kind).readahead(32).queue_depth(16)).unwrap();
        let dev = cache.open(file.path()).unwrap();
        for b in 0..BLOCKS {
            let want = file_bytes(file.path(), b * BS as u64, BS);
            assert_block(
                &cache.read(dev, b).unwrap(),
                &want,
                &format!("{kind:?} block {b}"),
            );
        }
        let s = cache.stats();
        assert!(s.readaheads > 0, "{kind:?}: {s:?}");
        assert_eq!(s.io_errors, 0);
        if kind == EngineKind::Uring {
            assert!(s.reads_issued >= BLOCKS);
        }
        cache.shutdown().unwrap();
    }
}
