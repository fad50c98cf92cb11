//! A fault-injecting I/O engine for tests, plugged in through
//! `Config::custom_engine`.
//!
//! It does real I/O on the device file (pread/pwrite/fdatasync through
//! `FileExt` on `DeviceFile::file()`; the cache's buffers are page-aligned
//! and block-sized, so O_DIRECT works) and completes each request inside
//! `submit`, so the order of the recorded operations is the order in which
//! the owner issued them. A shared [`FaultPlan`] lets a test
//!
//! - fail the next N operations matching (kind, block or any) with an errno
//!   (the failed operation does no I/O; a failed read fills its buffer with
//!   [`POISON`], so a cache that hands out or writes back an unread buffer
//!   is caught);
//! - hold matching operations: they complete (with their rule's result)
//!   only when the test calls [`FaultPlan::release`], from the releasing
//!   thread, which keeps an I/O in flight for as long as the test needs;
//! - read back every operation issued, as `(DeviceId, IoKind, block)` in
//!   issue order, and how many of each kind.
//!
//! `Engine::stop` completes whatever its device still has held, so teardown
//! cannot hang on a held request; and [`FaultPlan::release_on_drop`] gives
//! a guard that releases everything (and stops holding) when a test unwinds
//! with an I/O still held.

use blockcache::device::DeviceFile;
use blockcache::engine::{Completer, Engine, EngineFactory, IoKind, IoRequest};
use blockcache::{Cache, Config, DeviceId};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The block size the fault tests use.
pub const BS: usize = 4096;

/// What a failed read leaves in its buffer.
pub const POISON: u8 = 0xdb;

/// One operation as the engine saw it: device, kind, block (0 for fsync).
pub type OpRecord = (DeviceId, IoKind, u64);

struct Rule {
    kind: IoKind,
    /// `None`: any block.
    block: Option<u64>,
    /// Operations still to match; `None`: every one.
    remaining: Option<usize>,
    /// Complete with this errno instead of doing the I/O.
    errno: Option<i32>,
    /// Keep the operation until `release`.
    hold: bool,
    /// Panic in `submit`, on the owner thread.
    panic: bool,
}

impl Rule {
    fn matches(&self, kind: IoKind, block: u64) -> bool {
        self.kind == kind && self.block.is_none_or(|b| b == block)
    }
}

struct Held {
    req: IoRequest,
    done: Completer,
    file: Arc<DeviceFile>,
    errno: Option<i32>,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    log: Vec<OpRecord>,
    counts: [usize; 3],
    held: Vec<Held>,
    /// Set by the release-on-drop guard: hold nothing from now on.
    no_holds: bool,
}

fn kind_index(kind: IoKind) -> usize {
    match kind {
        IoKind::Read => 0,
        IoKind::Write => 1,
        IoKind::Fsync => 2,
    }
}

/// The test's handle on the fault engine; clones share one plan.
#[derive(Clone, Default)]
pub struct FaultPlan {
    inner: Arc<(Mutex<State>, Condvar)>,
}

impl FaultPlan {
    pub fn new() -> FaultPlan {
        FaultPlan::default()
    }

    /// The factory to give `Config::custom_engine`.
    pub fn factory(&self) -> FaultFactory {
        FaultFactory { plan: self.clone() }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked with the lock held must not hang teardown.
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, kind: IoKind, block: Option<u64>, times: Option<usize>, errno: Option<i32>, hold: bool) {
        self.state().rules.push(Rule {
            kind,
            block,
            remaining: times,
            errno,
            hold,
            panic: false,
        });
    }

    /// Panic in `submit` (that is, on the cache's owner thread) at the
    /// next operation of `kind` on `block`.
    pub fn panic_on(&self, kind: IoKind, block: u64) {
        self.state().rules.push(Rule {
            kind,
            block: Some(block),
            remaining: Some(1),
            errno: None,
            hold: false,
            panic: true,
        });
    }

    /// Fail the next `times` operations of `kind` on `block` (any block for
    /// `None`) with `errno`.
    pub fn fail(&self, kind: IoKind, block: Option<u64>, times: usize, errno: i32) {
        self.add(kind, block, Some(times), Some(errno), false);
    }

