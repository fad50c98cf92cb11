//! Ops that write many blocks back — flush, close, invalidate_device —
//! keep a bounded number of writes in flight and start the next as each
//! completes, and the owner answers other requests between two
//! completions. On the scripted engine every write is held until the test
//! releases it, so an op is provably still running while the test asks the
//! owner for other things; nothing here waits on time.
//!
//! Queue depth 2: a one-device op keeps 2 × 2 = 4 I/Os in flight.
//!
//! The last test closes a device of more blocks than one step of the
//! close's final sweep, on real files, while another device's gets evict
//! its clean blocks and reuse their slots.

use crate::common;

use blockcache::{Cache, Config, DeviceId, Error};
use common::fault::{assert_block, assert_filled, errno_of};
use common::scripted::{pattern_block, Answer, Call, ScriptedCache};
use common::watchdog::within;
use common::{engines, file_bytes, patterned_file, sparse_file, spawn};
use std::thread;

const DEPTH: u32 = 2;
/// I/Os a one-device op keeps in flight at queue depth [`DEPTH`].
const IN_FLIGHT: usize = 4;
const EIO: i32 = libc::EIO;

/// A cache of 64 blocks at queue depth [`DEPTH`] with blocks `0..n` of a
/// new device dirty, filled with their number (zeroed: nothing is read).
fn dirty_blocks(n: u64) -> (ScriptedCache, DeviceId) {
    let mut fx = ScriptedCache::with_config(|c| c.queue_depth(DEPTH), 64);
    let dev = fx.open_device(64);
    for b in 0..n {
        fx.zeroed(dev, b).unwrap().fill(b as u8);
    }
    fx.barrier();
    fx.script.assert_met();
    (fx, dev)
}

fn writes(dev: DeviceId, blocks: impl IntoIterator<Item = u64>) -> Vec<Call> {
    blocks.into_iter().map(|b| Call::Write(dev, b)).collect()
}

/// Release the held write of each of `blocks` in turn; after each, the op
/// has started exactly the next write of `then`, so that it again has
/// [`IN_FLIGHT`] in flight while any is left to start. `probe`: an open
/// device, for the round trip that shows the release was handled.
#[track_caller]
fn release_one_by_one(fx: &ScriptedCache, probe: DeviceId, dev: DeviceId, blocks: &[u64], mut then: &[u64]) {
    for &b in blocks {
        let before = fx.script.calls().len();
        fx.script.release(Call::Write(dev, b));
        // Handled, and whatever it started submitted, once a round trip
        // sent after it is answered (the owner's channel is FIFO).
        fx.device_blocks(probe).unwrap();
        let started: Vec<Call> = fx.script.calls()[before..]
            .iter()
            .copied()
            .filter(|c| matches!(c, Call::Write(..)))
            .collect();
        let want = writes(dev, then.iter().take(1).copied());
        assert_eq!(started, want, "released write of {b}: one write started for it");
        then = then.get(1..).unwrap_or(&[]);
        if !then.is_empty() {
            assert_eq!(fx.script.held().len(), IN_FLIGHT, "after {b}");
        }
    }
}

/// A flush of 12 dirty blocks has 4 writes in flight, never more, and
/// starts one as each completes, oldest dirty first. Meanwhile the owner
/// answers round trips, serves a miss, hands out a new dirty block (which
/// this flush leaves for the next one: it writes what was dirty when it
/// began) and a read guard on a listed block, which makes the flush skip
/// that block when its turn comes (a held block is never written back).
#[test]
fn a_flush_keeps_a_bounded_batch_in_flight_and_the_owner_answers_meanwhile() {
    within("batched flush", || {
        let (fx, dev) = dirty_blocks(12);
        for b in 0..4 {
            fx.script.expect(Call::Write(dev, b), Answer::Hold);
        }
        fx.script.read(dev, 40); // the miss served during the flush
        for b in (4..12).filter(|&b| b != 8) {
            fx.script.expect(Call::Write(dev, b), Answer::Hold);
        }
        fx.script.expect(Call::Fsync(dev), Answer::Hold);
        let flush = spawn(&fx, |c| c.flush());

        fx.script.wait_held(IN_FLIGHT);
        fx.barrier();
        assert_eq!(fx.script.calls(), writes(dev, 0..4), "4 in flight, and no more");
        // The flush is still running (its writes are held): others are
        // answered all the same.
        assert_eq!(fx.device_blocks(dev).unwrap(), 64);
        assert_block(&fx.read(dev, 40).unwrap(), &pattern_block(dev, 40), "a miss");
        fx.zeroed(dev, 50).unwrap().fill(50);
        let held = fx.read(dev, 8).unwrap();
        assert_filled(&held, 8, "a dirty block the flush has not reached");
        fx.barrier();
        assert!(!flush.is_finished());
        assert_eq!(fx.script.calls().len(), 5, "nothing more started meanwhile");

        release_one_by_one(&fx, dev, dev, &[0, 1, 2, 3, 4, 5, 6], &[4, 5, 6, 7, 9, 10, 11]);
        release_one_by_one(&fx, dev, dev, &[7, 9, 10, 11], &[]);
        fx.script.wait_held(1);
        assert_eq!(fx.script.held(), [Call::Fsync(dev)], "the sync after every write");
        assert!(!flush.is_finished(), "flush returned before its fsync completed");
        fx.script.release(Call::Fsync(dev));
        flush.join().unwrap().unwrap();
        fx.script.assert_met();
        for b in (0..12).filter(|&b| b != 8) {
            assert_filled(&fx.script.device_block(dev, b), b as u8, &format!("block {b}"));
        }
        // Left dirty: the held block and the one dirtied after the flush
        // began, in the order they became dirty.
        drop(held);
        fx.script.write(dev, 8);
        fx.script.write(dev, 50);
        fx.script.fsync(dev);
        fx.finish();
    });
}

