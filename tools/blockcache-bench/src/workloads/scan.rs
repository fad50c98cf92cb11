//! Sequential scan: one pass over the file (each thread its own contiguous
//! slice), the cache prefetching `d` blocks ahead, next to buffered reads
//! from a cold page cache (kernel readahead) and raw io_uring `d` deep.

use super::{
    cache_pf, cache_ra, set_references, spec, test_file, uring_qd, usable_baselines, CacheMode, Case, Group,
    Runner, System,
};
use crate::cli::{show_size, Baseline, Plan};
use crate::drive::run_threads;
use crate::files::{drop_page_cache, open_buffered, open_direct, AlignedBuf, TestFile};
use crate::report::{Sample, WorkloadReport};
use crate::rig::Rig;
use crate::uring::Ring;
use anyhow::{bail, Result};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

pub struct Scan {
    plan: Plan,
    file: TestFile,
    blocks: u64,
    groups: Vec<Group>,
    baselines: Vec<Baseline>,
    note: Option<String>,
}

impl Scan {
    pub fn prepare(plan: &Plan) -> Result<Scan> {
        let (baselines, note) = usable_baselines(plan)?;
        let file = test_file(plan, 2, false)?;
        let blocks = file.blocks(plan.block_size);
        let most = *plan.threads.iter().max().unwrap_or(&1) as u64;
        if blocks < 2 * most {
            bail!("the file's {blocks} blocks are too few to give {most} threads a slice each");
        }
        let groups = plan
            .threads
            .iter()
            .map(|&t| {
                let mut cases = Vec::new();
                for &b in &baselines {
                    match b {
                        Baseline::Uring => cases.extend(
                            plan.depths
                                .iter()
                                .map(|&d| Case::new(uring_qd(d), System::Base(b), d)),
                        ),
                        Baseline::Direct => cases.push(Case::new("direct seq", System::Base(b), 1)),
                        _ => cases.push(Case::new("pread seq (cold)", System::Base(b), 1)),
                    }
                }
                for &d in &plan.depths {
                    cases.push(Case::new(cache_pf(d), System::Cache(CacheMode::Prefetch), d));
                }
                for &d in &plan.depths {
                    cases.push(Case::new(cache_ra(d), System::Cache(CacheMode::Readahead), d));
                }
                set_references(&mut cases, baselines.first().copied());
                Group {
                    title: format!("sequential scan, {t} thread(s)"),
                    threads: t,
                    cases,
                }
            })
            .collect();
        Ok(Scan {
            plan: plan.clone(),
            file,
            blocks,
            groups,
            baselines,
            note,
        })
    }
}

impl Runner for Scan {
    fn header(&self) -> String {
        let p = &self.plan;
        format!(
            "scan: one pass over {} blocks of {} B ({}, {:.0}× the {} cache), stopped early \
             at the run limit; cache started empty, page cache dropped before each run; median of {} \
             rounds, {}",
            self.blocks,
            p.block_size,
            show_size(self.file.bytes),
            self.file.bytes as f64 / p.cache_bytes as f64,
            show_size(p.cache_bytes),
            p.rounds,
            p.limit
        )
    }

    fn ratio_to(&self) -> String {
        super::ratio_to(&self.baselines, "buffered sequential reads")
    }

    fn groups(&self) -> &[Group] {
        &self.groups
    }

    fn notes(&self, _: &WorkloadReport) -> Vec<String> {
        let mut v = vec!["ops/s × block size = scan bandwidth".to_string()];
        v.extend(self.note.clone());
        v
    }

    fn run(&mut self, group: usize, case: usize, _round: usize) -> Result<Sample> {
        let threads = self.groups[group].threads;
        let Case { system, depth, .. } = self.groups[group].cases[case].clone();
        let (bs, limit) = (self.plan.block_size, self.plan.limit);
        let path = self.file.path.as_path();
        let per = self.blocks / threads as u64;
        let slice = |t: usize| (t as u64 * per, (t as u64 + 1) * per);
        match system {
            System::Cache(mode) => {
                let mut spec = spec(&self.plan, depth * threads as u32);
                // Reading ahead replaces the prefetch window.
                let w = if mode == CacheMode::Readahead {
                    spec.readahead = depth;
                    0
                } else {
                    u64::from(depth)
                };
                let rig = Rig::start(&spec, &[path])?;
                let (cache, dev) = (&rig.cache, rig.dev());
                let mark = rig.mark();
                let timed = run_threads(
                    threads,
                    limit,
                    |_| Ok(vec![0u8; bs]),
                    |t, mut buf, rec| {
                        let (start, end) = slice(t);
                        rec.cap_ops(end - start);
                        for b in start..(start + w.saturating_sub(1)).min(end) {
                            cache.prefetch(dev, b);
                        }
                        rec.each(|i| {
                            let b = start + i;
                            if w > 0 && b + w - 1 < end {
                                cache.prefetch(dev, b + w - 1);
                            }
                            buf.copy_from_slice(&cache.read(dev, b)?);
                            Ok(())
                        })
                    },
                )?;
                rig.finish(mark, timed)
            }
            System::Base(Baseline::Uring) => {
                let timed = run_threads(
                    threads,
                    limit,
                    |_| Ok((open_direct(path, false)?, Ring::new(depth as usize, bs)?)),
                    |t, (file, mut ring), rec| {
                        let (start, end) = slice(t);
                        rec.cap_ops(end - start);
                        // Reads past the slice (in flight when it ends) are not recorded.
                        ring.read_loop(file.as_raw_fd(), |i| (start + i).min(end - 1) * bs as u64, rec)
                    },
                )?;
                Ok(Sample::from_timed(timed))
            }
            System::Base(b) => {
                let file = if b == Baseline::Direct {
                    open_direct(path, false)?
                } else {
                    let f = open_buffered(path, false)?;
                    drop_page_cache(&f);
                    f
                };
                let timed = run_threads(
                    threads,
                    limit,
                    |_| Ok(AlignedBuf::new(bs)),
                    |t, mut buf, rec| {
                        let (start, end) = slice(t);
                        rec.cap_ops(end - start);
                        rec.each(|i| Ok(file.read_exact_at(&mut buf, (start + i) * bs as u64)?))
                    },
                )?;
                Ok(Sample::from_timed(timed))
            }
        }
    }
}
