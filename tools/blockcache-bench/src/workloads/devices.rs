//! Many devices (LVM's device scan): N files, the first block of each read
//! once per scan. The cache prefetches all N first blocks, then gets each;
//! between scans its blocks are invalidated (and the page cache dropped for
//! the buffered baseline), outside the measured time.

use super::{
    base_name, set_references, spec, uring_qd, usable_baselines, CacheMode, Case, Group, Runner, System,
};
use crate::cli::{show_size, Baseline, Plan};
use crate::drive::{run_threads, Recorder};
use crate::files::{drop_page_cache, open_buffered, open_direct, AlignedBuf, DeviceFiles};
use crate::report::{table::us, Sample, WorkloadReport};
use crate::rig::Rig;
use crate::uring::Ring;
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct Devices {
    plan: Plan,
    files: DeviceFiles,
    groups: Vec<Group>,
    baselines: Vec<Baseline>,
    note: Option<String>,
}

impl Devices {
    pub fn prepare(plan: &Plan) -> Result<Devices> {
        let (baselines, note) = usable_baselines(plan)?;
        let n = plan.devices;
        if plan.capacity() < n {
            bail!(
                "--cache: the cache holds {} blocks, fewer than the {n} devices' first blocks",
                plan.capacity()
            );
        }
        let dir = match &plan.file {
            Some(d) if !d.is_dir() => bail!("--file {}: the devices workload needs a directory", d.display()),
            Some(d) => d.clone(),
            None => plan.dir.clone(),
        };
        let files = DeviceFiles::new(&dir, n, plan.file_bytes)?;
        let mut cases: Vec<Case> = baselines
            .iter()
            .map(|&b| {
                let (label, depth) = match b {
                    Baseline::Uring => (uring_qd(n as u32), n as u32),
                    _ => (base_name(b), 1),
                };
                Case::new(label, System::Base(b), depth)
            })
            .collect();
        cases.push(Case::new(
            "cache pf all",
            System::Cache(CacheMode::Prefetch),
            n as u32,
        ));
        set_references(&mut cases, baselines.first().copied());
        let groups = vec![Group {
            title: format!("first block of {n} devices, 1 thread"),
            threads: 1,
            cases,
        }];
        Ok(Devices {
            plan: plan.clone(),
            files,
            groups,
            baselines,
            note,
        })
    }
}

/// Scan until the run is over: `prepare` (not measured), then `scan`.
fn scans(
    rec: &mut Recorder,
    mut prepare: impl FnMut() -> Result<()>,
    mut scan: impl FnMut(&mut Recorder) -> Result<()>,
) -> Result<()> {
    loop {
        let t0 = Instant::now();
        prepare()?;
        rec.exclude(t0.elapsed());
        scan(rec)?;
        if rec.done(Instant::now()) {
            return Ok(());
        }
    }
}

impl Runner for Devices {
    fn header(&self) -> String {
        let p = &self.plan;
        format!(
            "devices: {} files of {}, block 0 of each per scan, {} B blocks, cache {}; \
             median of {} rounds, {}",
            p.devices,
            show_size(p.file_bytes),
            p.block_size,
            show_size(p.cache_bytes),
            p.rounds,
            p.limit
        )
    }

    fn ratio_to(&self) -> String {
        super::ratio_to(&self.baselines, "LVM's sync engine reads")
    }

    fn groups(&self) -> &[Group] {
        &self.groups
    }

    fn notes(&self, r: &WorkloadReport) -> Vec<String> {
        let n = self.plan.devices as f64;
        let mut v = vec![format!("one scan of {n} devices (µs), from ops/s:")];
        for row in r.sections.iter().flat_map(|s| &s.rows) {
            let mut line = format!("  {:<16} {}", row.label, us(n / row.median.ops_per_sec * 1e6));
            if let Some(ms) = row.median.notes.get("open_ms") {
                line += &format!("  (opening the {n} devices in the cache: {} ms)", us(*ms));
            }
            v.push(line);
        }
        v.extend(self.note.clone());
        v
    }

    fn run(&mut self, group: usize, case: usize, _round: usize) -> Result<Sample> {
        let system = self.groups[group].cases[case].system;
        let (bs, limit) = (self.plan.block_size, self.plan.limit);
        let paths: Vec<&Path> = self.files.paths.iter().map(PathBuf::as_path).collect();
        let open = |direct: bool| -> Result<Vec<File>> {
            paths
                .iter()
                .map(|p| {
                    if direct {
                        open_direct(p, false)
                    } else {
                        open_buffered(p, false)
                    }
                })
                .collect()
        };
        match system {
            System::Cache(_) => {
                let rig = Rig::start(&spec(&self.plan, 64), &paths)?;
                let (cache, devs) = (&rig.cache, &rig.devs);
                let open_ms = rig.open_time.as_secs_f64() * 1e3;
                let mark = rig.mark();
                let timed = run_threads(
                    1,
                    limit,
                    |_| Ok(vec![0u8; bs]),
                    |_, mut buf, rec| {
                        let invalidate = || {
                            devs.iter()
                                .try_for_each(|&d| cache.invalidate_device(d))
                                .context("invalidate_device")
                        };
                        let scan = |rec: &mut Recorder| {
                            devs.iter().for_each(|&d| cache.prefetch(d, 0));
                            for &d in devs {
                                let t0 = Instant::now();
                                buf.copy_from_slice(&cache.read(d, 0)?);
                                rec.record(t0, Instant::now());
                            }
                            Ok(())
                        };
                        scans(rec, invalidate, scan)
                    },
                )?;
                let mut s = rig.finish(mark, timed)?;
                s.notes.insert("open_ms".into(), open_ms);
                Ok(s)
            }
            System::Base(Baseline::Uring) => {
                let files = open(true)?;
                let fds: Vec<RawFd> = files.iter().map(AsRawFd::as_raw_fd).collect();
                let timed = run_threads(
                    1,
                    limit,
                    |_| Ring::new(fds.len(), bs),
                    |_, mut ring, rec| scans(rec, || Ok(()), |rec| ring.read_batch(&fds, rec)),
                )?;
                Ok(Sample::from_timed(timed))
            }
            System::Base(b) => {
                let direct = b == Baseline::Direct;
                let files = open(direct)?;
                let timed = run_threads(
                    1,
                    limit,
                    |_| Ok(AlignedBuf::new(bs)),
                    |_, mut buf, rec| {
                        let drop_cached = || {
                            if !direct {
                                files.iter().for_each(drop_page_cache);
                            }
                            Ok(())
                        };
                        let scan = |rec: &mut Recorder| {
                            for f in &files {
                                let t0 = Instant::now();
                                f.read_exact_at(&mut buf, 0)?;
                                rec.record(t0, Instant::now());
                            }
                            Ok(())
                        };
                        scans(rec, drop_cached, scan)
                    },
                )?;
                Ok(Sample::from_timed(timed))
            }
        }
    }
}
