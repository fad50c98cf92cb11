//! Soak: many threads hammer a small cache over several devices for a
//! fixed number of operations (not a fixed time), on every engine. The
//! short form runs in the default `cargo test`; the long form is
//! `#[ignore]`d: `cargo test --release --test suite -- --ignored soak::`.
//!
//! Every block always holds a whole "stamp": its device, its number and a
//! version, with a body derived from them. Writers take a write guard, read
//! the version and write the next one (in two halves, yielding between
//! them), so a block's final version is exactly the number of writes made
//! to it. What is checked, all the time and at the end:
//! - every block read is a whole stamp of the right device and block (no
//!   torn block, no block handed out for another);
//! - the versions one thread sees of a block never go backwards (a lost
//!   writeback would bring an old version back from disk);
//! - at the end each block's version, in the cache and in the file, is its
//!   number of writes; a fresh cache reads the same from disk.
//!
//! `BLOCKCACHE_SOAK_OPS` sets operations per thread, `BLOCKCACHE_ENGINE`
//! picks one engine, `BLOCKCACHE_SEED` fixes the seed (printed).

use crate::common;
use blockcache::{Cache, Config, DeviceId, EngineKind, Error};
use common::seeded::{self, Rng};
use common::watchdog::within;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier};
use std::thread;

const BS: usize = 4096;
const BU: u64 = BS as u64;
const DEVICES: usize = 3;
const BLOCKS: u64 = 48;
const CAPACITY: usize = 16;
const THREADS: usize = 12;

fn stamp(dev: usize, block: u64, version: u64) -> Vec<u8> {
    let mut v = vec![(dev as u8) ^ (block as u8).wrapping_mul(13) ^ (version as u8).wrapping_mul(101); BS];
    v[..8].copy_from_slice(&(dev as u64).to_le_bytes());
    v[8..16].copy_from_slice(&block.to_le_bytes());
    v[16..24].copy_from_slice(&version.to_le_bytes());
    v
}

fn version_of(data: &[u8]) -> u64 {
    u64::from_le_bytes(data[16..24].try_into().unwrap())
}

/// `data` is a whole stamp of (`dev`, `block`); returns its version.
#[track_caller]
fn check(data: &[u8], dev: usize, block: u64, what: &str) -> u64 {
    let v = version_of(data);
    if data != &stamp(dev, block, v)[..] {
        let head: Vec<u64> = (0..3)
            .map(|i| u64::from_le_bytes(data[i * 8..i * 8 + 8].try_into().unwrap()))
            .collect();
        panic!("{what}: device {dev} block {block} is not a whole stamp of itself (header {head:?})");
    }
    v
}

struct Shared {
    cache: Cache,
    devs: Vec<DeviceId>,
    ops: AtomicU64,
    verified: AtomicU64,
    busy: AtomicU64,
    would_block: AtomicU64,
}

/// One thread: returns how many writes it made to each (device, block).
fn worker(s: &Shared, t: usize, seed: u64, ops: u64) -> Vec<u64> {
    let mut rng = Rng::new(seed ^ (t as u64) << 40);
    let mut writes = vec![0u64; DEVICES * BLOCKS as usize];
    let mut seen = vec![0u64; DEVICES * BLOCKS as usize];
    let c = &s.cache;
    // Mostly a hot set (contention), sometimes anywhere (eviction).
    let pick = |rng: &mut Rng| {
        let d = rng.below(DEVICES as u64) as usize;
        let b = if rng.below(4) == 0 {
            rng.below(BLOCKS)
        } else {
            rng.below(8)
        };
        (d, b)
    };
    let mut saw = |d: usize, b: u64, v: u64, what: &str| {
        let i = d * BLOCKS as usize + b as usize;
        assert!(
            v >= seen[i],
            "thread {t} {what}: device {d} block {b} went back from version {} to {v}",
            seen[i]
        );
        seen[i] = v;
        s.verified.fetch_add(1, Relaxed);
    };
    for i in 0..ops {
        let (d, b) = pick(&mut rng);
        let dev = s.devs[d];
        let what = format!("seed {seed} thread {t} op {i}");
        match rng.below(100) {
            0..=29 => {
                let g = c.read(dev, b).unwrap();
                assert_eq!((g.device(), g.block()), (dev, b), "{what}");
                let v = check(&g, d, b, &what);
                if rng.below(8) == 0 {
                    thread::yield_now(); // hold it a while
                }
                saw(d, b, v, "read");
            }
            30..=54 => {
                let mut g = c.write(dev, b).unwrap();
                let v = check(&g, d, b, &what);
                saw(d, b, v, "write");
                let next = stamp(d, b, v + 1);
                g[BS / 2..].copy_from_slice(&next[BS / 2..]);
                thread::yield_now(); // a torn block is visible only to a bug
                g[..BS / 2].copy_from_slice(&next[..BS / 2]);
                drop(g);
                writes[d * BLOCKS as usize + b as usize] += 1;
                saw(d, b, v + 1, "own write");
            }
            55..=62 => match c.try_read(dev, b) {
                Ok(g) => {
                    let v = check(&g, d, b, &what);
                    saw(d, b, v, "try_read");
                }
                Err(Error::WouldBlock) => drop(s.would_block.fetch_add(1, Relaxed)),
                Err(e) => panic!("{what}: try_read: {e}"),
            },
            63..=68 => match c.try_write(dev, b) {
                Ok(mut g) => {
                    let v = check(&g, d, b, &what);
                    saw(d, b, v, "try_write");
                    g.copy_from_slice(&stamp(d, b, v + 1));
                    drop(g);
                    writes[d * BLOCKS as usize + b as usize] += 1;
                }
                Err(Error::WouldBlock) => drop(s.would_block.fetch_add(1, Relaxed)),
                Err(e) => panic!("{what}: try_write: {e}"),
            },
            69..=76 => {
                for k in 0..4 {
                    c.prefetch(dev, (b + k) % BLOCKS);
                }
            }
            77..=82 => {
                let mut buf = vec![0u8; BS];
                c.read_bytes(dev, b * BU, &mut buf).unwrap();
                let v = check(&buf, d, b, &what);
                saw(d, b, v, "read_bytes");
            }
            83..=88 => match c.invalidate(dev, b) {
                Ok(()) => {}
                Err(Error::Busy) => drop(s.busy.fetch_add(1, Relaxed)),
                Err(e) => panic!("{what}: invalidate: {e}"),
            },
            89..=90 => match c.invalidate_device(dev) {
                Ok(()) => {}
                Err(Error::Busy) => drop(s.busy.fetch_add(1, Relaxed)),
                Err(e) => panic!("{what}: invalidate_device: {e}"),
            },
            91..=94 => c.flush_device(dev).unwrap(),
            _ => c.flush().unwrap(),
        }
    }
    s.ops.fetch_add(ops, Relaxed);
    writes
}

