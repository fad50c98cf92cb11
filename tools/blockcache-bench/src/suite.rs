//! The whole suite in short form, as `cargo bench` runs it: every workload
//! with short runs on an 8 MiB cache (`big` on caches of 1K and 16K blocks), then the idle check and the goals.
//! Each entry is a command line of the tool, so any table can be
//! reproduced (longer) with `blockcache-bench` and the same flags.

use crate::cli::Cli;
use crate::report::{goals, table, WorkloadReport};
use crate::{rig, workloads};
use anyhow::{anyhow, Result};
use clap::Parser;
use std::time::{Duration, Instant};

/// The suite: a name and the tool's flags for it.
pub const SUITE: [(&str, &[&str]); 7] = [
    (
        "hot",
        &[
            "--workload",
            "hot",
            "--cache",
            "8MiB",
            "--seconds",
            "0.25",
            "--rounds",
            "5",
        ],
    ),
    (
        "random",
        &[
            "--workload",
            "random",
            "--cache",
            "8MiB",
            "--seconds",
            "0.4",
            "--rounds",
            "5",
        ],
    ),
    (
        "mixed",
        &["--workload", "mixed", "--cache", "8MiB", "--seconds", "0.5"],
    ),
    (
        "scan",
        &["--workload", "scan", "--cache", "8MiB", "--seconds", "0.5"],
    ),
    (
        "devices",
        &["--workload", "devices", "--cache", "8MiB", "--seconds", "0.3"],
    ),
    ("flush", &["--workload", "flush"]),
    (
        "big",
        &[
            "--workload",
            "big",
            "--blocks",
            "1k,16k",
            "--seconds",
            "0.2",
            "--rounds",
            "3",
        ],
    ),
];

/// Seconds the idle cache is watched.
pub const IDLE: Duration = Duration::from_secs(2);

/// Run the entries whose name contains one of `filter` (all if empty; "idle"
/// selects the idle check), printing each table as it is done, then the goals.
pub fn run(filter: &[String]) -> Result<Vec<WorkloadReport>> {
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let started = Instant::now();
    let mut reports = Vec::new();
    let mut last_plan = None;
    for (name, flags) in SUITE {
        if !wanted(name) {
            continue;
        }
        let argv = std::iter::once("blockcache-bench").chain(flags.iter().copied());
        let plan = Cli::try_parse_from(argv)?.plan().map_err(|m| anyhow!(m))?;
        let t0 = Instant::now();
        let report = workloads::run(&plan, &|_, _, _| {})?;
        println!("$ blockcache-bench {}", flags.join(" "));
        println!("{}", table::render(&report));
        println!("({name}: {:.1} s)\n", t0.elapsed().as_secs_f64());
        reports.push(report);
        last_plan = Some(plan);
    }
    let idle = if wanted("idle") {
        let plan = match last_plan {
            Some(p) => p,
            None => Cli::try_parse_from(["blockcache-bench"])?
                .plan()
                .map_err(|m| anyhow!(m))?,
        };
        let i = rig::idle(&workloads::spec(&plan, 64), &plan.dir, IDLE)?;
        println!("{}\n", idle_line(&i));
        Some(i)
    } else {
        None
    };
    print!("{}", goals::render(&goals::evaluate(&reports, idle.as_ref())));
    println!("suite: {:.1} s", started.elapsed().as_secs_f64());
    Ok(reports)
}

/// The idle check in one line.
pub fn idle_line(i: &rig::Idle) -> String {
    format!(
        "idle cache (1 device open, no requests) for {:.1} s: process CPU {:.2} ms = {:.3}% of one CPU; \
         owner thread {:.2} ms, {} wakeups; engine threads {:.2} ms, {} wakeups",
        i.seconds,
        i.process_cpu_ms,
        i.cpu_percent,
        i.owner_cpu_ms,
        i.owner_wakeups,
        i.engine_cpu_ms,
        i.engine_wakeups
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_suite_entry_is_a_valid_command_line() {
        for (name, flags) in SUITE {
            let argv = std::iter::once("blockcache-bench").chain(flags.iter().copied());
            let plan = Cli::try_parse_from(argv).unwrap().plan().unwrap();
            assert_eq!(format!("{:?}", plan.workload).to_lowercase(), name);
        }
    }
}
