//! Hot hits: a working set that fits the cache, read by 1 and 2 threads,
//! against buffered `pread` of the same blocks (the page cache). Prints
//! ops/s and latency percentiles per system and the ratio to the baseline
//! measured in the same run; systems are interleaved and repeated, and the
//! median round is reported, because this machine is shared and noisy.
//!
//! ```text
//! cargo bench --bench hot_hits
//! ```

use blockcache::{Cache, Config};
use hdrhistogram::Histogram;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BLOCK: usize = 4096;
const BLOCKS: u64 = 1024; // 4 MiB working set
const OPS: u64 = 200_000; // per thread per round
const ROUNDS: usize = 5;

#[derive(Clone, Copy)]
enum System {
    Cache,
    Pread,
}

struct Round {
    ops_per_sec: f64,
    hist: Histogram<u64>,
}

fn run(system: System, threads: u64, cache: &Cache, dev: blockcache::DeviceId, file: &Arc<File>) -> Round {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (cache, file) = (cache.clone(), Arc::clone(file));
            std::thread::spawn(move || {
                let mut hist = Histogram::<u64>::new_with_max(10_000_000_000, 3).unwrap();
                let mut buf = vec![0u8; BLOCK];
                let mut x = 0x2545_f491_4f6c_dd1du64 ^ t;
                for _ in 0..OPS {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let block = x % BLOCKS;
                    let t0 = Instant::now();
                    match system {
                        System::Cache => {
                            let g = cache.read(dev, block).unwrap();
                            buf.copy_from_slice(&g); // copy out, as pread does
                        }
                        System::Pread => {
                            file.read_exact_at(&mut buf, block * BLOCK as u64).unwrap();
                        }
                    }
                    hist.record(t0.elapsed().as_nanos() as u64).unwrap();
                }
                hist
            })
        })
        .collect();
    let mut hist = Histogram::<u64>::new_with_max(10_000_000_000, 3).unwrap();
    for h in handles {
        hist.add(h.join().unwrap()).unwrap();
    }
    Round {
        ops_per_sec: (OPS * threads) as f64 / start.elapsed().as_secs_f64(),
        hist,
    }
}

fn us(ns: u64) -> String {
    format!("{:.2}", Duration::from_nanos(ns).as_secs_f64() * 1e6)
}

fn main() -> Result<(), blockcache::Error> {
    let tmp = tempfile::NamedTempFile::new_in("/var/tmp")?;
    tmp.as_file()
        .write_all_at(&vec![7u8; BLOCK * BLOCKS as usize], 0)?;
    let file = Arc::new(File::open(tmp.path())?);
    let cache = Cache::new(Config::new(BLOCK, BLOCKS as usize * 2))?;
    let dev = cache.open(tmp.path())?;
    // Warm both: every block resident in the cache and in the page cache.
    for b in 0..BLOCKS {
        drop(cache.read(dev, b)?);
        file.read_exact_at(&mut [0u8; BLOCK], b * BLOCK as u64)?;
    }

    println!("hot hits: {BLOCKS} blocks of {BLOCK} B resident; get + copy out vs buffered pread; median of {ROUNDS} interleaved rounds");
    println!(
        "{:<8} {:>7} {:>12} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "threads", "system", "ops/s", "p50 µs", "p90 µs", "p99 µs", "p99.9", "max µs", "vs pread"
    );
    for threads in [1, 2] {
        let mut rounds: Vec<(Round, Round)> = (0..ROUNDS)
            .map(|_| {
                (
                    run(System::Cache, threads, &cache, dev, &file),
                    run(System::Pread, threads, &cache, dev, &file),
                )
            })
            .collect();
        rounds.sort_by(|a, b| {
            (a.0.ops_per_sec / a.1.ops_per_sec).total_cmp(&(b.0.ops_per_sec / b.1.ops_per_sec))
        });
        let (c, p) = &rounds[ROUNDS / 2];
        for (name, r) in [("cache", c), ("pread", p)] {
            let h = &r.hist;
            println!(
                "{:<8} {:>7} {:>12.0} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8.2}x",
                threads,
                name,
                r.ops_per_sec,
                us(h.value_at_quantile(0.5)),
                us(h.value_at_quantile(0.9)),
                us(h.value_at_quantile(0.99)),
                us(h.value_at_quantile(0.999)),
                us(h.max()),
                r.ops_per_sec / p.ops_per_sec
            );
        }
    }
    let s = cache.stats();
    println!(
        "cache hit ratio: {:.4}",
        s.read_hits as f64 / (s.read_hits + s.read_misses) as f64
    );
    cache.shutdown()
}
