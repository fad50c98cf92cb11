//! A conformance suite both built-in engines run, and the scaffolding for it.

use crate::device::engine::{Completer, Engine, EngineFactory, IoKind, IoRequest, ToOwner};
use crate::device::DeviceFile;
use crate::error::IoFailure;
use crate::shared::pool::{BlockBuf, Pool};
use crate::DeviceId;
use crossbeam_channel::{Receiver, Sender};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

pub(crate) const BS: usize = 4096;

/// The byte at `pos` of every test file: never zero, so a block that
/// was not read (the pool starts zeroed) shows.
pub(crate) fn pattern(pos: u64) -> u8 {
    (pos % 251) as u8 + 1
}

/// A file of `blocks` patterned blocks plus `tail` bytes, in a fresh
/// temporary file on `dir`.
pub(crate) fn device_file(
    dir: &Path,
    blocks: u64,
    tail: usize,
) -> (tempfile::NamedTempFile, Arc<DeviceFile>) {
    let mut tmp = tempfile::NamedTempFile::new_in(dir).expect("temp file");
    let len = blocks * BS as u64 + tail as u64;
    let bytes: Vec<u8> = (0..len).map(pattern).collect();
    tmp.write_all(&bytes).expect("fill temp file");
    tmp.flush().expect("flush temp file");
    let dev = DeviceFile::open(tmp.path(), false).expect("DeviceFile::open");
    (tmp, Arc::new(dev))
}

/// The same file opened buffered, as `DeviceFile::open` does where
/// O_DIRECT is refused. Built by hand: tmpfs accepts O_DIRECT since
/// Linux 6.6, so no test filesystem may be without it.
pub(crate) fn buffered(dev: &DeviceFile) -> Arc<DeviceFile> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev.path());
    Arc::new(DeviceFile {
        file: file.expect("reopen buffered"),
        path: dev.path().to_path_buf(),
        read_only: false,
        direct: false,
        block_device: false,
        logical_block_size: 1,
        size_bytes: dev.size_bytes(),
    })
}

/// Where to put test files: `std::env::temp_dir()` may be tmpfs, and
/// /var/tmp usually is a disk filesystem.
pub(crate) fn dirs() -> Vec<std::path::PathBuf> {
    vec![std::env::temp_dir(), "/var/tmp".into()]
}

/// Every check of [`run_all`] on each test directory, O_DIRECT as
/// opened and buffered, at depth 1 and 4. At least one run must have
/// been O_DIRECT.
pub(crate) fn run_everywhere(factory: impl Fn(u32) -> Box<dyn EngineFactory>) {
    let mut saw_direct = false;
    for dir in dirs() {
        for depth in [1, 4] {
            let (tmp, dev) = device_file(&dir, 64, 100);
            saw_direct |= dev.is_direct();
            let buffered_dev = buffered(&dev);
            run_all(&*factory(depth), &tmp, dev);
            run_all(&*factory(depth), &tmp, buffered_dev);
        }
    }
    assert!(saw_direct, "no test directory supports O_DIRECT");
}

pub(crate) fn request(pool: &Arc<Pool>, tag: u64, kind: IoKind, block: u64) -> IoRequest {
    let buf = (kind != IoKind::Fsync).then(|| BlockBuf::new(pool, tag as u32));
    IoRequest {
        tag,
        dev: DeviceId(1),
        kind,
        block,
        offset: block * BS as u64,
        buf,
        grant: None,
    }
}

/// A request handed back, with its outcome.
pub(crate) type Completion = (IoRequest, Result<(), IoFailure>);

/// The owner's side of a completer, for engines tested alone: each
/// completion goes to a channel.
struct ToTest(Sender<Completion>);

impl ToOwner for ToTest {
    fn completed(&self, req: IoRequest, result: Result<(), IoFailure>) {
        let _ = self.0.send((req, result));
    }

    fn wake(&self) {
        unreachable!("no test request carries a grant, so none is queued quietly");
    }
}

pub(crate) fn completer() -> (Completer, Receiver<Completion>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let done = Completer {
        owner: Arc::new(ToTest(tx)),
        dev: DeviceId(1),
    };
    (done, rx)
}

