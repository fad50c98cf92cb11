//! Cold random reads: uniformly random blocks of a file many times the
//! cache, from a freshly started (empty) cache each run; with no prefetch
//! (one read in flight per thread) and with a prefetch window of `d`
//! blocks, next to raw io_uring at depth `d` and O_DIRECT pread.

use super::{
    cache_pf, set_references, spec, test_file, uring_qd, usable_baselines, CacheMode, Case, Group, Runner,
    System, CACHE_COPY,
};
use crate::cli::{show_size, Baseline, Plan};
use crate::drive::run_threads;
use crate::files::{drop_page_cache, open_buffered, open_direct, TestFile};
use crate::handoff::Handoff;
use crate::keys::{seed, Uniform};
use crate::report::{Sample, WorkloadReport};
use crate::rig::Rig;
use crate::uring::Ring;
use anyhow::Result;
use std::os::fd::AsRawFd;

pub struct Random {
    plan: Plan,
    file: TestFile,
    blocks: u64,
    groups: Vec<Group>,
    note: Option<String>,
    baselines: Vec<Baseline>,
}

impl Random {
    pub fn prepare(plan: &Plan) -> Result<Random> {
        let (baselines, note) = usable_baselines(plan)?;
        let file = test_file(plan, 2, false)?;
        let blocks = file.blocks(plan.block_size);
        let mut depths = plan.depths.clone();
        depths.push(1);
        depths.sort_unstable();
        depths.dedup();
        let groups = plan
            .threads
            .iter()
            .map(|&t| {
                let mut cases = Vec::new();
                for &d in &depths {
                    for &b in &baselines {
                        match b {
                            Baseline::Uring => cases.push(Case::new(uring_qd(d), System::Base(b), d)),
                            Baseline::Direct if d == 1 => cases.push(Case::new("direct", System::Base(b), 1)),
                            Baseline::Handoff if d == 1 => {
                                cases.push(Case::new("uring via 2 threads", System::Base(b), 1))
                            }
                            Baseline::Pread if d == 1 => {
                                cases.push(Case::new("pread (cold)", System::Base(b), 1))
                            }
                            _ => {}
                        }
                    }
                    if d == 1 {
                        cases.push(Case::new(CACHE_COPY, System::Cache(CacheMode::GetCopy), 1));
                    } else {
                        cases.push(Case::new(cache_pf(d), System::Cache(CacheMode::Prefetch), d));
                    }
                }
                set_references(&mut cases, baselines.first().copied());
                Group {
                    title: format!("cold random reads, {t} thread(s)"),
                    threads: t,
                    cases,
                }
            })
            .collect();
        Ok(Random {
            plan: plan.clone(),
            file,
            blocks,
            groups,
            note,
            baselines,
        })
    }
}

impl Runner for Random {
    fn header(&self) -> String {
        let p = &self.plan;
        format!(
            "random: uniformly random {} B reads of {} ({}, {:.0}× the {} cache); cache \
             started empty each run; pfD = prefetch window of D blocks per thread, quD = raw \
             io_uring D deep per thread; median of {} rounds, {}",
            p.block_size,
            if self.file.temporary {
                "a temporary file".into()
            } else {
                self.file.path.display().to_string()
            },
            show_size(self.file.bytes),
            self.file.bytes as f64 / p.cache_bytes as f64,
            show_size(p.cache_bytes),
            p.rounds,
            p.limit
        )
    }

    fn ratio_to(&self) -> String {
        super::ratio_to(&self.baselines, "one read in flight per thread")
    }

    fn groups(&self) -> &[Group] {
        &self.groups
    }

    fn notes(&self, _: &WorkloadReport) -> Vec<String> {
        let mut v = vec![
            "hit %: gets that found the block resident (a prefetch that had completed); latency: \
             the whole client step (prefetch + get + copy); io_uring latency: queued to reaped"
                .to_string(),
        ];
        v.extend(self.note.clone());
        v
    }

    fn run(&mut self, group: usize, case: usize, round: usize) -> Result<Sample> {
        let threads = self.groups[group].threads;
        let Case { system, depth, .. } = self.groups[group].cases[case].clone();
        let (bs, blocks, limit) = (self.plan.block_size, self.blocks, self.plan.limit);
        let path = self.file.path.as_path();
        let keys = |t| Uniform::new(blocks, seed(round, t));
        match system {
            System::Cache(mode) => {
                let rig = Rig::start(&spec(&self.plan, depth * threads as u32), &[path])?;
                let (cache, dev) = (&rig.cache, rig.dev());
                let window = if mode == CacheMode::Prefetch {
                    u64::from(depth)
                } else {
                    0
                };
                let mark = rig.mark();
                let timed = run_threads(
                    threads,
                    limit,
                    |_| Ok(vec![0u8; bs]),
                    |t, mut buf, rec| {
                        let k = keys(t);
                        for j in 0..window.saturating_sub(1) {
                            cache.prefetch(dev, k.at(j));
                        }
                        rec.each(|i| {
                            if window > 0 {
                                cache.prefetch(dev, k.at(i + window - 1));
                            }
                            buf.copy_from_slice(&cache.read(dev, k.at(i))?);
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
                        let k = keys(t);
                        ring.read_loop(file.as_raw_fd(), |i| k.at(i) * bs as u64, rec)
                    },
                )?;
                Ok(Sample::from_timed(timed))
            }
            System::Base(Baseline::Handoff) => {
                let file = open_direct(path, false)?;
                let handoff = Handoff::start(threads)?;
                let timed = run_threads(
                    threads,
                    limit,
                    |_| Ok(handoff.client(bs)),
                    |t, mut client, rec| {
                        let k = keys(t);
                        rec.each(|i| client.read(file.as_raw_fd(), k.at(i) * bs as u64))
                    },
                )?;
                handoff.stop()?;
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
                super::pread_keys(&file, bs, threads, limit, keys)
            }
        }
    }
}
