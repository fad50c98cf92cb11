//! The io_uring engine: the owner thread submits, one thread per device
//! reaps.
//!
//! Each open device has a ring. The owner thread pushes its requests into
//! the ring's submission queue and enters the kernel itself, once per
//! batch ([`Engine::unplug`]): starting an I/O wakes no other thread. The
//! device's reaper thread waits in the kernel for completions, and for
//! each one hands the request back (a read's block goes straight to the
//! get waiting for it, see `engine::Grant`). It never spins: it blocks in
//! `io_uring_enter` until a completion arrives, and an idle device's
//! thread sleeps there.
//!
//! Adjacent blocks submitted in one batch go to the kernel as one
//! vectored I/O (`READV`/`WRITEV`, see [`runs`](super::runs)): one SQE and
//! one completion for the run. A run that ends short or fails is split,
//! the blocks it transferred whole complete, and the rest are started
//! again one by one, so a failed block fails only its own request and a
//! transient fault costs no neighbour its block.
//!
//! Both threads use the submission side: the owner for new requests, the
//! reaper to continue a short transfer, retry an interrupted one, or start
//! requests that waited for room. [`Submit`] is that side, behind one
//! mutex; the reaper alone reads the completion queue. Every request stays
//! in the in-flight table until the kernel has posted its completion, on
//! every exit path including a panic, so no block's memory is handed back
//! while the kernel may still use it (see `reaper`).

mod reaper;

use super::engine::{Completer, Engine, EngineFactory, IoKind, IoRequest};
use super::runs::{block_len, split_into_runs, Job};
use super::transfer::no_buffer;
use super::DeviceFile;
use io_uring::{opcode, squeue, types, IoUring, Probe};
use slab::Slab;
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Test hook: when set, [`probe`] and [`UringFactory::start`] fail with
/// EPERM as if io_uring were disabled.
pub(crate) static FORCE_UNAVAILABLE: AtomicBool = AtomicBool::new(false);

