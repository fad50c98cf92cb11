//! Command-line flags ([`Cli`]) and their checked, resolved form ([`Plan`]).
//!
//! [`Cli::plan`] checks everything that can be checked without touching the
//! filesystem and fills in each workload's defaults; a bad combination is
//! an `Err` with a message naming the flag, never a panic. Paths are
//! checked when the run prepares its files ([`crate::files`]).

use crate::drive::Limit;
use blockcache::config::{MAX_BLOCK_SIZE, MAX_CAPACITY, MAX_QUEUE_DEPTH, MIN_BLOCK_SIZE};
use blockcache::EngineKind;
use clap::{Parser, ValueEnum};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// What the run does to the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Hot hits: a working set half the cache, read by 1, 2 and 4 threads.
    Hot,
    /// Cold random reads of a file 16× the cache, with and without prefetch.
    Random,
    /// Zipfian (θ 0.99) 80% reads / 20% writes, cache 10% of the file, then flush.
    Mixed,
    /// One sequential pass with a prefetch window (4× the cache).
    Scan,
    /// 64 files: prefetch the first block of each, then get each (LVM's scan).
    Devices,
    /// N blocks made dirty, then one flush / invalidate_device / close of them.
    Flush,
    /// Caches of N blocks (--blocks): `Cache::new` time and RSS, and hits
    /// with every block hot next to one random byte of an array as large.
    Big,
}

/// An operation the `flush` workload times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushOp {
    /// `Cache::flush`.
    Flush,
    /// `Cache::invalidate_device`.
    Invalidate,
    /// `Cache::close`.
    Close,
}

/// A system the cache is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Baseline {
    /// Buffered pread/pwrite through the page cache.
    Pread,
    /// O_DIRECT pread/pwrite, no cache.
    Direct,
    /// Raw io_uring O_DIRECT reads at the same queue depth, no cache.
    Uring,
    /// The cache's thread shape without the cache (random, depth 1): each
    /// read sent to an owner thread that submits it to io_uring, a reaper
    /// thread that reaps it and answers the client.
    Handoff,
    /// An in-process `parking_lot::Mutex<HashMap<u64, Box<[u8]>>>`.
    Map,
    /// No baseline: the cache alone.
    None,
}

/// The cache's I/O engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// io_uring where the kernel allows it, else pread/pwrite threads.
    Auto,
    /// io_uring or an error.
    Uring,
    /// pread/pwrite threads.
    Sync,
}

impl Engine {
    /// The cache's own name for it.
    pub fn kind(self) -> EngineKind {
        match self {
            Engine::Auto => EngineKind::Auto,
            Engine::Uring => EngineKind::Uring,
            Engine::Sync => EngineKind::Sync,
        }
    }
}

