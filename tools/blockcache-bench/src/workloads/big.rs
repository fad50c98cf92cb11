//! Big caches: for each capacity N, what `Cache::new` of N blocks costs
//! (time, and resident memory right after it), and what a read hit costs
//! with all N blocks hot, next to one random byte read of a plain array of
//! the same size (N × block size bytes), measured in the same run.
//!
//! The cache is filled by reading every block of a sparse file (holes: no
//! disk reads), then read once more so that every block is biased for
//! visible readers; the array is written through so that every page of it
//! is resident. Both then read uniformly random places, one thread.
//!
//! Operations are timed in batches (a clock read per operation would cost
//! as much as the array's read): a row's latencies are per-operation means
//! of batches, its ops/s the whole run's.

use super::{flush::blocks_label, CacheMode, Case, Group, Runner, System, CACHE_COPY, CACHE_GET};
use crate::cli::{Baseline, Plan};
use crate::drive::{run_threads, Recorder};
use crate::keys::{seed, splitmix64, Uniform};
use crate::measure::rss;
use crate::report::{Sample, WorkloadReport};
use anyhow::{Context, Result};
use blockcache::{Cache, Config, DeviceId};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Label of the array row, the reference.
pub const ARRAY: &str = "array byte";

/// Operations per timed batch.
const BATCH: u64 = 4096;

/// A filled cache kept across the rounds of one capacity.
struct Hot {
    capacity: u64,
    cache: Cache,
    dev: DeviceId,
}

pub struct Big {
    plan: Plan,
    /// A sparse file of the largest capacity's size.
    file: tempfile::NamedTempFile,
    groups: Vec<Group>,
    hot: Option<Hot>,
    array: Option<Vec<u8>>,
}

impl Big {
    pub fn prepare(plan: &Plan) -> Result<Big> {
        let most = *plan.blocks.iter().max().expect("the plan has sizes");
        let file = tempfile::Builder::new()
            .prefix(".blockcache-bench-")
            .tempfile_in(&plan.dir)
            .with_context(|| format!("cannot make a temporary file in {}", plan.dir.display()))?;
        // Holes: reading them fills the cache without disk reads.
        file.as_file().set_len(most * plan.block_size as u64)?;
        let groups = plan
            .blocks
            .iter()
            .map(|&n| {
                let mut cases = vec![
                    Case::new(ARRAY, System::Base(Baseline::None), 1),
                    Case::new(CACHE_GET, System::Cache(CacheMode::Get), 1),
                    Case::new(CACHE_COPY, System::Cache(CacheMode::GetCopy), 1),
                ];
                for c in &mut cases {
                    c.reference = Some(0);
                }
                Group {
                    title: format!("{}, all hot", blocks_label(n)),
                    threads: 1,
                    cases,
                }
            })
            .collect();
        Ok(Big {
            plan: plan.clone(),
            file,
            groups,
            hot: None,
            array: None,
        })
    }

    fn config(&self, capacity: u64) -> Config {
        Config::new(self.plan.block_size, capacity as usize).engine(self.plan.engine.kind())
    }

    /// `Cache::new` of `capacity` blocks, timed, and the RSS it added.
    fn time_new(&self, capacity: u64) -> Result<(Duration, u64)> {
        let before = rss().unwrap_or(0);
        let t0 = Instant::now();
        let cache = Cache::new(self.config(capacity)).context("Cache::new")?;
        let took = t0.elapsed();
        let added = rss().unwrap_or(0).saturating_sub(before);
        drop(cache);
        Ok((took, added))
    }

    /// The cache of `capacity` blocks, every block resident and biased.
    fn hot(&mut self, capacity: u64) -> Result<&Hot> {
        if self.hot.as_ref().is_none_or(|h| h.capacity != capacity) {
            self.hot = None;
            let cache = Cache::new(self.config(capacity)).context("Cache::new")?;
            let dev = cache.open(self.file.path()).context("opening the file")?;
            // A window of prefetches ahead of the reads.
            let window = 64;
            for b in 0..capacity.min(window) {
                cache.prefetch(dev, b);
            }
            for b in 0..capacity {
                if b + window < capacity {
                    cache.prefetch(dev, b + window);
                }
                drop(cache.read(dev, b)?);
            }
            // Twice more: the first hit in this thread is counted and
            // biases the slot, the next ones are visible.
            for _ in 0..2 {
                for b in 0..capacity {
                    drop(cache.read(dev, b)?);
                }
            }
            let s = cache.stats();
            anyhow::ensure!(
                s.evictions == 0,
                "filling the cache evicted {} blocks",
                s.evictions
            );
            self.hot = Some(Hot { capacity, cache, dev });
        }
        Ok(self.hot.as_ref().expect("just made"))
    }

