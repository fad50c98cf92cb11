//! The reaper: the one thread per device that reads its ring's completions.
//!
//! It blocks in `io_uring_enter` until at least one completion is posted
//! (submitting, on the way, anything pushed and not yet submitted), then
//! reaps every completion waiting, under the submission lock continues or
//! retries what needs it and starts backlogged requests, and completes the
//! finished requests once the lock is released.
//!
//! Its exit, normal or by panic, is [`Drop for Reaper`]: it waits until
//! the kernel has posted every outstanding completion before any request
//! is handed back or dropped, so a block's memory is never reused while
//! the kernel may still write into it. If the wait itself
//! fails, the requests are leaked (each keeps the pool alive), which beats
//! a buffer reused under a live DMA.

use super::{settle, Refused, RingShared, Submit, MAX_RETRIES, STOP};
use crate::device::engine::{IoKind, IoRequest};
use crate::device::runs::whole;
use crate::device::transfer::{ends_at_eof, short_transfer};
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// Start the reaper of `shared`'s ring.
pub(super) fn spawn(shared: Arc<RingShared>, passes: Arc<AtomicU64>) -> io::Result<JoinHandle<()>> {
    let depth = shared.lock().depth;
    thread::Builder::new()
        .name("blockcache-ring".into())
        .spawn(move || {
            let mut reaper = Reaper {
                shared,
                passes,
                reaped: VecDeque::with_capacity(depth + 1),
                done: Vec::with_capacity(depth),
                refused: Vec::new(),
                stopping: false,
            };
            if let Err(e) = reaper.run() {
                let path = reaper.shared.device.path().display();
                log::error!("blockcache: io_uring of {path} failed: {e}");
            }
        })
}

struct Reaper {
    shared: Arc<RingShared>,
    passes: Arc<AtomicU64>,
    /// Completions taken off the queue, not yet acted on.
    reaped: VecDeque<(u64, i32)>,
    /// Requests done, to hand back once the lock is released.
    done: Vec<(IoRequest, io::Result<()>)>,
    /// Requests that could not be pushed again, likewise.
    refused: Refused,
    /// The owner asked us to stop: exit once nothing is in the kernel.
    stopping: bool,
}

impl Reaper {
    fn run(&mut self) -> io::Result<()> {
        loop {
            self.passes.fetch_add(1, Ordering::Relaxed);
            if self.stopping {
                let sub = self.shared.lock();
                if sub.in_kernel == 0 && sub.backlog.is_empty() {
                    return Ok(());
                }
            }
            // SAFETY: `completion_shared` needs no other completion queue
            // handle alive. Only the reaper takes one, there is one reaper
            // per ring (`UringEngine::start` spawns it once), and each
            // handle it takes is dropped before it takes the next (this one
            // at the end of the statement).
            if unsafe { self.shared.ring.completion_shared() }.is_empty() {
                settle(self.shared.ring.submit_and_wait(1))?;
            }
            self.reap(true);
        }
    }

    /// Act on every completion waiting. `live`: the thread may continue or
    /// retry transfers and start backlogged requests; false while its exit
    /// winds down.
    fn reap(&mut self, live: bool) {
        let waiting = self.reaped.len();
        {
            // SAFETY: as in `run`: the one reaper of this ring is the only
            // taker of a completion queue handle, and this one is dropped at
            // the end of the block.
            let cq = unsafe { self.shared.ring.completion_shared() };
            self.reaped.extend(cq.map(|cqe| (cqe.user_data(), cqe.result())));
        }
        let new = self.reaped.len() - waiting;
        let shared = Arc::clone(&self.shared);
        let pushed = {
            let mut sub = shared.lock();
            // Counted off first: whatever happens below, these CQEs are in.
            sub.in_kernel -= new;
            let before = sub.in_kernel;
            // One at a time off the front: if acting on one panics, the
            // rest stay for the exit to act on.
            while let Some((user_data, res)) = self.reaped.pop_front() {
                if user_data == STOP {
                    self.stopping = true;
                    continue;
                }
                let key = user_data as usize;
                match finish(&shared, &mut sub, key, res, live, &mut self.refused) {
                    Outcome::Pending => {}
                    Outcome::Done(result) => {
                        let mut reqs = sub.inflight.remove(key).into_requests();
                        let first = reqs.next().expect("an entry has a request");
                        self.done.push((first, result));
                        // The rest of a run, which is done only when it
                        // moved every block.
                        self.done.extend(reqs.map(|r| (r, Ok(()))));
                    }
                    Outcome::Split { moved, error } => {
                        let run = sub.inflight.remove(key).into_requests().collect();
                        self.split(&mut sub, run, moved, error, live);
                    }
                }
            }
            if live {
                shared.start_backlog(&mut sub, &mut self.refused);
            }
            sub.in_kernel > before
        };
        self.hand_back();
        if pushed {
            if let Err(e) = shared.submit() {
                // Submitted by our next wait, which enters the kernel too.
                log::error!("blockcache: io_uring submit failed: {e}");
            }
        }
    }

