//! The io_uring engine: one thread per device owns that device's ring.
//!
//! The owner thread sends requests over a channel and, once per batch,
//! rings a doorbell (an eventfd). The ring thread keeps a read of that
//! eventfd armed in the ring, so a single `io_uring_enter` wait wakes on
//! either an I/O completion or new work: it never spins while idle (foyer
//! #1311). Each request's [`BlockBuf`](super::engine::BlockBuf) stays in the
//! thread's in-flight table until the kernel has posted its CQE, on every
//! exit path including a panic (foyer #1286).

use super::engine::{Completer, Engine, EngineFactory, IoKind, IoRequest};
use super::sync::{ends_at_eof, short_transfer};
use super::DeviceFile;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use io_uring::{opcode, squeue, types, IoUring, Probe};
use slab::Slab;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Test hook: when set, [`probe`] and [`UringFactory::start`] fail with
/// EPERM as if io_uring were disabled.
pub(crate) static FORCE_UNAVAILABLE: AtomicBool = AtomicBool::new(false);

/// `user_data` of the doorbell read; slab keys never reach it.
const BELL: u64 = u64::MAX;
/// EINTR/EAGAIN completions of one request resubmitted before giving up,
/// so a kernel that keeps refusing cannot make the thread spin.
const MAX_RETRIES: u32 = 64;
/// Pause after `io_uring_enter` reports a lack of resources (EAGAIN,
/// ENOMEM): retrying at once would spin until memory frees up.
const BACKOFF: Duration = Duration::from_millis(1);

/// Can io_uring be set up in this process? Err carries the kernel's reason
/// (ENOSYS, EPERM from seccomp or kernel.io_uring_disabled, ...).
pub(crate) fn probe() -> io::Result<()> {
    new_ring(2).map(drop)
}

