//! The project's performance goals, checked against what a run measured.

use super::{Row, WorkloadReport};
use crate::cli::Workload;
use crate::rig::Idle;
use crate::workloads::{
    cache_pf, scaling_label, CACHE_COPY, CACHE_GET, CACHE_VIA_OWNER, SHARED_MAP, UNSHARED_MAP,
};
use serde::Serialize;
use std::fmt::Write;

/// One goal and where the run stands.
#[derive(Clone, Debug, Serialize)]
pub struct Goal {
    /// The goal.
    pub goal: &'static str,
    /// What was measured.
    pub measured: String,
    /// Met, missed, or not measured by this run.
    pub met: Option<bool>,
}

fn rows(reports: &[WorkloadReport], w: Workload, threads: Option<usize>) -> impl Iterator<Item = &Row> {
    reports
        .iter()
        .filter(move |r| r.workload == w)
        .flat_map(|r| &r.sections)
        .filter(move |s| threads.is_none_or(|t| s.threads == t))
        .flat_map(|s| &s.rows)
}

fn find<'a>(
    reports: &'a [WorkloadReport],
    w: Workload,
    threads: Option<usize>,
    label: &str,
) -> Option<&'a Row> {
    rows(reports, w, threads).find(|r| r.label == label)
}

fn unmeasured(goal: &'static str, how: &str) -> Goal {
    Goal {
        goal,
        measured: format!("not measured by this run ({how})"),
        met: None,
    }
}

