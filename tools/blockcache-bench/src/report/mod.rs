//! From runs to reports: one [`Sample`] per run, the median over rounds
//! per case ([`Numbers::median`]), the ratio to the reference (the median
//! of the per-round ratios), the text table and the JSON.

pub mod goals;
pub mod table;

use crate::cli::Workload;
use crate::drive::Timed;
use crate::measure::ThreadUse;
use crate::workloads::{Case, System};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// What one run of one case measured.
pub struct Sample {
    /// Operations completed.
    pub ops: u64,
    /// Wall time of the measured section.
    pub elapsed: Duration,
    /// Latency of every operation, ns.
    pub hist: Histogram<u64>,
    /// Cache gets that hit and missed (the cache only).
    pub hits: Option<(u64, u64)>,
    /// The owner thread's CPU time and parking (the cache only).
    pub owner: Option<ThreadUse>,
    /// The engine threads' (the cache only).
    pub engine: Option<ThreadUse>,
    /// Pool size (the cache only).
    pub pool_bytes: Option<u64>,
    /// Process VmHWM over the run, from a reset just before it.
    pub peak_rss: Option<u64>,
    /// Times the worker threads blocked.
    pub client_parks: u64,
    /// Extra figures (flush time, open time, ...).
    pub notes: BTreeMap<String, f64>,
}

impl Sample {
    /// A sample with only the timings.
    pub fn from_timed(t: Timed) -> Sample {
        Sample {
            client_parks: t.client_parks,
            ops: t.ops,
            elapsed: t.elapsed,
            hist: t.hist,
            hits: None,
            owner: None,
            engine: None,
            pool_bytes: None,
            peak_rss: None,
            notes: BTreeMap::new(),
        }
    }

    /// Operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The figures of one run, or the medians of several.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Numbers {
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Latency percentiles and maximum, µs.
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Maximum, µs.
    pub max_us: f64,
    /// Share of cache gets that hit.
    pub hit_ratio: Option<f64>,
    /// Owner thread CPU time per operation, µs.
    pub owner_cpu_us_per_op: Option<f64>,
    /// Owner thread voluntary context switches (it blocked) per operation.
    pub owner_parks_per_op: Option<f64>,
    /// Owner thread involuntary context switches (preempted, or yielded) per operation.
    pub owner_preempts_per_op: Option<f64>,
    /// Worker (client) threads' voluntary context switches per operation.
    pub client_parks_per_op: f64,
    /// Engine threads' CPU time per operation, µs.
    pub engine_cpu_us_per_op: Option<f64>,
    /// Engine threads' voluntary context switches per operation.
    pub engine_parks_per_op: Option<f64>,
    /// Process peak RSS during the run, MiB.
    pub peak_rss_mib: Option<f64>,
    /// Cache pool size, MiB.
    pub pool_mib: Option<f64>,
    /// Operations (summed over threads).
    pub ops: f64,
    /// Seconds measured.
    pub seconds: f64,
    /// Extra figures.
    pub notes: BTreeMap<String, f64>,
}

const MIB: f64 = (1 << 20) as f64;

impl Numbers {
    /// One run's figures.
    pub fn of(s: &Sample) -> Numbers {
        let us = |ns: u64| ns as f64 / 1000.0;
        let h = &s.hist;
        let q = |x: f64| {
            if h.is_empty() {
                0.0
            } else {
                us(h.value_at_quantile(x))
            }
        };
        let per_op = |v: f64| (s.ops > 0).then(|| v / s.ops as f64);
        Numbers {
            ops_per_sec: s.ops_per_sec(),
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if h.is_empty() { 0.0 } else { us(h.max()) },
            hit_ratio: s
                .hits
                .and_then(|(h, m)| (h + m > 0).then(|| h as f64 / (h + m) as f64)),
            owner_cpu_us_per_op: s.owner.and_then(|o| per_op(o.cpu_ns as f64 / 1000.0)),
            owner_parks_per_op: s.owner.and_then(|o| per_op(o.parks as f64)),
            owner_preempts_per_op: s.owner.and_then(|o| per_op(o.preempts as f64)),
            client_parks_per_op: per_op(s.client_parks as f64).unwrap_or(0.0),
            engine_cpu_us_per_op: s.engine.and_then(|o| per_op(o.cpu_ns as f64 / 1000.0)),
            engine_parks_per_op: s.engine.and_then(|o| per_op(o.parks as f64)),
            peak_rss_mib: s.peak_rss.map(|b| b as f64 / MIB),
            pool_mib: s.pool_bytes.map(|b| b as f64 / MIB),
            ops: s.ops as f64,
            seconds: s.elapsed.as_secs_f64(),
            notes: s.notes.clone(),
        }
    }