/// blockcache-bench: latency histograms of blockcache next to buffered
/// pread, O_DIRECT pread, raw io_uring and an in-process map, in one run.
///
/// Systems run back to back in each round (rotating order); every number
/// printed is the median over the rounds, and each ratio the median of the
/// per-round ratios to the first baseline.
#[derive(Parser, Debug, Clone)]
#[command(name = "blockcache-bench", version, about, long_about = None, after_help = SIZE_HELP)]
pub struct Cli {
    /// File or block device to read (default: a temporary file, removed
    /// afterwards). For `devices`: a directory to make the files in.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Directory for temporary files (default: /var/tmp, which supports O_DIRECT).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// What to run.
    #[arg(long, value_enum, default_value_t = Workload::Hot)]
    pub workload: Workload,
    /// Worker threads, a comma list (default: hot 1,2,4; mixed 2; others 1).
    #[arg(long, value_name = "N[,N..]", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Cache (pool) size, a SIZE (see below): a multiple of the block
    /// size, at least 8 blocks, at most 256GiB.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub cache: u64,
    /// Size of the temporary file the run makes (for `devices`: of each
    /// file), a SIZE, a multiple of the block size [default: hot ½,
    /// random 16×, mixed 10×, scan 4× the cache; devices 16 blocks, at
    /// least 64KiB; flush and big: the largest --blocks count of blocks].
    /// Not with --file PATH, which is read at its own size.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub file_size: Option<u64>,
    /// Block size, a SIZE: a power of two from 512 to 1MiB.
    #[arg(long, value_name = "SIZE", default_value = "4KiB", value_parser = parse_size)]
    pub block_size: u64,
    /// I/Os in flight per thread, a comma list: the prefetch window and
    /// the raw io_uring depth, in blocks; for scan also the readahead maximum (default: random 1,8,32; scan 32,256).
    #[arg(long, value_name = "D[,D..]", value_delimiter = ',')]
    pub depth: Vec<u32>,
    /// The cache's I/O engine.
    #[arg(long, value_enum, default_value_t = Engine::Auto)]
    pub engine: Engine,
    /// Operations per thread per run (instead of --seconds).
    #[arg(long, value_name = "N", conflicts_with = "seconds")]
    pub ops: Option<u64>,
    /// Seconds per run, fractions allowed [default: 1].
    #[arg(long, value_name = "S")]
    pub seconds: Option<f64>,
    /// Rounds; every number reported is the median over them.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub rounds: usize,
    /// Baselines, a comma list; ratios are to the first (at the same
    /// depth). Default: hot pread,map; random uring,direct; mixed direct,pread;
    /// scan pread,uring; devices direct,pread,uring. `none`: the cache alone.
    #[arg(long, value_name = "B[,B..]", value_delimiter = ',', value_enum)]
    pub baseline: Vec<Baseline>,
    /// Files in the `devices` workload.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub devices: usize,
    /// Write every number (per round and median) as JSON to FILE; with
    /// --goals, the goals too.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw the latency distributions on one chart, as SVG, to FILE.svg.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Seconds an idle cache (device open, no requests) is watched for its
    /// CPU use after the workload; 0 skips it.
    #[arg(long, value_name = "S", default_value_t = 2.0)]
    pub idle_seconds: f64,
    /// Let `mixed` and `flush` write into the file given with --file (its
    /// contents are lost).
    #[arg(long)]
    pub allow_writes: bool,
    /// Dirty blocks per `flush` run, a comma list of counts (k = 1024, m =
    /// 1024k, as in sizes) [default: 1k,16k; add 256k,1m for the large
    /// sizes]; for `big`, the cache capacities in blocks [default:
    /// 1k,16k,256k,1m].
    #[arg(long, value_name = "N[,N..]", value_delimiter = ',', value_parser = parse_size)]
    pub blocks: Vec<u64>,
    /// Operations the `flush` workload times, a comma list [default: all].
    #[arg(long = "op", value_name = "OP[,OP..]", value_delimiter = ',', value_enum)]
    pub flush_ops: Vec<FlushOp>,
    /// Also check the project's performance goals against this run and
    /// print each as MET, MISSED or -- (not measured) after the tables.
    #[arg(long)]
    pub goals: bool,
}

/// What the help says of SIZE values; [`parse_size`] is what it describes.
const SIZE_HELP: &str = "\
SIZE: a byte count with an optional unit K, M, G or T, case-insensitive,
with or without iB or B: 64MiB = 64M = 64m = 64MB. Every unit is a power
of 1024 (4k = 4096, as in fio), KB and MB too: these sizes are multiples
of a power-of-two block, which powers of 1000 are not. Fractions are
allowed (1.5GiB).";

/// A checked run: every default filled in.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// What to run.
    pub workload: Workload,
    /// The user's file or block device (a directory for `devices`).
    pub file: Option<PathBuf>,
    /// Where temporary files go.
    pub dir: PathBuf,
    /// Size of a temporary file (for `devices`: of each file).
    pub file_bytes: u64,
    /// Pool size in bytes (`capacity × block_size`).
    pub cache_bytes: u64,
    /// Block size in bytes.
    pub block_size: usize,
    /// Thread counts, one table section each.
    pub threads: Vec<usize>,
    /// I/O depths per thread (random, scan); empty where none applies.
    pub depths: Vec<u32>,
    /// Files in `devices`.
    pub devices: usize,
    /// The cache's engine.
    pub engine: Engine,
    /// How long each run lasts.
    pub limit: Limit,
    /// Rounds.
    pub rounds: usize,
    /// Baselines, the reference first; may be empty.
    pub baselines: Vec<Baseline>,
    /// Whether the baselines were asked for (an unavailable asked-for one is an error).
    pub baselines_explicit: bool,
    /// `--allow-writes`.
    pub allow_writes: bool,
    /// Dirty blocks per run of `flush`; empty for the other workloads.
    pub blocks: Vec<u64>,
    /// The operations `flush` times; empty for the other workloads.
    pub flush_ops: Vec<FlushOp>,
    /// How long the idle cache is watched.
    pub idle: Duration,
    /// `--json`.
    pub json: Option<PathBuf>,
    /// `--plot`.
    pub plot: Option<PathBuf>,
    /// `--goals`.
    pub goals: bool,
}

