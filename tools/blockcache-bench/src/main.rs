//! `blockcache-bench`: run one workload on blockcache and its baselines,
//! print the percentile table, optionally the project's goals (`--goals`),
//! JSON and an SVG chart.
//! See `blockcache-bench --help`.

use anyhow::Result;
use blockcache_bench::cli::{Cli, Plan};
use blockcache_bench::files::check_writable;
use blockcache_bench::report::{goals, table, WorkloadReport};
use blockcache_bench::{plot, rig, suite, workloads};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::process::ExitCode;

/// Everything `--json` writes.
#[derive(Serialize)]
struct Output<'a> {
    tool: &'static str,
    version: &'static str,
    command: Vec<String>,
    host: Host,
    plan: &'a Plan,
    report: &'a WorkloadReport,
    idle: Option<rig::Idle>,
    /// Only with `--goals`, as in the text output.
    #[serde(skip_serializing_if = "Option::is_none")]
    goals: Option<Vec<goals::Goal>>,
}

#[derive(Serialize)]
struct Host {
    kernel: String,
    cpus: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let plan = match cli.plan() {
        Ok(p) => p,
        Err(m) => {
            eprintln!("blockcache-bench: {m}");
            return ExitCode::from(2);
        }
    };
    match run(&plan) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blockcache-bench: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(plan: &Plan) -> Result<()> {
    // Fail on an unwritable output before a long run, not after it.
    if let Some(p) = &plan.json {
        check_writable(p, "--json")?;
    }
    if let Some(p) = &plan.plot {
        check_writable(p, "--plot")?;
    }
    let bar = ProgressBar::new(1).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} runs {elapsed:>4} {msg}").expect("valid template"),
    );
    bar.set_message("preparing files");
    let progress = |done: usize, total: usize, label: &str| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(label.to_string());
    };
    let report = workloads::run(plan, &progress)?;
    let idle = if plan.idle.is_zero() {
        None
    } else {
        bar.set_message(format!(
            "watching an idle cache for {:.1} s",
            plan.idle.as_secs_f64()
        ));
        Some(rig::idle(&workloads::spec(plan, 64), &plan.dir, plan.idle)?)
    };
    bar.finish_and_clear();

    print!("{}", table::render(&report));
    if let Some(i) = &idle {
        println!("{}", suite::idle_line(i));
    }
    // The project's targets are for its developers (`cargo bench` prints
    // them too); a user reading latencies asks for them with --goals.
    let goals = plan
        .goals
        .then(|| goals::evaluate(std::slice::from_ref(&report), idle.as_ref()));
    if let Some(g) = &goals {
        print!("{}", goals::render(g));
    }

    if let Some(path) = &plan.json {
        let out = Output {
            tool: "blockcache-bench",
            version: env!("CARGO_PKG_VERSION"),
            command: std::env::args().collect(),
            host: Host {
                kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
                cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            },
            plan,
            report: &report,
            idle,
            goals,
        };
        let text = serde_json::to_string_pretty(&out)?;
        std::fs::write(path, text + "\n").map_err(|e| anyhow::anyhow!("--json {}: {e}", path.display()))?;
        println!("json: {}", path.display());
    }
    if let Some(path) = &plan.plot {
        plot::draw(&report, path)?;
        println!("plot: {}", path.display());
    }
    Ok(())
}