    /// The median of each figure over `runs` (not empty).
    pub fn median(runs: &[Numbers]) -> Numbers {
        let m = |f: &dyn Fn(&Numbers) -> f64| median(runs.iter().map(f).collect());
        let mo = |f: &dyn Fn(&Numbers) -> Option<f64>| {
            let v: Vec<f64> = runs.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| median(v))
        };
        let mut notes = BTreeMap::new();
        for k in runs.iter().flat_map(|r| r.notes.keys()) {
            notes.insert(
                k.clone(),
                median(runs.iter().filter_map(|r| r.notes.get(k).copied()).collect()),
            );
        }
        Numbers {
            ops_per_sec: m(&|n| n.ops_per_sec),
            p50_us: m(&|n| n.p50_us),
            p90_us: m(&|n| n.p90_us),
            p99_us: m(&|n| n.p99_us),
            p999_us: m(&|n| n.p999_us),
            max_us: m(&|n| n.max_us),
            hit_ratio: mo(&|n| n.hit_ratio),
            owner_cpu_us_per_op: mo(&|n| n.owner_cpu_us_per_op),
            owner_parks_per_op: mo(&|n| n.owner_parks_per_op),
            owner_preempts_per_op: mo(&|n| n.owner_preempts_per_op),
            client_parks_per_op: m(&|n| n.client_parks_per_op),
            engine_cpu_us_per_op: mo(&|n| n.engine_cpu_us_per_op),
            engine_parks_per_op: mo(&|n| n.engine_parks_per_op),
            peak_rss_mib: mo(&|n| n.peak_rss_mib),
            pool_mib: mo(&|n| n.pool_mib),
            ops: m(&|n| n.ops),
            seconds: m(&|n| n.seconds),
            notes,
        }
    }
}

/// The median of `v` (the mean of the middle two for an even count; 0 if empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Per-round ratios of `ops[r] / reference[r]`, and their median.
pub fn ratio(ops: &[f64], reference: &[f64]) -> Option<f64> {
    let v: Vec<f64> = ops
        .iter()
        .zip(reference)
        .filter(|(_, &r)| r > 0.0)
        .map(|(o, r)| o / r)
        .collect();
    (!v.is_empty()).then(|| median(v))
}

/// One case's result.
#[derive(Serialize)]
pub struct Row {
    /// Case label (system and depth).
    pub label: String,
    /// Whether it is the cache (false: a baseline).
    pub is_cache: bool,
    /// I/Os in flight per thread.
    pub depth: u32,
    /// The label of the row its ratio is to.
    pub reference: Option<String>,
    /// Median over rounds.
    pub median: Numbers,
    /// Median over rounds of ops/s ÷ the reference's ops/s in the same round.
    pub ratio: Option<f64>,
    /// Every round.
    pub rounds: Vec<Numbers>,
    /// The latency curve of the round whose ops/s is the median (for plots).
    #[serde(skip)]
    pub curve: Vec<(f64, f64)>,
}

/// One table: the cases run at one thread count.
#[derive(Serialize)]
pub struct Section {
    /// What it shows.
    pub title: String,
    /// Worker threads.
    pub threads: usize,
    /// The cases.
    pub rows: Vec<Row>,
}

/// One workload's results.
#[derive(Serialize)]
pub struct WorkloadReport {
    /// Which.
    pub workload: Workload,
    /// One line on the setup (file, cache, block size, rounds).
    pub header: String,
    /// What the ratio column is relative to.
    pub ratio_to: String,
    /// One table per thread count.
    pub sections: Vec<Section>,
    /// Lines printed under the tables.
    pub notes: Vec<String>,
}

/// The x axis of latency curves ends at 99.999%.
pub const NINES: f64 = 5.0;

/// The quantile at x on the "nines" scale: x = −log10(1 − q), so 0 is the
/// minimum, 1 p90, 2 p99, 3 p99.9 ...
pub fn quantile(x: f64) -> f64 {
    1.0 - 10f64.powf(-x)
}