impl Plan {
    /// Blocks in the pool.
    pub fn capacity(&self) -> usize {
        (self.cache_bytes / self.block_size as u64) as usize
    }
}

/// Sizes as the flags take them: powers of 1024 for every unit, `KB` and
/// `KiB` alike (see [`SIZE_HELP`]).
const SIZES: parse_size::Config = parse_size::Config::new().with_binary();

/// Parse a size or a count: `4096`, `4k`, `64MiB`, `2G`, `1.5GiB`, `1t`
/// (see [`SIZE_HELP`]). Zero parses; each flag checks its own range.
pub fn parse_size(s: &str) -> Result<u64, String> {
    const EXAMPLES: &str =
        "a number with an optional unit K, M, G or T (powers of 1024), e.g. 4096, 4k, 64MiB, 2G";
    SIZES.parse_size(s).map_err(|e| match e {
        parse_size::Error::PosOverflow => "too large: sizes go up to 16EiB less a byte".into(),
        parse_size::Error::Empty => format!("no number: give {EXAMPLES}"),
        _ => {
            // A valid number followed by something else: name the unit.
            let t = s.trim();
            let at = t
                .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '_' | ' ')))
                .unwrap_or(t.len());
            let (number, unit) = t.split_at(at);
            if at > 0 && SIZES.parse_size(number).is_ok() {
                format!(
                    "unknown unit `{unit}`; the units are K, M, G, T \
                     (or KiB, MiB, ..., or KB, MB, ...: powers of 1024)"
                )
            } else {
                format!("not a size: give {EXAMPLES}")
            }
        }
    })
}

/// `bytes` in the largest binary unit that divides it: `16 MiB`, `4 KiB`,
/// `10000 B`.
pub fn show_size(bytes: u64) -> String {
    const UNITS: [(&str, u32); 5] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10), ("B", 0)];
    let (unit, shift) = UNITS
        .into_iter()
        .find(|&(_, sh)| bytes != 0 && bytes.trailing_zeros() >= sh)
        .unwrap_or(("B", 0));
    format!("{} {unit}", bytes >> shift)
}

/// The largest `--cache`.
pub const MAX_CACHE: u64 = 256 << 30;

/// Baselines that make sense for a workload, the default ones first.
pub fn baselines_for(w: Workload) -> (&'static [Baseline], &'static [Baseline]) {
    use Baseline::*;
    match w {
        Workload::Hot => (&[Pread, Map], &[Pread, Map, Direct]),
        Workload::Random => (&[Uring, Direct, Handoff], &[Uring, Direct, Handoff, Pread]),
        Workload::Mixed => (&[Direct, Pread], &[Direct, Pread]),
        Workload::Scan => (&[Pread, Uring], &[Pread, Uring, Direct]),
        Workload::Devices => (&[Direct, Pread, Uring], &[Direct, Pread, Uring]),
        Workload::Flush | Workload::Big => (&[], &[]),
    }
}

fn name(w: Workload) -> &'static str {
    match w {
        Workload::Hot => "hot",
        Workload::Random => "random",
        Workload::Mixed => "mixed",
        Workload::Scan => "scan",
        Workload::Devices => "devices",
        Workload::Flush => "flush",
        Workload::Big => "big",
    }
}

