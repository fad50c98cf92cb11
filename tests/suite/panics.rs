//! A client thread panics while it holds a guard. Other threads go on (no
//! deadlock, nobody waits for the dead thread), and the documented outcome
//! holds (src/guard.rs, "A write guard dropped during a panic"): a write
//! guard dropped while unwinding still marks its block dirty, so what the
//! thread wrote before the panic reaches the file on the next flush; a
//! read guard is simply released.
//!
//! Every test runs on every engine from `engines()`.

use crate::common;
use blockcache::engine::IoKind;
use blockcache::{Cache, DeviceId, Error};
use common::fault::{fault_cache, wait_until, FaultPlan};
use common::*;
use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;

const BS: usize = 4096;
const BU: u64 = BS as u64;

fn original(b: u64) -> Vec<u8> {
    (b * BU..(b + 1) * BU).map(pattern).collect()
}

/// The panic payload is the one the test raised, not some other failure.
#[track_caller]
fn assert_boom(r: Result<(), Box<dyn Any + Send>>, what: &str) {
    match r {
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            assert!(msg.contains("boom"), "{what}: the thread failed otherwise: {msg}");
        }
        Ok(()) => panic!("{what}: the thread did not panic"),
    }
}

/// A round trip to the owner: every put this thread's guards sent is in.
fn barrier(cache: &Cache, dev: DeviceId) {
    cache.device_blocks(dev).unwrap();
}

#[test]
fn a_write_guard_dropped_by_a_panic_marks_the_block_dirty() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, BS, 8);
        let dev = cache.open(f.path()).unwrap();

        // Block 3: half written, then the panic.
        let c = cache.clone();
        let r = thread::spawn(move || {
            let mut w = c.write(dev, 3).unwrap();
            w[..BS / 2].fill(0xaa);
            panic!("boom with half of block 3 written");
        })
        .join();
        assert_boom(r, &format!("{kind:?}"));

        // Block 4: a writer and a reader wait for the panicking thread.
        let (holding, go) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        let c = cache.clone();
        let (h2, g2) = (Arc::clone(&holding), Arc::clone(&go));
        let panicker = thread::spawn(move || {
            let mut w = c.write(dev, 4).unwrap();
            w.fill(0x44);
            h2.wait();
            g2.wait();
            panic!("boom holding block 4");
        });
        holding.wait();
        let before = cache.stats();
        let waiters: Vec<_> = (0..2)
            .map(|i| {
                let c = cache.clone();
                thread::spawn(move || {
                    if i == 0 {
                        let mut w = c.write(dev, 4).unwrap();
                        assert!(w.iter().all(|&x| x == 0x44), "writer after the panic");
                        w[..8].copy_from_slice(b"survivor");
                    } else {
                        let r = c.read(dev, 4).unwrap();
                        assert!(r[8..].iter().all(|&x| x == 0x44), "reader after the panic");
                    }
                })
            })
            .collect();
        // Both gets have reached the owner and wait (each counted a hit).
        wait_until(|| {
            let s = cache.stats();
            s.write_hits + s.read_hits == before.write_hits + before.read_hits + 2
        });
        go.wait();
        assert_boom(panicker.join(), &format!("{kind:?}: block 4"));
        for w in waiters {
            w.join().expect("a waiter of the panicked guard");
        }

        cache.flush().unwrap();
        let b3 = file_bytes(f.path(), 3 * BU, BS);
        assert!(b3[..BS / 2].iter().all(|&x| x == 0xaa), "{kind:?}: written half");
        assert!(b3[BS / 2..] == original(3)[BS / 2..], "{kind:?}: unwritten half");
        let b4 = file_bytes(f.path(), 4 * BU, BS);
        assert_eq!(&b4[..8], b"survivor", "{kind:?}: block 4");
        assert!(b4[8..].iter().all(|&x| x == 0x44), "{kind:?}: block 4");
        cache.shutdown().unwrap();
    }
}