    /// The array of `bytes`, every page resident.
    fn array(&mut self, bytes: usize) -> &[u8] {
        if self.array.as_ref().is_none_or(|a| a.len() != bytes) {
            self.array = None;
            // Not zeros: a zeroed allocation could be left unbacked.
            self.array = Some(vec![1u8; bytes]);
        }
        self.array.as_ref().expect("just made")
    }
}

/// Time `op(i)` in batches until the run is over; each batch adds its
/// per-operation mean to the histogram.
fn batched(rec: &mut Recorder, mut op: impl FnMut(u64) -> Result<()>) -> Result<()> {
    let mut i = 0;
    loop {
        let t0 = Instant::now();
        for _ in 0..BATCH {
            op(i)?;
            i += 1;
        }
        let t1 = Instant::now();
        rec.record_batch(t0, t1, BATCH);
        if rec.done(t1) {
            return Ok(());
        }
    }
}

impl Runner for Big {
    fn header(&self) -> String {
        let p = &self.plan;
        format!(
            "big: caches of N blocks of {} B, every block hot; one thread reading uniformly random \
             blocks (the cache) or bytes (a plain array of N × {} B); median of {} rounds, {}",
            p.block_size, p.block_size, p.rounds, p.limit
        )
    }

    fn ratio_to(&self) -> String {
        format!("{ARRAY} (one random byte of an array the size of the pool)")
    }

    fn groups(&self) -> &[Group] {
        &self.groups
    }

    fn notes(&self, r: &WorkloadReport) -> Vec<String> {
        let mut v = vec![
            "big: a hit costs (ns) and x = its cost ÷ one random array byte's; new = Cache::new \
             time, RSS = resident memory it added (medians of the rounds):"
                .to_string(),
        ];
        for s in &r.sections {
            let ns = |label: &str| {
                s.rows
                    .iter()
                    .find(|row| row.label == label)
                    .map(|row| 1e9 / row.median.ops_per_sec.max(1e-9))
            };
            let (Some(a), Some(g), Some(c)) = (ns(ARRAY), ns(CACHE_GET), ns(CACHE_COPY)) else {
                continue;
            };
            let note = |k: &str| {
                s.rows
                    .iter()
                    .find_map(|row| row.median.notes.get(k).copied())
                    .unwrap_or(f64::NAN)
            };
            v.push(format!(
                "  {:<22} new {:>7.2} ms, RSS {:>7.1} MiB; array byte {:>6.1} ns; get {:>6.1} ns = {:>5.1}x; \
                 get+copy {:>6.1} ns = {:>5.1}x",
                s.title,
                note("new_ms"),
                note("new_rss_mib"),
                a,
                g,
                g / a,
                c,
                c / a
            ));
        }
        v
    }

    fn run(&mut self, group: usize, case: usize, round: usize) -> Result<Sample> {
        let capacity = self.plan.blocks[group];
        let bs = self.plan.block_size;
        let limit = self.plan.limit;
        let keys = Uniform::new(capacity, seed(round, 0));
        if case == 0 {
            let bytes = capacity as usize * bs;
            let array = self.array(bytes);
            let s = seed(round, 0);
            let timed = run_threads(
                1,
                limit,
                |_| Ok(()),
                |_, (), rec| {
                    batched(rec, |i| {
                        let at = (splitmix64(s ^ splitmix64(i)) % bytes as u64) as usize;
                        black_box(array[at]);
                        Ok(())
                    })
                },
            )?;
            return Ok(Sample::from_timed(timed));
        }
        // The array is not needed while the cache runs.
        self.array = None;
        let (took, added) = self.time_new(capacity)?;
        let copy = case == 2;
        let hot = self.hot(capacity)?;
        let (cache, dev) = (&hot.cache, hot.dev);
        let timed = run_threads(
            1,
            limit,
            |_| Ok(vec![0u8; bs]),
            |_, mut buf, rec| {
                batched(rec, |i| {
                    let g = cache.read(dev, keys.at(i))?;
                    if copy {
                        buf.copy_from_slice(&g);
                        black_box(&buf);
                    } else {
                        black_box(&*g);
                    }
                    Ok(())
                })
            },
        )?;
        let mut s = Sample::from_timed(timed);
        s.notes.insert("new_ms".into(), took.as_secs_f64() * 1e3);
        s.notes
            .insert("new_rss_mib".into(), added as f64 / (1u64 << 20) as f64);
        Ok(s)
    }
}
