//! Many threads on one cache: exclusivity of write guards, no torn reads,
//! progress with more threads than slots, a seeded mixed stress checked
//! against an exact model, and guards dropped on other threads (also while
//! the last handle goes away).
//!
//! Every test runs on every engine from `engines()`. No sleeps and no
//! timing assertions: a watchdog (`within`) only turns a hang into a
//! failure instead of a stuck test run.

use crate::common;
use common::*;

use blockcache::{Cache, DeviceId, Error};
use std::panic::resume_unwind;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

const BS: usize = 4096;

/// Generous: only a hang (a deadlock, a lost wakeup) gets near it.
const HANG: Duration = Duration::from_secs(120);

/// Run `f` on its own thread and return its result; panic if it has not
/// finished after `HANG` (a deadlock), re-raise its panic if it panicked.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(HANG) {
        Ok(()) => h.join().unwrap(),
        Err(RecvTimeoutError::Disconnected) => match h.join() {
            Ok(r) => r,
            Err(p) => resume_unwind(p),
        },
        Err(RecvTimeoutError::Timeout) => panic!("{what}: no progress for {HANG:?} (hang)"),
    }
}

/// Join every handle, re-raising the first panic.
fn join_all<T>(hs: Vec<thread::JoinHandle<T>>) -> Vec<T> {
    hs.into_iter()
        .map(|h| match h.join() {
            Ok(r) => r,
            Err(p) => resume_unwind(p),
        })
        .collect()
}

/// xorshift64*: a seeded, dependency-free RNG.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A block's contents as "version `version` of block `block`": a header
/// naming both, then bytes derived from them. Anyone can check a block is
/// a whole version of itself (`is_stamp`) without knowing which one.
fn stamp(block: u64, version: u64) -> Vec<u8> {
    let mut v = vec![0u8; BS];
    v[..8].copy_from_slice(&block.to_le_bytes());
    v[8..16].copy_from_slice(&version.to_le_bytes());
    let mut r = Rng::new(block << 32 ^ version);
    for b in &mut v[16..] {
        *b = r.next() as u8;
    }
    v
}

fn is_stamp(block: u64, data: &[u8]) -> bool {
    let version = u64::from_le_bytes(data[8..16].try_into().unwrap());
    data == &stamp(block, version)[..]
}

/// The file's original contents of `block`.
fn original(block: u64) -> Vec<u8> {
    let o = block * BS as u64;
    (o..o + BS as u64).map(pattern).collect()
}

// ---- write exclusivity ----------------------------------------------------

#[test]
fn write_guards_are_exclusive() {
    const THREADS: u64 = 8;
    const K: u64 = 300;
    for kind in engines() {
        let f = patterned_file(16 * BS as u64);
        let cache = cache(kind, BS, 8);
        let dev = cache.open(f.path()).unwrap();
        cache.zeroed(dev, 0).unwrap();
        let c = cache.clone();
        within("counter increments", move || {
            let start = Arc::new(Barrier::new(THREADS as usize));
            let hs = (0..THREADS)
                .map(|_| {
                    let (c, start) = (c.clone(), Arc::clone(&start));
                    thread::spawn(move || {
                        start.wait();
                        for _ in 0..K {
                            let mut w = c.write(dev, 0).unwrap();
                            let v = u64::from_le_bytes(w[..8].try_into().unwrap());
                            // Widen the read-modify-write window: another
                            // writer inside it would lose an increment.
                            thread::yield_now();
                            w[..8].copy_from_slice(&(v + 1).to_le_bytes());
                        }
                    })
                })
                .collect();
            join_all(hs);
        });
        let v = u64::from_le_bytes(cache.read(dev, 0).unwrap()[..8].try_into().unwrap());
        assert_eq!(v, THREADS * K, "{kind:?}: lost increments");
        cache.flush().unwrap();
        let on_disk = u64::from_le_bytes(file_bytes(f.path(), 0, 8).try_into().unwrap());
        assert_eq!(on_disk, THREADS * K, "{kind:?}: file after flush");
        assert!(
            file_bytes(f.path(), 8, BS - 8).iter().all(|&b| b == 0),
            "{kind:?}: rest of block 0"
        );
        cache.shutdown().unwrap();
    }
}

// ---- no torn reads ----------------------------------------------------------