/// A failed write in the middle of a batched flush: the flush starts the
/// rest, syncs what was written, and fails; the block stays dirty and the
/// next flush writes it alone.
#[test]
fn a_failed_write_in_a_batch_fails_the_flush_and_only_it_is_retried() {
    within("batched flush, one write failing", || {
        let (fx, dev) = dirty_blocks(6);
        for b in 0..6 {
            let answer = if b == 1 {
                Answer::HoldThenFail(EIO)
            } else {
                Answer::Hold
            };
            fx.script.expect(Call::Write(dev, b), answer);
        }
        fx.script.fsync(dev);
        let flush = spawn(&fx, |c| c.flush());
        fx.script.wait_held(IN_FLIGHT);
        release_one_by_one(&fx, dev, dev, &[1, 0], &[4, 5]);
        release_one_by_one(&fx, dev, dev, &[2, 3, 4, 5], &[]);
        assert_eq!(errno_of(flush.join().unwrap()), EIO);
        fx.script.assert_met();

        fx.script.write(dev, 1);
        fx.script.fsync(dev);
        fx.flush().unwrap();
        assert_filled(&fx.script.device_block(dev, 1), 1, "block 1, retried");
        fx.finish();
    });
}

/// Close writes back in batches too, refuses new gets meanwhile, and drops
/// the device once everything is written and synced.
#[test]
fn close_writes_back_in_batches_and_refuses_gets_meanwhile() {
    within("batched close", || {
        let (mut fx, dev) = dirty_blocks(10);
        let other = fx.open_device(4);
        for b in 0..10 {
            fx.script.expect(Call::Write(dev, b), Answer::Hold);
        }
        fx.script.fsync(dev);
        let close = spawn(&fx, move |c| c.close(dev));
        fx.script.wait_held(IN_FLIGHT);
        assert_eq!(fx.device_blocks(other).unwrap(), 4, "other devices are served");
        assert_eq!(fx.script.calls(), writes(dev, 0..4), "4 in flight, and no more");
        assert!(matches!(fx.read(dev, 60), Err(Error::UnknownDevice)));
        assert!(matches!(fx.device_blocks(dev), Err(Error::UnknownDevice)));
        release_one_by_one(&fx, other, dev, &[0, 1, 2, 3, 4, 5], &[4, 5, 6, 7, 8, 9]);
        release_one_by_one(&fx, other, dev, &[6, 7, 8, 9], &[]);
        close.join().unwrap().unwrap();
        fx.script.assert_met();
        assert!(matches!(fx.device_blocks(dev), Err(Error::UnknownDevice)));
        for b in 0..10 {
            assert_filled(&fx.script.device_block(dev, b), b as u8, &format!("block {b}"));
        }
        fx.finish();
    });
}