fn forced_off() -> io::Result<()> {
    if FORCE_UNAVAILABLE.load(Ordering::Relaxed) {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    Ok(())
}

/// A ring of at least `entries` entries that has shown it can do the work:
/// setup can be allowed where `io_uring_enter` is not (some seccomp
/// profiles), and kernels before 5.6 lack the read and write opcodes.
fn new_ring(entries: u32) -> io::Result<IoUring> {
    forced_off()?;
    // Single issuer with deferred task work (6.1+) runs completions only
    // when the ring thread waits for them, not as interrupts of it; only the
    // thread that creates the ring ever uses it, as single issuer requires.
    let mut ring = match IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(entries)
    {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::new(entries)?,
        other => other?,
    };
    let mut ops = Probe::new();
    ring.submitter().register_probe(&mut ops)?;
    for (code, name) in [
        (opcode::Read::CODE, "READ"),
        (opcode::Write::CODE, "WRITE"),
        (opcode::Fsync::CODE, "FSYNC"),
    ] {
        if !ops.is_supported(code) {
            let msg = format!("io_uring has no IORING_OP_{name} (kernel too old)");
            return Err(io::Error::new(io::ErrorKind::Unsupported, msg));
        }
    }
    let nop = opcode::Nop::new().build().user_data(0);
    // SAFETY: a NOP carries no buffer or descriptor for the kernel to use.
    unsafe { ring.submission().push(&nop) }.map_err(|_| io::Error::other("new ring is full"))?;
    ring.submit_and_wait(1)?;
    ring.completion().for_each(drop);
    Ok(ring)
}

/// A blocking eventfd: the ring's read of it must wait, and io_uring
/// completes reads of non-blocking files with EAGAIN instead.
fn eventfd() -> io::Result<File> {
    // SAFETY: eventfd takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn ring_bell(bell: &File) {
    // A blocking eventfd write fails only if the counter would overflow,
    // which the ring thread's reads prevent.
    if let Err(e) = (&*bell).write_all(&1u64.to_ne_bytes()) {
        log::error!("blockcache: ringing the io_uring doorbell failed: {e}");
    }
}

/// Makes a [`UringEngine`]: one ring thread per device, `depth` I/Os in
/// flight at most.
pub(crate) struct UringFactory {
    /// I/Os in flight in the kernel at most; more wait in the channel.
    pub(crate) depth: u32,
}

impl EngineFactory for UringFactory {
    fn start(&self, device: Arc<DeviceFile>, done: Completer) -> io::Result<Box<dyn Engine>> {
        Ok(Box::new(UringEngine::start(self.depth, device, done)?))
    }
}

/// The owner thread's side of a ring thread.
pub(crate) struct UringEngine {
    tx: Option<Sender<IoRequest>>,
    /// Kept so that requests a dead ring thread never took can be failed
    /// without a race against the thread dropping its receiver.
    rx: Receiver<IoRequest>,
    bell: Arc<File>,
    /// Requests were sent since the doorbell last rang.
    unrung: bool,
    thread: Option<JoinHandle<()>>,
    done: Completer,
    /// Passes of the ring thread's loop; shows it waits rather than spins.
    passes: Arc<AtomicU64>,
}

impl UringEngine {
    fn start(depth: u32, device: Arc<DeviceFile>, done: Completer) -> io::Result<UringEngine> {
        forced_off()?;
        let depth = depth.max(1);
        let bell = Arc::new(eventfd()?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let passes = Arc::new(AtomicU64::new(0));
        let ring_thread = {
            let (rx, bell, done, passes) = (rx.clone(), bell.clone(), done.clone(), passes.clone());
            thread::Builder::new()
                .name("blockcache-ring".into())
                .spawn(move || {
                    // Made here, not by the caller: a single-issuer ring
                    // belongs to the thread that creates it.
                    let ring = match new_ring(depth + 1) {
                        Ok(ring) => ring,
                        Err(e) => return drop(ready_tx.send(Err(e))),
                    };
                    let mut ring = Ring {
                        ring,
                        device,
                        rx,
                        done,
                        depth: depth as usize,
                        inflight: Slab::with_capacity(depth as usize),
                        bell,
                        bell_buf: Box::new(0),
                        bell_armed: false,
                        in_kernel: 0,
                        open: true,
                        cqes: VecDeque::with_capacity(depth as usize + 1),
                        passes,
                    };
                    let _ = ready_tx.send(Ok(()));
                    if let Err(e) = ring.run() {
                        let path = ring.device.path().display();
                        log::error!("blockcache: io_uring of {path} failed: {e}");
                    }
                })?
        };
        let setup = ready_rx
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("blockcache ring thread died during setup")));
        if let Err(e) = setup {
            let _ = ring_thread.join();
            return Err(e);
        }
        Ok(UringEngine {
            tx: Some(tx),
            rx,
            bell,
            unrung: false,
            thread: Some(ring_thread),
            done,
            passes,
        })
    }

    /// Complete with an error whatever is still in the channel. Only
    /// called once the ring thread has exited, so nothing races for it.
    fn fail_leftovers(&self) {
        for req in self.rx.try_iter() {
            let err = io::Error::other("blockcache ring thread has exited");
            self.done.complete(req, Err(err));
        }
    }
}

impl Engine for UringEngine {
    /// Queues `req`; the ring thread sees it after the next `unplug`.
    fn submit(&mut self, req: IoRequest) {
        match &self.tx {
            // Unbounded, and we hold a receiver: the send cannot fail.
            Some(tx) => {
                let _ = tx.send(req);
                self.unrung = true;
            }
            None => self
                .done
                .complete(req, Err(io::Error::other("engine is stopped"))),
        }
    }

    fn unplug(&mut self) {
        if std::mem::take(&mut self.unrung) {
            ring_bell(&self.bell);
        }
        // A ring thread that died (a bug or an unusable ring) takes no more
        // requests; fail them rather than leave the owner waiting.
        if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            self.fail_leftovers();
        }
    }

    fn stop(&mut self) {
        // Disconnecting the channel tells the thread to drain and exit;
        // the doorbell wakes it to notice.
        self.tx = None;
        ring_bell(&self.bell);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("blockcache: a ring thread panicked");
            }
        }
        self.fail_leftovers();
    }
}

impl Drop for UringEngine {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop();
        }
    }
}

/// A request the kernel is working on.
struct InFlight {
    req: IoRequest,
    /// Bytes moved so far; a short transfer is continued from here.
    done: usize,
    retries: u32,
}

