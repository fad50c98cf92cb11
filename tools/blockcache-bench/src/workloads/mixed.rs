//! Mixed: zipfian (θ 0.99) blocks, 80% reads / 20% writes, a cache of a
//! tenth of the file, then a flush (the baselines: fdatasync), which counts
//! in the run's time. Each run starts cold: a fresh cache, and the file's
//! pages dropped from the page cache for the buffered baseline.

use super::{base_name, set_references, spec, test_file, CacheMode, Case, Group, Runner, System, CACHE_COPY};
use crate::cli::{show_size, Baseline, Plan};
use crate::drive::run_threads;
use crate::files::{drop_page_cache, open_buffered, open_direct, AlignedBuf, TestFile};
use crate::keys::{is_write, seed, Zipf};
use crate::report::{table::us, Sample, WorkloadReport};
use crate::rig::Rig;
use anyhow::{Context, Result};
use std::os::unix::fs::FileExt;
use std::time::Instant;

const WRITE_PERCENT: u64 = 20;
const THETA: f64 = 0.99;

pub struct Mixed {
    plan: Plan,
    file: TestFile,
    zipf: Zipf,
    groups: Vec<Group>,
}

impl Mixed {
    pub fn prepare(plan: &Plan) -> Result<Mixed> {
        let file = test_file(plan, 2, true)?;
        let zipf = Zipf::new(file.blocks(plan.block_size), THETA, 0);
        let groups = plan
            .threads
            .iter()
            .map(|&t| {
                let mut cases: Vec<Case> = plan
                    .baselines
                    .iter()
                    .map(|&b| Case::new(format!("{}+fdatasync", base_name(b)), System::Base(b), 1))
                    .collect();
                cases.push(Case::new(
                    format!("{CACHE_COPY}+flush"),
                    System::Cache(CacheMode::GetCopy),
                    1,
                ));
                set_references(&mut cases, plan.baselines.first().copied());
                Group {
                    title: format!("mixed 80/20 zipfian, {t} thread(s)"),
                    threads: t,
                    cases,
                }
            })
            .collect();
        Ok(Mixed {
            plan: plan.clone(),
            file,
            zipf,
            groups,
        })
    }
}

impl Runner for Mixed {
    fn header(&self) -> String {
        let p = &self.plan;
        format!(
            "mixed: zipfian θ {THETA} over {} blocks of {} B ({}), {}% writes, cache {} \
             ({:.0}% of the file), then flush (fdatasync); runs start cold; median of {} rounds, {}",
            self.file.blocks(p.block_size),
            p.block_size,
            show_size(self.file.bytes),
            WRITE_PERCENT,
            show_size(p.cache_bytes),
            100.0 * p.cache_bytes as f64 / self.file.bytes as f64,
            p.rounds,
            p.limit
        )
    }

    fn ratio_to(&self) -> String {
        super::ratio_to(&self.plan.baselines, "ops/s including the final sync")
    }

    fn groups(&self) -> &[Group] {
        &self.groups
    }

    fn notes(&self, r: &WorkloadReport) -> Vec<String> {
        let mut v = vec![
            "latency: each read (get + copy out) or write (write guard, 8 bytes stamped; baselines: \
             a whole-block pwrite); the flush/fdatasync is timed apart:"
                .to_string(),
        ];
        for s in &r.sections {
            for row in &s.rows {
                if let Some(ms) = row.median.notes.get("flush_ms") {
                    v.push(format!(
                        "  {} thread(s), {}: flush {} ms",
                        s.threads,
                        row.label,
                        us(*ms)
                    ));
                }
            }
        }
        v
    }

    fn run(&mut self, group: usize, case: usize, round: usize) -> Result<Sample> {
        let threads = self.groups[group].threads;
        let system = self.groups[group].cases[case].system;
        let (bs, limit) = (self.plan.block_size, self.plan.limit);
        let path = self.file.path.as_path();
        let zipf = |t| self.zipf.with_seed(seed(round, t));
        let stamp = |t: usize, i: u64| ((t as u64) << 48 | i).to_le_bytes();
        match system {
            System::Cache(_) => {
                let rig = Rig::start(&spec(&self.plan, 64), &[path])?;
                let (cache, dev) = (&rig.cache, rig.dev());
                let mark = rig.mark();
                let mut timed = run_threads(
                    threads,
                    limit,
                    |_| Ok(vec![0u8; bs]),
                    |t, mut buf, rec| {
                        let (z, s) = (zipf(t), seed(round, t));
                        rec.each(|i| {
                            if is_write(s, i, WRITE_PERCENT) {
                                cache.write(dev, z.at(i))?[..8].copy_from_slice(&stamp(t, i));
                            } else {
                                buf.copy_from_slice(&cache.read(dev, z.at(i))?);
                            }
                            Ok(())
                        })
                    },
                )?;
                let t0 = Instant::now();
                cache.flush().context("cache flush")?;
                let flush = t0.elapsed();
                timed.elapsed += flush;
                let mut s = rig.finish(mark, timed)?;
                s.notes.insert("flush_ms".into(), flush.as_secs_f64() * 1e3);
                Ok(s)
            }
            System::Base(b) => {
                let file = if b == Baseline::Direct {
                    open_direct(path, true)?
                } else {
                    let f = open_buffered(path, true)?;
                    f.sync_data()?;
                    drop_page_cache(&f);
                    f
                };
                let mut timed = run_threads(
                    threads,
                    limit,
                    |_| Ok(AlignedBuf::new(bs)),
                    |t, mut buf, rec| {
                        let (z, s) = (zipf(t), seed(round, t));
                        rec.each(|i| {
                            let off = z.at(i) * bs as u64;
                            if is_write(s, i, WRITE_PERCENT) {
                                buf[..8].copy_from_slice(&stamp(t, i));
                                file.write_all_at(&buf, off)?;
                            } else {
                                file.read_exact_at(&mut buf, off)?;
                            }
                            Ok(())
                        })
                    },
                )?;
                let t0 = Instant::now();
                file.sync_data().context("fdatasync")?;
                let flush = t0.elapsed();
                timed.elapsed += flush;
                let mut s = Sample::from_timed(timed);
                s.notes.insert("flush_ms".into(), flush.as_secs_f64() * 1e3);
                Ok(s)
            }
        }
    }
}
