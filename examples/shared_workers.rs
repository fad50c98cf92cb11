//! A service pattern: one cache shared by a pool of worker threads, each
//! serving requests that read or update records stored in blocks. Records
//! span block boundaries, so the byte helpers do the splitting.
//!
//! ```text
//! cargo run --release --example shared_workers
//! ```

use blockcache::{Cache, Config, Error};
use crossbeam_channel::bounded;

const RECORD: u64 = 100; // bytes; deliberately not a divisor of the block size
const RECORDS: u64 = 10_000;

type Reply<T> = crossbeam_channel::Sender<Result<T, Error>>;

enum Request {
    Put(u64, [u8; RECORD as usize], Reply<()>),
    Get(u64, Reply<Vec<u8>>),
}

fn main() -> Result<(), Error> {
    let file = tempfile::NamedTempFile::new_in("/var/tmp").or_else(|_| tempfile::NamedTempFile::new())?;
    // Only whole blocks are addressable: round the file up to one.
    file.as_file().set_len((RECORDS * RECORD).div_ceil(4096) * 4096)?;
    let cache = Cache::new(Config::new(4096, 64))?;
    let dev = cache.open(file.path())?;

    let (tx, rx) = bounded::<Request>(128);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (cache, rx) = (cache.clone(), rx.clone());
            std::thread::spawn(move || {
                for req in rx {
                    match req {
                        Request::Put(id, rec, reply) => {
                            let _ = reply.send(cache.write_bytes(dev, id * RECORD, &rec));
                        }
                        Request::Get(id, reply) => {
                            let mut buf = vec![0; RECORD as usize];
                            let r = cache.read_bytes(dev, id * RECORD, &mut buf).map(|_| buf);
                            let _ = reply.send(r);
                        }
                    }
                }
            })
        })
        .collect();

    // Clients: store every record, wait for all acknowledgements...
    let (ack_tx, ack_rx) = crossbeam_channel::unbounded();
    for id in 0..RECORDS {
        let mut rec = [0u8; RECORD as usize];
        rec[..8].copy_from_slice(&id.to_le_bytes());
        tx.send(Request::Put(id, rec, ack_tx.clone())).unwrap();
    }
    for _ in 0..RECORDS {
        ack_rx.recv().unwrap()?;
    }
    // ...then read a sample back through the workers.
    let (got_tx, got_rx) = crossbeam_channel::unbounded();
    let sample: Vec<u64> = (0..RECORDS).step_by(97).collect();
    for &id in &sample {
        tx.send(Request::Get(id, got_tx.clone())).unwrap();
    }
    for _ in &sample {
        let rec = got_rx.recv().unwrap()?;
        let id = u64::from_le_bytes(rec[..8].try_into().unwrap());
        assert!(id < RECORDS && id % 97 == 0, "record {id} came back");
    }
    drop(tx);
    for w in workers {
        w.join().unwrap();
    }
    cache.flush()?;

    let s = cache.stats();
    println!(
        "{RECORDS} records of {RECORD} bytes stored by 4 workers through a 64-block cache; {} read back; {} blocks written, {} evictions",
        sample.len(),
        s.writes_issued,
        s.evictions
    );
    cache.shutdown()
}
