//! Hot hits: a working set of half the cache, every block resident (in the
//! cache, the page cache and the map) before the clock starts; uniformly
//! random reads.

use super::{
    set_references, spec, test_file, CacheMode, Case, Group, Runner, System, CACHE_COPY, CACHE_GET,
    CACHE_VIA_OWNER,
};
use crate::cli::{Baseline, Plan};
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

pub struct Hot {
    plan: Plan,
    file: TestFile,
    /// Blocks in the working set.
    ws: u64,
    groups: Vec<Group>,
}

impl Hot {
    pub fn prepare(plan: &Plan) -> Result<Hot> {
        let file = test_file(plan, 1, false)?;
        let ws = file
            .blocks(plan.block_size)
            .min(plan.capacity() as u64 / 2)
            .max(1);
        let groups = plan
            .threads
            .iter()
            .map(|&t| {
                let mut cases: Vec<Case> = plan
                    .baselines
                    .iter()
                    .map(|&b| {
                        let label = match b {
                            Baseline::Map => "map get+copy",
                            Baseline::Direct => "direct",
                            _ => "pread",
                        };
                        Case::new(label, System::Base(b), 1)
                    })
                    .collect();
                cases.push(Case::new(CACHE_GET, System::Cache(CacheMode::Get), 1));
                cases.push(Case::new(CACHE_COPY, System::Cache(CacheMode::GetCopy), 1));
                cases.push(Case::new(CACHE_VIA_OWNER, System::Cache(CacheMode::ViaOwner), 1));
                set_references(&mut cases, plan.baselines.first().copied());
                Group {
                    title: format!("hot hits, {t} thread(s)"),
                    threads: t,
                    cases,
                }
            })
            .collect();
        Ok(Hot {
            plan: plan.clone(),
            file,
            ws,
            groups,
        })
    }
}

impl Runner for Hot {
    fn header(&self) -> String {
        let p = &self.plan;
        format!(
            "hot: {} blocks of {} B resident ({} MiB working set), cache {} MiB; uniformly random \
             reads; median of {} rounds, {}",
            self.ws,
            p.block_size,
            (self.ws * p.block_size as u64) >> 20,
            p.cache_bytes >> 20,
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

    fn run(&mut self, group: usize, case: usize, round: usize) -> Result<Sample> {
        let threads = self.groups[group].threads;
        let system = self.groups[group].cases[case].system;
        let (bs, ws, limit) = (self.plan.block_size, self.ws, self.plan.limit);
        let path = self.file.path.as_path();
        let keys = |t| Uniform::new(ws, seed(round, t));
        match system {
            System::Cache(mode) => {
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
            System::Base(Baseline::Map) => {
                let file = open_buffered(path, false)?;
                let mut map = HashMap::with_capacity(ws as usize);
                for b in 0..ws {
                    let mut block = vec![0u8; bs].into_boxed_slice();
                    file.read_exact_at(&mut block, b * bs as u64)?;
                    map.insert(b, block);
                }
                let map: Mutex<HashMap<u64, Box<[u8]>>> = Mutex::new(map);
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
            System::Base(b) => {
                let direct = b == Baseline::Direct;
                let file = if direct {
                    open_direct(path, false)?
                } else {
                    open_buffered(path, false)?
                };
                let mut buf = AlignedBuf::new(bs);
                for blk in 0..ws {
                    file.read_exact_at(&mut buf, blk * bs as u64)?; // into the page cache
                }
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
        }
    }
}