    /// Fail every operation of `kind` on `block` (any for `None`) with
    /// `errno` until [`clear`](FaultPlan::clear).
    pub fn fail_always(&self, kind: IoKind, block: Option<u64>, errno: i32) {
        self.add(kind, block, None, Some(errno), false);
    }

    /// Hold the next `times` matching operations until `release`; they
    /// then succeed (doing their I/O).
    pub fn hold(&self, kind: IoKind, block: Option<u64>, times: usize) {
        self.add(kind, block, Some(times), None, true);
    }

    /// Hold the next `times` matching operations until `release`; they then
    /// fail with `errno`.
    pub fn hold_then_fail(&self, kind: IoKind, block: Option<u64>, times: usize, errno: i32) {
        self.add(kind, block, Some(times), Some(errno), true);
    }

    /// Drop every rule (held operations stay held until `release`).
    pub fn clear(&self) {
        self.state().rules.clear();
    }

    /// Every operation issued so far, in issue order.
    pub fn ops(&self) -> Vec<OpRecord> {
        self.state().log.clone()
    }

    /// The operations issued since the last `take_ops`, in issue order.
    pub fn take_ops(&self) -> Vec<OpRecord> {
        std::mem::take(&mut self.state().log)
    }

    /// How many operations of `kind` were issued in all.
    pub fn count(&self, kind: IoKind) -> usize {
        self.state().counts[kind_index(kind)]
    }

    /// Operations held right now.
    pub fn held(&self) -> usize {
        self.state().held.len()
    }

    /// Wait until at least `n` operations are held (a state wait on a
    /// condition variable, signalled by `submit`).
    pub fn wait_held(&self, n: usize) {
        let (lock, cv) = &*self.inner;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        while st.held.len() < n {
            st = cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Complete every held operation (with its rule's result), on this
    /// thread. Returns how many.
    pub fn release(&self) -> usize {
        let held = std::mem::take(&mut self.state().held);
        let n = held.len();
        for h in held {
            finish(&h.file, &h.done, h.req, h.errno);
        }
        n
    }

    fn release_file(&self, file: &Arc<DeviceFile>) {
        let mine: Vec<Held> = {
            let mut st = self.state();
            let (mine, rest) = std::mem::take(&mut st.held)
                .into_iter()
                .partition(|h| Arc::ptr_eq(&h.file, file));
            st.held = rest;
            mine
        };
        for h in mine {
            finish(&h.file, &h.done, h.req, h.errno);
        }
    }

    /// A guard that, when dropped, stops holding and releases everything
    /// held. Bind it after the cache so it drops first: a test that panics
    /// with an I/O held then still tears the cache down.
    pub fn release_on_drop(&self) -> ReleaseOnDrop {
        ReleaseOnDrop(self.clone())
    }
}

/// See [`FaultPlan::release_on_drop`].
pub struct ReleaseOnDrop(FaultPlan);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.state().no_holds = true;
        self.0.release();
    }
}

/// Makes a [`FaultEngine`] per device, all sharing one plan.
pub struct FaultFactory {
    plan: FaultPlan,
}

impl EngineFactory for FaultFactory {
    fn start(&self, device: Arc<DeviceFile>, done: Completer) -> io::Result<Box<dyn Engine>> {
        Ok(Box::new(FaultEngine {
            plan: self.plan.clone(),
            file: device,
            done,
        }))
    }
}

/// The engine of one device: real I/O, completed inside `submit` unless a
/// rule holds it.
pub struct FaultEngine {
    plan: FaultPlan,
    file: Arc<DeviceFile>,
    done: Completer,
}

impl Engine for FaultEngine {
    fn submit(&mut self, req: IoRequest) {
        let (kind, block) = (req.kind(), req.block());
        let errno = {
            let mut st = self.plan.state();
            st.log.push((req.device(), kind, block));
            st.counts[kind_index(kind)] += 1;
            let (mut errno, mut hold, mut panic) = (None, false, false);
            if let Some(i) = st.rules.iter().position(|r| r.matches(kind, block)) {
                let rule = &mut st.rules[i];
                (errno, hold, panic) = (rule.errno, rule.hold, rule.panic);
                if let Some(n) = rule.remaining.as_mut() {
                    *n -= 1;
                    if *n == 0 {
                        st.rules.remove(i);
                    }
                }
            }
            if hold && !st.no_holds {
                st.held.push(Held {
                    req,
                    done: self.done.clone(),
                    file: Arc::clone(&self.file),
                    errno,
                });
                self.plan.inner.1.notify_all();
                return;
            }
            if panic {
                drop(st);
                panic!("fault engine: boom on {kind:?} of block {block}");
            }
            errno
        };
        finish(&self.file, &self.done, req, errno);
    }