/// Wait for `n` completions, returned by tag. The timeout only turns
/// a lost completion into a failure instead of a hung test.
pub(crate) fn collect(rx: &Receiver<Completion>, n: usize) -> Vec<(IoRequest, Result<(), io::Error>)> {
    let mut out: Vec<_> = (0..n)
        .map(|_| {
            let completion = rx.recv_timeout(std::time::Duration::from_secs(60));
            let (req, result) = completion.expect("a completion never came");
            (req, result.map_err(|f| f.to_io()))
        })
        .collect();
    out.sort_by_key(|(req, _)| req.tag);
    out
}

pub(crate) fn assert_block(req: &IoRequest, block: u64) {
    let bytes = req.buffer().expect("read has a buffer");
    let want: Vec<u8> = (0..BS as u64).map(|i| pattern(block * BS as u64 + i)).collect();
    assert!(bytes == &want[..], "block {block} read wrong bytes");
}

/// Every check of an engine made by `factory` on `dev`, an open
/// `device_file(_, 64, 100)` (the engine's depth is assumed below 64).
pub(crate) fn run_all(factory: &dyn EngineFactory, tmp: &tempfile::NamedTempFile, dev: Arc<DeviceFile>) {
    let pool = Pool::new(BS, 64).unwrap();
    let (done, rx) = completer();
    let mut engine = factory.start(Arc::clone(&dev), done).expect("start");

    reads_return_file_bytes(&mut *engine, &pool, &rx);
    writes_reach_the_file(&mut *engine, &pool, &rx, tmp.path());
    more_requests_than_depth_all_complete(&mut *engine, &pool, &rx);
    reads_past_eof_fail(&mut *engine, &pool, &rx);
    adjacent_blocks_each_complete(&mut *engine, &pool, &rx, tmp.path());
    a_run_across_eof_fails_only_past_it(&mut *engine, &pool, &rx);

    // Stop with a full queue: every completion arrives before stop returns.
    for tag in 0..64 {
        engine.submit(request(&pool, tag, IoKind::Read, tag));
    }
    engine.unplug();
    engine.stop();
    let drained: Vec<_> = rx.try_iter().collect();
    assert_eq!(drained.len(), 64, "stop returned before draining");
    for (req, result) in drained {
        assert!(result.is_ok(), "read {} failed: {:?}", req.tag, result);
        assert_block(&req, req.tag);
    }

    // Once stopped, the engine's threads are gone: they released the
    // device and their completers.
    assert_eq!(
        Arc::strong_count(&dev),
        1,
        "an engine thread still holds the device"
    );
    drop(engine);
    assert!(rx.recv().is_err(), "an engine thread still holds a completer");
}

fn reads_return_file_bytes(engine: &mut dyn Engine, pool: &Arc<Pool>, rx: &Receiver<Completion>) {
    for tag in 0..8 {
        engine.submit(request(pool, tag, IoKind::Read, 7 - tag));
    }
    engine.unplug();
    for (req, result) in collect(rx, 8) {
        assert!(result.is_ok(), "read failed: {result:?}");
        assert_eq!(req.block, 7 - req.tag);
        assert_block(&req, req.block);
    }
}

fn writes_reach_the_file(engine: &mut dyn Engine, pool: &Arc<Pool>, rx: &Receiver<Completion>, path: &Path) {
    let mut req = request(pool, 3, IoKind::Write, 5);
    req.buffer_mut().unwrap().fill(0xA5);
    engine.submit(req);
    engine.unplug();
    let (req, result) = collect(rx, 1).pop().unwrap();
    assert!(result.is_ok(), "write failed: {result:?}");
    assert_eq!(req.kind, IoKind::Write);

    engine.submit(request(pool, 0, IoKind::Fsync, 0));
    engine.unplug();
    let (req, result) = collect(rx, 1).pop().unwrap();
    assert!(result.is_ok(), "fsync failed: {result:?}");
    assert_eq!(req.kind, IoKind::Fsync);

    let file = std::fs::read(path).unwrap();
    assert!(file[5 * BS..6 * BS].iter().all(|&b| b == 0xA5), "write missing");
    assert_eq!(file[6 * BS], pattern(6 * BS as u64), "write spilled");
    assert_eq!(file[5 * BS - 1], pattern(5 * BS as u64 - 1), "write spilled");
    // Put the pattern back for later checks.
    let mut req = request(pool, 3, IoKind::Write, 5);
    let buf = req.buffer_mut().unwrap();
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern(5 * BS as u64 + i as u64);
    }
    engine.submit(req);
    engine.unplug();
    assert!(collect(rx, 1)[0].1.is_ok());
}