fn soak(kind: EngineKind, seed: u64, ops: u64) {
    let files: Vec<_> = (0..DEVICES)
        .map(|d| {
            let f = tempfile::NamedTempFile::new_in("/var/tmp").unwrap();
            let data: Vec<u8> = (0..BLOCKS).flat_map(|b| stamp(d, b, 0)).collect();
            std::fs::write(f.path(), data).unwrap();
            f
        })
        .collect();
    let cache = Cache::new(Config::new(BS, CAPACITY).engine(kind)).unwrap();
    let devs = files.iter().map(|f| cache.open(f.path()).unwrap()).collect();
    let shared = Arc::new(Shared {
        cache,
        devs,
        ops: AtomicU64::new(0),
        verified: AtomicU64::new(0),
        busy: AtomicU64::new(0),
        would_block: AtomicU64::new(0),
    });
    let s = Arc::clone(&shared);
    let writes = within(&format!("{kind:?} soak, seed {seed}"), move || {
        let start = Arc::new(Barrier::new(THREADS));
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                let (s, start) = (Arc::clone(&s), Arc::clone(&start));
                thread::spawn(move || {
                    start.wait();
                    worker(&s, t, seed, ops)
                })
            })
            .collect();
        let mut total = vec![0u64; DEVICES * BLOCKS as usize];
        for h in hs {
            let w = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            total.iter_mut().zip(w).for_each(|(a, b)| *a += b);
        }
        total
    });
    let c = &shared.cache;
    for d in 0..DEVICES {
        for b in 0..BLOCKS {
            let want = writes[d * BLOCKS as usize + b as usize];
            let got = check(&c.read(shared.devs[d], b).unwrap(), d, b, "end");
            assert_eq!(
                got, want,
                "{kind:?} seed {seed}: device {d} block {b}: lost writes"
            );
        }
    }
    c.flush().unwrap();
    let st = c.stats();
    assert_eq!(st.io_errors, 0, "{st:?}");
    let shared = Arc::try_unwrap(shared).ok().expect("workers are done");
    shared.cache.shutdown().unwrap();
    // The files, and a fresh cache over them, hold the same.
    let fresh = Cache::new(Config::new(BS, CAPACITY).engine(kind)).unwrap();
    for (d, f) in files.iter().enumerate() {
        let file = std::fs::read(f.path()).unwrap();
        let dev = fresh.open(f.path()).unwrap();
        for b in 0..BLOCKS {
            let want = writes[d * BLOCKS as usize + b as usize];
            let at = (b * BU) as usize;
            assert_eq!(
                check(&file[at..at + BS], d, b, "file"),
                want,
                "{kind:?}: file {d} block {b}"
            );
            assert_eq!(check(&fresh.read(dev, b).unwrap(), d, b, "reopened"), want);
        }
    }
    let total: u64 = writes.iter().sum();
    println!(
        "soak {kind:?} seed {seed}: {} ops on {THREADS} threads, {total} writes, {} checks, \
         {} Busy, {} WouldBlock, {} evictions, {} blocks verified at the end",
        shared.ops.load(Relaxed),
        shared.verified.load(Relaxed),
        shared.busy.load(Relaxed),
        shared.would_block.load(Relaxed),
        st.evictions,
        3 * DEVICES as u64 * BLOCKS,
    );
}

fn run(default_ops: u64) {
    let ops = seeded::count("BLOCKCACHE_SOAK_OPS", default_ops);
    let (seed, _) = seeded::seeds(1);
    println!("soak: seed {seed} (rerun with BLOCKCACHE_SEED={seed})");
    for kind in seeded::engines() {
        soak(kind, seed, ops);
    }
}

#[test]
fn soak_short() {
    run(1500);
}

#[test]
#[ignore = "long form: cargo test --release --test suite -- --ignored soak::"]
fn soak_long() {
    run(50_000);
}