#[test]
fn readers_never_see_a_half_written_block() {
    const BLOCKS: u64 = 4;
    const WRITERS: u64 = 3;
    const READERS: u64 = 5;
    const WRITES: u64 = 300;
    const READS: u64 = 600;
    for kind in engines() {
        let f = patterned_file(BLOCKS * BS as u64);
        // Fewer slots than blocks: blocks are also written back, evicted
        // and read again while the test runs.
        let cache = cache(kind, BS, 3);
        let dev = cache.open(f.path()).unwrap();
        for b in 0..BLOCKS {
            cache.zeroed(dev, b).unwrap();
        }
        let c = cache.clone();
        within("writers and readers", move || {
            let start = Arc::new(Barrier::new((WRITERS + READERS) as usize));
            let mut hs = Vec::new();
            for w in 0..WRITERS {
                let (c, start) = (c.clone(), Arc::clone(&start));
                hs.push(thread::spawn(move || {
                    start.wait();
                    for i in 0..WRITES {
                        let block = (w + i) % BLOCKS;
                        // Never 0 (the start value) and changes every write.
                        let byte = ((w * WRITES + i) % 255 + 1) as u8;
                        let mut g = c.write(dev, block).unwrap();
                        let half = g.len() / 2;
                        g[..half].fill(byte);
                        thread::yield_now();
                        g[half..].fill(byte);
                    }
                }));
            }
            for r in 0..READERS {
                let (c, start) = (c.clone(), Arc::clone(&start));
                hs.push(thread::spawn(move || {
                    start.wait();
                    for i in 0..READS {
                        let block = (r + i) % BLOCKS;
                        let g = c.read(dev, block).unwrap();
                        assert_eq!(g.block(), block);
                        let first = g[0];
                        assert!(
                            g.iter().all(|&b| b == first),
                            "reader {r} saw a torn block {block}: starts {first}, has {:?}",
                            g.iter().find(|&&b| b != first)
                        );
                        thread::yield_now();
                        // Still the same while the guard lives.
                        assert!(
                            g.iter().all(|&b| b == first),
                            "block {block} changed under a reader"
                        );
                    }
                }));
            }
            join_all(hs);
        });
        let mut last = Vec::new();
        for b in 0..BLOCKS {
            let g = cache.read(dev, b).unwrap();
            assert!(
                g.iter().all(|&x| x == g[0]),
                "{kind:?}: block {b} torn at the end"
            );
            last.push(g[0]);
        }
        cache.flush().unwrap();
        for b in 0..BLOCKS {
            let disk = file_bytes(f.path(), b * BS as u64, BS);
            assert!(
                disk.iter().all(|&x| x == last[b as usize]),
                "{kind:?}: block {b} in the file"
            );
        }
        cache.shutdown().unwrap();
    }
}

// ---- more threads than slots ----------------------------------------------

#[test]
fn more_threads_than_slots_all_make_progress() {
    const THREADS: u64 = 16;
    const PER_THREAD: u64 = 2;
    const ROUNDS: u64 = 25;
    const BLOCKS: u64 = THREADS * PER_THREAD;
    for kind in engines() {
        let f = patterned_file(BLOCKS * BS as u64);
        let cache = cache(kind, BS, 4);
        let dev = cache.open(f.path()).unwrap();
        let c = cache.clone();
        within("16 threads on 4 slots", move || {
            let start = Arc::new(Barrier::new(THREADS as usize));
            let hs = (0..THREADS)
                .map(|t| {
                    let (c, start) = (c.clone(), Arc::clone(&start));
                    thread::spawn(move || {
                        let mine = t * PER_THREAD..(t + 1) * PER_THREAD;
                        let mut rng = Rng::new(t);
                        start.wait();
                        for round in 1..=ROUNDS {
                            for b in mine.clone() {
                                c.write(dev, b).unwrap().copy_from_slice(&stamp(b, round));
                                let g = c.read(dev, b).unwrap();
                                assert!(g[..] == stamp(b, round)[..], "thread {t} block {b} round {round}");
                            }
                            // Someone else's block: the original or a whole
                            // version of it, never a mix.
                            let other = rng.below(BLOCKS);
                            let g = c.read(dev, other).unwrap();
                            assert!(
                                g[..] == original(other)[..] || is_stamp(other, &g),
                                "thread {t} read a corrupt block {other}"
                            );
                        }
                    })
                })
                .collect();
            join_all(hs);
        });
        cache.flush().unwrap();
        for b in 0..BLOCKS {
            assert!(
                file_bytes(f.path(), b * BS as u64, BS) == stamp(b, ROUNDS),
                "{kind:?}: block {b} in the file is not its last version"
            );
        }
        let s = cache.stats();
        assert!(
            s.evictions > 0,
            "{kind:?}: 32 blocks through 4 slots evict: {s:?}"
        );
        cache.shutdown().unwrap();
    }
}

