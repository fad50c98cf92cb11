//! Latency of every get, from worker threads sharing one cache, in an
//! hdrhistogram: the pattern to copy into your own benchmarks.
//!
//! ```text
//! cargo run --release --example latency_histogram
//! ```

use blockcache::{Cache, Config, Error};
use hdrhistogram::Histogram;
use std::os::unix::fs::FileExt;
use std::time::Instant;

const BLOCKS: u64 = 4096; // a 16 MiB file of 4 KiB blocks
const THREADS: u64 = 4;
const GETS: u64 = 50_000; // per thread

fn main() -> Result<(), Error> {
    let file = tempfile::NamedTempFile::new_in("/var/tmp").or_else(|_| tempfile::NamedTempFile::new())?;
    file.as_file()
        .write_all_at(&vec![1u8; (BLOCKS * 4096) as usize], 0)?; // data, not holes
    let cache = Cache::new(Config::new(4096, 1024))?; // a quarter of the file fits
    let dev = cache.open(file.path())?;
    let new_hist = || Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let cache = cache.clone();
            std::thread::spawn(move || -> Result<Histogram<u64>, Error> {
                let (mut hist, mut x) = (new_hist(), t);
                for _ in 0..GETS {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let r = x >> 33; // an LCG's high bits; 80% of gets go to a hot 2 MiB:
                    let block = if r % 5 == 0 { r % BLOCKS } else { r % 512 };
                    let t0 = Instant::now();
                    let guard = cache.read(dev, block)?;
                    hist.saturating_record(t0.elapsed().as_nanos() as u64); // the get alone
                    drop(guard);
                }
                Ok(hist)
            })
        })
        .collect();
    let mut all = new_hist();
    for w in workers {
        all.add(w.join().expect("worker panicked")?).expect("same bounds");
    }
    let s = cache.stats();
    let hits = 100.0 * s.read_hits as f64 / (s.read_hits + s.read_misses) as f64;
    println!("{} gets from {THREADS} threads, {hits:.1}% hits", all.len());
    for p in [50.0, 90.0, 99.0, 99.9] {
        println!("p{p:<5} {:>9.1} µs", all.value_at_percentile(p) as f64 / 1e3);
    }
    println!("max    {:>9.1} µs", all.max() as f64 / 1e3);
    cache.shutdown()
}
