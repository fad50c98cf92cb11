//! The main job on an embedded default: make a temporary 64 MiB file, share
//! one cache across worker threads that read and update blocks, flush, and
//! print what happened.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use blockcache::{Cache, Config, Error};
use std::time::Instant;

const BLOCK: usize = 4096;
const FILE_BLOCKS: u64 = 16 * 1024; // 64 MiB
const CACHE_BLOCKS: usize = 4096; // 16 MiB pool
const WORKERS: u64 = 4;
const OPS_PER_WORKER: u64 = 50_000;

fn main() -> Result<(), Error> {
    let file = tempfile::NamedTempFile::new_in("/var/tmp").or_else(|_| tempfile::NamedTempFile::new())?;
    file.as_file().set_len(FILE_BLOCKS * BLOCK as u64)?;
    println!(
        "file:    {} ({} MiB)",
        file.path().display(),
        (FILE_BLOCKS * BLOCK as u64) >> 20
    );

    let cache = Cache::new(Config::new(BLOCK, CACHE_BLOCKS))?;
    let dev = cache.open(file.path())?;
    println!("cache:   {CACHE_BLOCKS} blocks of {BLOCK} bytes, {WORKERS} workers");

    let start = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let cache = cache.clone();
            std::thread::spawn(move || -> Result<u64, Error> {
                // A skewed walk: most touches land on a hot eighth of the file.
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ w;
                let mut updates = 0;
                for i in 0..OPS_PER_WORKER {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let block = if x % 10 < 8 {
                        x % (FILE_BLOCKS / 8)
                    } else {
                        x % FILE_BLOCKS
                    };
                    if i % 10 == 0 {
                        let mut g = cache.write(dev, block)?;
                        let n = u64::from_le_bytes(g[..8].try_into().unwrap()) + 1;
                        g[..8].copy_from_slice(&n.to_le_bytes());
                        updates += 1;
                    } else {
                        let g = cache.read(dev, block)?;
                        std::hint::black_box(g[0]);
                    }
                }
                Ok(updates)
            })
        })
        .collect();
    let mut updates = 0;
    for w in workers {
        updates += w.join().expect("worker panicked")?;
    }
    cache.flush()?;
    let elapsed = start.elapsed();

    // Every update incremented a counter at the start of its block: the
    // counters on disk must add up to the number of updates.
    let mut on_disk = 0u64;
    let mut buf = [0u8; 8];
    for b in 0..FILE_BLOCKS {
        cache.read_bytes(dev, b * BLOCK as u64, &mut buf)?;
        on_disk += u64::from_le_bytes(buf);
    }
    let s = cache.stats();
    let ops = WORKERS * OPS_PER_WORKER;
    println!(
        "ops:     {ops} gets in {:.2?} ({:.0} gets/s)",
        elapsed,
        ops as f64 / elapsed.as_secs_f64()
    );
    println!(
        "hits:    {:.1}% ({} read hits, {} read misses, {} write hits, {} write misses)",
        100.0 * (s.read_hits + s.write_hits) as f64
            / (s.read_hits + s.read_misses + s.write_hits + s.write_misses) as f64,
        s.read_hits,
        s.read_misses,
        s.write_hits,
        s.write_misses
    );
    println!(
        "I/O:     {} blocks read, {} written, {} syncs, {} evictions, {} errors",
        s.reads_issued, s.writes_issued, s.syncs, s.evictions, s.io_errors
    );
    println!("check:   {updates} updates made, {on_disk} counted on disk after flush");
    assert_eq!(updates, on_disk, "every update reached the file");
    cache.shutdown()
}