// ---- mixed stress against a model ---------------------------------------

/// One thread of the stress: `mine` are the blocks only it changes, so the
/// model of them is exact. Foreign blocks are only read and prefetched.
fn stress_thread(
    c: Cache,
    dev: DeviceId,
    t: u64,
    mine: std::ops::Range<u64>,
    blocks: u64,
    model: Arc<Vec<Mutex<Vec<u8>>>>,
    ops: u64,
) {
    let mut rng = Rng::new(0x5eed ^ t);
    let own = |rng: &mut Rng| mine.start + rng.below(mine.end - mine.start);
    let m = |b: u64| model[b as usize].lock().unwrap();
    for i in 0..ops {
        let what = rng.below(100);
        match what {
            // read an own block: exactly the model
            0..=24 => {
                let b = own(&mut rng);
                let g = c.read(dev, b).unwrap();
                assert!(
                    g[..] == m(b)[..],
                    "thread {t} op {i}: read of block {b} differs from the model"
                );
            }
            // modify a random range of an own block
            25..=49 => {
                let b = own(&mut rng);
                let start = rng.below(BS as u64) as usize;
                let len = 1 + rng.below((BS - start) as u64) as usize;
                let byte = rng.next() as u8;
                let mut g = c.write(dev, b).unwrap();
                let mut mb = m(b);
                assert!(
                    g[..] == mb[..],
                    "thread {t} op {i}: write guard on block {b} differs from the model"
                );
                g[start..start + len].fill(byte);
                mb[start..start + len].fill(byte);
            }
            // zeroed
            50..=54 => {
                let b = own(&mut rng);
                let g = c.zeroed(dev, b).unwrap();
                assert!(g.iter().all(|&x| x == 0));
                m(b).fill(0);
            }
            // prefetch anything
            55..=64 => c.prefetch(dev, rng.below(blocks)),
            // read anything (foreign blocks: only check it is a block)
            65..=74 => {
                let b = rng.below(blocks);
                let g = c.read(dev, b).unwrap();
                assert_eq!((g.device(), g.block(), g.len()), (dev, b, BS));
                if mine.contains(&b) {
                    assert!(g[..] == m(b)[..], "thread {t} op {i}: block {b}");
                }
            }
            // try_read / try_write an own block
            75..=81 => {
                let b = own(&mut rng);
                if what.is_multiple_of(2) {
                    match c.try_read(dev, b) {
                        Ok(g) => assert!(g[..] == m(b)[..], "thread {t} op {i}: try_read {b}"),
                        Err(Error::WouldBlock) => {}
                        Err(e) => panic!("thread {t} op {i}: try_read {b}: {e}"),
                    }
                } else {
                    match c.try_write(dev, b) {
                        Ok(mut g) => {
                            let mut mb = m(b);
                            assert!(g[..] == mb[..], "thread {t} op {i}: try_write {b}");
                            let at = rng.below(BS as u64) as usize;
                            g[at] ^= 0xff;
                            mb[at] ^= 0xff;
                        }
                        Err(Error::WouldBlock) => {}
                        Err(e) => panic!("thread {t} op {i}: try_write {b}: {e}"),
                    }
                }
            }
            // byte ranges across own blocks
            82..=89 => {
                let lo = mine.start * BS as u64;
                let hi = mine.end * BS as u64;
                let off = lo + rng.below(hi - lo);
                let len = 1 + rng.below((hi - off).min(3 * BS as u64)) as usize;
                if what.is_multiple_of(2) {
                    let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    c.write_bytes(dev, off, &data).unwrap();
                    for (k, &x) in data.iter().enumerate() {
                        let p = off + k as u64;
                        m(p / BS as u64)[(p % BS as u64) as usize] = x;
                    }
                } else {
                    let mut buf = vec![0u8; len];
                    c.read_bytes(dev, off, &mut buf).unwrap();
                    for (k, &x) in buf.iter().enumerate() {
                        let p = off + k as u64;
                        assert_eq!(
                            x,
                            m(p / BS as u64)[(p % BS as u64) as usize],
                            "thread {t} op {i}: read_bytes at {p}"
                        );
                    }
                }
            }
            // flushes
            90..=92 => c.flush().unwrap(),
            93..=94 => c.flush_device(dev).unwrap(),
            // invalidate an own block: Busy only when a foreign reader holds it
            _ => {
                let b = own(&mut rng);
                match c.invalidate(dev, b) {
                    Ok(()) | Err(Error::Busy) => {}
                    Err(e) => panic!("thread {t} op {i}: invalidate {b}: {e}"),
                }
            }
        }
    }
}