    /// A run ended having moved `moved` bytes, short of its length: its
    /// requests whose blocks were moved whole are done; the rest start
    /// again one by one at the front of the backlog (or, while the thread
    /// winds down, fail with `error`, the run's errno if it had one).
    fn split(
        &mut self,
        sub: &mut Submit,
        mut run: Vec<IoRequest>,
        moved: usize,
        error: Option<i32>,
        live: bool,
    ) {
        let rest = run.split_off(whole(&run, moved));
        self.done.extend(run.into_iter().map(|req| (req, Ok(()))));
        if live {
            for req in rest.into_iter().rev() {
                sub.backlog.push_front(req);
            }
            return;
        }
        for req in rest {
            let e = match error {
                Some(errno) => io::Error::from_raw_os_error(errno),
                None => io::Error::other("ring thread stopped mid-transfer"),
            };
            self.done.push((req, Err(e)));
        }
    }

    /// Complete what `reap` finished, outside the submission lock.
    fn hand_back(&mut self) {
        for (req, result) in self.done.drain(..) {
            self.shared.done.complete(req, result);
        }
        for (req, e) in self.refused.drain(..) {
            self.shared.done.complete(req, Err(e));
        }
    }
}

/// How a CQE leaves its entry.
enum Outcome {
    /// Continued or retried: its next SQE is pushed.
    Pending,
    /// One request, ended (or a run, moved whole).
    Done(io::Result<()>),
    /// A run that moved only `moved` bytes (see [`Reaper::split`]).
    Split { moved: usize, error: Option<i32> },
}

/// Act on the CQE of `inflight[key]`: continue it or say how it ended.
fn finish(
    shared: &RingShared,
    sub: &mut Submit,
    key: usize,
    res: i32,
    live: bool,
    refused: &mut Refused,
) -> Outcome {
    let Some(f) = sub.inflight.get_mut(key) else {
        log::error!("blockcache: io_uring CQE for unknown request {key}");
        return Outcome::Pending;
    };
    #[cfg(test)]
    assert!(
        f.req.tag != super::tests::PANIC_TAG
            && f.run
                .as_ref()
                .is_none_or(|r| r.rest.iter().all(|q| q.tag != super::tests::PANIC_TAG)),
        "test hook: panic with I/O in flight"
    );
    let (kind, offset) = (f.req.kind, f.req.offset);
    let len = f.len();
    #[cfg(test)]
    let res = match &f.run {
        Some(r) if r.rest.iter().any(|q| q.tag == super::tests::EIO_RUN_TAG) => -libc::EIO,
        _ => res,
    };
    if res < 0 {
        let transient = res == -libc::EINTR || res == -libc::EAGAIN;
        if live && transient && f.retries < MAX_RETRIES {
            f.retries += 1;
            shared.push_io(sub, key, refused);
            return Outcome::Pending;
        }
        if f.run.is_some() {
            return Outcome::Split {
                moved: 0,
                error: Some(-res),
            };
        }
        return Outcome::Done(Err(io::Error::from_raw_os_error(-res)));
    }
    if kind == IoKind::Fsync {
        return Outcome::Done(Ok(()));
    }
    if f.run.is_some() {
        // A run is never continued: what it did not move whole is started
        // again block by block, where short transfers and EOF are handled.
        return match res as usize {
            moved if moved >= len => Outcome::Done(Ok(())),
            moved => Outcome::Split { moved, error: None },
        };
    }
    f.done += res as usize;
    if f.done >= len {
        Outcome::Done(Ok(()))
    } else if !live {
        Outcome::Done(Err(io::Error::other("ring thread stopped mid-transfer")))
    } else if res == 0 || ends_at_eof(&shared.device, kind, f.done) {
        Outcome::Done(Err(short_transfer(kind, offset, f.done, len)))
    } else {
        shared.push_io(sub, key, refused);
        Outcome::Pending
    }
}

impl Drop for Reaper {
    /// Runs on normal exit and when the thread unwinds from a panic: no
    /// request is handed back while the kernel may still use its block.
    fn drop(&mut self) {
        // What a panic left half done: completions reaped and not acted on
        // (their CQEs are in), requests finished and not handed back.
        self.reap(false);
        let leftovers = loop {
            {
                let mut sub = self.shared.lock();
                if sub.in_kernel == 0 {
                    // Checked and marked under one lock: the owner pushes
                    // nothing more once it sees `dead`.
                    sub.dead = true;
                    let inflight = std::mem::take(&mut sub.inflight);
                    let backlog = std::mem::take(&mut sub.backlog);
                    break inflight
                        .into_iter()
                        .flat_map(|(_, f)| f.into_requests())
                        .chain(backlog)
                        .collect::<Vec<_>>();
                }
            }
            if let Err(e) = settle(self.shared.ring.submit_and_wait(1)) {
                // We cannot learn when the kernel is done, so the memory
                // must never be freed: leak the requests (each holds the
                // pool alive). Their owners never hear back.
                log::error!("blockcache: io_uring wait failed ({e}); leaking buffers");
                let mut sub = self.shared.lock();
                sub.dead = true;
                std::mem::forget(std::mem::take(&mut sub.inflight));
                break std::mem::take(&mut sub.backlog).into_iter().collect();
            }
            self.reap(false);
        };
        // Left in flight only if a panic struck between reaping a CQE and
        // acting on it; the kernel is done with every one of them.
        for req in leftovers {
            let e = io::Error::other("blockcache ring thread stopped");
            self.shared.done.complete(req, Err(e));
        }
    }
}
