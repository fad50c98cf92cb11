//! The io_uring engine against real files, and its exits.
use super::*;
use crate::device::conformance::{self, completer, request};
use crate::shared::pool::Pool;
use std::sync::RwLockReadGuard;

/// A request with this tag makes the reaper panic when it reaps the
/// request's completion, with other I/O still in the kernel.
pub(crate) const PANIC_TAG: u64 = 1 << 62;
/// A vectored run holding a request (not its first) with this tag
/// completes with EIO, whatever the kernel did; its requests alone do not.
pub(crate) const EIO_RUN_TAG: u64 = 1 << 61;

// Tests that need io_uring hold FORCE_LOCK shared; the one that forces
// it off holds it exclusively.

/// A shared hold on `FORCE_LOCK`, or `None` (skip) without io_uring.
fn uring() -> Option<RwLockReadGuard<'static, ()>> {
    let shared = FORCE_LOCK.read().unwrap();
    match probe() {
        Ok(()) => Some(shared),
        Err(e) => {
            eprintln!("io_uring unavailable, skipping: {e}");
            None
        }
    }
}

#[test]
fn uring_engine_conformance() {
    let Some(_shared) = uring() else { return };
    conformance::run_everywhere(|depth| Box::new(UringFactory { depth }));
}

#[test]
fn forced_unavailable_is_eperm() {
    let _exclusive = FORCE_LOCK.write().unwrap();
    FORCE_UNAVAILABLE.store(true, Ordering::Relaxed);
    let probed = probe();
    let (_tmp, dev) = conformance::device_file(&std::env::temp_dir(), 1, 0);
    let started = UringFactory { depth: 4 }.start(dev, completer().0);
    FORCE_UNAVAILABLE.store(false, Ordering::Relaxed);
    assert_eq!(probed.unwrap_err().raw_os_error(), Some(libc::EPERM));
    assert_eq!(started.err().unwrap().raw_os_error(), Some(libc::EPERM));
}

/// The reaper must wait in the kernel, not poll. Each
/// request wakes it once, for its completion; a spinning loop would make
/// thousands of passes per request.
#[test]
fn reaper_waits_rather_than_spins() {
    let Some(_shared) = uring() else { return };
    let (_tmp, dev) = conformance::device_file(&std::env::temp_dir(), 4, 0);
    let pool = Pool::new(conformance::BS, 4).unwrap();
    let (done, rx) = completer();
    let mut engine = UringEngine::start(2, dev, done).unwrap();
    let before = engine.passes.load(Ordering::Relaxed);
    for i in 0..200u64 {
        engine.submit(request(&pool, i % 4, IoKind::Read, i % 4));
        engine.unplug();
        let (_, result) = rx.recv().unwrap();
        assert!(result.is_ok());
    }
    let passes = engine.passes.load(Ordering::Relaxed) - before;
    assert!(passes <= 2 * 200 + 2, "{passes} passes for 200 requests");
    engine.stop();
}

/// A reaper that panics with I/O in flight still waits for
/// the kernel before any request is handed back, and every request gets
/// its completion: those the kernel finished with their real result.
#[test]
fn panicking_reaper_waits_for_the_kernel() {
    let Some(_shared) = uring() else { return };
    let (_tmp, dev) = conformance::device_file(&std::env::temp_dir(), 32, 0);
    let pool = Pool::new(conformance::BS, 16).unwrap();
    let (done, rx) = completer();
    // Deep enough that all 16 are in the kernel at once; every other
    // block, so that each is an I/O of its own.
    let mut engine = UringEngine::start(16, Arc::clone(&dev), done).unwrap();
    for slot in 0..16 {
        let mut req = request(&pool, slot, IoKind::Read, 2 * slot);
        if slot == 7 {
            req.tag = PANIC_TAG;
        }
        engine.submit(req);
    }
    engine.unplug();
    // Sorted by tag: 0..=6, 8..16, then the one that panicked.
    let results = conformance::collect(&rx, 16);
    for (req, result) in &results[..15] {
        assert!(result.is_ok(), "in-flight {}: {result:?}", req.tag);
        let want: Vec<u8> = (0..conformance::BS as u64)
            .map(|i| conformance::pattern(2 * req.tag * conformance::BS as u64 + i))
            .collect();
        assert!(
            req.buffer().unwrap() == &want[..],
            "block {} holds its bytes",
            req.tag
        );
    }
    assert!(
        results[15].1.is_err(),
        "the request whose completion the panic cut short"
    );
    engine.stop();
    assert_eq!(Arc::strong_count(&dev), 1);
    engine.submit(request(&pool, 0, IoKind::Read, 0));
    let (_, result) = rx.try_recv().unwrap();
    assert!(
        result.is_err(),
        "a dead reaper's engine fails new requests at once"
    );
}

/// Adjacent blocks submitted in one batch go as one vectored I/O each run
/// of at most `runs::MAX_RUN`, and every request still completes on its own with
/// its own block's bytes; a run counts once against the depth.
#[test]
fn adjacent_blocks_go_as_vectored_runs() {
    let Some(_shared) = uring() else { return };
    let (_tmp, dev) = conformance::device_file(&std::env::temp_dir(), 128, 0);
    let pool = Pool::new(conformance::BS, 128).unwrap();
    let (done, rx) = completer();
    let mut engine = UringEngine::start(2, dev, done).unwrap();
    // 100 adjacent blocks, submitted out of order, plus two lone ones.
    let blocks: Vec<u64> = (0..100).rev().chain([110, 120]).collect();
    for (tag, &block) in blocks.iter().enumerate() {
        engine.submit(request(&pool, tag as u64, IoKind::Read, block));
    }
    engine.unplug();
    for (req, result) in conformance::collect(&rx, blocks.len()) {
        assert!(result.is_ok(), "block {}: {result:?}", req.block);
        assert_eq!(req.block, blocks[req.tag as usize]);
        conformance::assert_block(&req, req.block);
    }
    let runs = engine.shared.as_ref().unwrap().lock().runs;
    assert_eq!(
        runs,
        100usize.div_ceil(crate::device::runs::MAX_RUN),
        "runs of at most {} blocks",
        crate::device::runs::MAX_RUN
    );
    engine.stop();
}

/// A run that fails is started again block by block: each request gets
/// its own outcome, here success with its block, and none is failed for
/// its neighbour.
#[test]
fn a_failed_run_is_retried_block_by_block() {
    let Some(_shared) = uring() else { return };
    let (_tmp, dev) = conformance::device_file(&std::env::temp_dir(), 8, 0);
    let pool = Pool::new(conformance::BS, 8).unwrap();
    let (done, rx) = completer();
    let mut engine = UringEngine::start(4, dev, done).unwrap();
    for slot in 0..8 {
        let mut req = request(&pool, slot, IoKind::Read, slot);
        if slot == 5 {
            req.tag = EIO_RUN_TAG;
        }
        engine.submit(req);
    }
    engine.unplug();
    let results = conformance::collect(&rx, 8);
    assert_eq!(engine.shared.as_ref().unwrap().lock().runs, 1, "one run went out");
    for (req, result) in results {
        assert!(result.is_ok(), "block {}: {result:?}", req.block);
        conformance::assert_block(&req, req.block);
    }
    engine.stop();
}