#[test]
fn mixed_stress_matches_a_model() {
    const THREADS: u64 = 8;
    const BLOCKS: u64 = 64;
    const OPS: u64 = 1500;
    for kind in engines() {
        let f = patterned_file(BLOCKS * BS as u64);
        let cache = cache(kind, BS, 8);
        let dev = cache.open(f.path()).unwrap();
        let model: Arc<Vec<Mutex<Vec<u8>>>> =
            Arc::new((0..BLOCKS).map(|b| Mutex::new(original(b))).collect());
        let per = BLOCKS / THREADS;
        let (c, md) = (cache.clone(), Arc::clone(&model));
        within("mixed stress", move || {
            let hs = (0..THREADS)
                .map(|t| {
                    let (c, md) = (c.clone(), Arc::clone(&md));
                    thread::spawn(move || stress_thread(c, dev, t, t * per..(t + 1) * per, BLOCKS, md, OPS))
                })
                .collect();
            join_all(hs);
        });
        // Everything resident agrees with the model, then the file does.
        for b in 0..BLOCKS {
            assert!(
                cache.read(dev, b).unwrap()[..] == model[b as usize].lock().unwrap()[..],
                "{kind:?}: block {b} in the cache"
            );
        }
        cache.flush().unwrap();
        let disk = file_bytes(f.path(), 0, BLOCKS as usize * BS);
        for b in 0..BLOCKS as usize {
            assert!(
                disk[b * BS..(b + 1) * BS] == model[b].lock().unwrap()[..],
                "{kind:?}: block {b} in the file differs from the model"
            );
        }
        println!("{kind:?} {:?}", cache.stats());
        cache.shutdown().unwrap();
    }
}

// ---- guards on other threads ----------------------------------------------

#[test]
fn a_guard_sent_to_another_thread_is_released_there() {
    for kind in engines() {
        let f = patterned_file(8 * BS as u64);
        let cache = cache(kind, BS, 4);
        let dev = cache.open(f.path()).unwrap();
        let c = cache.clone();
        within("guards across threads", move || {
            let w = c.write(dev, 1).unwrap();
            thread::spawn(move || {
                let mut w = w;
                w.fill(0x5a);
            }) // dropped here, on the other thread
            .join()
            .unwrap();
            // The drop released it: exclusive access again, with the data.
            let w = c.try_write(dev, 1).unwrap();
            assert!(w.iter().all(|&b| b == 0x5a));
            drop(w);

            // Read guards: taken here, dropped on two other threads.
            let (a, b) = (c.read(dev, 1).unwrap(), c.read(dev, 1).unwrap());
            let ha = thread::spawn(move || assert!(a.iter().all(|&x| x == 0x5a)));
            let hb = thread::spawn(move || drop(b));
            join_all(vec![ha, hb]);
            drop(c.try_write(dev, 1).expect("both read guards were released"));

            // A guard shared by reference between threads (Sync).
            let g = c.read(dev, 1).unwrap();
            thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| assert!(g.iter().all(|&x| x == 0x5a)));
                }
            });
        });
        cache.flush().unwrap();
        assert!(
            file_bytes(f.path(), BS as u64, BS).iter().all(|&b| b == 0x5a),
            "{kind:?}"
        );
        cache.shutdown().unwrap();
    }
}