#[test]
fn a_read_guard_dropped_by_a_panic_is_released_and_nothing_is_written() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, BS, 8);
        let dev = cache.open(f.path()).unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        let (ready_tx, ready) = mpsc::channel::<()>();
        let c = cache.clone();
        let panicker = thread::spawn(move || {
            let r = c.read(dev, 6).unwrap();
            assert!(r[..] == original(6)[..]);
            ready_tx.send(()).unwrap();
            rx.recv().unwrap();
            panic!("boom holding a read guard");
        });
        ready.recv().unwrap();
        assert!(
            matches!(cache.try_write(dev, 6), Err(Error::WouldBlock)),
            "{kind:?}"
        );
        assert!(matches!(cache.invalidate(dev, 6), Err(Error::Busy)), "{kind:?}");
        let c = cache.clone();
        let writer = thread::spawn(move || c.write(dev, 6).unwrap().fill(0x66));
        wait_until(|| cache.stats().write_hits == 1);
        tx.send(()).unwrap();
        assert_boom(panicker.join(), &format!("{kind:?}"));
        writer.join().expect("the writer waiting for the reader");

        cache.flush().unwrap();
        assert_eq!(
            cache.stats().writes_issued,
            1,
            "{kind:?}: only the writer's block"
        );
        assert!(
            file_bytes(f.path(), 6 * BU, BS).iter().all(|&x| x == 0x66),
            "{kind:?}"
        );
        // A panicking reader alone leaves its block clean.
        let c = cache.clone();
        let r = thread::spawn(move || {
            let _r = c.read(dev, 7).unwrap();
            panic!("boom with block 7 read");
        })
        .join();
        assert_boom(r, &format!("{kind:?}: block 7"));
        cache.invalidate(dev, 7).unwrap();
        cache.flush().unwrap();
        assert_eq!(
            cache.stats().writes_issued,
            1,
            "{kind:?}: block 7 was not dirtied"
        );
        cache.shutdown().unwrap();
    }
}

#[test]
fn a_panic_holding_every_slot_lets_gets_waiting_for_a_slot_go_on() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, BS, 2);
        let dev = cache.open(f.path()).unwrap();
        let (holding, go) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        let c = cache.clone();
        let (h2, g2) = (Arc::clone(&holding), Arc::clone(&go));
        let panicker = thread::spawn(move || {
            let _r = c.read(dev, 0).unwrap();
            let mut w = c.write(dev, 1).unwrap();
            w.fill(0x11);
            h2.wait();
            g2.wait();
            panic!("boom holding both slots");
        });
        holding.wait();
        assert!(
            matches!(cache.try_read(dev, 9), Err(Error::WouldBlock)),
            "{kind:?}"
        );
        let getters: Vec<_> = (9..12u64)
            .map(|b| {
                let c = cache.clone();
                thread::spawn(move || {
                    let g = c.read(dev, b).unwrap();
                    assert!(g[..] == original(b)[..], "block {b}");
                })
            })
            .collect();
        // All three wait for a slot (each counted its miss; block 0 was one).
        wait_until(|| cache.stats().read_misses == 1 + 3);
        go.wait();
        assert_boom(panicker.join(), &format!("{kind:?}"));
        for g in getters {
            g.join().expect("a get waiting for a slot");
        }
        cache.flush().unwrap();
        assert!(
            file_bytes(f.path(), BU, BS).iter().all(|&x| x == 0x11),
            "{kind:?}: block 1"
        );
        cache.shutdown().unwrap();
    }
}

#[test]
fn a_panic_with_the_last_guard_after_the_last_handle_still_flushes() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let c = cache(kind, BS, 4);
        let dev = c.open(f.path()).unwrap();
        let w = c.write(dev, 5).unwrap();
        drop(c); // the last handle: the threads wait for the guard
        let r = thread::spawn(move || {
            let mut w = w;
            w.fill(0x55);
            panic!("boom with the last guard");
        })
        .join();
        assert_boom(r, &format!("{kind:?}"));
        // The unwinding drop was the last guard's: final flush, then stop.
        assert!(
            file_bytes(f.path(), 5 * BU, BS).iter().all(|&x| x == 0x55),
            "{kind:?}"
        );
    }
}