/// Every goal, from the reports of the workloads run and the idle check.
pub fn evaluate(reports: &[WorkloadReport], idle: Option<&Idle>) -> Vec<Goal> {
    let mut goals = Vec::new();

    const HOT_OPS: &str = "hot hits, 2 threads: ops/s >= 5x buffered pread";
    const HOT_P99: &str = "hot hits, 2 threads: p99 <= 2 us";
    let hot = (
        find(reports, Workload::Hot, Some(2), CACHE_COPY),
        find(reports, Workload::Hot, Some(2), CACHE_GET),
    );
    match hot {
        (Some(copy), Some(get)) if copy.reference.as_deref() == Some("pread") => {
            let (rc, rg) = (copy.ratio.unwrap_or(0.0), get.ratio.unwrap_or(0.0));
            let owner = find(reports, Workload::Hot, Some(2), CACHE_VIA_OWNER)
                .and_then(|r| r.ratio)
                .map_or(String::new(), |r| format!(", via the owner {r:.2}x"));
            goals.push(Goal {
                goal: HOT_OPS,
                measured: format!("get {rg:.2}x pread; get+copy {rc:.2}x{owner}"),
                met: Some(rg >= 5.0),
            });
            goals.push(Goal {
                goal: HOT_P99,
                measured: format!(
                    "get+copy p99 {:.2} us, get alone {:.2} us",
                    copy.median.p99_us, get.median.p99_us
                ),
                met: Some(copy.median.p99_us.max(get.median.p99_us) <= 2.0),
            });
        }
        _ => {
            goals.push(unmeasured(
                HOT_OPS,
                "--workload hot --threads 2 with --baseline pread",
            ));
            goals.push(unmeasured(HOT_P99, "--workload hot --threads 2"));
        }
    }

    const SCALES: &str = "hot hits, 1 -> 2 threads: ops/s scales >= 1.8x";
    let scaled =
        |what: &str| find(reports, Workload::Hot, Some(2), &scaling_label(what, 2)).and_then(|r| r.ratio);
    match (scaled(CACHE_COPY), scaled(CACHE_GET), scaled(UNSHARED_MAP)) {
        (Some(copy), Some(get), Some(ceiling)) => goals.push(Goal {
            goal: SCALES,
            measured: format!(
                "get {get:.2}x, get+copy {copy:.2}x; a map per thread (the machine's ceiling) \
                 {ceiling:.2}x"
            ),
            met: Some(get.min(copy) >= 1.8),
        }),
        _ => goals.push(unmeasured(SCALES, "--workload hot --threads 1,2")),
    }

    const NEAR_MAP: &str = "hot hits: get+copy within 3x of an in-process map per get";
    let vs_map: Vec<(usize, f64)> = [1, 2]
        .into_iter()
        .filter_map(|t| {
            let cache = find(reports, Workload::Hot, Some(t), CACHE_COPY)?;
            let map = find(reports, Workload::Hot, Some(t), SHARED_MAP)?;
            Some((t, cache.median.ops_per_sec / map.median.ops_per_sec))
        })
        .collect();
    if vs_map.is_empty() {
        goals.push(unmeasured(NEAR_MAP, "--workload hot --baseline pread,map"));
    } else {
        goals.push(Goal {
            goal: NEAR_MAP,
            measured: vs_map
                .iter()
                .map(|(t, r)| format!("{t}t: {r:.2}x the map's ops/s"))
                .collect::<Vec<_>>()
                .join(", "),
            met: Some(vs_map.iter().all(|&(_, r)| r >= 1.0 / 3.0)),
        });
    }

    const RANDOM: &str = "cold random reads at depth 32: ops/s >= 0.95x raw io_uring at depth 32";
    match find(reports, Workload::Random, None, &cache_pf(32)).filter(|r| r.reference.is_some()) {
        Some(r) => {
            let ratio = r.ratio.unwrap_or(0.0);
            goals.push(Goal {
                goal: RANDOM,
                measured: format!("{ratio:.2}x {}", r.reference.as_deref().unwrap_or("?")),
                met: Some(ratio >= 0.95),
            });
        }
        None => goals.push(unmeasured(
            RANDOM,
            "--workload random --depth 32 --baseline uring",
        )),
    }

    const OWNER: &str = "owner thread CPU per operation <= 1 us";
    let cache_rows: Vec<(Workload, usize, &Row)> = reports
        .iter()
        .flat_map(|r| r.sections.iter().map(move |s| (r.workload, s)))
        .flat_map(|(w, s)| {
            s.rows
                .iter()
                .filter(|r| r.is_cache)
                .map(move |r| (w, s.threads, r))
        })
        .collect();
    let worst = |f: &dyn Fn(&Row) -> Option<f64>| {
        cache_rows
            .iter()
            .filter_map(|&(w, t, r)| f(r).map(|v| (v, w, t, r.label.as_str())))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    };
    let at = |w: Workload, t: usize, l: &str| format!("{} {t}t {l}", format!("{w:?}").to_lowercase());
    match worst(&|r| r.median.owner_cpu_us_per_op) {
        Some((v, w, t, l)) => {
            let mut m = format!("worst {v:.2} us ({})", at(w, t, l));
            if let Some(h) = find(reports, Workload::Hot, Some(2), CACHE_COPY) {
                let _ = write!(
                    m,
                    "; hot 2t get+copy {:.2} us, {:.2} parks/op",
                    h.median.owner_cpu_us_per_op.unwrap_or(0.0),
                    h.median.owner_parks_per_op.unwrap_or(0.0)
                );
            }
            goals.push(Goal {
                goal: OWNER,
                measured: m,
                met: Some(v <= 1.0),
            });
        }
        None => goals.push(unmeasured(OWNER, "no cache row")),
    }

    const RSS: &str = "peak RSS <= pool size + 16 MiB";
    // The process's own footprint (binary, histograms, allocator) is the
    // lowest peak of the no-cache rows of the same table.
    let base = |w: Workload, t: usize| {
        rows(reports, w, Some(t))
            .filter(|r| !r.is_cache)
            .filter_map(|r| r.median.peak_rss_mib)
            .min_by(f64::total_cmp)
    };
    let over_pool = |r: &Row| Some(r.median.peak_rss_mib? - r.median.pool_mib?);
    match worst(&over_pool) {
        Some((v, w, t, l)) => {
            let own = cache_rows
                .iter()
                .filter_map(|&(w, t, r)| Some(over_pool(r)? - base(w, t).unwrap_or(0.0)))
                .fold(f64::MIN, f64::max);
            goals.push(Goal {
                goal: RSS,
                measured: format!(
                    "process peak: pool + {v:.1} MiB ({}); the cache's own: pool + {own:.1} MiB over \
                     the same table's no-cache rows",
                    at(w, t, l)
                ),
                met: Some(v <= 16.0),
            })
        }
        None => goals.push(unmeasured(RSS, "VmHWM could not be reset")),
    }

    const IDLE: &str = "idle cache (threads started, no requests) uses ~0% CPU";
    match idle {
        Some(i) => goals.push(Goal {
            goal: IDLE,
            measured: format!(
                "{:.3}% of one CPU over {:.1} s (owner {:.2} ms, {} wakeups; engine {:.2} ms, {} wakeups)",
                i.cpu_percent, i.seconds, i.owner_cpu_ms, i.owner_wakeups, i.engine_cpu_ms, i.engine_wakeups
            ),
            met: Some(i.cpu_percent < 0.5),
        }),
        None => goals.push(unmeasured(IDLE, "--idle-seconds 0")),
    }
    goals
}

/// The goals as lines of text.
pub fn render(goals: &[Goal]) -> String {
    let mut out = String::from("goals:\n");
    for g in goals {
        let mark = match g.met {
            Some(true) => "MET   ",
            Some(false) => "MISSED",
            None => "  --  ",
        };
        let _ = writeln!(out, "  {mark} {:<72} {}", g.goal, g.measured);
    }
    out
}
