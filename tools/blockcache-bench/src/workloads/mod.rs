//! The seven workloads, each run on the cache and its baselines, and the
//! round-robin that runs them: every round runs every case of a group once,
//! back to back, starting one case later each round.

mod big;
mod devices;
mod flush;
mod hot;
mod mixed;
mod random;
mod scan;

pub use hot::{scaling_label, SHARED_MAP, UNSHARED_MAP};

use crate::cli::{Baseline, Plan, Workload};
use crate::drive::{run_threads, Limit};
use crate::files::{AlignedBuf, TestFile};
use crate::keys::Uniform;
use crate::measure::{peak_rss, reset_peak_rss, trim_heap};
use crate::report::{self, Measured, Sample, WorkloadReport};
use crate::rig::CacheSpec;
use anyhow::{bail, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Label of the cache row that takes a read guard and drops it.
pub const CACHE_GET: &str = "cache get";
/// Label of the cache row that also copies the block out (as pread does).
pub const CACHE_COPY: &str = "cache get+copy";
/// Label of the cache row whose gets all go through the owner thread.
pub const CACHE_VIA_OWNER: &str = "cache via owner";

/// Label of a cache row with a prefetch window of `d` blocks.
pub fn cache_pf(d: u32) -> String {
    format!("cache pf{d}")
}

/// Label of a cache row reading ahead up to `d` blocks.
pub fn cache_ra(d: u32) -> String {
    format!("cache ra{d}")
}

/// Label of a raw io_uring row at depth `d`.
pub fn uring_qd(d: u32) -> String {
    format!("uring qd{d}")
}

/// How the cache is used in a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// Read guard, dropped.
    Get,
    /// Read guard, block copied out, dropped (writes: a write guard, stamped).
    GetCopy,
    /// As `GetCopy`, with a prefetch window of the case's depth.
    Prefetch,
    /// As `GetCopy`, the cache reading ahead up to the case's depth
    /// (`Config::readahead`), no prefetch.
    Readahead,
    /// As `GetCopy`, every get a round trip to the owner thread
    /// (`Config::fast_hits(false)`): what the client-side hit path buys.
    ViaOwner,
}

/// What runs in a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// The cache.
    Cache(CacheMode),
    /// A baseline.
    Base(Baseline),
}

/// One system at one depth.
#[derive(Clone, Debug)]
pub struct Case {
    /// Row label.
    pub label: String,
    /// What runs.
    pub system: System,
    /// I/Os in flight per thread.
    pub depth: u32,
    /// Index of the case its ratio is to.
    pub reference: Option<usize>,
}

impl Case {
    /// A case with no reference yet.
    pub fn new(label: impl Into<String>, system: System, depth: u32) -> Case {
        Case {
            label: label.into(),
            system,
            depth,
            reference: None,
        }
    }
}

/// The cases run at one thread count: one table.
#[derive(Clone, Debug)]
pub struct Group {
    /// Table title.
    pub title: String,
    /// Worker threads.
    pub threads: usize,
    /// Its cases.
    pub cases: Vec<Case>,
}

/// Point every case at the reference: the first case of baseline `first`
/// at the same depth (any depth unless `first` is io_uring, the only
/// baseline whose depth is a parameter).
pub fn set_references(cases: &mut [Case], first: Option<Baseline>) {
    let Some(first) = first else { return };
    let refs: Vec<Option<usize>> = cases
        .iter()
        .map(|c| {
            cases.iter().position(|r| {
                r.system == System::Base(first) && (first != Baseline::Uring || r.depth == c.depth)
            })
        })
        .collect();
    for (c, r) in cases.iter_mut().zip(refs) {
        c.reference = r;
    }
}

/// A prepared workload: its files made, its cases laid out.
pub trait Runner {
    /// One line on the setup.
    fn header(&self) -> String;
    /// What the ratios are relative to.
    fn ratio_to(&self) -> String;
    /// The groups of cases.
    fn groups(&self) -> &[Group];
    /// Run case `case` of group `group` once, in round `round`.
    fn run(&mut self, group: usize, case: usize, round: usize) -> Result<Sample>;
    /// Lines to print under the tables.
    fn notes(&self, _report: &WorkloadReport) -> Vec<String> {
        Vec::new()
    }
}

/// A baseline's name as typed on the command line.
pub fn base_name(b: Baseline) -> String {
    format!("{b:?}").to_lowercase()
}

/// The usual text for [`Runner::ratio_to`]: the first baseline.
pub fn ratio_to(baselines: &[Baseline], what: &str) -> String {
    match baselines.first() {
        Some(Baseline::Uring) => "raw io_uring at the same depth".into(),
        Some(&b) => format!("{} ({what})", base_name(b)),
        None => "nothing (no baseline)".into(),
    }
}

/// The cache spec for a run.
pub fn spec(plan: &Plan, depth: u32) -> CacheSpec {
    CacheSpec {
        block_size: plan.block_size,
        capacity: plan.capacity(),
        depth: depth.clamp(1, blockcache::config::MAX_QUEUE_DEPTH),
        engine: plan.engine.kind(),
        fast_hits: true,
        readahead: 0,
    }
}