#[test]
fn a_caught_panic_leaves_the_same_thread_able_to_use_the_cache() {
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, BS, 4);
        let dev = cache.open(f.path()).unwrap();
        for round in 0..3u8 {
            let r = catch_unwind(AssertUnwindSafe(|| {
                let mut w = cache.write(dev, 2).unwrap();
                w[round as usize] = 0xc0 + round;
                let _r = cache.read(dev, 3).unwrap();
                panic!("boom in round {round}");
            }));
            assert_boom(r.map(drop), &format!("{kind:?} round {round}"));
            // Both guards were released by the unwinding, on this thread.
            let w = cache.try_write(dev, 2).expect("block 2 released");
            assert_eq!(w[round as usize], 0xc0 + round, "{kind:?}");
            drop(w);
            drop(cache.try_write(dev, 3).expect("block 3 released"));
        }
        cache.flush().unwrap();
        assert_eq!(file_bytes(f.path(), 2 * BU, 3), [0xc0, 0xc1, 0xc2], "{kind:?}");
        cache.shutdown().unwrap();
    }
}

/// Many threads increment counters under write guards; some of them die
/// (unwind) right after an increment, while holding the guard. Each
/// increment made before a panic counts (the guard still marks the block
/// dirty), and the survivors never wait for a dead thread.
#[test]
fn threads_dying_with_guards_under_contention_lose_no_update() {
    const THREADS: u64 = 8;
    const ROUNDS: u64 = 40;
    const BLOCKS: u64 = 3;
    for kind in engines() {
        let f = patterned_file(16 * BU);
        let cache = cache(kind, BS, 2); // fewer slots than blocks: evictions too
        let dev = cache.open(f.path()).unwrap();
        for b in 0..BLOCKS {
            cache.zeroed(dev, b).unwrap();
        }
        let start = Arc::new(Barrier::new(THREADS as usize));
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                let (c, start) = (cache.clone(), Arc::clone(&start));
                thread::spawn(move || {
                    start.wait();
                    let mut died = 0u64;
                    for i in 0..ROUNDS {
                        let b = (t + i) % BLOCKS;
                        let r = catch_unwind(AssertUnwindSafe(|| {
                            let mut w = c.write(dev, b).unwrap();
                            let v = u64::from_le_bytes(w[..8].try_into().unwrap());
                            w[..8].copy_from_slice(&(v + 1).to_le_bytes());
                            if (t * 7 + i) % 3 == 0 {
                                // Unwind without the panic hook's noise.
                                resume_unwind(Box::new("boom"));
                            }
                            // Sometimes hold a reader of another block too.
                            if i % 4 == 1 {
                                if let Ok(r) = c.try_read(dev, (b + 1) % BLOCKS) {
                                    assert_eq!(r.len(), BS);
                                }
                            }
                        }));
                        if r.is_err() {
                            died += 1;
                        }
                    }
                    died
                })
            })
            .collect();
        let died: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(died > 0, "{kind:?}: no thread died");
        barrier(&cache, dev);
        let total: u64 = (0..BLOCKS)
            .map(|b| u64::from_le_bytes(cache.read(dev, b).unwrap()[..8].try_into().unwrap()))
            .sum();
        assert_eq!(total, THREADS * ROUNDS, "{kind:?}: {died} unwound increments");
        cache.flush().unwrap();
        let on_disk: u64 = (0..BLOCKS)
            .map(|b| u64::from_le_bytes(file_bytes(f.path(), b * BU, 8).try_into().unwrap()))
            .sum();
        assert_eq!(on_disk, THREADS * ROUNDS, "{kind:?}: in the file");
        cache.shutdown().unwrap();
    }
}

// ---- the owner thread panics ------------------------------------------

