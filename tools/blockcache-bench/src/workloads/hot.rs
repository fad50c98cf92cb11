//! Hot hits: a working set of half the cache, every block resident (in the
//! cache, the page cache and the map) before the clock starts; uniformly
//! random reads.
//!
//! With more than one thread count, a last table measures scaling: the
//! cache at the fewest threads and at the most that the machine has CPUs
//! for, interleaved round by round so the machine's noise falls on both
//! alike, next to a map each thread owns alone. That map shares nothing, so its scaling is the ceiling this
//! machine allows for the same work; the cache's is read against it.

use super::{
    set_references, spec, test_file, CacheMode, Case, Group, Runner, System, CACHE_COPY, CACHE_GET,
    CACHE_VIA_OWNER,
};
use crate::cli::{show_size, Baseline, Plan};
use crate::drive::run_threads;
use crate::files::{open_buffered, open_direct, AlignedBuf, TestFile};
use crate::keys::{seed, Uniform};
use crate::report::Sample;
use crate::rig::Rig;
use anyhow::Result;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Title of the scaling table.
pub const SCALING: &str = "hot hits, scaling";

/// Label of a scaling row: `what` at `threads` threads.
pub fn scaling_label(what: &str, threads: usize) -> String {
    format!("{what} x{threads}")
}

/// Label of the shared map baseline's row.
pub const SHARED_MAP: &str = "map get+copy";

/// Label of the unshared map's rows.
pub const UNSHARED_MAP: &str = "own map get+copy";

/// What one case runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum What {
    Cache(CacheMode),
    /// Buffered (false) or O_DIRECT (true) pread.
    Pread {
        direct: bool,
    },
    /// One `Mutex<HashMap>` shared by all threads.
    SharedMap,
    /// A `HashMap` per thread: no sharing at all.
    OwnMap,
}

pub struct Hot {
    plan: Plan,
    file: TestFile,
    /// Blocks in the working set.
    ws: u64,
    groups: Vec<Group>,
    /// Per group, per case: what runs, on how many threads.
    runs: Vec<Vec<(What, usize)>>,
}

impl Hot {
    pub fn prepare(plan: &Plan) -> Result<Hot> {
        let file = test_file(plan, 1, false)?;
        let ws = file
            .blocks(plan.block_size)
            .min(plan.capacity() as u64 / 2)
            .max(1);
        let mut groups = Vec::new();
        let mut runs = Vec::new();
        for &t in &plan.threads {
            let mut cases: Vec<Case> = Vec::new();
            let mut what = Vec::new();
            for &b in &plan.baselines {
                let (label, w) = match b {
                    Baseline::Map => (SHARED_MAP, What::SharedMap),
                    Baseline::Direct => ("direct", What::Pread { direct: true }),
                    _ => ("pread", What::Pread { direct: false }),
                };
                cases.push(Case::new(label, System::Base(b), 1));
                what.push((w, t));
            }
            for (label, mode) in [
                (CACHE_GET, CacheMode::Get),
                (CACHE_COPY, CacheMode::GetCopy),
                (CACHE_VIA_OWNER, CacheMode::ViaOwner),
            ] {
                cases.push(Case::new(label, System::Cache(mode), 1));
                what.push((What::Cache(mode), t));
            }
            set_references(&mut cases, plan.baselines.first().copied());
            groups.push(Group {
                title: format!("hot hits, {t} thread(s)"),
                threads: t,
                cases,
            });
            runs.push(what);
        }
        // Scaling past the machine's CPUs measures the scheduler, not the
        // cache: the top count is the largest that fits, if one does.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let lo = plan.threads.iter().copied().min().unwrap_or(1);
        let hi = (plan.threads.iter().copied())
            .filter(|&t| t <= cpus)
            .max()
            .unwrap_or(lo);
        if hi > lo {
            let mut cases = Vec::new();
            let mut what = Vec::new();
            for (label, w) in [
                (CACHE_GET, What::Cache(CacheMode::Get)),
                (CACHE_COPY, What::Cache(CacheMode::GetCopy)),
                (UNSHARED_MAP, What::OwnMap),
            ] {
                let system = match w {
                    What::Cache(mode) => System::Cache(mode),
                    _ => System::Base(Baseline::Map),
                };
                let first = cases.len();
                cases.push(Case::new(scaling_label(label, lo), system, 1));
                let mut more = Case::new(scaling_label(label, hi), system, 1);
                more.reference = Some(first);
                cases.push(more);
                what.extend([(w, lo), (w, hi)]);
            }
            groups.push(Group {
                title: format!("{SCALING} {lo} -> {hi} threads (ratio: ops/s at {hi} ÷ at {lo})"),
                threads: hi,
                cases,
            });
            runs.push(what);
        }
        Ok(Hot {
            plan: plan.clone(),
            file,
            ws,
            groups,
            runs,
        })
    }

