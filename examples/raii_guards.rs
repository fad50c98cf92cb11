//! RAII guards instead of manual get/put: a guard is the block, and
//! dropping it is the put.
//!
//! ```text
//! cargo run --example raii_guards
//! ```

use blockcache::{Cache, Config, Error};

fn main() -> Result<(), Error> {
    let file = tempfile::NamedTempFile::new()?;
    file.as_file().set_len(16 * 4096)?;
    let cache = Cache::new(Config::new(4096, 8))?;
    let dev = cache.open(file.path())?;

    // Exclusive access: a &mut [u8] of the whole block.
    {
        let mut header = cache.write(dev, 0)?;
        header[..8].copy_from_slice(b"BCACHE01");
    } // dropped: block 0 is dirty, and free for others

    // Shared access: any number of readers at once.
    let a = cache.read(dev, 0)?;
    let b = cache.read(dev, 0)?;
    assert_eq!(&a[..8], b"BCACHE01");
    assert_eq!(&a[..], &b[..]);

    // While readers hold it, a writer would wait; try_write says so instead.
    assert!(matches!(cache.try_write(dev, 0), Err(Error::WouldBlock)));
    drop((a, b));

    // A block you will overwrite entirely need not be read first.
    let mut fresh = cache.zeroed(dev, 5)?;
    fresh[100] = 1;
    drop(fresh);

    // Guards can cross threads and be dropped there.
    let g = cache.read(dev, 5)?;
    std::thread::spawn(move || assert_eq!(g[100], 1)).join().unwrap();

    // Bad input is an Err, never a panic; the cache goes on working.
    assert!(matches!(cache.read(dev, 1 << 40), Err(Error::OutOfRange { .. })));

    cache.flush()?; // dirty blocks written, then fdatasync
    let s = cache.stats();
    println!(
        "read hits {}, misses {}; zeroed {}; blocks written {}",
        s.read_hits, s.read_misses, s.write_zeroes, s.writes_issued
    );
    Ok(())
}