/// Error-level log lines of the whole test binary (every module's caches
/// log here once it is set), for the tests that check what a panicking
/// owner says.
static LOGGED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Error
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            LOGGED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

fn capture_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Capture).expect("no other logger in this binary");
        log::set_max_level(log::LevelFilter::Error);
    });
}

/// Cache A's owner thread panics (its engine panics inside `submit`). From
/// then on A answers `Closed` to everything, hits included, and releases
/// its guards; cache B, used from the same thread, answers exactly as if A
/// had never existed: the right bytes for every block, and no block left
/// held by a reply that went astray.
#[test]
fn an_owner_that_panics_answers_closed_and_leaves_other_caches_alone() {
    capture_log();
    for kind in engines() {
        let plan = FaultPlan::new();
        let fa = patterned_file(16 * BU);
        let a = fault_cache(&plan, 8);
        let da = a.open(fa.path()).unwrap();
        let held = a.read(da, 1).unwrap(); // a guard from before the panic
        drop(a.read(da, 2).unwrap()); // block 2 resident: the next get is a hit
        plan.panic_on(IoKind::Read, 0);

        assert!(
            matches!(a.read(da, 0), Err(Error::Closed)),
            "the read that panics"
        );
        assert!(matches!(a.flush(), Err(Error::Closed)));
        assert!(
            matches!(a.read(da, 2), Err(Error::Closed)),
            "a hit on a dead cache"
        );
        assert!(matches!(a.try_write(da, 2), Err(Error::Closed)));
        drop(held);
        a.prefetch(da, 3);

        let fb = patterned_file(16 * BU);
        let b = cache(kind, BS, 8);
        let db = b.open(fb.path()).unwrap();
        for round in 0..4 {
            for blk in [5, 7, 5, 7] {
                let g = b.read(db, blk).unwrap();
                assert_eq!(g.block(), blk);
                assert!(
                    g[..] == original(blk)[..],
                    "{kind:?} round {round}: block {blk} has wrong bytes"
                );
            }
            // The dead cache, from the same thread, between B's calls.
            assert!(matches!(a.read(da, 4), Err(Error::Closed)));
            assert!(matches!(a.device_blocks(da), Err(Error::Closed)));
        }
        for blk in [5, 7] {
            let mut w = b.try_write(db, blk).expect("no guard of B is left");
            w[0] = 0x5a;
            drop(w);
            b.invalidate(db, blk).expect("written back and dropped");
        }
        assert_eq!(file_bytes(fb.path(), 5 * BU, 1), [0x5a]);
        assert!(matches!(a.shutdown(), Err(Error::Closed)));
        b.shutdown().unwrap();
    }
    let logged = LOGGED.lock().unwrap().clone();
    assert!(
        logged
            .iter()
            .any(|l| l.contains("owner thread panicked") && l.contains("boom on Read of block 0")),
        "the owner's panic is logged with its message: {logged:?}"
    );
}

/// Guards of a cache whose owner died are released wherever they are
/// dropped, and the dead owner's thread lets the last of them go: a guard
/// dropped on another thread after the last handle returns (it does not
/// wait for ever on an owner that will not answer).
#[test]
fn guards_outliving_a_dead_owner_and_its_handles_are_released() {
    let plan = FaultPlan::new();
    let f = patterned_file(16 * BU);
    let cache = fault_cache(&plan, 8);
    let dev = cache.open(f.path()).unwrap();
    let mut w = cache.write(dev, 1).unwrap(); // a clean block: dirtying it asks the owner
    let r = {
        drop(cache.read(dev, 2).unwrap());
        cache.read(dev, 2).unwrap()
    };
    plan.panic_on(IoKind::Read, 0);
    assert!(matches!(cache.read(dev, 0), Err(Error::Closed)));
    drop(cache); // the last handle, while guards live
    w[0] = 1;
    let t = thread::spawn(move || drop(w));
    t.join().unwrap();
    assert_eq!(r[..], original(2)[..], "a live guard still reads its block");
    drop(r);
}