/// (x, latency µs) along the nines scale, the last point the maximum.
pub fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let steps = (NINES * 25.0) as usize;
    (0..=steps)
        .map(|k| {
            let x = k as f64 / 25.0;
            let ns = if k == steps {
                h.max()
            } else {
                h.value_at_quantile(quantile(x))
            };
            (x, (ns as f64 / 1000.0).max(0.01))
        })
        .collect()
}

/// What is kept of a run: its figures and its latency curve (a run's
/// histogram takes ~150 KiB; keeping every one would show in the RSS the
/// tool measures).
pub struct Measured {
    /// Its figures.
    pub numbers: Numbers,
    /// Its latency curve.
    pub curve: Vec<(f64, f64)>,
}

impl Measured {
    /// Reduce a sample.
    pub fn of(s: &Sample) -> Measured {
        Measured {
            numbers: Numbers::of(s),
            curve: curve(&s.hist),
        }
    }
}

/// Build a section from the runs of each case, `runs[case][round]`.
pub fn section(title: String, threads: usize, cases: &[Case], samples: Vec<Vec<Measured>>) -> Section {
    let ops: Vec<Vec<f64>> = samples
        .iter()
        .map(|runs| runs.iter().map(|m| m.numbers.ops_per_sec).collect())
        .collect();
    let rows = cases
        .iter()
        .zip(samples)
        .enumerate()
        .map(|(i, (case, runs))| {
            let rounds: Vec<Numbers> = runs.iter().map(|m| m.numbers.clone()).collect();
            let med = Numbers::median(&rounds);
            let pick = rounds
                .iter()
                .enumerate()
                .min_by(|a, b| {
                    let d = |n: &Numbers| (n.ops_per_sec - med.ops_per_sec).abs();
                    d(a.1).total_cmp(&d(b.1))
                })
                .map_or(0, |(k, _)| k);
            let curve = runs.into_iter().nth(pick).map_or_else(Vec::new, |m| m.curve);
            Row {
                label: case.label.clone(),
                is_cache: matches!(case.system, System::Cache(_)),
                depth: case.depth,
                reference: case.reference.map(|r| cases[r].label.clone()),
                ratio: case.reference.and_then(|r| ratio(&ops[i], &ops[r])),
                median: med,
                rounds,
                curve,
            }
        })
        .collect();
    Section { title, threads, rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_ratio_math() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
        // Per-round ratios 2, 0.5, 1 → median 1, although the medians of
        // ops/s (20 and 20) would also give 1: each round is paired.
        assert_eq!(ratio(&[20.0, 10.0, 30.0], &[10.0, 20.0, 30.0]), Some(1.0));
        assert_eq!(ratio(&[5.0], &[0.0]), None);
    }

    #[test]
    fn numbers_of_a_sample_and_their_median() {
        let mut hist = crate::drive::histogram();
        for ns in 1..=1000u64 {
            hist.record(ns * 1000).unwrap(); // 1 µs .. 1 ms
        }
        let mut s = Sample::from_timed(Timed {
            hist,
            ops: 1000,
            elapsed: Duration::from_millis(500),
            client_parks: 250,
        });
        s.hits = Some((3, 1));
        s.owner = Some(ThreadUse {
            cpu_ns: 2_000_000,
            parks: 500,
            preempts: 0,
        });
        let n = Numbers::of(&s);
        assert_eq!(n.ops_per_sec, 2000.0);
        assert!(
            (n.p50_us - 500.0).abs() < 1.0 && (n.p99_us - 990.0).abs() < 1.0,
            "{n:?}"
        );
        assert!((n.max_us - 1000.0).abs() < 1.0);
        assert_eq!(n.hit_ratio, Some(0.75));
        assert_eq!(n.owner_cpu_us_per_op, Some(2.0));
        assert_eq!(n.owner_parks_per_op, Some(0.5));
        assert_eq!(n.client_parks_per_op, 0.25);
        let c = Measured::of(&s).curve;
        assert_eq!(c.first().map(|p| p.0), Some(0.0));
        assert_eq!(c.last().copied(), Some((NINES, 1000.447)), "ends at the maximum");
        assert!(c.windows(2).all(|w| w[0].1 <= w[1].1), "percentiles never fall");
        let slower = Numbers {
            ops_per_sec: 1000.0,
            hit_ratio: None,
            ..n.clone()
        };
        let m = Numbers::median(&[n.clone(), slower.clone(), slower]);
        assert_eq!(m.ops_per_sec, 1000.0);
        assert_eq!(m.hit_ratio, Some(0.75), "medians skip runs without the figure");
    }
}
