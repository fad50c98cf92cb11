//! The io_uring engine: one thread per device owns that device's ring.
//!
//! The owner thread sends requests over a channel and, once per batch,
//! rings a doorbell (an eventfd). The ring thread keeps a read of that
//! eventfd armed in the ring, so a single `io_uring_enter` wait wakes on
//! either an I/O completion or new work: it never spins while idle (foyer
//! #1311). Each request, and so its block's memory, stays in the thread's
//! in-flight table until the kernel has posted its CQE, on every exit path
//! including a panic (foyer #1286).

use super::engine::{Completer, Engine, EngineFactory, IoKind, IoRequest};
use super::sync::{ends_at_eof, fail, fail_all, no_buffer, short_transfer};
use super::DeviceFile;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use io_uring::{opcode, squeue, types, IoUring, Probe};
use slab::Slab;
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

/// Tests that set [`FORCE_UNAVAILABLE`] hold this for writing; tests that
/// need io_uring hold it for reading.
#[cfg(test)]
pub(crate) static FORCE_LOCK: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// `user_data` of the doorbell read; slab keys never reach it.
const BELL: u64 = u64::MAX;
/// EINTR/EAGAIN completions of one request resubmitted before giving up,
/// so a kernel that keeps refusing cannot make the thread spin.
const MAX_RETRIES: u32 = 64;
/// Pause after `io_uring_enter` reports a lack of resources.
const BACKOFF: Duration = Duration::from_millis(1);

/// Can io_uring be set up in this process? Err carries the kernel's reason
/// (ENOSYS, EPERM from seccomp or kernel.io_uring_disabled, ...).
pub(crate) fn probe() -> io::Result<()> {
    new_ring(2).map(drop)
}