/// invalidate_device drops clean blocks at once and writes dirty ones back
/// in batches, dropping each once written. A dirty block a client takes
/// before its turn is left to its holder, and the result is Busy.
#[test]
fn invalidate_device_writes_back_in_batches_and_is_busy_for_a_block_taken_meanwhile() {
    within("batched invalidate_device", || {
        let (fx, dev) = dirty_blocks(8);
        fx.script.read(dev, 20);
        drop(fx.read(dev, 20).unwrap()); // clean
        for b in (0..8).filter(|&b| b != 6) {
            fx.script.expect(Call::Write(dev, b), Answer::Hold);
        }
        let inval = spawn(&fx, move |c| c.invalidate_device(dev));
        fx.script.wait_held(IN_FLIGHT);
        fx.barrier();
        assert_eq!(fx.script.calls()[1..], writes(dev, 0..4));
        let mut taken = fx.write(dev, 6).unwrap();
        assert_filled(&taken, 6, "block 6, not yet written");
        taken.fill(0x66);
        release_one_by_one(&fx, dev, dev, &[0, 1, 2], &[4, 5, 7]);
        release_one_by_one(&fx, dev, dev, &[3, 4, 5, 7], &[]);
        assert!(matches!(inval.join().unwrap(), Err(Error::Busy)));
        fx.script.assert_met();
        drop(taken);
        // Dropped: read again. Block 6 stays, as its holder left it.
        fx.script.read(dev, 20);
        drop(fx.read(dev, 20).unwrap());
        fx.script.read(dev, 1);
        assert_filled(&fx.read(dev, 1).unwrap(), 1, "block 1, from the device");
        assert_filled(&fx.read(dev, 6).unwrap(), 0x66, "block 6, a hit");
        fx.script.write(dev, 6);
        fx.script.fsync(dev);
        fx.finish();
    });
}

/// Two flushes over the same dirty blocks: the second waits for the
/// writes the first started (or finds them done) rather than issuing them
/// again, and shares its sync; each block is written once, whenever the
/// second flush reaches the owner.
#[test]
fn a_second_flush_joins_the_writes_of_the_first() {
    within("two flushes", || {
        let (fx, dev) = dirty_blocks(10);
        for b in 0..10 {
            fx.script.expect(Call::Write(dev, b), Answer::Hold);
        }
        fx.script.fsync(dev);
        let first = spawn(&fx, |c| c.flush());
        fx.script.wait_held(IN_FLIGHT);
        let second = spawn(&fx, |c| c.flush());
        for b in 0..10 {
            fx.script.wait_calls(b as usize + 1); // issued in dirty order
            fx.script.release(Call::Write(dev, b));
        }
        first.join().unwrap().unwrap();
        second.join().unwrap().unwrap();
        fx.script.assert_met();
        assert_eq!(fx.stats().writes_issued, 10);
        fx.finish();
    });
}

/// A close whose final sweep takes several steps (the device holds more
/// blocks than one step visits) drops every block of its device and
/// nothing else, while a reader of another device, whose gets need the
/// slots the close is cleaning, evicts them and reuses their slots.
#[test]
fn a_close_of_many_blocks_drops_exactly_its_own_while_another_device_reads() {
    const BS: usize = 4096;
    const BLOCKS: u64 = 10_000;
    for kind in engines() {
        within("close of many blocks beside a reader", move || {
            let a_file = sparse_file(BLOCKS * BS as u64); // only ever written

            let b_file = patterned_file(64 * BS as u64);
            // Room for every block of A and nothing more: B's gets evict
            // A's blocks as the close cleans them.
            let cache = Cache::new(Config::new(BS, BLOCKS as usize).engine(kind)).unwrap();
            let a = cache.open(a_file.path()).unwrap();
            let b = cache.open(b_file.path()).unwrap();
            for blk in 0..BLOCKS {
                cache.zeroed(a, blk).unwrap()[..8].copy_from_slice(&blk.to_le_bytes());
            }
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let reader = {
                let (cache, stop) = (cache.clone(), stop.clone());
                thread::spawn(move || {
                    for blk in (0..64).cycle() {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let want = file_bytes(b_file.path(), blk * BS as u64, BS);
                        assert_block(&cache.read(b, blk).unwrap(), &want, &format!("B {blk}"));
                    }
                })
            };
            cache.close(a).unwrap();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            reader.join().unwrap();
            assert!(matches!(cache.read(a, 0), Err(Error::UnknownDevice)));
            for blk in (0..BLOCKS).step_by(97) {
                let got = file_bytes(a_file.path(), blk * BS as u64, 8);
                assert_eq!(got, blk.to_le_bytes(), "{kind:?}: A {blk} on the device");
            }
            // Every slot A held is free or B's again: a cache-full of B's
            // blocks fits.
            let b2_file = sparse_file(BLOCKS * BS as u64);
            let b2 = cache.open(b2_file.path()).unwrap();
            for blk in (0..BLOCKS).rev() {
                drop(cache.read(b2, blk).unwrap());
            }
            cache.shutdown().unwrap();
        });
    }
}