impl Cli {
    /// Check the flags and fill in the workload's defaults.
    pub fn plan(&self) -> Result<Plan, String> {
        let w = self.workload;
        let wname = name(w);
        let bs = self.block_size;
        if !bs.is_power_of_two() || !(MIN_BLOCK_SIZE as u64..=MAX_BLOCK_SIZE as u64).contains(&bs) {
            return Err(format!(
                "--block-size {}: must be a power of two from {} to {}",
                show_size(bs),
                show_size(MIN_BLOCK_SIZE as u64),
                show_size(MAX_BLOCK_SIZE as u64)
            ));
        }
        let cache_bytes = self.cache;
        let cache = show_size(cache_bytes);
        let block = show_size(bs);
        if cache_bytes > MAX_CACHE {
            return Err(format!(
                "--cache {cache}: must be at most {}",
                show_size(MAX_CACHE)
            ));
        }
        if !cache_bytes.is_multiple_of(bs) {
            return Err(format!(
                "--cache {cache}: not a multiple of the block size, {block}"
            ));
        }
        let capacity = cache_bytes / bs;
        if capacity < 8 {
            return Err(format!(
                "--cache {cache} holds only {capacity} blocks of {block}: at least 8 are needed"
            ));
        }

        let threads = if self.threads.is_empty() {
            match w {
                Workload::Hot => vec![1, 2, 4],
                Workload::Mixed => vec![2],
                _ => vec![1],
            }
        } else {
            self.threads.clone()
        };
        if let Some(t) = threads.iter().find(|&&t| !(1..=64).contains(&t)) {
            return Err(format!("--threads {t}: must be from 1 to 64"));
        }
        if w == Workload::Devices && threads != [1] {
            return Err("--threads: the devices workload scans from one thread".into());
        }

        let takes_depth = matches!(w, Workload::Random | Workload::Scan);
        if !takes_depth && !self.depth.is_empty() {
            return Err(format!(
                "--depth applies to the random and scan workloads, not {wname}"
            ));
        }
        let depths = match (w, self.depth.is_empty()) {
            (Workload::Random, true) => vec![1, 8, 32],
            (Workload::Scan, true) => vec![32, 256],
            _ => self.depth.clone(),
        };
        if let Some(d) = depths.iter().find(|&&d| !(1..=MAX_QUEUE_DEPTH).contains(&d)) {
            return Err(format!("--depth {d}: must be from 1 to {MAX_QUEUE_DEPTH}"));
        }
        let max_t = *threads.iter().max().expect("not empty") as u64;
        let max_d = u64::from(depths.iter().copied().max().unwrap_or(1));
        if takes_depth && capacity < 4 * max_t * max_d {
            return Err(format!(
                "--cache {cache}: {capacity} blocks is too small for {max_t} thread(s) × a window of \
                 {max_d} blocks (need at least {} blocks)",
                4 * max_t * max_d
            ));
        }

        let limit = match (self.ops, self.seconds) {
            (Some(0), _) => return Err("--ops must be at least 1".into()),
            (Some(n), _) => Limit::Ops(n),
            (None, Some(s)) if !(s.is_finite() && s > 0.0 && s <= 3600.0) => {
                return Err(format!("--seconds {s}: must be more than 0 and at most 3600"))
            }
            (None, Some(s)) => Limit::Seconds(s),
            (None, None) => Limit::Seconds(1.0),
        };
        if !(1..=99).contains(&self.rounds) {
            return Err(format!("--rounds {}: must be from 1 to 99", self.rounds));
        }

        let (defaults, allowed) = baselines_for(w);
        let explicit = !self.baseline.is_empty();
        let mut baselines = Vec::new();
        if self.baseline.contains(&Baseline::None) {
            if self.baseline.len() > 1 {
                return Err("--baseline none cannot be combined with other baselines".into());
            }
        } else if explicit {
            for &b in &self.baseline {
                if !allowed.contains(&b) {
                    let names: Vec<_> = allowed.iter().map(|b| format!("{b:?}").to_lowercase()).collect();
                    return Err(format!(
                        "--baseline {}: not a baseline of the {wname} workload (choose from {}, or none)",
                        format!("{b:?}").to_lowercase(),
                        names.join(", ")
                    ));
                }
                if !baselines.contains(&b) {
                    baselines.push(b);
                }
            }
        } else {
            baselines = defaults.to_vec();
        }

        if self.file.is_some() && w == Workload::Big {
            return Err("--file: the big workload reads a sparse temporary file of its own".into());
        }
        if self.file.is_some() && self.file_size.is_some() {
            return Err("--file-size sizes the temporary file; --file PATH is used at its own size".into());
        }
        if self.file.is_some() && matches!(w, Workload::Mixed | Workload::Flush) && !self.allow_writes {
            return Err(format!(
                "the {wname} workload writes into --file PATH, destroying its contents: \
                 add --allow-writes if that is what you want"
            ));
        }
        let flush = w == Workload::Flush;
        let big = w == Workload::Big;
        if !self.flush_ops.is_empty() && !flush {
            return Err("--op applies to the flush workload only".into());
        }
        if !(self.blocks.is_empty() || flush || big) {
            return Err("--blocks applies to the flush and big workloads only".into());
        }
        if let Some(n) = self
            .blocks
            .iter()
            .find(|&&n| !(1..=MAX_CAPACITY as u64 * 2 / 3).contains(&n))
        {
            return Err(format!(
                "--blocks {n}: must be from 1 to {} (the pool holds 3/2 of them)",
                MAX_CAPACITY as u64 * 2 / 3
            ));
        }
        let mut blocks = match (w, self.blocks.is_empty()) {
            (Workload::Flush, true) => vec![1 << 10, 16 << 10],
            (Workload::Big, true) => vec![1 << 10, 16 << 10, 256 << 10, 1 << 20],
            _ => self.blocks.clone(),
        };
        dedup(&mut blocks);
        let mut flush_ops = match (flush, self.flush_ops.is_empty()) {
            (true, true) => vec![FlushOp::Flush, FlushOp::Invalidate, FlushOp::Close],
            _ => self.flush_ops.clone(),
        };
        dedup(&mut flush_ops);
        if big && threads != [1] {
            return Err("--threads: the big workload reads from one thread".into());
        }
        if flush && threads != [1] {
            return Err("--threads: the flush workload runs its operation from one thread".into());
        }
        if w != Workload::Devices && self.devices != 64 {
            return Err("--devices applies to the devices workload only".into());
        }
        if !(1..=1024).contains(&self.devices) {
            return Err(format!("--devices {}: must be from 1 to 1024", self.devices));
        }
        let file_bytes = match (self.file_size, w) {
            (Some(b), _) if !b.is_multiple_of(bs) => {
                return Err(format!(
                    "--file-size {}: not a multiple of the block size, {block}",
                    show_size(b)
                ))
            }
            (Some(b), _) => b,
            (None, Workload::Hot) => (cache_bytes / 2).max(bs),
            (None, Workload::Random) => cache_bytes * 16,
            (None, Workload::Mixed) => cache_bytes * 10,
            (None, Workload::Scan) => cache_bytes * 4,
            (None, Workload::Devices) => (16 * bs).max(64 << 10),
            (None, Workload::Flush | Workload::Big) => blocks.iter().max().expect("not empty") * bs,
        };
        if file_bytes < 2 * bs {
            return Err(format!(
                "--file-size {}: the file must hold at least 2 blocks of {block}",
                show_size(file_bytes)
            ));
        }
        if !(self.idle_seconds.is_finite() && (0.0..=60.0).contains(&self.idle_seconds)) {
            return Err(format!(
                "--idle-seconds {}: must be from 0 to 60",
                self.idle_seconds
            ));
        }
        if let Some(p) = &self.plot {
            if p.extension().is_none_or(|e| !e.eq_ignore_ascii_case("svg")) {
                return Err(format!(
                    "--plot {}: the chart is SVG, name a .svg file",
                    p.display()
                ));
            }
        }
        Ok(Plan {
            workload: w,
            file: self.file.clone(),
            dir: self.dir.clone().unwrap_or_else(default_dir),
            file_bytes,
            cache_bytes,
            block_size: bs as usize,
            threads,
            depths,
            devices: self.devices,
            engine: self.engine,
            limit,
            rounds: self.rounds,
            baselines,
            baselines_explicit: explicit,
            allow_writes: self.allow_writes,
            blocks,
            flush_ops,
            idle: Duration::from_secs_f64(self.idle_seconds),
            json: self.json.clone(),
            plot: self.plot.clone(),
            goals: self.goals,
        })
    }
}