/// The ring thread's state. Its `Drop` is the guard that keeps buffers
/// alive until the kernel is done with them.
struct Ring {
    ring: IoUring,
    /// Keeps the descriptor open while SQEs name it.
    device: Arc<DeviceFile>,
    rx: Receiver<IoRequest>,
    done: Completer,
    depth: usize,
    /// Every request started and not completed, keyed by `user_data`.
    /// Invariant: an entry with an SQE outstanding leaves only after its
    /// CQE is reaped.
    inflight: Slab<InFlight>,
    bell: Arc<File>,
    /// Where the armed doorbell read lands; on the heap so it stays put.
    bell_buf: Box<u64>,
    bell_armed: bool,
    /// I/O SQEs pushed whose CQE has not been reaped (the bell apart).
    in_kernel: usize,
    /// The owner may still send requests.
    open: bool,
    /// Reaped (user_data, result) pairs not yet acted on. A field, not a
    /// local, so that after a panic the guard still finds them.
    cqes: VecDeque<(u64, i32)>,
    passes: Arc<AtomicU64>,
}

impl Ring {
    fn run(&mut self) -> io::Result<()> {
        loop {
            self.passes.fetch_add(1, Ordering::Relaxed);
            // The channel is the queue of requests waiting for room.
            while self.open && self.inflight.len() < self.depth {
                match self.rx.try_recv() {
                    Ok(req) => self.start(req),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => self.open = false,
                }
            }
            if !self.open && self.inflight.is_empty() {
                return Ok(());
            }
            // The eventfd keeps a ring of the bell that came while the read
            // was not armed, so none is lost.
            if self.open && !self.bell_armed {
                self.arm_bell();
            }
            self.enter()?;
            self.reap(true)?;
        }
    }

    fn start(&mut self, req: IoRequest) {
        if req.kind != IoKind::Fsync && req.buf.is_none() {
            let err = io::Error::new(io::ErrorKind::InvalidInput, "read or write without a buffer");
            return self.done.complete(req, Err(err));
        }
        #[cfg(test)]
        let panic_after_push = req.tag == tests::PANIC_TAG;
        let key = self.inflight.insert(InFlight {
            req,
            done: 0,
            retries: 0,
        });
        self.push_io(key);
        #[cfg(test)]
        assert!(
            !panic_after_push,
            "test hook: ring thread panics with I/O in flight"
        );
    }

    /// Push the SQE for what is left of `inflight[key]`.
    fn push_io(&mut self, key: usize) {
        let fd = types::Fd(self.device.fd());
        let f = &mut self.inflight[key];
        let offset = f.req.offset + f.done as u64;
        let entry = match (f.req.kind, f.req.buf.as_mut()) {
            (IoKind::Fsync, _) => opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build(),
            (kind, Some(buf)) => {
                // done < len, so this stays inside the block.
                let ptr = buf.as_mut_ptr().wrapping_add(f.done);
                let len = (buf.len() - f.done) as u32;
                match kind {
                    IoKind::Read => opcode::Read::new(fd, ptr, len).offset(offset).build(),
                    _ => opcode::Write::new(fd, ptr, len).offset(offset).build(),
                }
            }
            (_, None) => unreachable!("start() refuses reads and writes without a buffer"),
        };
        // SAFETY: the SQE points into the BlockBuf of `inflight[key]`, valid
        // until the request is dropped or handed back. It is neither before
        // its CQE is reaped: `finish` removes entries only for a reaped CQE,
        // and `Drop for Ring` waits for every outstanding CQE (or leaks the
        // table if it cannot). The slab may move the BlockBuf token, never
        // the pool memory it points at.
        match unsafe { self.push(&entry.user_data(key as u64)) } {
            Ok(()) => self.in_kernel += 1,
            Err(e) => {
                // Never submitted, so the kernel has no hold on the buffer.
                let f = self.inflight.remove(key);
                self.done.complete(f.req, Err(e));
            }
        }
    }

    fn arm_bell(&mut self) {
        let ptr = (&mut *self.bell_buf as *mut u64).cast::<u8>();
        let entry = opcode::Read::new(types::Fd(self.bell.as_raw_fd()), ptr, 8)
            .build()
            .user_data(BELL);
        // SAFETY: the read lands in `bell_buf`, a heap allocation that lives
        // as long as `self`; `Drop for Ring` completes the read (by ringing
        // the bell) and waits for its CQE, or leaks the buffer.
        match unsafe { self.push(&entry) } {
            Ok(()) => self.bell_armed = true,
            // Unreachable by construction (see `push`); without the bell
            // the thread can still finish its I/O and notices new work
            // whenever a completion wakes it.
            Err(e) => log::error!("blockcache: cannot arm the io_uring doorbell: {e}"),
        }
    }