/// Tests that set [`FORCE_UNAVAILABLE`] hold this for writing; tests that
/// need io_uring hold it for reading.
#[cfg(test)]
pub(crate) static FORCE_LOCK: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// `user_data` of the no-op that tells the reaper to stop; slab keys never
/// reach it.
const STOP: u64 = u64::MAX;
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
    let needed = [
        opcode::Read::CODE,
        opcode::Write::CODE,
        opcode::Readv::CODE,
        opcode::Writev::CODE,
        opcode::Fsync::CODE,
    ];
    if !needed.iter().all(|&op| ops.is_supported(op)) {
        let msg = "io_uring lacks READ, WRITE, READV, WRITEV or FSYNC (kernel before 5.6)";
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

/// Makes a [`UringEngine`]: one ring and one reaper thread per device,
/// `depth` I/Os in flight at most.
pub(crate) struct UringFactory {
    /// I/Os in flight in the kernel at most; more wait in the backlog.
    pub(crate) depth: u32,
}

impl EngineFactory for UringFactory {
    fn start(&self, device: Arc<DeviceFile>, done: Completer) -> io::Result<Box<dyn Engine>> {
        Ok(Box::new(UringEngine::start(self.depth, device, done)?))
    }
}

/// What the owner thread and the reaper share: the ring and its
/// submission side.
struct RingShared {
    /// Submission queue: used under `submit`'s lock only. Completion
    /// queue: used by the reaper thread only.
    ring: IoUring,
    submit: Mutex<Submit>,
    /// Keeps the descriptor open while SQEs name it.
    device: Arc<DeviceFile>,
    done: Completer,
}

/// A request the kernel is working on, or a run of requests for adjacent
/// blocks going as one vectored I/O.
struct InFlight {
    /// The request, or the run's first.
    req: IoRequest,
    /// The run's other requests and its iovecs; `None` for one request.
    run: Option<Box<Run>>,
    /// Bytes moved so far; a short transfer of one request is continued
    /// from here (a run's never is: it is split).
    done: usize,
    retries: u32,
}

/// The requests after the first of a vectored I/O, in block order.
struct Run {
    rest: Vec<IoRequest>,
    /// One per request of the run, first included, each the whole block.
    iov: IoVecs,
}

/// The iovecs of a run.
struct IoVecs(Vec<libc::iovec>);

// SAFETY: the iovecs point into the blocks of the run's own requests,
// which are `Send` and travel with them; the pointers are only read (by
// the kernel), never dereferenced by either thread.
unsafe impl Send for IoVecs {}

impl InFlight {
    /// Every request, in block order.
    fn into_requests(self) -> impl Iterator<Item = IoRequest> {
        std::iter::once(self.req).chain(self.run.into_iter().flat_map(|r| r.rest))
    }

    /// Bytes the whole I/O moves.
    fn len(&self) -> usize {
        block_len(&self.req)
            + self
                .run
                .as_ref()
                .map_or(0, |r| r.rest.iter().map(block_len).sum())
    }
}

/// The submission side of a ring. Its lock is what lets two threads push
/// SQEs: the queue's tail is written by one thread at a time.
struct Submit {
    /// Every request started and not completed, keyed by `user_data`.
    /// Invariant: an entry with an SQE outstanding leaves only after its
    /// CQE is reaped.
    inflight: Slab<InFlight>,
    /// Requests submitted since the last unplug, to start as runs.
    plugged: Vec<IoRequest>,
    /// Requests waiting for room (more than `depth` in flight).
    backlog: VecDeque<IoRequest>,
    depth: usize,
    /// SQEs pushed whose CQE has not been reaped, the stop no-op included.
    in_kernel: usize,
    /// The reaper has exited: requests can no longer complete through it.
    dead: bool,
    /// Vectored I/Os started (for tests).
    #[cfg(test)]
    runs: usize,
}

/// Requests that could not start, to be completed with their error once
/// the submission lock is released: completing sends to the owner's
/// channel, which must never be waited on while holding a lock the owner
/// takes.
type Refused = Vec<(IoRequest, io::Error)>;

impl RingShared {
    /// The submission lock. A panic while it is held poisons it (the
    /// reaper acts on completions under it); the reaper's exit, unwinding
    /// from that very panic, must still take it to wait out the kernel, and
    /// the table is left consistent for that exit (see `reaper`), so the
    /// guard is taken whether or not the lock is poisoned.
    fn lock(&self) -> MutexGuard<'_, Submit> {
        self.submit.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Start `req` now if there is room, else queue it.
    fn start(&self, sub: &mut Submit, req: IoRequest, refused: &mut Refused) {
        if req.kind != IoKind::Fsync && req.buf.is_none() {
            return refused.push((req, no_buffer()));
        }
        if sub.inflight.len() >= sub.depth {
            return sub.backlog.push_back(req);
        }
        let key = sub.inflight.insert(InFlight {
            req,
            run: None,
            done: 0,
            retries: 0,
        });
        self.push_io(sub, key, refused);
    }

    /// Start `job`: a run as one vectored I/O if there is room, else its
    /// requests one by one (queued if need be).
    fn start_job(&self, sub: &mut Submit, job: Job, refused: &mut Refused) {
        let mut reqs = match job {
            Job::Run(reqs) if sub.inflight.len() < sub.depth => reqs,
            job => {
                for req in job.into_requests() {
                    self.start(sub, req, refused);
                }
                return;
            }
        };
        let iov = reqs
            .iter_mut()
            .map(|r| {
                let buf = r.buffer_raw().expect("a run holds only requests with a block");
                libc::iovec {
                    iov_base: buf.as_ptr().cast(),
                    iov_len: buf.len(),
                }
            })
            .collect();
        // The run's own vector becomes `rest`: no second allocation.
        let req = reqs.remove(0);
        let rest = reqs;
        let key = sub.inflight.insert(InFlight {
            req,
            run: Some(Box::new(Run {
                rest,
                iov: IoVecs(iov),
            })),
            done: 0,
            retries: 0,
        });
        #[cfg(test)]
        {
            sub.runs += 1;
        }
        self.push_io(sub, key, refused);
    }

    /// Start what was submitted since the last unplug, as runs.
    fn start_plugged(&self, sub: &mut Submit, refused: &mut Refused) {
        let mut batch = std::mem::take(&mut sub.plugged);
        split_into_runs(&mut batch, |job| self.start_job(sub, job, refused));
        // Keep the allocation for the next batch.
        sub.plugged = batch;
    }

    /// Start backlogged requests while there is room.
    fn start_backlog(&self, sub: &mut Submit, refused: &mut Refused) {
        while sub.inflight.len() < sub.depth {
            let Some(req) = sub.backlog.pop_front() else { break };
            self.start(sub, req, refused);
        }
    }

    /// Push the SQE for what is left of `inflight[key]`.
    fn push_io(&self, sub: &mut Submit, key: usize, refused: &mut Refused) {
        let fd = types::Fd(self.device.fd());
        let f = &mut sub.inflight[key];
        let offset = f.req.offset + f.done as u64;
        let vectored = f.run.as_ref().map(|r| (r.iov.0.as_ptr(), r.iov.0.len() as u32));
        let entry = match (f.req.kind, f.req.buffer_raw(), vectored) {
            (IoKind::Fsync, _, _) => opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build(),
            (kind, Some(_), Some((iov, n))) => {
                debug_assert_eq!(f.done, 0, "a run is split, never continued");
                // A run has at most runs::MAX_RUN iovecs: `n` fits.
                match kind {
                    IoKind::Read => opcode::Readv::new(fd, iov, n).offset(offset).build(),
                    _ => opcode::Writev::new(fd, iov, n).offset(offset).build(),
                }
            }
            (kind, Some(buf), None) => {
                // done < len, so this stays inside the block.
                let ptr = buf.as_ptr().cast::<u8>().wrapping_add(f.done);
                // Blocks are at most MAX_BLOCK_SIZE (1 MiB): this fits.
                let len = (buf.len() - f.done) as u32;
                match kind {
                    IoKind::Read => opcode::Read::new(fd, ptr, len).offset(offset).build(),
                    _ => opcode::Write::new(fd, ptr, len).offset(offset).build(),
                }
            }
            (_, None, _) => unreachable!("start() refuses reads and writes without a buffer"),
        };
        // SAFETY: the SQE points into the block of `inflight[key]`'s request,
        // or at the iovecs of its run, which point into the blocks of the
        // run's requests; blocks and iovecs are valid until the entry's
        // requests are dropped or handed back (`buffer_raw`).
        // It is neither before its CQE is reaped: the reaper removes entries
        // only for a reaped CQE, and its exit (normal or by panic) waits for
        // every outstanding CQE first, or leaks the table if it cannot. The
        // slab may move the request, never the pool memory it points at.
        if let Err(e) = unsafe { self.push(sub, &entry.user_data(key as u64)) } {
            // Never submitted, so the kernel has no hold on the buffers.
            for req in sub.inflight.remove(key).into_requests() {
                refused.push((req, io::Error::new(e.kind(), e.to_string())));
            }
        }
    }

    /// # Safety
    /// Every buffer `entry` names must stay valid until its CQE is reaped.
    unsafe fn push(&self, sub: &mut Submit, entry: &squeue::Entry) -> io::Result<()> {
        // SAFETY: `sub` is the guard of the submission lock, so this is the
        // only submission queue handle (the reaper takes the same lock).
        let mut sq = unsafe { self.ring.submission_shared() };
        // Cannot fail: the ring has depth + 1 entries, each of the at most
        // depth I/Os and the stop no-op has at most one SQE queued, and
        // every push is followed by a submit before the lock is next free
        // for long.
        // SAFETY: passed on to our caller.
        unsafe { sq.push(entry) }.map_err(|_| io::Error::other("io_uring submission queue is full"))?;
        sub.in_kernel += 1;
        Ok(())
    }

    /// Hand the kernel every SQE pushed so far (by either thread).
    fn submit(&self) -> io::Result<()> {
        settle(self.ring.submit())
    }
}

/// The owner thread's side of a device's ring.
pub(crate) struct UringEngine {
    /// Dropped at `stop`, with the ring and the device it keeps open.
    shared: Option<Arc<RingShared>>,
    /// Fails what is submitted after `stop`.
    done: Completer,
    /// Requests were pushed since the last submit.
    unsubmitted: bool,
    thread: Option<JoinHandle<()>>,
    /// Passes of the reaper's loop; shows it waits rather than spins.
    #[cfg(test)]
    passes: Arc<std::sync::atomic::AtomicU64>,
}

impl UringEngine {
    fn start(depth: u32, device: Arc<DeviceFile>, done: Completer) -> io::Result<UringEngine> {
        let depth = depth.max(1);
        // One entry more than the depth, for the stop no-op.
        let ring = new_ring(depth + 1)?;
        let shared = Arc::new(RingShared {
            ring,
            submit: Mutex::new(Submit {
                inflight: Slab::with_capacity(depth as usize),
                plugged: Vec::with_capacity(depth as usize),
                backlog: VecDeque::new(),
                depth: depth as usize,
                in_kernel: 0,
                dead: false,
                #[cfg(test)]
                runs: 0,
            }),
            device,
            done: done.clone(),
        });
        let passes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let thread = reaper::spawn(Arc::clone(&shared), Arc::clone(&passes))?;
        #[cfg(not(test))]
        drop(passes);
        Ok(UringEngine {
            shared: Some(shared),
            done,
            unsubmitted: false,
            thread: Some(thread),
            #[cfg(test)]
            passes,
        })
    }
}

impl Engine for UringEngine {
    /// Takes `req`; it starts at the next `unplug`, in a run with the
    /// adjacent blocks submitted with it.
    fn submit(&mut self, req: IoRequest) {
        let Some(shared) = &self.shared else {
            let e = io::Error::other("engine is stopped");
            return self.done.complete(req, Err(e));
        };
        let mut refused = Refused::new();
        {
            let mut sub = shared.lock();
            if sub.dead {
                refused.push((req, io::Error::other("blockcache ring thread has exited")));
            } else {
                sub.plugged.push(req);
                self.unsubmitted = true;
            }
        }
        for (req, e) in refused {
            self.done.complete(req, Err(e));
        }
    }

    fn unplug(&mut self) {
        if let (true, Some(shared)) = (std::mem::take(&mut self.unsubmitted), &self.shared) {
            let mut refused = Refused::new();
            {
                let mut sub = shared.lock();
                if sub.dead {
                    let e = || io::Error::other("blockcache ring thread has exited");
                    refused.extend(sub.plugged.drain(..).map(|r| (r, e())));
                } else {
                    shared.start_plugged(&mut sub, &mut refused);
                }
            }
            for (req, e) in refused {
                self.done.complete(req, Err(e));
            }
            if let Err(e) = shared.submit() {
                // The reaper submits what is pushed whenever it waits, so
                // the requests still start once it runs; say why they may
                // be late.
                log::error!("blockcache: io_uring submit failed: {e}");
            }
        }
    }

    /// Tells the reaper to finish what it has and exit, and waits for it;
    /// then lets go of the ring and the device.
    fn stop(&mut self) {
        let Some(shared) = self.shared.take() else { return };
        {
            let mut sub = shared.lock();
            if !sub.dead {
                let nop = opcode::Nop::new().build().user_data(STOP);
                // SAFETY: a NOP names no buffer.
                if let Err(e) = unsafe { shared.push(&mut sub, &nop) } {
                    log::error!("blockcache: cannot stop the io_uring reaper: {e}");
                }
            }
        }
        if let Err(e) = shared.submit() {
            log::error!("blockcache: io_uring submit failed: {e}");
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("blockcache: an io_uring reaper thread panicked");
            }
        }
    }
}

impl Drop for UringEngine {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests;