    /// Run `what` on `threads` threads, each reading its own random
    /// sequence of the working set.
    fn measure(&self, what: What, threads: usize, round: usize) -> Result<Sample> {
        let (bs, ws, limit) = (self.plan.block_size, self.ws, self.plan.limit);
        let path = self.file.path.as_path();
        let keys = |t| Uniform::new(ws, seed(round, t));
        match what {
            What::Cache(mode) => {
                let mut spec = spec(&self.plan, 64);
                spec.fast_hits = mode != CacheMode::ViaOwner;
                let rig = Rig::start(&spec, &[path])?;
                let (cache, dev) = (&rig.cache, rig.dev());
                for b in 0..ws {
                    cache.prefetch(dev, b);
                }
                for b in 0..ws {
                    drop(cache.read(dev, b)?);
                }
                let mark = rig.mark();
                let timed = run_threads(
                    threads,
                    limit,
                    |_| Ok(vec![0u8; bs]),
                    |t, mut buf, rec| {
                        let k = keys(t);
                        rec.each(|i| {
                            let g = cache.read(dev, k.at(i))?;
                            if mode == CacheMode::Get {
                                black_box(&*g);
                            } else {
                                buf.copy_from_slice(&g);
                            }
                            Ok(())
                        })
                    },
                )?;
                rig.finish(mark, timed)
            }
            What::SharedMap => {
                let map = Mutex::new(load_map(path, bs, 0..ws)?);
                let timed = run_threads(
                    threads,
                    limit,
                    |_| Ok(vec![0u8; bs]),
                    |t, mut buf, rec| {
                        let k = keys(t);
                        rec.each(|i| {
                            let m = map.lock();
                            buf.copy_from_slice(&m[&k.at(i)]);
                            Ok(())
                        })
                    },
                )?;
                Ok(Sample::from_timed(timed))
            }
            What::OwnMap => {
                // Loaded here rather than in each thread: memory a worker
                // thread allocates lands in its own malloc arena, which
                // `trim_heap` may not give back, and the next case's peak
                // RSS would count it.
                let maps = (0..threads)
                    .map(|_| load_map(path, bs, 0..ws))
                    .collect::<Result<Vec<_>>>()?;
                let timed = run_threads(
                    threads,
                    limit,
                    |_| Ok(vec![0u8; bs]),
                    |t, mut buf, rec| {
                        let (k, map) = (keys(t), &maps[t]);
                        rec.each(|i| {
                            buf.copy_from_slice(&map[&k.at(i)]);
                            Ok(())
                        })
                    },
                )?;
                Ok(Sample::from_timed(timed))
            }
            What::Pread { direct } => {
                let file = if direct {
                    open_direct(path, false)?
                } else {
                    open_buffered(path, false)?
                };
                let mut buf = AlignedBuf::new(bs);
                for blk in 0..ws {
                    file.read_exact_at(&mut buf, blk * bs as u64)?; // into the page cache
                }
                super::pread_keys(&file, bs, threads, limit, keys)
            }
        }
    }
}

/// The blocks `range` of `path`, each in its own allocation.
fn load_map(path: &Path, bs: usize, range: std::ops::Range<u64>) -> Result<HashMap<u64, Box<[u8]>>> {
    let file = open_buffered(path, false)?;
    let mut map = HashMap::with_capacity(range.end.saturating_sub(range.start) as usize);
    for b in range {
        let mut block = vec![0u8; bs].into_boxed_slice();
        file.read_exact_at(&mut block, b * bs as u64)?;
        map.insert(b, block);
    }
    Ok(map)
}

impl Runner for Hot {
    fn header(&self) -> String {
        let p = &self.plan;
        format!(
            "hot: {} blocks of {} B resident ({} working set), cache {}; uniformly random \
             reads; median of {} rounds, {}",
            self.ws,
            p.block_size,
            show_size(self.ws * p.block_size as u64),
            show_size(p.cache_bytes),
            p.rounds,
            p.limit
        )
    }

    fn ratio_to(&self) -> String {
        super::ratio_to(&self.plan.baselines, "same threads")
    }

    fn groups(&self) -> &[Group] {
        &self.groups
    }

    fn notes(&self, _: &super::WorkloadReport) -> Vec<String> {
        if self.groups.iter().any(|g| g.title.starts_with(SCALING)) {
            vec![format!(
                "scaling: {UNSHARED_MAP} is a map per thread (no memory shared between threads): the \
                 most this machine gives for the same work at more threads"
            )]
        } else {
            Vec::new()
        }
    }

    fn run(&mut self, group: usize, case: usize, round: usize) -> Result<Sample> {
        let (what, threads) = self.runs[group][case];
        self.measure(what, threads, round)
    }
}
