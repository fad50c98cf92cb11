//! A scripted I/O engine for tests, plugged in through
//! `Config::custom_engine`: the test states, in strict order, every read,
//! write and fsync the cache must issue, and how each one is answered.
//!
//! - [`Script::read`], [`Script::write`], [`Script::fsync`] expect one call
//!   that succeeds as soon as it is issued; [`Script::expect`] takes any
//!   [`Answer`]: succeed or fail with an errno, either at once (inside
//!   `submit`: "the submission failed") or only when the test calls
//!   [`Script::release`] ("in flight until the test says so"; a failure
//!   then is "the I/O completed with an error").
//! - A call out of order, unexpected or with the wrong device or block is a
//!   *violation*. The engine runs on the owner thread, where a panic would
//!   only kill the owner, so it records the violation, completes the
//!   request at once with an `io::Error` whose message names it (a get or
//!   flush waiting on it fails with that message), and the test thread
//!   panics with every violation at the next [`Script::check`] or at
//!   teardown.
//! - The engine ignores the device file. A read returns the last bytes
//!   successfully written to that block, or else [`pattern_block`] of
//!   (device, block); a failed read leaves [`POISON`] in the buffer, so a
//!   cache that hands out or writes back an unread buffer is caught.
//!   [`Script::device_block`] shows the scripted device's contents.
//!
//! [`ScriptedCache`] bundles a cache of 64 KiB blocks on this engine with
//! temp files to open as devices. Its teardown ([`ScriptedCache::finish`],
//! or drop) shuts the cache down, so a test scripts the shutdown's writes
//! and fsyncs before it; it then fails on any violation, any expectation
//! left over, any I/O still in flight, or an engine not stopped.

use blockcache::device::DeviceFile;
use blockcache::engine::{Completer, Engine, EngineFactory, IoKind, IoRequest};
use blockcache::{Cache, Config, DeviceId};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use tempfile::NamedTempFile;

/// The block size of the LVM parity scenarios.
pub const BS: usize = 64 * 1024;

/// What a failed read leaves in its buffer.
pub const POISON: u8 = 0xdb;

/// One engine call: what the cache asked of which device.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    Read(DeviceId, u64),
    Write(DeviceId, u64),
    Fsync(DeviceId),
}

impl Call {
    fn of(req: &IoRequest) -> Call {
        match req.kind() {
            IoKind::Read => Call::Read(req.device(), req.block()),
            IoKind::Write => Call::Write(req.device(), req.block()),
            IoKind::Fsync => Call::Fsync(req.device()),
        }
    }
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Read(d, b) => write!(f, "read({d:?}, {b})"),
            Call::Write(d, b) => write!(f, "write({d:?}, {b})"),
            Call::Fsync(d) => write!(f, "fsync({d:?})"),
        }
    }
}

/// How an expected call is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Succeeds inside `submit`.
    Ok,
    /// Fails with this errno inside `submit`: the submission failed.
    Fail(i32),
    /// Stays in flight until [`Script::release`], then succeeds.
    Hold,
    /// Stays in flight until [`Script::release`], then fails with this
    /// errno: the I/O completed with an error.
    HoldThenFail(i32),
}

impl Answer {
    fn held(self) -> bool {
        matches!(self, Answer::Hold | Answer::HoldThenFail(_))
    }

    fn errno(self) -> Option<i32> {
        match self {
            Answer::Fail(e) | Answer::HoldThenFail(e) => Some(e),
            Answer::Ok | Answer::Hold => None,
        }
    }
}

/// A block of the scripted device that was never written: differs per
/// device and per block, and within the block.
pub fn pattern_block(dev: DeviceId, block: u64) -> Vec<u8> {
    let mut h = DefaultHasher::new();
    (dev, block).hash(&mut h);
    let seed = h.finish() | 1;
    (0..BS)
        .map(|i| {
            let word = seed.wrapping_mul(i as u64 / 8 + 1) ^ (i as u64 / 8);
            (word >> ((i % 8) * 8)) as u8
        })
        .collect()
}

struct Held {
    call: Call,
    req: IoRequest,
    done: Completer,
    errno: Option<i32>,
}