#[test]
fn a_guard_outlives_every_handle() {
    for kind in engines() {
        let f = patterned_file(8 * BS as u64);
        let path = f.path().to_path_buf();
        within("guard after last handle", move || {
            let cache = cache(kind, BS, 4);
            let dev = cache.open(&path).unwrap();
            let w = cache.write(dev, 2).unwrap();
            let r = cache.read(dev, 3).unwrap();
            drop(cache); // the last handle: the threads must wait for the guards
            thread::spawn(move || {
                let mut w = w;
                assert!(r[..] == original(3)[..]);
                w.fill(0xc3);
                drop(r);
            }) // the write guard, the last one, drops here: final flush
            .join()
            .unwrap();
        });
        assert!(
            file_bytes(f.path(), 2 * BS as u64, BS).iter().all(|&b| b == 0xc3),
            "{kind:?}"
        );
    }
}

#[test]
fn guards_dropped_while_the_last_handle_goes() {
    const THREADS: usize = 8;
    const REPEAT: u64 = 20;
    for kind in engines() {
        // Blocks 0..THREADS are written, THREADS..2*THREADS only read.
        let f = patterned_file(2 * THREADS as u64 * BS as u64);
        for rep in 1..=REPEAT {
            let path = f.path().to_path_buf();
            within("drops racing the last handle", move || {
                let cache = cache(kind, BS, 2 * THREADS);
                let dev = cache.open(&path).unwrap();
                let go = Arc::new(Barrier::new(THREADS + 1));
                let hs: Vec<_> = (0..THREADS as u64)
                    .map(|b| {
                        let mut w = cache.write(dev, b).unwrap();
                        let rb = THREADS as u64 + b;
                        let r = (b % 2 == 0).then(|| cache.read(dev, rb).unwrap());
                        // Some threads hold a handle too: the last handle
                        // to go may be any of them, not only the main one.
                        let extra = (b % 3 == 0).then(|| cache.clone());
                        let go = Arc::clone(&go);
                        thread::spawn(move || {
                            w.copy_from_slice(&stamp(b, rep));
                            if let Some(r) = &r {
                                assert!(r[..] == original(rb)[..]);
                            }
                            go.wait();
                            drop(w);
                            drop(extra);
                            drop(r);
                        })
                    })
                    .collect();
                go.wait();
                drop(cache);
                join_all(hs);
            });
            for b in 0..THREADS as u64 {
                assert!(
                    file_bytes(f.path(), b * BS as u64, BS) == stamp(b, rep),
                    "{kind:?} repetition {rep}: block {b} did not reach the file"
                );
            }
        }
    }
}

// ---- visible readers -----------------------------------------------------

/// More threads than a cache has reader records (64) hold the same hot
/// block at once: those with a record hold it visibly, the rest counted.
/// While they all hold it no writer gets in; once they are gone one does,
/// and every reader saw the block's bytes.
#[test]
fn more_readers_than_reader_records_hold_a_block_together() {
    const READERS: usize = 80;
    for kind in engines() {
        let f = patterned_file(8 * BS as u64);
        let cache = cache(kind, BS, 4);
        let dev = cache.open(f.path()).unwrap();
        for _ in 0..3 {
            drop(cache.read(dev, 2).unwrap()); // resident, then biased
        }
        let c = cache.clone();
        within("many readers", move || {
            let holding = Arc::new(Barrier::new(READERS + 1));
            let done = Arc::new(Barrier::new(READERS + 1));
            let readers: Vec<_> = (0..READERS)
                .map(|_| {
                    let (c, holding, done) = (c.clone(), Arc::clone(&holding), Arc::clone(&done));
                    thread::spawn(move || {
                        let g = c.read(dev, 2).unwrap();
                        holding.wait();
                        let same = g[..] == original(2)[..];
                        done.wait(); // the writer has tried while we held
                        same
                    })
                })
                .collect();
            holding.wait();
            assert!(matches!(c.try_write(dev, 2), Err(Error::WouldBlock)));
            done.wait();
            assert!(join_all(readers).into_iter().all(|same| same));
            let mut w = c.write(dev, 2).unwrap();
            w.fill(0x11);
        });
        cache.flush().unwrap();
        assert!(
            file_bytes(f.path(), 2 * BS as u64, BS).iter().all(|&b| b == 0x11),
            "{kind:?}"
        );
        cache.shutdown().unwrap();
    }
}
