//! The edges of the waiting rules (src/owner/mod.rs, "Who may wait on
//! whom", rule 4): a thread that waits for a block while holding a
//! conflicting guard waits forever, as with a `RwLock`, so the cache
//! offers `try_read`/`try_write`, which never wait. These tests hold a
//! guard and ask again in the `try_` form (the blocking form would hang by
//! design): the answer is `WouldBlock`, at once, and the usual back-off
//! pattern makes progress where blocking on both sides would deadlock.
//!
//! Every test runs on every engine from `engines()`, under a watchdog.

use crate::common;
use blockcache::{Cache, Error};
use common::fault::wait_until;
use common::watchdog::within;
use common::*;
use std::sync::{Arc, Barrier};
use std::thread;

const BS: usize = 4096;
const BU: u64 = BS as u64;

#[track_caller]
fn assert_would_block<T: std::fmt::Debug>(r: Result<T, Error>, what: &str) {
    match r {
        Err(Error::WouldBlock) => {}
        other => panic!("{what}: want Err(WouldBlock), got {other:?}"),
    }
}

#[test]
fn a_reader_asking_to_write_its_own_block_gets_would_block() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let path = f.path().to_path_buf();
        within("reader upgrading", move || {
            let cache = cache(kind, BS, 4);
            let dev = cache.open(&path).unwrap();
            let r = cache.read(dev, 3).unwrap();
            assert_would_block(
                cache.try_write(dev, 3),
                &format!("{kind:?}: read, then try_write"),
            );
            // Two read guards of this thread: still no write.
            let r2 = cache.try_read(dev, 3).unwrap();
            assert_would_block(cache.try_write(dev, 3), &format!("{kind:?}: two readers"));
            drop(r2);
            // The same with a writer of another thread queued behind us: it
            // waits for our guard, and our try_write must not queue behind it.
            let c = cache.clone();
            let before = cache.stats().write_hits;
            let writer = thread::spawn(move || c.write(dev, 3).unwrap().fill(0x33));
            wait_until(|| cache.stats().write_hits == before + 1);
            assert_would_block(cache.try_write(dev, 3), &format!("{kind:?}: writer queued"));
            // A second read of our own may not be granted ahead of the queued
            // writer (that is what would deadlock a blocking `read`); the try_
            // form answers at once either way.
            match cache.try_read(dev, 3) {
                Ok(g) => assert!(g[..] == r[..], "{kind:?}"),
                Err(Error::WouldBlock) => {}
                Err(e) => panic!("{kind:?}: try_read with a writer queued: {e:?}"),
            }
            assert!(
                !writer.is_finished(),
                "{kind:?}: the writer did not wait for the reader"
            );
            drop(r);
            writer.join().unwrap();
            assert!(cache.read(dev, 3).unwrap().iter().all(|&x| x == 0x33), "{kind:?}");
        });
    }
}

#[test]
fn a_writer_asking_again_for_its_own_block_gets_would_block() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let path = f.path().to_path_buf();
        within("writer re-entering", move || {
            let cache = cache(kind, BS, 4);
            let dev = cache.open(&path).unwrap();
            let mut w = cache.write(dev, 5).unwrap();
            w[0] = 0x55;
            assert_would_block(cache.try_read(dev, 5), &format!("{kind:?}: try_read"));
            assert_would_block(cache.try_write(dev, 5), &format!("{kind:?}: try_write"));
            // Whole-device operations answer instead of waiting for us.
            assert!(matches!(cache.invalidate(dev, 5), Err(Error::Busy)), "{kind:?}");
            assert!(
                matches!(cache.invalidate_device(dev), Err(Error::Busy)),
                "{kind:?}"
            );
            assert!(matches!(cache.abort_device(dev), Err(Error::Busy)), "{kind:?}");
            assert!(matches!(cache.close(dev), Err(Error::Busy)), "{kind:?}");
            cache.flush().unwrap();
            drop(w);
            assert_eq!(cache.try_read(dev, 5).unwrap()[0], 0x55, "{kind:?}");
        });
    }
}

#[test]
fn a_thread_holding_every_slot_gets_would_block_for_any_other_block() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let path = f.path().to_path_buf();
        within("every slot held", move || {
            let cache = cache(kind, BS, 3);
            let dev = cache.open(&path).unwrap();
            let held = [
                cache.read(dev, 0).unwrap(),
                cache.read(dev, 1).unwrap(),
                cache.read(dev, 2).unwrap(),
            ];
            for b in [3u64, 9, 15] {
                assert_would_block(cache.try_read(dev, b), &format!("{kind:?}: try_read {b}"));
                assert_would_block(cache.try_write(dev, b), &format!("{kind:?}: try_write {b}"));
                cache.prefetch(dev, b);
            }
            // Reads of what it holds still work (shared), and flush returns.
            let again = cache.try_read(dev, 1).unwrap();
            assert!(again[..] == held[1][..], "{kind:?}");
            cache.flush().unwrap();
            assert_eq!(cache.stats().prefetches, 0, "{kind:?}: no slot, no prefetch");
            drop((held, again));
            assert!(cache.read(dev, 9).unwrap()[..] == file_bytes(&path, 9 * BU, BS)[..]);
        });
    }
}

/// Two threads each hold one block and want the other's. Blocking on both
/// sides is the classic deadlock; with one side using `try_write` and
/// backing off, both finish, every time.
#[test]
fn back_off_with_try_write_resolves_a_lock_order_inversion() {
    const ROUNDS: u64 = 200;
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let path = f.path().to_path_buf();
        within("ABBA with back-off", move || {
            let cache = cache(kind, BS, 4);
            let dev = cache.open(&path).unwrap();
            cache.zeroed(dev, 0).unwrap();
            cache.zeroed(dev, 1).unwrap();
            let start = Arc::new(Barrier::new(2));
            // Thread A: block 0, then block 1, blocking.
            let a = {
                let (c, start) = (cache.clone(), Arc::clone(&start));
                thread::spawn(move || {
                    start.wait();
                    for _ in 0..ROUNDS {
                        let mut w0 = c.write(dev, 0).unwrap();
                        let mut w1 = c.write(dev, 1).unwrap();
                        w0[0] = w0[0].wrapping_add(1);
                        w1[0] = w1[0].wrapping_add(1);
                    }
                })
            };
            // Thread B: block 1, then block 0 with try_write; on WouldBlock
            // it lets go of block 1 and starts over.
            let b = {
                let (c, start) = (cache.clone(), Arc::clone(&start));
                thread::spawn(move || {
                    start.wait();
                    let mut backoffs = 0u64;
                    let mut done = 0;
                    while done < ROUNDS {
                        let mut w1 = c.write(dev, 1).unwrap();
                        match c.try_write(dev, 0) {
                            Ok(mut w0) => {
                                w0[1] = w0[1].wrapping_add(1);
                                w1[1] = w1[1].wrapping_add(1);
                                done += 1;
                            }
                            Err(Error::WouldBlock) => {
                                backoffs += 1;
                                drop(w1);
                                thread::yield_now();
                            }
                            Err(e) => panic!("try_write: {e:?}"),
                        }
                    }
                    backoffs
                })
            };
            a.join().unwrap();
            let backoffs = b.join().unwrap();
            println!("{kind:?}: thread B backed off {backoffs} times");
            let check = |c: &Cache, blk: u64| {
                let g = c.read(dev, blk).unwrap();
                assert_eq!((g[0], g[1]), (ROUNDS as u8, ROUNDS as u8), "{kind:?} block {blk}");
            };
            check(&cache, 0);
            check(&cache, 1);
        });
    }
}