#[derive(Default)]
struct State {
    expected: VecDeque<(Call, Answer)>,
    /// Every call the engines received, in order.
    calls: Vec<Call>,
    violations: Vec<String>,
    held: Vec<Held>,
    submitted: usize,
    completed: usize,
    /// Blocks written successfully: what later reads return.
    device: HashMap<(DeviceId, u64), Vec<u8>>,
    started: Vec<DeviceId>,
    stopped: Vec<DeviceId>,
    /// The test is unwinding: answer everything at once, check nothing.
    draining: bool,
}

/// The script shared by the test and every engine of one cache.
#[derive(Clone, Default)]
pub struct Script {
    inner: Arc<(Mutex<State>, Condvar)>,
}

impl Script {
    pub fn new() -> Script {
        Script::default()
    }

    /// The factory to give `Config::custom_engine`.
    pub fn factory(&self) -> Arc<dyn EngineFactory> {
        Arc::new(ScriptFactory { script: self.clone() })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test must still be able to tear down.
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait, on the condition variable `submit` and `stop` signal, until
    /// `cond` holds.
    fn wait_for(&self, mut cond: impl FnMut(&State) -> bool) {
        let (lock, cv) = &*self.inner;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        while !cond(&st) {
            st = cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Expect `call` next, answered by `answer`.
    pub fn expect(&self, call: Call, answer: Answer) {
        self.state().expected.push_back((call, answer));
    }

    /// Expect a read of `block` that succeeds at once.
    pub fn read(&self, dev: DeviceId, block: u64) {
        self.expect(Call::Read(dev, block), Answer::Ok);
    }

    /// Expect a write of `block` that succeeds at once.
    pub fn write(&self, dev: DeviceId, block: u64) {
        self.expect(Call::Write(dev, block), Answer::Ok);
    }

    /// Expect an fsync of `dev` that succeeds at once.
    pub fn fsync(&self, dev: DeviceId) {
        self.expect(Call::Fsync(dev), Answer::Ok);
    }

    /// Complete the held call `call` (with its scripted answer), from this
    /// thread. Panics when `call` is not in flight.
    #[track_caller]
    pub fn release(&self, call: Call) {
        let h = {
            let mut st = self.state();
            let Some(i) = st.held.iter().position(|h| h.call == call) else {
                let held: Vec<Call> = st.held.iter().map(|h| h.call).collect();
                drop(st);
                panic!("release({call:?}): not in flight; in flight: {held:?}");
            };
            let h = st.held.remove(i);
            st.completed += 1;
            h
        };
        self.complete(h.req, &h.done, h.errno);
    }

    /// Complete every held call, oldest first. Returns how many.
    pub fn release_all(&self) -> usize {
        let held = {
            let mut st = self.state();
            let held = std::mem::take(&mut st.held);
            st.completed += held.len();
            held
        };
        let n = held.len();
        for h in held {
            self.complete(h.req, &h.done, h.errno);
        }
        n
    }

    /// Wait until at least `n` calls are held in flight.
    pub fn wait_held(&self, n: usize) {
        self.wait_for(|st| st.held.len() >= n);
    }

    /// Wait until the engines have received at least `n` calls in all.
    pub fn wait_calls(&self, n: usize) {
        self.wait_for(|st| st.calls.len() >= n);
    }

    /// The calls held in flight, oldest first.
    pub fn held(&self) -> Vec<Call> {
        self.state().held.iter().map(|h| h.call).collect()
    }

    /// Every call received so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The scripted device's block: the last bytes written to it, or its
    /// pattern.
    pub fn device_block(&self, dev: DeviceId, block: u64) -> Vec<u8> {
        let st = self.state();
        st.device
            .get(&(dev, block))
            .cloned()
            .unwrap_or_else(|| pattern_block(dev, block))
    }

    /// Panic (in the test thread) if any call broke the script so far.
    #[track_caller]
    pub fn check(&self) {
        let v = self.state().violations.clone();
        if !v.is_empty() {
            panic!("the cache broke the I/O script:\n  {}", v.join("\n  "));
        }
    }

    /// [`check`](Script::check), and every expectation so far has been
    /// met: the calls expected up to now have all been issued.
    #[track_caller]
    pub fn assert_met(&self) {
        self.check();
        let left: Vec<Call> = self.state().expected.iter().map(|e| e.0).collect();
        assert!(left.is_empty(), "expected calls not issued: {left:?}");
    }

    /// Stop checking and answer everything now (held calls included): a
    /// failing test's teardown must not hang on an I/O it held.
    fn drain(&self) {
        self.state().draining = true;
        self.release_all();
    }

    /// Everything teardown must find: no violation, no expectation left,
    /// nothing in flight, every engine started also stopped.
    fn teardown_problems(&self) -> Vec<String> {
        let st = self.state();
        let mut p = st.violations.clone();
        if !st.expected.is_empty() {
            let left: Vec<Call> = st.expected.iter().map(|e| e.0).collect();
            p.push(format!("expected calls never issued: {left:?}"));
        }
        if st.submitted != st.completed || !st.held.is_empty() {
            p.push(format!(
                "{} calls still in flight (held: {:?})",
                st.submitted - st.completed,
                st.held.iter().map(|h| h.call).collect::<Vec<_>>()
            ));
        }
        let mut started = st.started.clone();
        let mut stopped = st.stopped.clone();
        started.sort();
        stopped.sort();
        if started != stopped {
            p.push(format!("engines started {started:?} but stopped {stopped:?}"));
        }
        p
    }

    /// Hand a request back with `errno`'s result, filling a read's buffer
    /// from the scripted device (or with POISON when it fails) and storing a
    /// successful write's bytes.
    fn complete(&self, mut req: IoRequest, done: &Completer, errno: Option<i32>) {
        let key = (req.device(), req.block());
        match (req.kind(), errno) {
            (IoKind::Read, None) => {
                let data = self.device_block(key.0, key.1);
                copy_into(&mut req, &data);
            }
            (IoKind::Read, Some(_)) => {
                if let Some(buf) = req.buffer_mut() {
                    buf.fill(POISON);
                }
            }
            (IoKind::Write, None) => {
                let data = req.buffer().map(<[u8]>::to_vec).unwrap_or_default();
                self.state().device.insert(key, data);
            }
            _ => {}
        }
        let result = match errno {
            None => Ok(()),
            Some(e) => Err(io::Error::from_raw_os_error(e)),
        };
        done.complete(req, result);
    }
}

fn copy_into(req: &mut IoRequest, data: &[u8]) {
    if let Some(buf) = req.buffer_mut() {
        let n = buf.len().min(data.len());
        buf[..n].copy_from_slice(&data[..n]);
    }
}

struct ScriptFactory {
    script: Script,
}

impl EngineFactory for ScriptFactory {
    fn start(&self, _device: Arc<DeviceFile>, done: Completer) -> io::Result<Box<dyn Engine>> {
        self.script.state().started.push(done.device());
        Ok(Box::new(ScriptEngine {
            script: self.script.clone(),
            done,
        }))
    }
}

/// The engine of one device. Runs on the owner thread: it never panics,
/// it records.
struct ScriptEngine {
    script: Script,
    done: Completer,
}

impl Engine for ScriptEngine {
    fn submit(&mut self, req: IoRequest) {
        let call = Call::of(&req);
        let mut st = self.script.state();
        st.calls.push(call);
        st.submitted += 1;
        let n = st.calls.len();
        self.script.inner.1.notify_all();
        if st.draining {
            st.completed += 1;
            drop(st);
            return self.script.complete(req, &self.done, None);
        }
        let mut wrong = None;
        if req.device() != self.done.device() {
            wrong = Some(format!(
                "call #{n} {call:?} reached the engine of {:?}",
                self.done.device()
            ));
        }
        let answer = match st.expected.front() {
            Some(&(want, answer)) if want == call && wrong.is_none() => {
                st.expected.pop_front();
                Some(answer)
            }
            Some(&(want, _)) => {
                wrong.get_or_insert_with(|| format!("call #{n} is {call:?}, the script expects {want:?}"));
                None
            }
            None => {
                wrong.get_or_insert_with(|| {
                    format!("call #{n} is {call:?}, the script expects no more calls")
                });
                None
            }
        };
        match answer {
            Some(answer) if answer.held() => {
                st.held.push(Held {
                    call,
                    req,
                    done: self.done.clone(),
                    errno: answer.errno(),
                });
                self.script.inner.1.notify_all();
            }
            Some(answer) => {
                st.completed += 1;
                drop(st);
                self.script.complete(req, &self.done, answer.errno());
            }
            None => {
                let msg = format!("scripted engine: {}", wrong.expect("set when no answer"));
                st.violations.push(msg.clone());
                st.completed += 1;
                drop(st);
                let mut req = req;
                if let Some(buf) = req.buffer_mut() {
                    buf.fill(POISON);
                }
                self.done.complete(req, Err(io::Error::other(msg)));
            }
        }
    }

    fn stop(&mut self) {
        let dev = self.done.device();
        let mut st = self.script.state();
        st.stopped.push(dev);
        if st.held.iter().any(|h| h.call_dev() == dev) {
            st.violations
                .push(format!("the engine of {dev:?} was stopped with I/O in flight"));
        }
        self.script.inner.1.notify_all();
    }
}

impl Held {
    fn call_dev(&self) -> DeviceId {
        match self.call {
            Call::Read(d, _) | Call::Write(d, _) | Call::Fsync(d) => d,
        }
    }
}

/// A cache of [`BS`]-byte blocks on a [`Script`], with temp files to open
/// as its devices. Derefs to the [`Cache`].
pub struct ScriptedCache {
    cache: Option<Cache>,
    pub script: Script,
    files: Vec<NamedTempFile>,
    devs: Vec<DeviceId>,
}

impl ScriptedCache {
    /// A cache of `capacity` blocks with the default queue depth.
    pub fn new(capacity: usize) -> ScriptedCache {
        ScriptedCache::with_config(|c| c, capacity)
    }

    /// A cache of `capacity` blocks, its config adjusted by `tune`.
    pub fn with_config(tune: impl FnOnce(Config) -> Config, capacity: usize) -> ScriptedCache {
        let script = Script::new();
        let config = tune(Config::new(BS, capacity)).custom_engine(script.factory());
        ScriptedCache {
            cache: Some(Cache::new(config).expect("cache on the scripted engine")),
            script,
            files: Vec::new(),
            devs: Vec::new(),
        }
    }

    /// Open a new device of `blocks` blocks (a sparse temp file the engine
    /// never touches).
    pub fn open_device(&mut self, blocks: u64) -> DeviceId {
        let f = super::sparse_file(blocks * BS as u64);
        let dev = self.cache().open(f.path()).expect("open the device");
        self.files.push(f);
        self.devs.push(dev);
        dev
    }

    pub fn cache(&self) -> &Cache {
        self.cache
            .as_ref()
            .expect("the cache is torn down only at the end")
    }

    /// A round trip through the owner: every message this thread sent
    /// before (prefetches, guard drops, releases) has been handled, and the
    /// I/O it issued submitted.
    pub fn barrier(&self) {
        let dev = *self.devs.first().expect("barrier needs an open device");
        self.cache().device_blocks(dev).expect("barrier");
    }

    /// Shut the cache down (the test has scripted the shutdown's I/O) and
    /// check the script: panics on a violation, an expectation left over,
    /// I/O still in flight, or an engine not stopped.
    #[track_caller]
    pub fn finish(mut self) {
        self.teardown();
    }

    #[track_caller]
    fn teardown(&mut self) {
        let Some(cache) = self.cache.take() else {
            return;
        };
        let held = self.script.held();
        if !held.is_empty() {
            self.script.drain();
            drop(cache);
            panic!("teardown with I/O still in flight: {held:?}");
        }
        let shutdown = cache.shutdown();
        let mut problems = self.script.teardown_problems();
        if let Err(e) = shutdown {
            problems.push(format!("shutdown failed: {e}"));
        }
        assert!(problems.is_empty(), "teardown:\n  {}", problems.join("\n  "));
    }
}

impl std::ops::Deref for ScriptedCache {
    type Target = Cache;
    fn deref(&self) -> &Cache {
        self.cache()
    }
}

impl Drop for ScriptedCache {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Already failing: just make sure dropping the cache cannot hang.
            self.script.drain();
            self.cache.take();
        } else {
            self.teardown();
        }
    }
}
