//! Flush: make N blocks dirty (zeroed write guards, so nothing is read),
//! then time one operation that writes them all back — `flush`,
//! `invalidate_device` or `close` — while a second thread makes round
//! trips to the owner thread. What it shows is what such an operation
//! costs the owner per block written, and how long everyone else waits
//! for the owner while it runs.
//!
//! The pool holds 3/2 N blocks, so that N dirty blocks stay under the
//! preemptive writeback's threshold (fewer than a third clean or free):
//! every block the operation writes is one it started itself.
//!
//! A row's figures: `ops/s` blocks written per second of the operation;
//! the latencies are the prober's round trips (`device_blocks` of a second
//! device, which only the owner answers) made while the operation ran;
//! `own µs` the owner thread's CPU per block written.

use super::{CacheMode, Case, Group, Runner, System};
use crate::cli::{FlushOp, Plan};
use crate::drive::{histogram, Timed};
use crate::files::TestFile;
use crate::report::{table::us, Sample, WorkloadReport};
use crate::rig::{CacheSpec, Rig};
use anyhow::{bail, Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Blocks of the prober's device.
const PROBE_BLOCKS: u64 = 16;
/// The prober's pause between round trips.
const PROBE_PAUSE: Duration = Duration::from_micros(200);

/// A count of blocks as the rows name it: 1K, 16K, 1M.
pub fn blocks_label(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}M blocks", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}K blocks", n >> 10),
        n => format!("{n} blocks"),
    }
}

/// The operation's name as the tables show it.
fn op_name(op: FlushOp) -> &'static str {
    match op {
        FlushOp::Flush => "flush",
        FlushOp::Invalidate => "invalidate_device",
        FlushOp::Close => "close",
    }
}

pub struct Flush {
    plan: Plan,
    file: TestFile,
    probe: TestFile,
    groups: Vec<Group>,
}

impl Flush {
    pub fn prepare(plan: &Plan) -> Result<Flush> {
        let most = *plan.blocks.iter().max().expect("the plan has sizes");
        let bs = plan.block_size as u64;
        let file = match &plan.file {
            Some(p) => TestFile::existing(p, true, plan.block_size, most)?,
            // Written through once, so that the runs overwrite allocated
            // blocks (a sparse tmpfs file would allocate pages as they
            // write, slowing the first run's I/O and nothing else).
            None => TestFile::temporary(&plan.dir, plan.file_bytes)?,
        };
        if file.blocks(plan.block_size) < most {
            bail!("the file holds fewer than the {most} blocks of --blocks");
        }
        let probe = TestFile::temporary(&plan.dir, PROBE_BLOCKS * bs)?;
        let groups = plan
            .flush_ops
            .iter()
            .map(|&op| Group {
                title: format!(
                    "{} of N dirty blocks, a prober making round trips meanwhile",
                    op_name(op)
                ),
                threads: 1,
                cases: plan
                    .blocks
                    .iter()
                    .map(|&n| Case::new(blocks_label(n), System::Cache(CacheMode::Get), 1))
                    .collect(),
            })
            .collect();
        Ok(Flush {
            plan: plan.clone(),
            file,
            probe,
            groups,
        })
    }

    /// The pool for `n` dirty blocks: 3/2 of them (see the module docs).
    fn spec(&self, n: u64) -> CacheSpec {
        CacheSpec {
            block_size: self.plan.block_size,
            capacity: (n as usize * 3).div_ceil(2),
            depth: blockcache::config::DEFAULT_QUEUE_DEPTH,
            engine: self.plan.engine.kind(),
            fast_hits: true,
            readahead: 0,
        }
    }
}

impl Runner for Flush {
    fn header(&self) -> String {
        let p = &self.plan;
        format!(
            "flush: N blocks of {} B made dirty (zeroed guards), then one flush / invalidate_device / \
             close of them, a second thread making round trips to the owner meanwhile; pool 3/2 N \
             blocks; file {} ({}); median of {} rounds",
            p.block_size,
            self.file.path.display(),
            if self.file.temporary {
                "temporary"
            } else {
                "the user's"
            },
            p.rounds
        )
    }

    fn ratio_to(&self) -> String {
        "nothing (no baseline)".into()
    }

    fn groups(&self) -> &[Group] {
        &self.groups
    }

    fn notes(&self, r: &WorkloadReport) -> Vec<String> {
        let mut v = vec![
            "flush rows: ops/s = blocks written per second of the operation; p50..max = round trips \
             to the owner made meanwhile by another thread; own µs = owner CPU per block written \
             (its waits for completions included: a receive spins briefly before it parks):"
                .to_string(),
        ];
        for s in &r.sections {
            for row in &s.rows {
                let n = &row.median.notes;
                if let (Some(ms), Some(cpu)) = (n.get("op_ms"), n.get("owner_cpu_ms")) {
                    v.push(format!(
                        "  {:<26} {:>10}: {:>8} blocks written in {} ms, owner CPU {} ms, slowest round trip {} µs",
                        s.title.split(" of ").next().unwrap_or(""),
                        row.label,
                        n.get("written").copied().unwrap_or(0.0),
                        us(*ms),
                        us(*cpu),
                        us(row.median.max_us),
                    ));
                }
            }
        }
        v
    }

    fn run(&mut self, group: usize, case: usize, _round: usize) -> Result<Sample> {
        let op = self.plan.flush_ops[group];
        let n = self.plan.blocks[case];
        let rig = Rig::start(&self.spec(n), &[&self.file.path, &self.probe.path])?;
        let (cache, dev, probe) = (&rig.cache, rig.devs[0], rig.devs[1]);
        for b in 0..n {
            drop(cache.zeroed(dev, b).context("making a block dirty")?);
        }
        let stop = AtomicBool::new(false);
        let before = cache.stats();
        let mark = rig.mark();
        let (elapsed, hist) = std::thread::scope(|s| -> Result<_> {
            let prober = s.spawn(|| -> Result<_> {
                let mut hist = histogram();
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    cache.device_blocks(probe).context("round trip")?;
                    hist.saturating_record(t0.elapsed().as_nanos().max(1) as u64);
                    // Paced, so that answering the prober stays a small
                    // part of the owner CPU the row reports.
                    std::thread::sleep(PROBE_PAUSE);
                }
                Ok(hist)
            });
            let t0 = Instant::now();
            let done = match op {
                FlushOp::Flush => cache.flush(),
                FlushOp::Invalidate => cache.invalidate_device(dev),
                FlushOp::Close => cache.close(dev),
            };
            let elapsed = t0.elapsed();
            stop.store(true, Ordering::Relaxed);
            let hist = prober
                .join()
                .map_err(|_| anyhow::anyhow!("the prober panicked"))??;
            done.with_context(|| op_name(op))?;
            Ok((elapsed, hist))
        })?;
        let written = cache.stats().writes_issued - before.writes_issued;
        let timed = Timed {
            hist,
            ops: written,
            elapsed,
            client_parks: 0,
        };
        let mut s = rig.finish(mark, timed)?;
        let owner_ms = s.owner.map_or(0.0, |o| o.cpu_ns as f64 / 1e6);
        s.notes.insert("op_ms".into(), elapsed.as_secs_f64() * 1e3);
        s.notes.insert("owner_cpu_ms".into(), owner_ms);
        s.notes.insert("written".into(), written as f64);
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_name_block_counts_in_binary_units() {
        assert_eq!(blocks_label(1024), "1K blocks");
        assert_eq!(blocks_label(1 << 20), "1M blocks");
        assert_eq!(blocks_label(256 << 10), "256K blocks");
        assert_eq!(blocks_label(1000), "1000 blocks");
    }
}