/// A ring of at least `entries` entries that has shown it can do the work:
/// setup can be allowed where `io_uring_enter` is not (some seccomp
/// profiles), and kernels before 5.6 lack the read and write opcodes.
fn new_ring(entries: u32) -> io::Result<IoUring> {
    if FORCE_UNAVAILABLE.load(Ordering::Relaxed) {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    let mut ring = IoUring::new(entries)?;
    let mut ops = Probe::new();
    ring.submitter().register_probe(&mut ops)?;
    let needed = [opcode::Read::CODE, opcode::Write::CODE, opcode::Fsync::CODE];
    if !needed.iter().all(|&op| ops.is_supported(op)) {
        let msg = "io_uring lacks READ, WRITE or FSYNC (kernel before 5.6)";
        return Err(io::Error::new(io::ErrorKind::Unsupported, msg));
    }
    let nop = opcode::Nop::new().build().user_data(0);
    // SAFETY: a NOP carries no buffer or descriptor for the kernel to use.
    unsafe { ring.submission().push(&nop) }.map_err(|_| io::Error::other("new ring is full"))?;
    while ring.completion().next().is_none() {
        settle(ring.submit_and_wait(1))?;
    }
    Ok(ring)
}

/// The outcome of an `io_uring_enter`: interruptions and a momentary lack
/// of resources only mean "try again" (after a pause for the latter, since
/// retrying at once would spin until memory frees up).
fn settle(entered: io::Result<usize>) -> io::Result<()> {
    match entered.map_err(|e| (e.raw_os_error(), e)) {
        Ok(_) | Err((Some(libc::EINTR | libc::EBUSY), _)) => Ok(()),
        Err((Some(libc::EAGAIN | libc::ENOMEM), _)) => {
            thread::sleep(BACKOFF);
            Ok(())
        }
        Err((_, e)) => Err(e),
    }
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
    #[cfg(test)]
    passes: Arc<AtomicU64>,
}

impl UringEngine {
    fn start(depth: u32, device: Arc<DeviceFile>, done: Completer) -> io::Result<UringEngine> {
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
                    // Setup errors, FORCE_UNAVAILABLE's included, are
                    // reported back before `start` returns.
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
            #[cfg(test)]
            passes,
        })
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
            None => fail(&self.done, req, "engine is stopped"),
        }
    }

    fn unplug(&mut self) {
        if std::mem::take(&mut self.unrung) {
            ring_bell(&self.bell);
        }
        // A ring thread that died (a bug or an unusable ring) takes no more
        // requests; fail them rather than leave the owner waiting. Once it
        // has exited nothing else receives, so this cannot race.
        if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
            fail_all(&self.rx, &self.done, "blockcache ring thread has exited");
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
        fail_all(&self.rx, &self.done, "blockcache ring thread has exited");
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
            return self.done.complete(req, Err(no_buffer()));
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
        assert!(!panic_after_push, "test hook: panic with I/O in flight");
    }

    /// Push the SQE for what is left of `inflight[key]`.
    fn push_io(&mut self, key: usize) {
        let fd = types::Fd(self.device.fd());
        let f = &mut self.inflight[key];
        let offset = f.req.offset + f.done as u64;
        let entry = match (f.req.kind, f.req.buffer_raw()) {
            (IoKind::Fsync, _) => opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build(),
            (kind, Some(buf)) => {
                // done < len, so this stays inside the block.
                let ptr = buf.as_ptr().cast::<u8>().wrapping_add(f.done);
                // Blocks are at most MAX_BLOCK_SIZE (1 MiB): this fits.
                let len = (buf.len() - f.done) as u32;
                match kind {
                    IoKind::Read => opcode::Read::new(fd, ptr, len).offset(offset).build(),
                    _ => opcode::Write::new(fd, ptr, len).offset(offset).build(),
                }
            }
            (_, None) => unreachable!("start() refuses reads and writes without a buffer"),
        };
        // SAFETY: the SQE points into the block of `inflight[key]`'s request,
        // valid until the request is dropped or handed back (`buffer_raw`).
        // It is neither before its CQE is reaped: `finish` removes entries
        // only for a reaped CQE, and `Drop for Ring` waits for every
        // outstanding CQE (or leaks the table if it cannot). The slab may
        // move the request, never the pool memory it points at.
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
        let ptr = std::ptr::addr_of_mut!(*self.bell_buf).cast::<u8>();
        let entry = opcode::Read::new(types::Fd(self.bell.as_raw_fd()), ptr, 8)
            .build()
            .user_data(BELL);
        // SAFETY: the read lands in `bell_buf`, a heap allocation that lives
        // as long as `self`; `Drop for Ring` completes the read (by ringing
        // the bell) and waits for its CQE, or leaks the buffer.
        match unsafe { self.push(&entry) } {
            Ok(()) => self.bell_armed = true,
            // Unreachable (see `push`); the thread would still finish its
            // I/O and see new work whenever a completion wakes it.
            Err(e) => log::error!("blockcache: cannot arm the io_uring doorbell: {e}"),
        }
    }

    /// # Safety
    /// Every buffer `entry` names must stay valid until its CQE is reaped.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        // Cannot fail: the ring has depth + 1 entries, and each of the at
        // most depth I/Os and the bell has at most one SQE queued.
        // SAFETY: passed on to our caller.
        unsafe { self.ring.submission().push(entry) }
            .map_err(|_| io::Error::other("io_uring submission queue is full"))
    }

    /// Submit what is queued and, if no completion is waiting, block in the
    /// kernel until one arrives.
    fn enter(&mut self) -> io::Result<()> {
        let want = usize::from(self.ring.completion().is_empty());
        if want == 0 && self.ring.submission().is_empty() {
            return Ok(());
        }
        settle(self.ring.submit_and_wait(want))
    }

    /// Handle every CQE waiting. `live`: the thread may resubmit; false
    /// while the guard in `Drop` winds down.
    fn reap(&mut self, live: bool) -> io::Result<()> {
        let mut bell_error = None;
        loop {
            // One at a time, so `finish` may push SQEs in between.
            let next = self.ring.completion().next();
            let Some(cqe) = next else { break };
            let (user_data, res) = (cqe.user_data(), cqe.result());
            if user_data != BELL {
                self.in_kernel -= 1;
                self.finish(user_data as usize, res, live);
            } else {
                self.bell_armed = false;
                if res < 0 && res != -libc::EINTR && res != -libc::EAGAIN {
                    bell_error = Some(io::Error::from_raw_os_error(-res));
                }
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
        let len = f.req.buffer().map_or(0, <[u8]>::len);
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
                Err(io::Error::other("ring thread stopped mid-transfer"))
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
        fail_all(&self.rx, &self.done, "blockcache ring thread stopped");
        if self.bell_armed {
            ring_bell(&self.bell);
        }
        while self.in_kernel > 0 || self.bell_armed {
            if let Err(e) = settle(self.ring.submit_and_wait(1)) {
                // We cannot learn when the kernel is done, so the memory
                // must never be freed: leak the tokens (each holds the
                // pool alive) and the bell buffer. Their owners never hear
                // back, which beats a buffer reused under a live DMA.
                log::error!("blockcache: io_uring wait failed ({e}); leaking buffers");
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
            fail(&self.done, f.req, "blockcache ring thread stopped");
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::device::sync::conformance::{self, completer, request};
    use crate::owner::pool::Pool;
    use std::sync::RwLockReadGuard;

    /// A request with this tag makes the ring thread panic right after
    /// pushing its SQE.
    pub(crate) const PANIC_TAG: u64 = 1 << 62;

    /// Tests that need io_uring hold this shared; the one that forces it
    /// off holds it exclusively.
    use super::FORCE_LOCK;

    /// A shared hold on `FORCE_LOCK`, or `None` (skip) without io_uring.
    fn uring() -> Option<RwLockReadGuard<'static, ()>> {
        let shared = FORCE_LOCK.read().unwrap();
        match probe() {
            Ok(()) => Some(shared),
            Err(e) => {
                eprintln!("io_uring unavailable, skipping: {e}");
                None
            }
        }
    }

    #[test]
    fn uring_engine_conformance() {
        let Some(_shared) = uring() else { return };
        conformance::run_everywhere(|depth| Box::new(UringFactory { depth }));
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
        assert_eq!(started.err().unwrap().raw_os_error(), Some(libc::EPERM));
    }

    /// foyer #1311: the thread must wait in the kernel, not poll. Each
    /// request wakes it for the doorbell and for the completion; a spinning
    /// loop would make thousands of passes per request.
    #[test]
    fn ring_thread_waits_rather_than_spins() {
        let Some(_shared) = uring() else { return };
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
        assert!(passes <= 3 * 200 + 2, "{passes} passes for 200 requests");
        engine.stop();
    }

    /// foyer #1286: a ring thread that panics with I/O in flight still
    /// waits for the kernel before its buffers go, and every request gets
    /// its completion.
    #[test]
    fn panicking_ring_thread_waits_for_the_kernel() {
        let Some(_shared) = uring() else { return };
        let (_tmp, dev) = conformance::device_file(&std::env::temp_dir(), 16, 0);
        let pool = Pool::new(conformance::BS, 16).unwrap();
        let (done, rx) = completer();
        let mut engine = UringEngine::start(8, Arc::clone(&dev), done).unwrap();
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
            assert!(result.is_ok(), "in-flight {}: {result:?}", req.tag);
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
