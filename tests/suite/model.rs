//! Model-based randomized test: random operation sequences (~300 per
//! engine by default, ~6000 in the long form) on several threads and
//! devices through a tiny cache (3–8 slots: blocks are evicted, written
//! back and read again all the time), checked against a plain in-memory
//! model of every device; at the end the cache and the files equal it.
//! Half the runs read ahead (`Config::readahead`), so blocks also arrive
//! unasked, in vectored runs, amid every other operation.
//!
//! How the model stays exact under concurrency: each device belongs to one
//! thread, the only one that changes it (write, zeroed, byte writes,
//! invalidate, abort, close and reopen). Every thread also reads,
//! prefetches, invalidates and holds blocks of every device, so owners see
//! `Busy` from other threads' guards, evictions of their blocks triggered by
//! others, and flushes started by others. For each block the model keeps
//! its current contents and every version that may be on disk (written
//! since the last point where the disk was known). Where the disk is known
//! — after a successful `invalidate`, `invalidate_device`, `close`, and at
//! the end — the file must equal the current contents; after a successful
//! `abort_device` it must be one of the possible versions (the cache may
//! have written any of them back), and the model reverts to it. `Busy`
//! leaves the model alone.
//!
//! Reproducing: the test prints its seed range and every failure names its
//! seed; `BLOCKCACHE_SEED=<n> cargo test --test suite model::` reruns one (the
//! same operations; thread interleavings vary). `BLOCKCACHE_MODEL_RUNS`
//! sets runs per engine, `BLOCKCACHE_ENGINE=sync|uring` picks one engine,
//! and `--ignored` runs the long form (without `close`; the variant with
//! `close` and reopen runs at the default length every time).

use crate::common;
use blockcache::{Cache, Config, DeviceId, EngineKind, Error};
use common::seeded::{self, Rng};
use common::watchdog::within_seeds;
use common::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread;

const BS: usize = 4096;
const BU: u64 = BS as u64;
/// Runs per engine (2–4 thread sequences each): the default keeps `cargo
/// test` to a few seconds in a debug build.
const DEFAULT_RUNS: u64 = 100;
const LONG_RUNS: u64 = 2000;

#[derive(Default)]
struct Counts {
    ops: AtomicU64,
    sequences: AtomicU64,
    verified: AtomicU64,
    busy: AtomicU64,
    aborts: AtomicU64,
    closes: AtomicU64,
    readaheads: AtomicU64,
}

struct Block {
    cur: Vec<u8>,
    /// Versions that may be on disk, oldest first; never empty.
    disk: Vec<Vec<u8>>,
}

struct Dev {
    /// Index in the shared device table.
    idx: usize,
    path: PathBuf,
    blocks: Vec<Block>,
}

/// The current `DeviceId` of every device (a reopen changes it).
type Table = Arc<Mutex<Vec<DeviceId>>>;

struct Run {
    /// Where the files go: /dev/shm (tmpfs: buffered I/O, syncs cost
    /// nothing) for most runs, /var/tmp (O_DIRECT, real syncs) for every
    /// fourth.
    dir: &'static str,
    threads: usize,
    devs_per_thread: usize,
    blocks: u64,
    capacity: usize,
    ops: u64,
    /// `Config::readahead` (0: off): half the runs read ahead, so blocks
    /// come in unasked amid every other operation.
    readahead: u32,
}

impl Run {
    fn new(seed: u64) -> Run {
        let mut r = Rng::new(seed ^ 0xc0ffee);
        let shm = std::path::Path::new("/dev/shm").is_dir();
        Run {
            dir: if seed.is_multiple_of(4) || !shm {
                "/var/tmp"
            } else {
                "/dev/shm"
            },
            threads: r.range(2, 4) as usize,
            devs_per_thread: r.range(1, 2) as usize,
            blocks: r.range(4, 12),
            capacity: r.range(3, 8) as usize,
            ops: r.range(8, 40),
            readahead: if r.range(0, 1) == 1 {
                r.range(1, 8) as u32
            } else {
                0
            },
        }
    }
}

struct Worker {
    t: usize,
    seed: u64,
    op: u64,
    cache: Cache,
    table: Table,
    devs: Vec<Dev>,
    blocks: u64,
    rng: Rng,
    counts: Arc<Counts>,
    /// Whether `close` (and reopen) is among the operations.
    closes: bool,
}