fn more_requests_than_depth_all_complete(
    engine: &mut dyn Engine,
    pool: &Arc<Pool>,
    rx: &Receiver<Completion>,
) {
    // Each slot's buffer cleared first, so stale bytes from the first
    // check cannot pass for a read.
    for tag in 0..64 {
        BlockBuf::new(pool, tag as u32).as_mut_slice().fill(0);
        engine.submit(request(pool, tag, IoKind::Read, 63 - tag));
        if tag % 16 == 15 {
            engine.unplug();
        }
    }
    for (req, result) in collect(rx, 64) {
        assert!(result.is_ok(), "read {} failed: {result:?}", req.tag);
        assert_block(&req, 63 - req.tag);
    }
}

/// Adjacent blocks in one batch (which an engine may move as one
/// vectored I/O): every request completes with its own block.
fn adjacent_blocks_each_complete(
    engine: &mut dyn Engine,
    pool: &Arc<Pool>,
    rx: &Receiver<Completion>,
    path: &Path,
) {
    for tag in 0..32 {
        let mut req = request(pool, tag, IoKind::Write, 16 + tag);
        req.buffer_mut().unwrap().fill(tag as u8 + 1);
        engine.submit(req);
    }
    engine.unplug();
    for (req, result) in collect(rx, 32) {
        assert!(result.is_ok(), "write of block {}: {result:?}", req.block);
    }
    let file = std::fs::read(path).unwrap();
    for tag in 0..32 {
        let at = (16 + tag) * BS;
        assert!(
            file[at..at + BS].iter().all(|&b| b == tag as u8 + 1),
            "block {} holds its write",
            16 + tag
        );
    }
    for tag in 0..32 {
        BlockBuf::new(pool, tag as u32).as_mut_slice().fill(0);
        engine.submit(request(pool, tag, IoKind::Read, 16 + tag));
    }
    engine.unplug();
    for (req, result) in collect(rx, 32) {
        assert!(result.is_ok(), "read of block {}: {result:?}", req.block);
        let b = req.tag as u8 + 1;
        assert!(
            req.buffer().unwrap().iter().all(|&x| x == b),
            "block {} read back",
            req.block
        );
    }
    // Put the pattern back for later checks.
    for tag in 0..32 {
        let mut req = request(pool, tag, IoKind::Write, 16 + tag);
        for (i, b) in req.buffer_mut().unwrap().iter_mut().enumerate() {
            *b = pattern((16 + tag) * BS as u64 + i as u64);
        }
        engine.submit(req);
    }
    engine.unplug();
    assert!(collect(rx, 32).iter().all(|(_, r)| r.is_ok()));
}

/// A batch of adjacent reads running past the end of the file: the
/// blocks before it succeed with their bytes, the ones past it fail.
fn a_run_across_eof_fails_only_past_it(engine: &mut dyn Engine, pool: &Arc<Pool>, rx: &Receiver<Completion>) {
    for tag in 0..8 {
        BlockBuf::new(pool, tag as u32).as_mut_slice().fill(0);
        engine.submit(request(pool, tag, IoKind::Read, 60 + tag));
    }
    engine.unplug();
    for (req, result) in collect(rx, 8) {
        if req.block < 64 {
            assert!(result.is_ok(), "block {} before EOF: {result:?}", req.block);
            assert_block(&req, req.block);
        } else {
            assert_past_eof(&req, result);
        }
    }
}

/// `req`, a read past the end of the file, failed as such, naming its
/// offset.
fn assert_past_eof(req: &IoRequest, result: Result<(), io::Error>) {
    let err = result.expect_err("read past EOF reported success");
    assert_eq!(
        err.kind(),
        io::ErrorKind::UnexpectedEof,
        "block {}: {err}",
        req.block
    );
    let at = (req.block * BS as u64).to_string();
    assert!(err.to_string().contains(&at), "error names no offset: {err}");
}

fn reads_past_eof_fail(engine: &mut dyn Engine, pool: &Arc<Pool>, rx: &Receiver<Completion>) {
    // Block 64 holds only a 100-byte tail; block 70 is wholly past EOF.
    engine.submit(request(pool, 0, IoKind::Read, 64));
    engine.submit(request(pool, 1, IoKind::Read, 70));
    engine.unplug();
    for (req, result) in collect(rx, 2) {
        assert_past_eof(&req, result);
    }
}