    /// # Safety
    /// Every buffer `entry` names must stay valid until its CQE is reaped.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        // The ring has depth + 1 entries and at most depth I/Os plus the
        // bell are outstanding, so the queue has room; submit and retry in
        // case the kernel has not yet consumed earlier entries.
        for _ in 0..2 {
            // SAFETY: passed on to our caller.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
        Err(io::Error::other("io_uring submission queue is full"))
    }

    /// Submit what is queued and, if no completion is waiting, block in the
    /// kernel until one arrives.
    fn enter(&mut self) -> io::Result<()> {
        let want = usize::from(self.ring.completion().is_empty());
        if want == 0 && self.ring.submission().is_empty() {
            return Ok(());
        }
        match self.ring.submit_and_wait(want) {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR | libc::EBUSY) => Ok(()),
                Some(libc::EAGAIN | libc::ENOMEM) => {
                    thread::sleep(BACKOFF);
                    Ok(())
                }
                _ => Err(e),
            },
        }
    }

    /// Handle every CQE waiting. `live`: the thread may resubmit; false
    /// while the guard in `Drop` winds down.
    fn reap(&mut self, live: bool) -> io::Result<()> {
        for cqe in self.ring.completion() {
            if cqe.user_data() == BELL {
                self.bell_armed = false;
            } else {
                self.in_kernel -= 1;
            }
            self.cqes.push_back((cqe.user_data(), cqe.result()));
        }
        let mut bell_error = None;
        while let Some((user_data, res)) = self.cqes.pop_front() {
            if user_data != BELL {
                self.finish(user_data as usize, res, live);
            } else if res < 0 && res != -libc::EINTR && res != -libc::EAGAIN {
                bell_error = Some(io::Error::from_raw_os_error(-res));
            }
        }
        // Re-arming a read that fails at once would spin.
        bell_error.map_or(Ok(()), Err)
    }

    /// Act on the CQE of `inflight[key]`: continue it or complete it.
    fn finish(&mut self, key: usize, res: i32, live: bool) {
        let Some(f) = self.inflight.get_mut(key) else {
            log::error!("blockcache: io_uring CQE for unknown request {key}");
            return;
        };
        let (kind, offset) = (f.req.kind, f.req.offset);
        let len = f.req.buf.as_ref().map_or(0, |b| b.len());
        let result = if res < 0 {
            let transient = res == -libc::EINTR || res == -libc::EAGAIN;
            if live && transient && f.retries < MAX_RETRIES {
                f.retries += 1;
                return self.push_io(key);
            }
            Err(io::Error::from_raw_os_error(-res))
        } else if kind == IoKind::Fsync {
            Ok(())
        } else {
            f.done += res as usize;
            if f.done >= len {
                Ok(())
            } else if !live {
                Err(io::Error::other(
                    "ring thread stopped before the transfer finished",
                ))
            } else if res == 0 || ends_at_eof(&self.device, kind, f.done) {
                Err(short_transfer(kind, offset, f.done, len))
            } else {
                return self.push_io(key);
            }
        };
        let f = self.inflight.remove(key);
        self.done.complete(f.req, result);
    }
}

