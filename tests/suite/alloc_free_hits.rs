//! A cache hit allocates nothing, on any thread (the client's, the
//! owner's, the engine's): a counting global allocator sees no allocation
//! across 10 000 read-guard hits and 10 000 write-guard hits.
//!
//! The test runs itself again, alone, in a child process of the test
//! binary (`--exact`): the test harness allocates when it starts tests, and
//! any other test running alongside would be counted too. The counting
//! allocator is the whole binary's global allocator, but it counts only in
//! that child.
//!
//! To find an allocation that shows up, run with
//! `BLOCKCACHE_ALLOC_TRACE=1 cargo test --test suite -- --nocapture alloc_free_hits::`:
//! every allocation made while measuring prints its backtrace.

use crate::common;
use common::*;

use blockcache::{Cache, DeviceId, WriteGuard};
use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

struct Counting;

/// Set in the child process the test runs in, before anything it measures:
/// the other tests of this binary (which share its global allocator) pay
/// no shared counter.
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
/// Print a backtrace for each allocation (set while measuring, when
/// BLOCKCACHE_ALLOC_TRACE is set).
static TRACE: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Set while this thread is printing a backtrace: its allocations are
    /// neither counted nor traced.
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
}

impl Counting {
    fn note(&self) {
        if !COUNTING.load(Ordering::Relaxed) {
            return;
        }
        // Allocations made to print a trace are not the cache's.
        if IN_TRACE.try_with(Cell::get).unwrap_or(false) {
            return;
        }
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        if TRACE.load(Ordering::Relaxed) {
            let _ = IN_TRACE.try_with(|t| {
                t.set(true);
                let name = std::thread::current().name().map(str::to_owned);
                eprintln!("allocation on thread {name:?}:\n{}", Backtrace::force_capture());
                t.set(false);
            });
        }
    }
}

// SAFETY: forwards every call to `System` unchanged; counting touches only
// an atomic (and, when tracing, allocates through this same allocator
// behind a reentrancy flag).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.note();
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.note();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.note();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BS: usize = 4096;
const HITS: u64 = 10_000;
/// The resident blocks the hits cycle over.
const HOT: u64 = 4;
/// Client threads in the concurrent phase.
const THREADS: u64 = 4;

/// Allocations, on every thread, made while `f` runs and the cache's
/// threads then go idle. The round trip before each reading makes the
/// owner finish what was sent before (the puts of the previous loop), so
/// its work is counted where it belongs.
///
/// Every thread the cache runs is seen asleep inside the window: what a
/// thread allocates when it goes idle is counted every time, not only
/// when the timing happens to put its first wait there.
fn allocations(cache: &Cache, dev: DeviceId, f: impl FnOnce()) -> usize {
    cache.device_blocks(dev).unwrap();
    let threads = cache_threads();
    let trace = std::env::var_os("BLOCKCACHE_ALLOC_TRACE").is_some();
    let before = ALLOCS.load(Ordering::SeqCst);
    TRACE.store(trace, Ordering::SeqCst);
    f();
    while !threads.iter().all(|t| asleep(t)) {
        std::thread::yield_now();
    }
    cache.device_blocks(dev).unwrap();
    TRACE.store(false, Ordering::SeqCst);
    ALLOCS.load(Ordering::SeqCst) - before
}

// ---- making a thread park once -------------------------------------------
//
// A thread's first *blocking* receive on a crossbeam channel allocates, once:
// the thread-local wait context, and the receiver's wait list. The cache's
// own threads make those at their start (see the crate's `idle`); a client
// thread makes them the first time it parks in a call. Hits are usually
// answered while the client still spins, so warm-up hits alone do not make
// a thread park; a thread that first parks inside the measured loop would
// be counted. So the warm-up makes every client thread park once for sure:
// it asks for a block someone holds for writing, and the holder lets go
// only once the owner has the request queued and the thread is asleep.

/// This thread's kernel id.
fn tid() -> u32 {
    let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    link.file_name().unwrap().to_str().unwrap().parse().unwrap()
}

/// The file `asleep` reads for thread `tid`.
fn stat_file(tid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/self/task/{tid}/stat"))
}