/// Drop repeats from `v`, keeping the first of each.
fn dedup<T: PartialEq + Copy>(v: &mut Vec<T>) {
    let mut seen = Vec::with_capacity(v.len());
    v.retain(|x| {
        let new = !seen.contains(x);
        seen.push(*x);
        new
    });
}

/// /var/tmp (disk-backed, so O_DIRECT works), else the system temp dir.
pub fn default_dir() -> PathBuf {
    let var = PathBuf::from("/var/tmp");
    if var.is_dir() {
        var
    } else {
        std::env::temp_dir()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let mut argv = vec!["blockcache-bench"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map_err(|e| e.to_string())?.plan()
    }

    #[test]
    fn defaults_follow_the_workload() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.workload, Workload::Hot);
        assert_eq!(p.threads, [1, 2, 4]);
        assert_eq!(p.baselines, [Baseline::Pread, Baseline::Map]);
        assert_eq!(p.file_bytes, 8 << 20);
        let r = plan(&["--workload", "random", "--cache", "8MiB"]).unwrap();
        assert_eq!(r.depths, [1, 8, 32]);
        assert_eq!(r.file_bytes, 128 << 20);
        assert_eq!(r.baselines[0], Baseline::Uring);
        assert_eq!(
            plan(&["--workload", "mixed", "--cache", "4m"])
                .unwrap()
                .file_bytes,
            40 << 20
        );
    }

    #[test]
    fn flush_takes_block_counts_and_operations() {
        let p = plan(&["--workload", "flush"]).unwrap();
        assert_eq!(p.blocks, [1 << 10, 16 << 10]);
        assert_eq!(p.flush_ops, [FlushOp::Flush, FlushOp::Invalidate, FlushOp::Close]);
        assert_eq!(p.file_bytes, (16 << 10) * 4096);
        assert!(p.baselines.is_empty());
        let p = plan(&[
            "--workload",
            "flush",
            "--blocks",
            "1k,16k,256k,1m,1k",
            "--op",
            "close,flush",
        ])
        .unwrap();
        assert_eq!(p.blocks, [1 << 10, 16 << 10, 256 << 10, 1 << 20]);
        assert_eq!(p.flush_ops, [FlushOp::Close, FlushOp::Flush]);
        assert_eq!(p.file_bytes, 4 << 30);
        let hot = plan(&[]).unwrap();
        assert!(hot.blocks.is_empty() && hot.flush_ops.is_empty());
    }

    #[test]
    fn lists_sizes_and_limits_parse() {
        let p = plan(&[
            "--workload",
            "random",
            "--threads",
            "1,2",
            "--depth",
            "4,16",
            "--block-size",
            "8k",
            "--ops",
            "500",
            "--baseline",
            "direct,uring,direct",
        ])
        .unwrap();
        assert_eq!(p.threads, [1, 2]);
        assert_eq!(p.depths, [4, 16]);
        assert_eq!(p.block_size, 8192);
        assert_eq!(p.limit, Limit::Ops(500));
        assert_eq!(p.baselines, [Baseline::Direct, Baseline::Uring]);
        assert!(plan(&["--baseline", "none"]).unwrap().baselines.is_empty());
    }

    #[test]
    fn sizes_take_binary_units() {
        for (s, want) in [
            ("4096", 4096),
            ("4k", 4 << 10),
            ("4K", 4 << 10),
            ("4KiB", 4 << 10),
            ("4KB", 4 << 10),
            ("1m", 1 << 20),
            ("64MiB", 64 << 20),
            ("64 MiB", 64 << 20),
            ("2G", 2 << 30),
            ("2GiB", 2 << 30),
            ("1.5GiB", 3 << 29),
            ("1t", 1 << 40),
            ("1TiB", 1 << 40),
            ("0", 0),
        ] {
            assert_eq!(parse_size(s), Ok(want), "{s}");
        }
        for (s, want) in [
            ("4q", "unknown unit `q`"),
            ("4 bytes", "unknown unit `bytes`"),
            ("lots", "not a size"),
            ("-1", "not a size"),
            ("", "no number"),
            ("99999999999999999999", "too large"),
            ("16EiB", "too large"),
        ] {
            match parse_size(s) {
                Err(m) => assert!(m.contains(want), "{s}: {m}"),
                Ok(n) => panic!("{s} parsed as {n}"),
            }
        }
        assert_eq!(show_size(16 << 20), "16 MiB");
        assert_eq!(show_size(3 << 29), "1536 MiB");
        assert_eq!(show_size(10000), "10000 B");
        assert_eq!(show_size(0), "0 B");
    }

    #[test]
    fn cache_and_file_sizes_are_checked_against_the_block_size() {
        let p = plan(&["--cache", "64MiB", "--file-size", "2GiB"]).unwrap();
        assert_eq!((p.cache_bytes, p.file_bytes), (64 << 20, 2 << 30));
        assert_eq!(p.capacity(), 16 << 10);
        let p = plan(&["--cache", "256k", "--block-size", "32k"]).unwrap();
        assert_eq!(p.capacity(), 8);
        let p = plan(&["--workload", "random", "--cache", "1.5m", "--depth", "8"]).unwrap();
        assert_eq!(p.file_bytes, 24 << 20);
    }

    #[test]
    fn goals_are_off_unless_asked_for() {
        assert!(!plan(&[]).unwrap().goals);
        assert!(plan(&["--goals"]).unwrap().goals);
    }

    #[test]
    fn bad_flags_are_errors_naming_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--block-size", "3000"], "--block-size"),
            (&["--block-size", "256"], "--block-size"),
            (&["--block-size", "lots"], "not a size"),
            (&["--cache", "0"], "--cache 0 B holds only 0 blocks"),
            (&["--cache", "16k"], "holds only 4 blocks of 4 KiB"),
            (
                &["--cache", "10000"],
                "--cache 10000 B: not a multiple of the block size, 4 KiB",
            ),
            (&["--cache", "64k", "--block-size", "64k"], "holds only 1 blocks"),
            (&["--cache", "1TiB"], "--cache 1 TiB: must be at most 256 GiB"),
            (&["--cache", "8MB/s"], "unknown unit `MB/s`"),
            (&["--cache-mb", "8"], "unexpected argument '--cache-mb'"),
            (&["--file-mb", "8"], "unexpected argument '--file-mb'"),
            (
                &["--file-size", "0"],
                "--file-size 0 B: the file must hold at least 2 blocks",
            ),
            (&["--file-size", "4k"], "at least 2 blocks of 4 KiB"),
            (
                &["--file-size", "1001k"],
                "--file-size 1001 KiB: not a multiple of the block size",
            ),
            (&["--threads", "0"], "--threads"),
            (&["--depth", "8"], "--depth applies"),
            (&["--workload", "random", "--depth", "0"], "--depth 0"),
            (
                &["--workload", "random", "--cache", "1MiB", "--depth", "128"],
                "too small",
            ),
            (&["--seconds=-1"], "--seconds"),
            (&["--seconds", "0"], "--seconds"),
            (&["--seconds", "nan"], "--seconds"),
            (&["--ops", "0"], "--ops"),
            (&["--ops", "5", "--seconds", "1"], "cannot be used with"),
            (&["--rounds", "0"], "--rounds"),
            (&["--baseline", "uring"], "not a baseline of the hot"),
            (&["--baseline", "none,pread"], "cannot be combined"),
            (&["--baseline", "bogus"], "invalid value"),
            (&["--workload", "nope"], "invalid value"),
            (
                &["--file", "/x", "--file-size", "4m"],
                "--file-size sizes the temporary file",
            ),
            (&["--workload", "mixed", "--file", "/x"], "--allow-writes"),
            (&["--workload", "devices", "--threads", "2"], "one thread"),
            (&["--devices", "8"], "devices workload only"),
            (&["--plot", "out.png"], ".svg"),
            (&["--idle-seconds", "100"], "--idle-seconds"),
            (&["--blocks", "1k"], "flush and big workloads only"),
            (&["--op", "close"], "flush workload only"),
            (&["--workload", "big", "--threads", "2"], "one thread"),
            (&["--workload", "big", "--file", "/x"], "sparse temporary file"),
            (&["--workload", "flush", "--blocks", "0"], "--blocks 0"),
            (&["--workload", "flush", "--threads", "2"], "one thread"),
            (&["--workload", "flush", "--file", "/x"], "--allow-writes"),
            (&["--workload", "flush", "--op", "sync"], "invalid value"),
        ];
        for (args, want) in cases {
            match plan(args) {
                Err(m) => assert!(m.contains(want), "{args:?}: {m}"),
                Ok(p) => panic!("{args:?} accepted: {p:?}"),
            }
        }
    }
}
