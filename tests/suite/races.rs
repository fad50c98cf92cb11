//! Hostile schedules made deterministic with the fault engine: a client
//! takes a block on the fast path (without asking the owner) while a
//! `close` or `abort_device` of its device is between phases (a write or
//! the sync held in flight). The model test (`model`) meets these
//! schedules only by chance; here each is forced. The failure they guard
//! against: a device closed under a live guard, so that the guard's thread
//! gets `UnknownDevice` for a block it holds (from `try_write` of a block
//! it holds as a reader).
//!
//! What must hold (`Cache::close`): `close` is `Err(Busy)`, nothing done, when
//! a block of the device is held; gets of a closing device fail
//! (`UnknownDevice`); nothing written through a granted guard is lost; the
//! cache stays usable.

use crate::common;
use blockcache::engine::IoKind::{Fsync, Write};
use blockcache::Error;
use common::fault::*;
use common::watchdog::within;
use common::*;
use std::thread;

/// The close of a device with a dirty block is in its sync phase (its
/// write done, the fsync held). A write get of that block may not be
/// granted — or, if it is, the close must not go on to drop the device.
#[test]
fn a_block_of_a_closing_device_is_not_handed_out_on_the_fast_path() {
    let f = patterned_file(32 * BS as u64);
    let path = f.path().to_path_buf();
    let plan = FaultPlan::new();
    within("fast path vs close", move || {
        let cache = fault_cache(&plan, 8);
        let _release = plan.release_on_drop();
        let dev = cache.open(&path).unwrap();
        cache.write(dev, 1).unwrap().fill(0x11);
        plan.hold(Fsync, None, 1);
        let closer = {
            let c = cache.clone();
            thread::spawn(move || c.close(dev))
        };
        plan.wait_held(1); // block 1 written, the close's sync in flight
        assert!(plan.ops().contains(&(dev, Write, 1)));
        let got = cache.try_write(dev, 1);
        let granted = got.is_ok();
        let mut guard = match got {
            Ok(g) => Some(g),
            Err(Error::UnknownDevice) | Err(Error::WouldBlock) => None,
            Err(e) => panic!("try_write on a closing device: {e:?}"),
        };
        if let Some(g) = guard.as_mut() {
            g.fill(0x99);
        }
        assert_eq!(plan.release(), 1);
        let closed = closer.join().unwrap();
        assert!(
            !(granted && closed.is_ok()),
            "close returned Ok while a guard on its device, granted during the close, is live"
        );
        drop(guard);
        // The cache still works and nothing granted was lost.
        cache.flush().expect("flush after the race");
        if granted {
            cache.close(dev).unwrap();
            assert_filled(&file_bytes(&path, BS as u64, BS), 0x99, "block 1");
        }
        let g = patterned_file(8 * BS as u64);
        let d2 = cache.open(g.path()).unwrap();
        assert_block(
            &cache.read(d2, 3).unwrap(),
            &file_bytes(g.path(), 3 * BS as u64, BS),
            "other device",
        );
    });
}

/// The same window, the guard given back before the close finishes: what
/// it wrote must not be dropped unwritten by the close.
#[test]
fn a_write_through_the_fast_path_during_close_is_not_lost() {
    let f = patterned_file(32 * BS as u64);
    let path = f.path().to_path_buf();
    let plan = FaultPlan::new();
    within("fast path write during close", move || {
        let cache = fault_cache(&plan, 8);
        let _release = plan.release_on_drop();
        let dev = cache.open(&path).unwrap();
        cache.write(dev, 1).unwrap().fill(0x11);
        plan.hold(Fsync, None, 1);
        let closer = {
            let c = cache.clone();
            thread::spawn(move || c.close(dev))
        };
        plan.wait_held(1);
        let granted = match cache.try_write(dev, 1) {
            Ok(mut g) => {
                g.fill(0x77);
                true
            }
            Err(Error::UnknownDevice) | Err(Error::WouldBlock) => false,
            Err(e) => panic!("try_write on a closing device: {e:?}"),
        };
        assert_eq!(plan.release(), 1);
        let closed = closer.join().unwrap();
        if granted {
            match closed {
                Ok(()) => assert_filled(
                    &file_bytes(&path, BS as u64, BS),
                    0x77,
                    "block 1 was written through a granted guard, then the close reported Ok",
                ),
                Err(_) => {
                    cache.close(dev).unwrap();
                    assert_filled(&file_bytes(&path, BS as u64, BS), 0x77, "block 1");
                }
            }
        } else {
            closed.unwrap();
            assert_filled(&file_bytes(&path, BS as u64, BS), 0x11, "block 1");
        }
        cache.flush().unwrap();
    });
}

/// Abort waits out a writeback in flight; when the write completes,
/// fast-path readers race the abort for the block. Whatever wins, the
/// written data is in the file and is what the cache serves afterwards.
#[test]
fn abort_racing_fast_path_readers_keeps_the_written_data() {
    let f = patterned_file(32 * BS as u64);
    let path = f.path().to_path_buf();
    let plan = FaultPlan::new();
    within("fast path vs abort", move || {
        let cache = fault_cache(&plan, 8);
        let _release = plan.release_on_drop();
        let dev = cache.open(&path).unwrap();
        cache.write(dev, 1).unwrap().fill(0x11);
        plan.hold(Write, None, 1);
        let flusher = {
            let c = cache.clone();
            thread::spawn(move || c.flush())
        };
        plan.wait_held(1); // block 1's write in flight
        let aborter = {
            let c = cache.clone();
            thread::spawn(move || c.abort_device(dev))
        };
        // The abort waits for the write (or is Busy): release it, and race
        // a reader.
        assert_eq!(plan.release(), 1);
        let mut reads = 0;
        while !aborter.is_finished() {
            if let Ok(g) = cache.try_read(dev, 1) {
                assert_filled(&g, 0x11, "block 1 while the abort runs");
                reads += 1;
            }
            thread::yield_now();
        }
        flusher.join().unwrap().unwrap();
        match aborter.join().unwrap() {
            Ok(()) | Err(Error::Busy) => {}
            Err(e) => panic!("abort: {e:?}"),
        }
        // Written before the abort: the file has it, whatever the race did.
        assert_filled(&file_bytes(&path, BS as u64, BS), 0x11, "block 1 in the file");
        assert_filled(&cache.read(dev, 1).unwrap(), 0x11, "block 1 after the abort");
        println!("reads granted while the abort ran: {reads}");
        cache.shutdown().unwrap();
    });
}