/// The thread of `stat` (see `stat_file`) is asleep (state S): for a thread
/// inside `Cache::read` whose request the owner has queued, that is parked
/// in the reply receive; for a thread of the cache, idle. Allocates
/// nothing (the path is short enough for std to make its C string on the
/// stack), so it may run while allocations are counted.
fn asleep(stat: &Path) -> bool {
    let mut buf = [0u8; 1024];
    let mut file = std::fs::File::open(stat).expect("a live thread's stat");
    let n = file.read(&mut buf).unwrap();
    let stat = &buf[..n];
    let after_comm = &stat[stat.iter().rposition(|&b| b == b')').unwrap() + 1..];
    after_comm.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'S')
}

/// The stat files (see `stat_file`) of the threads the cache runs: its
/// owner and its engines' threads, named `blockcache-*`.
fn cache_threads() -> Vec<PathBuf> {
    let mut owners = 0;
    let threads: Vec<PathBuf> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| {
            let task = task.unwrap().path();
            let comm = std::fs::read_to_string(task.join("comm")).ok()?;
            owners += usize::from(comm.starts_with("blockcache-owne"));
            comm.starts_with("blockcache-").then(|| task.join("stat"))
        })
        .collect();
    assert_eq!(owners, 1, "one cache, so one owner thread: {threads:?}");
    threads
}

/// Hold `w` until `n` more read gets than `base` have reached the owner
/// (they queue behind `w`) and every thread of `tids` is asleep; then drop it.
fn release_when_parked(cache: &Cache, w: WriteGuard, base: u64, n: u64, tids: &[u32]) {
    while gets(cache) < base + n {
        std::thread::yield_now();
    }
    let stats: Vec<PathBuf> = tids.iter().map(|&t| stat_file(t)).collect();
    while !stats.iter().all(|t| asleep(t)) {
        std::thread::yield_now();
    }
    drop(w);
}

fn gets(cache: &Cache) -> u64 {
    let s = cache.stats();
    s.read_hits + s.read_misses
}

/// Make the calling thread park once in a `Cache::read`, on `block`.
fn park_once(cache: &Cache, dev: DeviceId, block: u64) {
    let me = tid();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let c = cache.clone();
    let holder = std::thread::spawn(move || {
        let w = c.write(dev, block).unwrap();
        let base = gets(&c);
        held_tx.send(()).unwrap();
        release_when_parked(&c, w, base, 1, &[me]);
    });
    held_rx.recv().unwrap();
    drop(cache.read(dev, block).unwrap());
    holder.join().unwrap();
}

/// Stats counted while `f` ran: every get a hit, no I/O.
fn only_hits(cache: &Cache, what: &str, reads: u64, writes: u64, f: impl FnOnce() -> usize) -> usize {
    let a = cache.stats();
    let allocs = f();
    let b = cache.stats();
    assert_eq!(
        (b.read_hits - a.read_hits, b.write_hits - a.write_hits),
        (reads, writes),
        "{what}: every get is a hit: {b:?}"
    );
    assert_eq!(
        (b.read_misses, b.write_misses, b.reads_issued, b.writes_issued),
        (a.read_misses, a.write_misses, a.reads_issued, a.writes_issued),
        "{what}: no misses and no I/O while measuring"
    );
    allocs
}

/// Set in the environment of the child process the test runs in.
const CHILD: &str = "BLOCKCACHE_TEST_ALLOC_CHILD";

/// Run this test again, alone, in a child process of this test binary, and
/// assert that it passed there. The child's output follows this test's
/// (with `--nocapture`, or when it fails); with BLOCKCACHE_ALLOC_TRACE set
/// the child runs with `--nocapture` too, so its traces are in it.
fn passes_alone_in_a_child() {
    let name = test_name(module_path!(), "hits_do_not_allocate");
    let mut args = vec!["--exact", &name];
    if std::env::var_os("BLOCKCACHE_ALLOC_TRACE").is_some() {
        args.push("--nocapture");
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(&args)
        .env(CHILD, "1")
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} in a child: {:?}:\n{stdout}{stderr}",
        out.status
    );
}