/// Whole-block preads of `file` on `threads` threads, thread `t` reading
/// the blocks `keys(t)` gives for 0, 1, 2, ... (the pread and O_DIRECT
/// baselines of the random-read workloads).
pub fn pread_keys(
    file: &File,
    bs: usize,
    threads: usize,
    limit: Limit,
    keys: impl Fn(usize) -> Uniform + Sync,
) -> Result<Sample> {
    let timed = run_threads(
        threads,
        limit,
        |_| Ok(AlignedBuf::new(bs)),
        |t, mut buf, rec| {
            let k = keys(t);
            rec.each(|i| Ok(file.read_exact_at(&mut buf, k.at(i) * bs as u64)?))
        },
    )?;
    Ok(Sample::from_timed(timed))
}

/// The user's file, or a temporary one of the plan's size.
pub fn test_file(plan: &Plan, min_blocks: u64, write: bool) -> Result<TestFile> {
    match &plan.file {
        Some(p) => TestFile::existing(p, write, plan.block_size, min_blocks),
        None => TestFile::temporary(&plan.dir, plan.file_bytes),
    }
}

/// The plan's baselines, less io_uring where the kernel refuses it and it
/// was not asked for by name (then it is an error). The note says so.
pub fn usable_baselines(plan: &Plan) -> Result<(Vec<Baseline>, Option<String>)> {
    let needs_uring = |b: &Baseline| matches!(b, Baseline::Uring | Baseline::Handoff);
    if !plan.baselines.iter().any(needs_uring) {
        return Ok((plan.baselines.clone(), None));
    }
    match crate::uring::probe() {
        Ok(()) => Ok((plan.baselines.clone(), None)),
        Err(e) if plan.baselines_explicit => bail!("--baseline uring/handoff: {e:#}"),
        Err(e) => Ok((
            plan.baselines
                .iter()
                .copied()
                .filter(|b| !needs_uring(b))
                .collect(),
            Some(format!("io_uring baselines skipped: {e:#}")),
        )),
    }
}

/// Make the workload's files and lay out its cases.
pub fn prepare(plan: &Plan) -> Result<Box<dyn Runner>> {
    Ok(match plan.workload {
        Workload::Hot => Box::new(hot::Hot::prepare(plan)?),
        Workload::Random => Box::new(random::Random::prepare(plan)?),
        Workload::Mixed => Box::new(mixed::Mixed::prepare(plan)?),
        Workload::Scan => Box::new(scan::Scan::prepare(plan)?),
        Workload::Devices => Box::new(devices::Devices::prepare(plan)?),
        Workload::Flush => Box::new(flush::Flush::prepare(plan)?),
        Workload::Big => Box::new(big::Big::prepare(plan)?),
    })
}

/// Progress of a run: (runs done, runs in all, label of the next run).
pub type Progress<'a> = &'a dyn Fn(usize, usize, &str);

/// Run the plan's workload: every group, `plan.rounds` rounds each.
pub fn run(plan: &Plan, progress: Progress) -> Result<WorkloadReport> {
    let mut runner = prepare(plan)?;
    let groups = runner.groups().to_vec();
    let total: usize = groups.iter().map(|g| g.cases.len() * plan.rounds).sum();
    let mut done = 0;
    let mut sections = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        let n = group.cases.len();
        let mut samples: Vec<Vec<Measured>> = (0..n).map(|_| Vec::new()).collect();
        for round in 0..plan.rounds {
            for k in 0..n {
                let c = (k + round) % n;
                let case = &group.cases[c];
                progress(
                    done,
                    total,
                    &format!("{} · {} · round {}", group.title, case.label, round + 1),
                );
                trim_heap();
                let reset = reset_peak_rss();
                let mut s = runner.run(g, c, round)?;
                s.peak_rss = if reset { peak_rss() } else { None };
                samples[c].push(Measured::of(&s));
                done += 1;
            }
        }
        sections.push(report::section(
            group.title.clone(),
            group.threads,
            &group.cases,
            samples,
        ));
    }
    progress(done, total, "done");
    let mut report = WorkloadReport {
        workload: plan.workload,
        header: runner.header(),
        ratio_to: runner.ratio_to(),
        sections,
        notes: Vec::new(),
    };
    report.notes = runner.notes(&report);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_match_depth_only_for_io_uring() {
        let mut cases = vec![
            Case::new(uring_qd(1), System::Base(Baseline::Uring), 1),
            Case::new("direct", System::Base(Baseline::Direct), 1),
            Case::new(CACHE_COPY, System::Cache(CacheMode::GetCopy), 1),
            Case::new(uring_qd(8), System::Base(Baseline::Uring), 8),
            Case::new(cache_pf(8), System::Cache(CacheMode::Prefetch), 8),
        ];
        set_references(&mut cases, Some(Baseline::Uring));
        let refs: Vec<_> = cases.iter().map(|c| c.reference).collect();
        assert_eq!(refs, [Some(0), Some(0), Some(0), Some(3), Some(3)]);
        set_references(&mut cases, Some(Baseline::Direct));
        assert!(cases.iter().all(|c| c.reference == Some(1)));
    }
}
