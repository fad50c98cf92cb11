//! A cache under test: started fresh for each run (cold and with nothing
//! else's memory), its owner and engine threads found by name so their CPU
//! time and parking can be read around the measured section.

use crate::drive::Timed;
use crate::measure::{process_cpu_ns, threads_named, ThreadUse};
use crate::report::Sample;
use anyhow::{Context, Result};
use blockcache::{Cache, Config, DeviceId, EngineKind, Stats};
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// The owner thread's name (set by blockcache).
pub const OWNER_THREAD: &str = "blockcache-owner";
/// Engine threads' names: the io_uring ring thread and the sync workers.
pub const ENGINE_THREADS: [&str; 2] = ["blockcache-ring", "blockcache-sync"];

/// How to build the cache.
#[derive(Clone, Copy, Debug)]
pub struct CacheSpec {
    /// Bytes per block.
    pub block_size: usize,
    /// Blocks in the pool.
    pub capacity: usize,
    /// Per-device queue depth.
    pub depth: u32,
    /// Engine.
    pub engine: EngineKind,
    /// Serve hits of resident blocks in the client thread (blockcache's
    /// default); false sends every get through the owner thread.
    pub fast_hits: bool,
    /// Most blocks read ahead of an in-order run (0: off).
    pub readahead: u32,
}

/// A running cache with its devices open.
pub struct Rig {
    /// The cache.
    pub cache: Cache,
    /// One per path given to [`Rig::start`], in order.
    pub devs: Vec<DeviceId>,
    /// How long opening the devices took.
    pub open_time: Duration,
    owner: Vec<u32>,
    engines: Vec<u32>,
    pool_bytes: u64,
}

/// Counters and thread times at the start of a measured section.
pub struct Mark {
    owner: ThreadUse,
    engines: ThreadUse,
    stats: Stats,
}

fn engine_threads() -> Vec<u32> {
    ENGINE_THREADS.iter().flat_map(|n| threads_named(n)).collect()
}

impl Rig {
    /// Start a cache and open `paths` in it.
    pub fn start(spec: &CacheSpec, paths: &[&Path]) -> Result<Rig> {
        let owners_before = threads_named(OWNER_THREAD);
        let engines_before = engine_threads();
        let config = Config::new(spec.block_size, spec.capacity)
            .engine(spec.engine)
            .queue_depth(spec.depth)
            .readahead(spec.readahead)
            .fast_hits(spec.fast_hits);
        let cache = Cache::new(config).with_context(|| format!("starting the cache ({spec:?})"))?;
        let t0 = Instant::now();
        let devs = paths
            .iter()
            .map(|p| {
                cache
                    .open(p)
                    .with_context(|| format!("the cache cannot open {}", p.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        let open_time = t0.elapsed();
        // A thread names itself when it starts running; after the opens
        // (round trips to the owner) every one of ours has.
        let owner = threads_named(OWNER_THREAD)
            .into_iter()
            .filter(|t| !owners_before.contains(t))
            .collect();
        let engines = engine_threads()
            .into_iter()
            .filter(|t| !engines_before.contains(t))
            .collect();
        Ok(Rig {
            cache,
            devs,
            open_time,
            owner,
            engines,
            pool_bytes: (spec.block_size * spec.capacity) as u64,
        })
    }

    /// The first device.
    pub fn dev(&self) -> DeviceId {
        self.devs[0]
    }

    /// Read the counters and thread times now.
    pub fn mark(&self) -> Mark {
        Mark {
            owner: ThreadUse::of(&self.owner),
            engines: ThreadUse::of(&self.engines),
            stats: self.cache.stats(),
        }
    }

    /// The sample for a section that started at `mark` and produced
    /// `timed`; then shut the cache down (a flush of anything dirty, not
    /// measured).
    pub fn finish(self, mark: Mark, timed: Timed) -> Result<Sample> {
        let now = self.mark();
        let (a, b) = (mark.stats, now.stats);
        let hits = (b.read_hits + b.write_hits) - (a.read_hits + a.write_hits);
        let misses = (b.read_misses + b.write_misses) - (a.read_misses + a.write_misses);
        let mut s = Sample::from_timed(timed);
        s.hits = Some((hits, misses));
        s.owner = Some(now.owner.since(mark.owner));
        s.engine = Some(now.engines.since(mark.engines));
        s.pool_bytes = Some(self.pool_bytes);
        self.cache.shutdown().context("shutting the cache down")?;
        Ok(s)
    }
}

/// What an idle cache cost: one device open, one block read, then nothing.
#[derive(Clone, Debug, Serialize)]
pub struct Idle {
    /// Seconds watched.
    pub seconds: f64,
    /// The whole process's CPU time over them, ms.
    pub process_cpu_ms: f64,
    /// That as a share of one CPU, %.
    pub cpu_percent: f64,
    /// The owner thread's CPU time, ms.
    pub owner_cpu_ms: f64,
    /// Times the owner thread woke (voluntary context switches).
    pub owner_wakeups: u64,
    /// The engine threads' CPU time, ms.
    pub engine_cpu_ms: f64,
    /// Times they woke.
    pub engine_wakeups: u64,
}

/// Start a cache, open a small temporary file in `dir`, read one block,
/// then sleep `wait` and measure what the process used meanwhile.
pub fn idle(spec: &CacheSpec, dir: &Path, wait: Duration) -> Result<Idle> {
    let file = crate::files::TestFile::temporary(dir, 16 * spec.block_size as u64)?;
    let rig = Rig::start(spec, &[&file.path])?;
    drop(rig.cache.read(rig.dev(), 0)?);
    let before = rig.mark();
    let (cpu0, t0) = (process_cpu_ns(), Instant::now());
    std::thread::sleep(wait);
    let (cpu1, elapsed) = (process_cpu_ns(), t0.elapsed());
    let after = rig.mark();
    rig.cache.shutdown().context("shutting the idle cache down")?;
    let ms = |ns: u64| ns as f64 / 1e6;
    let owner = after.owner.since(before.owner);
    let engines = after.engines.since(before.engines);
    Ok(Idle {
        seconds: elapsed.as_secs_f64(),
        process_cpu_ms: ms(cpu1 - cpu0),
        cpu_percent: (cpu1 - cpu0) as f64 / elapsed.as_nanos() as f64 * 100.0,
        owner_cpu_ms: ms(owner.cpu_ns),
        owner_wakeups: owner.parks,
        engine_cpu_ms: ms(engines.cpu_ns),
        engine_wakeups: engines.parks,
    })
}