impl Drop for Ring {
    /// Runs on normal exit and when the thread unwinds from a panic: no
    /// buffer may be freed while the kernel can still write to it.
    fn drop(&mut self) {
        for req in self.rx.try_iter() {
            self.done
                .complete(req, Err(io::Error::other("blockcache ring thread stopped")));
        }
        if self.bell_armed {
            ring_bell(&self.bell);
        }
        // CQEs reaped before a panic cut their handling short.
        let _ = self.reap(false);
        while self.in_kernel > 0 || self.bell_armed {
            let waited = self.ring.submit_and_wait(1);
            let fatal = match waited {
                Ok(_) => None,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR | libc::EBUSY) => None,
                    Some(libc::EAGAIN | libc::ENOMEM) => {
                        thread::sleep(BACKOFF);
                        None
                    }
                    _ => Some(e),
                },
            };
            if let Some(e) = fatal {
                // We cannot learn when the kernel is done, so the memory
                // must never be freed: leak the tokens (each holds the
                // pool alive) and the bell buffer. Their owners never hear
                // back, which beats a buffer reused under a live DMA.
                log::error!("blockcache: cannot wait for io_uring completions ({e}); leaking buffers");
                std::mem::forget(std::mem::take(&mut self.inflight));
                std::mem::forget(std::mem::replace(&mut self.bell_buf, Box::new(0)));
                return;
            }
            // A failing bell read has already ended its wait; ignore it.
            let _ = self.reap(false);
        }
        // Left only if a panic struck between reaping a CQE and acting on
        // it; the kernel is done with these buffers.
        for (_, f) in std::mem::take(&mut self.inflight) {
            let err = io::Error::other("blockcache ring thread stopped");
            self.done.complete(f.req, Err(err));
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::device::sync::conformance::{self, completer, request};
    use crate::owner::pool::Pool;
    use std::sync::RwLock;

    /// A request with this tag makes the ring thread panic right after
    /// pushing its SQE.
    pub(crate) const PANIC_TAG: u64 = 1 << 62;

    /// Tests that need io_uring hold this shared; the one that forces it
    /// off holds it exclusively.
    static FORCE_LOCK: RwLock<()> = RwLock::new(());

    fn available() -> bool {
        match probe() {
            Ok(()) => true,
            Err(e) => {
                eprintln!("io_uring unavailable, skipping: {e}");
                false
            }
        }
    }

    #[test]
    fn uring_engine_conformance() {
        let _shared = FORCE_LOCK.read().unwrap();
        if !available() {
            return;
        }
        let mut saw_direct = false;
        for dir in conformance::dirs() {
            for depth in [1, 4] {
                saw_direct |= conformance::run_all(&UringFactory { depth }, &dir);
            }
        }
        assert!(saw_direct, "no test directory supports O_DIRECT");
    }

    #[test]
    fn forced_unavailable_is_eperm() {
        let _exclusive = FORCE_LOCK.write().unwrap();
        FORCE_UNAVAILABLE.store(true, Ordering::Relaxed);
        let probed = probe();
        let (_tmp, dev) = conformance::device_file(&std::env::temp_dir(), 1, 0);
        let started = UringFactory { depth: 4 }.start(dev, completer().0);
        FORCE_UNAVAILABLE.store(false, Ordering::Relaxed);
        assert_eq!(probed.unwrap_err().raw_os_error(), Some(libc::EPERM));
        assert_eq!(started.err().and_then(|e| e.raw_os_error()), Some(libc::EPERM));
    }

    /// foyer #1311: the thread must wait in the kernel, not poll. Each
    /// request wakes it for the doorbell and for the completion; a spinning
    /// loop would make thousands of passes per request.
    #[test]
    fn ring_thread_waits_rather_than_spins() {
        let _shared = FORCE_LOCK.read().unwrap();
        if !available() {
            return;
        }
        let (_tmp, dev) = conformance::device_file(&std::env::temp_dir(), 4, 0);
        let pool = Pool::new(conformance::BS, 4).unwrap();
        let (done, rx) = completer();
        let mut engine = UringEngine::start(2, dev, done).unwrap();
        let before = engine.passes.load(Ordering::Relaxed);
        for i in 0..200u64 {
            engine.submit(request(&pool, i % 4, IoKind::Read, i % 4));
            engine.unplug();
            let (_, result) = conformance::completion(rx.recv().unwrap());
            assert!(result.is_ok());
        }
        let passes = engine.passes.load(Ordering::Relaxed) - before;
        assert!(passes <= 3 * 200 + 2, "{passes} loop passes for 200 requests");
        engine.stop();
    }

    /// foyer #1286: a ring thread that panics with I/O in flight still
    /// waits for the kernel before its buffers go, and every request gets
    /// its completion.
    #[test]
    fn panicking_ring_thread_waits_for_the_kernel() {
        let _shared = FORCE_LOCK.read().unwrap();
        if !available() {
            return;
        }
        let (_tmp, dev) = conformance::device_file(&std::env::temp_dir(), 16, 0);
        let pool = Pool::new(conformance::BS, 16).unwrap();
        let (done, rx) = completer();
        let mut engine = UringFactory { depth: 8 }.start(Arc::clone(&dev), done).unwrap();
        for slot in 0..16 {
            let mut req = request(&pool, slot, IoKind::Read, slot);
            if slot == 7 {
                req.tag = PANIC_TAG;
            }
            engine.submit(req);
        }
        engine.unplug();
        // Sorted by tag: 0..=6, 8..16, then the one that panicked.
        let results = conformance::collect(&rx, 16);
        // 0..=6 and the panicking one were pushed to the kernel: their CQEs
        // were awaited, so they finished; the rest were failed unstarted.
        for (req, result) in results[..7].iter().chain(&results[15..]) {
            assert!(result.is_ok(), "in-flight read {} lost: {result:?}", req.tag);
        }
        for (req, result) in &results[7..15] {
            assert!(result.is_err(), "read {} ran after the panic", req.tag);
        }
        engine.stop();
        assert_eq!(Arc::strong_count(&dev), 1);
        engine.submit(request(&pool, 0, IoKind::Read, 0));
        let (_, result) = conformance::completion(rx.try_recv().unwrap());
        assert!(result.is_err());
    }
}