/// New contents for part of a block: one byte, or a stripe (a few bytes
/// repeated: cheap in debug builds, and position-dependent).
fn scribble(rng: &mut Rng, buf: &mut [u8]) {
    let v = rng.next().to_le_bytes();
    if v[7] & 1 == 0 {
        buf.fill(v[0]);
    } else {
        let n = 3 + (v[6] % 5) as usize;
        for chunk in buf.chunks_mut(n) {
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn file_block(path: &std::path::Path, b: u64) -> Vec<u8> {
    file_bytes(path, b * BU, BS)
}

impl Worker {
    fn fail(&self, msg: String) -> ! {
        panic!("seed {} thread {} op {}: {msg}", self.seed, self.t, self.op)
    }

    fn same(&self, got: &[u8], want: &[u8], what: &str) {
        if got != want {
            assert_eq!(got.len(), want.len(), "{what}: length");
            let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap();
            self.fail(format!(
                "{what}: byte {i} is {:#04x}, model says {:#04x}",
                got[i], want[i]
            ));
        }
        self.counts.verified.fetch_add(1, Relaxed);
    }

    fn id(&self, idx: usize) -> DeviceId {
        self.table.lock().unwrap()[idx]
    }

    /// One of my devices and a block of it.
    fn own(&mut self) -> (usize, DeviceId, u64) {
        let d = self.rng.below(self.devs.len() as u64) as usize;
        let b = self.rng.below(self.blocks);
        (d, self.id(self.devs[d].idx), b)
    }

    /// Any device (maybe closed under us) and a block of it.
    fn any(&mut self) -> (DeviceId, u64) {
        let n = self.table.lock().unwrap().len() as u64;
        let i = self.rng.below(n) as usize;
        (self.id(i), self.rng.below(self.blocks))
    }

    /// Block `b` of my device `d` now holds `data` (a guard was released).
    fn changed(&mut self, d: usize, b: u64, data: Vec<u8>) {
        let blk = &mut self.devs[d].blocks[b as usize];
        if blk.disk.last() != Some(&data) {
            blk.disk.push(data.clone());
        }
        blk.cur = data;
    }

    /// The disk of block `b` of device `d` is known to be its contents.
    fn known(&mut self, d: usize, b: u64, what: &str) {
        let got = file_block(&self.devs[d].path, b);
        let want = self.devs[d].blocks[b as usize].cur.clone();
        self.same(&got, &want, &format!("{what}: block {b} in the file"));
        self.devs[d].blocks[b as usize].disk = vec![want];
    }

    fn step(&mut self) {
        let pick = self.rng.below(100);
        match pick {
            0..=9 => {
                let (d, id, b) = self.own();
                let g = self
                    .cache
                    .read(id, b)
                    .unwrap_or_else(|e| self.fail(format!("read: {e}")));
                self.same(&g, &self.devs[d].blocks[b as usize].cur, "read");
            }
            10..=21 => {
                let (d, id, b) = self.own();
                let mut g = self
                    .cache
                    .write(id, b)
                    .unwrap_or_else(|e| self.fail(format!("write: {e}")));
                self.same(&g, &self.devs[d].blocks[b as usize].cur, "write guard");
                let s = self.rng.below(BU) as usize;
                let e = s + 1 + self.rng.below((BS - s) as u64) as usize;
                scribble(&mut self.rng, &mut g[s..e]);
                let data = g.to_vec();
                drop(g);
                self.changed(d, b, data);
            }
            22..=24 => {
                let (d, id, b) = self.own();
                let mut g = self
                    .cache
                    .zeroed(id, b)
                    .unwrap_or_else(|e| self.fail(format!("zeroed: {e}")));
                if g.iter().any(|&x| x != 0) {
                    self.fail("zeroed guard is not zero".into());
                }
                if self.rng.below(2) == 0 {
                    let s = self.rng.below(BU) as usize;
                    scribble(&mut self.rng, &mut g[s..]);
                }
                let data = g.to_vec();
                drop(g);
                self.changed(d, b, data);
            }
            25..=32 => {
                let (d, id, b) = self.own();
                let write = pick.is_multiple_of(2);
                let r = if write {
                    self.cache.try_write(id, b).map(|g| (None, Some(g)))
                } else {
                    self.cache.try_read(id, b).map(|g| (Some(g), None))
                };
                match r {
                    Ok((Some(g), _)) => self.same(&g, &self.devs[d].blocks[b as usize].cur, "try_read"),
                    Ok((_, Some(mut g))) => {
                        self.same(&g, &self.devs[d].blocks[b as usize].cur, "try_write");
                        let at = self.rng.below(BU) as usize;
                        g[at] = g[at].wrapping_add(1);
                        let data = g.to_vec();
                        drop(g);
                        self.changed(d, b, data);
                    }
                    Ok(_) => unreachable!(),
                    Err(Error::WouldBlock) => {}
                    Err(e) => self.fail(format!("try_{}: {e}", if write { "write" } else { "read" })),
                }
            }
            33..=44 => self.bytes(pick),
            45..=52 => {
                let (id, b) = self.any();
                self.cache.prefetch(id, b);
            }
            53..=58 => {
                let (id, b) = self.any();
                match self.cache.read(id, b) {
                    Ok(g) => {
                        if (g.device(), g.block(), g.len()) != (id, b, BS) {
                            self.fail(format!(
                                "foreign read of {id:?} {b} got {:?} {}",
                                g.device(),
                                g.block()
                            ));
                        }
                        self.counts.verified.fetch_add(1, Relaxed);
                    }
                    Err(Error::UnknownDevice) => {} // closed by its owner meanwhile
                    Err(e) => self.fail(format!("foreign read: {e}")),
                }
            }
            59..=64 => self.hold_and_poke(),
            65..=68 => self
                .cache
                .flush()
                .unwrap_or_else(|e| self.fail(format!("flush: {e}"))),
            69..=71 => {
                let (_, id, _) = self.own();
                self.cache
                    .flush_device(id)
                    .unwrap_or_else(|e| self.fail(format!("flush_device: {e}")));
            }
            72..=79 => {
                let (d, id, b) = self.own();
                match self.cache.invalidate(id, b) {
                    Ok(()) => self.known(d, b, "after invalidate"),
                    Err(Error::Busy) => self.busy(),
                    Err(e) => self.fail(format!("invalidate: {e}")),
                }
            }
            80..=82 => {
                let (id, b) = self.any();
                match self.cache.invalidate(id, b) {
                    Ok(()) | Err(Error::UnknownDevice) => {}
                    Err(Error::Busy) => self.busy(),
                    Err(e) => self.fail(format!("foreign invalidate: {e}")),
                }
            }
            83..=86 => {
                let (d, id, _) = self.own();
                match self.cache.invalidate_device(id) {
                    Ok(()) => (0..self.blocks).for_each(|b| self.known(d, b, "after invalidate_device")),
                    Err(Error::Busy) => self.busy(),
                    Err(e) => self.fail(format!("invalidate_device: {e}")),
                }
            }
            87..=93 => self.abort(),
            _ if self.closes => self.close_and_reopen(),
            _ => {
                let (_, id, _) = self.own();
                self.cache
                    .flush_device(id)
                    .unwrap_or_else(|e| self.fail(format!("flush_device: {e}")));
            }
        }
    }

    fn busy(&self) {
        self.counts.busy.fetch_add(1, Relaxed);
    }

    /// Byte helpers over a random range of one of my devices.
    fn bytes(&mut self, pick: u64) {
        let (d, id, _) = self.own();
        let size = self.blocks * BU;
        let off = self.rng.below(size);
        let len = 1 + self.rng.below((size - off).min(3 * BU)) as usize;
        let mut data = vec![0u8; len];
        match pick % 4 {
            0 => {
                let mut buf = vec![0u8; len];
                self.cache
                    .read_bytes(id, off, &mut buf)
                    .unwrap_or_else(|e| self.fail(format!("read_bytes: {e}")));
                data = self.model_bytes(d, off, len);
                self.same(&buf, &data, &format!("read_bytes {off}+{len}"));
                return;
            }
            1 => {
                scribble(&mut self.rng, &mut data);
                self.cache.write_bytes(id, off, &data)
            }
            2 => self.cache.zero_bytes(id, off, len as u64),
            _ => {
                let byte = self.rng.byte();
                data.fill(byte);
                self.cache.set_bytes(id, off, len as u64, byte)
            }
        }
        .unwrap_or_else(|e| self.fail(format!("byte write {off}+{len}: {e}")));
        let mut pos = off;
        while pos < off + len as u64 {
            let b = pos / BU;
            let end = (off + len as u64).min((b + 1) * BU);
            let mut blk = self.devs[d].blocks[b as usize].cur.clone();
            let at = (pos - off) as usize;
            blk[(pos % BU) as usize..(pos % BU) as usize + (end - pos) as usize]
                .copy_from_slice(&data[at..at + (end - pos) as usize]);
            self.changed(d, b, blk);
            pos = end;
        }
    }

    fn model_bytes(&self, d: usize, off: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut pos = off;
        while pos < off + len as u64 {
            let b = pos / BU;
            let end = (off + len as u64).min((b + 1) * BU);
            let cur = &self.devs[d].blocks[b as usize].cur;
            out.extend_from_slice(&cur[(pos % BU) as usize..(pos % BU + end - pos) as usize]);
            pos = end;
        }
        out
    }

    /// Hold a read guard on any block and do what must not wait for it.
    fn hold_and_poke(&mut self) {
        let (id, b) = self.any();
        let g = match self.cache.read(id, b) {
            Ok(g) => g,
            Err(Error::UnknownDevice) => return,
            Err(e) => self.fail(format!("read to hold: {e}")),
        };
        let own = self.devs.iter().position(|d| self.id(d.idx) == id);
        match self.rng.below(4) {
            0 => match self.cache.invalidate(id, b) {
                Err(Error::Busy) => {}
                other => self.fail(format!("invalidate of a block I hold: {other:?}")),
            },
            1 => match self.cache.try_write(id, b) {
                Err(Error::WouldBlock) => {}
                other => self.fail(format!("try_write of a block I read: {other:?}")),
            },
            2 if own.is_some() => {
                for (what, r) in [
                    ("abort_device", self.cache.abort_device(id)),
                    ("close", self.cache.close(id)),
                    ("invalidate_device", self.cache.invalidate_device(id)),
                ] {
                    if !matches!(r, Err(Error::Busy)) {
                        self.fail(format!("{what} of my device while I hold a block: {r:?}"));
                    }
                }
            }
            _ => self
                .cache
                .flush()
                .unwrap_or_else(|e| self.fail(format!("flush while holding: {e}"))),
        }
        self.counts.verified.fetch_add(1, Relaxed);
        drop(g);
    }

    fn abort(&mut self) {
        let (d, id, _) = self.own();
        match self.cache.abort_device(id) {
            Ok(()) => {
                self.counts.aborts.fetch_add(1, Relaxed);
                for b in 0..self.blocks {
                    let got = file_block(&self.devs[d].path, b);
                    let blk = &mut self.devs[d].blocks[b as usize];
                    if !blk.disk.contains(&got) {
                        let n = blk.disk.len();
                        self.fail(format!(
                            "after abort, block {b} in the file is none of its {n} versions"
                        ));
                    }
                    blk.cur = got.clone();
                    blk.disk = vec![got];
                    self.counts.verified.fetch_add(1, Relaxed);
                }
            }
            Err(Error::Busy) => self.busy(),
            Err(e) => self.fail(format!("abort_device: {e}")),
        }
    }

    fn close_and_reopen(&mut self) {
        let (d, id, _) = self.own();
        match self.cache.close(id) {
            Ok(()) => {
                self.counts.closes.fetch_add(1, Relaxed);
                (0..self.blocks).for_each(|b| self.known(d, b, "after close"));
                if !matches!(self.cache.read(id, 0), Err(Error::UnknownDevice)) {
                    self.fail("a closed device still answers".into());
                }
                let new = self.cache.open(&self.devs[d].path).unwrap();
                self.table.lock().unwrap()[self.devs[d].idx] = new;
            }
            Err(Error::Busy) => self.busy(),
            Err(e) => self.fail(format!("close: {e}")),
        }
    }
}

/// One run: fresh files and cache, `threads` workers, then the final check.
fn run_one(kind: EngineKind, seed: u64, closes: bool, counts: &Arc<Counts>) {
    let p = Run::new(seed);
    let config = Config::new(BS, p.capacity).engine(kind).readahead(p.readahead);
    let cache = Cache::new(config).unwrap();
    let mut rng = Rng::new(seed);
    let ndev = p.threads * p.devs_per_thread;
    let mut files = Vec::new();
    let mut table = Vec::new();
    let mut models: Vec<Vec<Dev>> = (0..p.threads).map(|_| Vec::new()).collect();
    for i in 0..ndev {
        let f = tempfile::NamedTempFile::new_in(p.dir).unwrap();
        let mut data = vec![0u8; (p.blocks * BU) as usize];
        scribble(&mut rng, &mut data);
        std::fs::write(f.path(), &data).unwrap();
        table.push(cache.open(f.path()).unwrap());
        models[i % p.threads].push(Dev {
            idx: i,
            path: f.path().to_path_buf(),
            blocks: data
                .chunks(BS)
                .map(|c| Block {
                    cur: c.to_vec(),
                    disk: vec![c.to_vec()],
                })
                .collect(),
        });
        files.push(f);
    }
    let table: Table = Arc::new(Mutex::new(table));
    let workers: Vec<_> = models
        .into_iter()
        .enumerate()
        .map(|(t, devs)| {
            let mut w = Worker {
                t,
                seed,
                op: 0,
                cache: cache.clone(),
                table: Arc::clone(&table),
                devs,
                blocks: p.blocks,
                rng: Rng::new(seed.wrapping_mul(31).wrapping_add(t as u64 + 1)),
                counts: Arc::clone(counts),
                closes,
            };
            thread::spawn(move || {
                for i in 0..p.ops {
                    w.op = i;
                    w.step();
                }
                w.counts.ops.fetch_add(p.ops, Relaxed);
                w.counts.sequences.fetch_add(1, Relaxed);
                w.devs
            })
        })
        .collect();
    let mut devs = Vec::new();
    for (t, h) in workers.into_iter().enumerate() {
        match h.join() {
            Ok(d) => devs.extend(d),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("{kind:?} seed {seed}: thread {t} failed: {msg}\nrerun: BLOCKCACHE_SEED={seed}");
            }
        }
    }
    // Everything agrees: the cache, then (after flush) the files.
    let table = table.lock().unwrap().clone();
    for d in &devs {
        for (b, blk) in d.blocks.iter().enumerate() {
            let g = cache.read(table[d.idx], b as u64).unwrap();
            assert!(
                g[..] == blk.cur[..],
                "{kind:?} seed {seed}: device {} block {b} in the cache",
                d.idx
            );
        }
    }
    cache.flush().unwrap();
    for d in &devs {
        let file = std::fs::read(&d.path).unwrap();
        for (b, blk) in d.blocks.iter().enumerate() {
            assert!(
                file[b * BS..(b + 1) * BS] == blk.cur[..],
                "{kind:?} seed {seed}: device {} block {b} in the file differs from the model",
                d.idx
            );
        }
        counts.verified.fetch_add(2 * d.blocks.len() as u64, Relaxed);
    }
    let s = cache.stats();
    assert_eq!(s.io_errors, 0, "{kind:?} seed {seed}: {s:?}");
    if p.readahead == 0 {
        assert_eq!(s.readaheads, 0, "{kind:?} seed {seed}: read ahead while off");
    }
    counts.readaheads.fetch_add(s.readaheads, Relaxed);
    cache.shutdown().unwrap();
}

#[test]
fn random_operation_sequences_match_a_model_of_every_device() {
    model_test(DEFAULT_RUNS, false);
}

/// With `close` and reopen among the operations. A close racing a
/// fast-path hit on its device ends with a live guard on a closed device
/// (reproduced deterministically in `races`).
#[test]
fn random_operation_sequences_with_close_match_a_model_of_every_device() {
    model_test(DEFAULT_RUNS, true);
}

#[test]
#[ignore = "long form (minutes): cargo test --release --test suite -- --ignored model::"]
fn random_operation_sequences_match_a_model_of_every_device_long() {
    model_test(LONG_RUNS, false);
}

fn model_test(default_runs: u64, closes: bool) {
    let runs = seeded::count("BLOCKCACHE_MODEL_RUNS", default_runs);
    let (base, seeds) = seeded::seeds(runs);
    println!(
        "model: seeds {base}..{} (rerun one with BLOCKCACHE_SEED=<seed>)",
        base + seeds.len() as u64
    );
    for kind in seeded::engines() {
        let counts = Arc::new(Counts::default());
        let current = Arc::new(AtomicU64::new(base));
        let (c, cur) = (Arc::clone(&counts), Arc::clone(&current));
        let mine = seeds.clone();
        within_seeds(&format!("model {kind:?}"), &current, move || {
            for seed in mine {
                cur.store(seed, Relaxed);
                run_one(kind, seed, closes, &c);
            }
        });
        println!(
            "model {kind:?}: {} runs, {} thread sequences, {} operations, {} blocks verified, \
             {} Busy answers, {} aborts and {} closes that succeeded, {} blocks read ahead",
            seeds.len(),
            counts.sequences.load(Relaxed),
            counts.ops.load(Relaxed),
            counts.verified.load(Relaxed),
            counts.busy.load(Relaxed),
            counts.aborts.load(Relaxed),
            counts.closes.load(Relaxed),
            counts.readaheads.load(Relaxed),
        );
    }
}
