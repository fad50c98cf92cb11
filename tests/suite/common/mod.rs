//! Shared by the integration tests: real files with a known pattern, the
//! engines to run each test on, and the test engines and fixtures below.

use blockcache::{Cache, Config, DeviceId, EngineKind};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use tempfile::NamedTempFile;

/// The byte at `offset` of a fresh test file: differs per block and within.
pub fn pattern(offset: u64) -> u8 {
    let block = offset / 512;
    (block.wrapping_mul(31) ^ (offset % 251)) as u8
}

/// A file of `bytes` bytes holding `pattern`, on a filesystem with O_DIRECT
/// (/var/tmp; /tmp may be tmpfs).
pub fn patterned_file(bytes: u64) -> NamedTempFile {
    let mut f = NamedTempFile::new_in("/var/tmp").expect("temp file in /var/tmp");
    let data: Vec<u8> = (0..bytes).map(pattern).collect();
    f.write_all(&data).unwrap();
    f.as_file().sync_all().unwrap();
    f
}

/// A file of `bytes` bytes, all of them a hole, in /var/tmp (as
/// [`patterned_file`]).
pub fn sparse_file(bytes: u64) -> NamedTempFile {
    let f = NamedTempFile::new_in("/var/tmp").expect("temp file in /var/tmp");
    f.as_file().set_len(bytes).expect("size the sparse file");
    f
}

/// The file's bytes at `offset..offset+len`, read around the cache.
pub fn file_bytes(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

/// The engines to test on: Sync always; Uring where the kernel allows it
/// (skipped with a printed reason otherwise).
pub fn engines() -> Vec<EngineKind> {
    let mut v = vec![EngineKind::Sync];
    match Cache::new(Config::new(4096, 1).engine(EngineKind::Uring)) {
        Ok(_) => v.push(EngineKind::Uring),
        Err(e) => eprintln!("skipping io_uring: {e}"),
    }
    v
}

pub fn cache(kind: EngineKind, block_size: usize, capacity: usize) -> Cache {
    Cache::new(Config::new(block_size, capacity).engine(kind)).expect("cache")
}

/// A [`cache`] with a fresh [`patterned_file`] of `blocks` blocks open in
/// it: the file (kept alive), the cache and the file's device.
pub fn cache_with_file(
    kind: EngineKind,
    block_size: usize,
    capacity: usize,
    blocks: u64,
) -> (NamedTempFile, Cache, DeviceId) {
    let f = patterned_file(blocks * block_size as u64);
    let cache = cache(kind, block_size, capacity);
    let dev = cache.open(f.path()).expect("open the patterned file");
    (f, cache, dev)
}

/// The name the test harness gives test `name` of the module whose
/// `module_path!()` is `module`: the module's path without the crate's
/// name, then `name` (`bad_input::a_test`), as `--exact` wants it when a
/// test runs itself again in a child process of this binary.
pub fn test_name(module: &str, name: &str) -> String {
    match module.split_once("::") {
        Some((_krate, path)) => format!("{path}::{name}"),
        None => name.to_string(),
    }
}

/// Run `f` on a clone of the cache in another thread (for a call that
/// waits on an I/O the test holds).
pub fn spawn<T: Send + 'static>(
    cache: &Cache,
    f: impl FnOnce(Cache) -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let cache = cache.clone();
    std::thread::spawn(move || f(cache))
}

/// The fault-injecting engine (tests/suite/common/fault.rs).
pub mod fault;

/// The scripted engine (tests/suite/common/scripted.rs).
pub mod scripted;

/// A small ext4 on a loop device (tests/suite/common/loopfs.rs).
pub mod loopfs;

/// A watchdog for hang-prone tests (tests/suite/common/watchdog.rs).
pub mod watchdog;

/// Seeds, a small RNG and engine selection for randomized tests
/// (tests/suite/common/seeded.rs).
pub mod seeded;