#[test]
fn hits_do_not_allocate() {
    if std::env::var_os(CHILD).is_none() {
        return passes_alone_in_a_child();
    }
    COUNTING.store(true, Ordering::SeqCst);
    for kind in engines() {
        let f = patterned_file(16 * BS as u64);
        // Room to spare: write hits never push the dirty share over the
        // writeback threshold, so no I/O starts while measuring.
        let cache = cache(kind, BS, 64);
        let dev = cache.open(f.path()).unwrap();

        // Warm up: read the blocks in (misses allocate freely), then a few
        // hundred hits of each kind so thread-locals and the reply channel
        // exist, then park once (see above).
        for b in 0..HOT {
            drop(cache.read(dev, b).unwrap());
        }
        for i in 0..500 {
            drop(cache.read(dev, i % HOT).unwrap());
            drop(cache.write(dev, i % HOT).unwrap());
        }
        // A block outside the hot set, to park on.
        let park = HOT;
        park_once(&cache, dev, park);

        // The counter sees the one allocation made, and nothing else (a
        // control for the zeroes below).
        let control = allocations(&cache, dev, || {
            drop(std::hint::black_box(Vec::<u8>::with_capacity(1)))
        });
        assert_eq!(
            control, 1,
            "{kind:?}: the control window counts its one allocation only; \
             rerun with BLOCKCACHE_ALLOC_TRACE=1"
        );

        let reads = only_hits(&cache, "read hits", HITS, 0, || {
            allocations(&cache, dev, || {
                for i in 0..HITS {
                    let g = cache.read(dev, i % HOT).unwrap();
                    std::hint::black_box(&g[..]);
                }
            })
        });
        let writes = only_hits(&cache, "write hits", 0, HITS, || {
            allocations(&cache, dev, || {
                for i in 0..HITS {
                    let mut g = cache.write(dev, i % HOT).unwrap();
                    g[0] = i as u8;
                }
            })
        });

        // Hits from several threads at once: contention makes threads park
        // in the channels, which must not allocate either. The threads are
        // started, parked once and warmed up before counting; barriers start
        // and end the count.
        let start = Arc::new(Barrier::new(THREADS as usize + 1));
        let end = Arc::new(Barrier::new(THREADS as usize + 1));
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let w = cache.write(dev, park).unwrap();
        let base = gets(&cache);
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (c, start, end) = (cache.clone(), Arc::clone(&start), Arc::clone(&end));
                let tid_tx = tid_tx.clone();
                std::thread::spawn(move || {
                    tid_tx.send(tid()).unwrap();
                    drop(c.read(dev, park).unwrap()); // parks: see park_once
                    for i in 0..200 {
                        drop(c.read(dev, (t + i) % HOT).unwrap());
                    }
                    start.wait();
                    for i in 0..HITS / THREADS {
                        let g = c.read(dev, (t + i) % HOT).unwrap();
                        std::hint::black_box(&g[..]);
                    }
                    end.wait();
                })
            })
            .collect();
        let tids: Vec<u32> = tid_rx.iter().take(THREADS as usize).collect();
        release_when_parked(&cache, w, base, THREADS, &tids);
        // Past their warm-up once every worker waits at `start`: the count
        // starts from there.
        let concurrent = allocations(&cache, dev, || {
            start.wait();
            end.wait();
        });
        for w in workers {
            w.join().unwrap();
        }

        println!(
            "{kind:?}: {reads} allocations in {HITS} read hits, {writes} in {HITS} write hits, \
             {concurrent} in {HITS} read hits from {THREADS} threads"
        );
        assert_eq!(
            reads, 0,
            "{kind:?}: read hits allocated ({reads} in {HITS}); rerun with BLOCKCACHE_ALLOC_TRACE=1"
        );
        assert_eq!(
            writes, 0,
            "{kind:?}: write hits allocated ({writes} in {HITS}); rerun with BLOCKCACHE_ALLOC_TRACE=1"
        );
        assert_eq!(
            concurrent, 0,
            "{kind:?}: concurrent read hits allocated ({concurrent} in {HITS}); \
             rerun with BLOCKCACHE_ALLOC_TRACE=1"
        );
        let s = cache.stats();
        assert_eq!(
            (s.reads_issued, s.writes_issued),
            (HOT + 1, 0),
            "{kind:?}: only the warm-up misses read: {s:?}"
        );
        cache.flush().unwrap();
        cache.shutdown().unwrap();
    }
}