    fn stop(&mut self) {
        // Nothing of this device may stay held past stop (the contract:
        // every submitted request is completed).
        self.plan.release_file(&self.file);
    }
}

/// Do (or fail) one request and hand it back.
fn finish(file: &DeviceFile, done: &Completer, mut req: IoRequest, errno: Option<i32>) {
    let result = match errno {
        Some(errno) => {
            if req.kind() == IoKind::Read {
                if let Some(buf) = req.buffer_mut() {
                    buf.fill(POISON);
                }
            }
            Err(io::Error::from_raw_os_error(errno))
        }
        None => perform(file, &mut req),
    };
    done.complete(req, result);
}

/// Real I/O: a read fills the whole block or fails (EOF is an error).
fn perform(device: &DeviceFile, req: &mut IoRequest) -> io::Result<()> {
    let offset = req.offset();
    let file = device.file();
    match req.kind() {
        IoKind::Read => {
            let buf = req
                .buffer_mut()
                .ok_or_else(|| io::Error::other("read without a buffer"))?;
            file.read_exact_at(buf, offset)
        }
        IoKind::Write => {
            let buf = req
                .buffer()
                .ok_or_else(|| io::Error::other("write without a buffer"))?;
            file.write_all_at(buf, offset)
        }
        IoKind::Fsync => file.sync_data(),
    }
}

/// A cache of `capacity` blocks of [`BS`] bytes doing its I/O through
/// `plan`.
pub fn fault_cache(plan: &FaultPlan, capacity: usize) -> Cache {
    Cache::new(Config::new(BS, capacity).custom_engine(Arc::new(plan.factory())))
        .expect("cache with the fault engine")
}

/// Block `b` (of [`BS`] bytes) of a `patterned_file` as the test made it.
pub fn original(b: u64) -> Vec<u8> {
    (b * BS as u64..(b + 1) * BS as u64).map(super::pattern).collect()
}

/// Block `b` (of [`BS`] bytes) of the file at `path` as it is on disk now.
pub fn on_disk(path: &Path, b: u64) -> Vec<u8> {
    super::file_bytes(path, b * BS as u64, BS)
}

/// The blocks written, in order, among `ops`.
pub fn writes(ops: &[OpRecord]) -> Vec<u64> {
    blocks_of(ops, IoKind::Write)
}

/// The blocks read, in order, among `ops`.
pub fn reads(ops: &[OpRecord]) -> Vec<u64> {
    blocks_of(ops, IoKind::Read)
}

fn blocks_of(ops: &[OpRecord], kind: IoKind) -> Vec<u64> {
    ops.iter().filter(|o| o.1 == kind).map(|o| o.2).collect()
}

/// Wait until `cond` holds, yielding between looks (a state wait, not a
/// sleep: it ends as soon as the state is reached).
pub fn wait_until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        std::thread::yield_now();
    }
}

/// The errno inside `Error::Io`, or a panic naming what came instead.
pub fn errno_of<T: std::fmt::Debug>(r: Result<T, blockcache::Error>) -> i32 {
    match r {
        Err(blockcache::Error::Io(e)) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("Io error without errno: {e:?}")),
        other => panic!("expected Err(Io(..)), got {other:?}"),
    }
}

/// Assert two blocks are equal, reporting the first difference rather
/// than two 4 KiB dumps.
#[track_caller]
pub fn assert_block(actual: &[u8], expected: &[u8], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    if let Some(i) = actual.iter().zip(expected).position(|(a, e)| a != e) {
        panic!(
            "{what}: differs first at byte {i}: {:#04x} != expected {:#04x}",
            actual[i], expected[i]
        );
    }
}

/// Assert every byte of a block is `byte`.
#[track_caller]
pub fn assert_filled(actual: &[u8], byte: u8, what: &str) {
    if let Some(i) = actual.iter().position(|&a| a != byte) {
        panic!("{what}: byte {i} is {:#04x}, expected all {byte:#04x}", actual[i]);
    }
}