#[cfg(test)]
mod scratch {
    use super::*;
    use crate::device::sync::conformance::{self, completer, request};
    use crate::owner::pool::Pool;
    use std::time::Instant;

    fn cpu_ticks(name: &str) -> Vec<(String, u64)> {
        let mut out = vec![];
        for e in std::fs::read_dir("/proc/self/task").unwrap() {
            let p = e.unwrap().path();
            let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
            if comm.trim() == name {
                let stat = std::fs::read_to_string(p.join("stat")).unwrap();
                let rest = &stat[stat.rfind(')').unwrap() + 2..];
                let f: Vec<&str> = rest.split(' ').collect();
                let t = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
                out.push((format!("{} state {}", p.display(), f[0]), t));
            }
        }
        out
    }

    #[test]
    #[ignore]
    fn scratch_idle_and_latency() {
        for factory in [
            &UringFactory { depth: 64 } as &dyn EngineFactory,
            &crate::device::sync::SyncFactory { depth: 64 },
        ] {
            let (_tmp, dev) = conformance::device_file(std::path::Path::new("/var/tmp"), 1024, 0);
            let pool = Pool::new(conformance::BS, 64).unwrap();
            let (done, rx) = completer();
            let mut engine = factory.start(dev, done).unwrap();
            // latency QD1
            let mut lat = vec![];
            for i in 0..5000u64 {
                let t = Instant::now();
                engine.submit(request(&pool, i % 64, IoKind::Read, (i * 7919) % 1024));
                engine.unplug();
                let _ = rx.recv().unwrap();
                lat.push(t.elapsed().as_micros() as u64);
            }
            lat.sort();
            println!("QD1 p50 {} p99 {}", lat[lat.len() / 2], lat[lat.len() * 99 / 100]);
            // QD32 throughput
            let t = Instant::now();
            let n = 20000u64;
            let mut out = 0;
            let mut next = 0u64;
            while next < 32 {
                engine.submit(request(&pool, next, IoKind::Read, (next * 7919) % 1024));
                next += 1;
                out += 1;
            }
            engine.unplug();
            let mut got = 0;
            while got < n {
                let (req, r) = conformance::completion(rx.recv().unwrap());
                r.unwrap();
                got += 1;
                out -= 1;
                if next < n {
                    let slot = req.tag;
                    drop(req);
                    engine.submit(request(&pool, slot, IoKind::Read, (next * 7919) % 1024));
                    next += 1;
                    out += 1;
                    if rx.is_empty() {
                        engine.unplug();
                    }
                }
            }
            let _ = out;
            println!("QD32 {:.0} IOPS", n as f64 / t.elapsed().as_secs_f64());
            let a = cpu_ticks("blockcache-ring");
            std::thread::sleep(Duration::from_secs(2));
            let b = cpu_ticks("blockcache-ring");
            println!("idle ring ticks before {a:?} after {b:?}");
            engine.stop();
        }
    }
}
