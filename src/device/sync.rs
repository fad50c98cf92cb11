//! The synchronous engine: a few worker threads doing `pread`, `pwrite` and
//! `fdatasync`. It stands in where io_uring cannot be set up (sysctl
//! `kernel.io_uring_disabled`, seccomp, old kernels) and is always
//! available, so tests can select it too. Adjacent blocks submitted in
//! one batch go as one `preadv`/`pwritev` (see [`runs`](super::runs)).

use super::engine::{Completer, Engine, EngineFactory, IoKind, IoRequest};
use super::runs::{split_into_runs, whole, Job};
use super::transfer::{ends_at_eof, no_buffer, short_transfer};
use super::DeviceFile;
use crossbeam_channel::{Receiver, Sender};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// More workers than this only contend on one device queue; a block cache
/// gains its parallelism from io_uring, not from this fallback.
const MAX_WORKERS: u32 = 4;

/// Makes a [`SyncEngine`]: `min(depth, 4)` worker threads per device.
pub(crate) struct SyncFactory {
    /// The per-device queue depth; bounds the number of workers.
    pub(crate) depth: u32,
}

impl EngineFactory for SyncFactory {
    fn start(&self, device: Arc<DeviceFile>, done: Completer) -> io::Result<Box<dyn Engine>> {
        Ok(Box::new(SyncEngine::start(self.depth, device, done)?))
    }
}

/// Worker threads sharing one job channel. The channel is the queue:
/// `submit` never waits for a worker.
pub(crate) struct SyncEngine {
    tx: Option<Sender<Job>>,
    /// Kept so jobs a dead worker pool never took can still be failed
    /// rather than silently dropped.
    rx: Receiver<Job>,
    /// Submitted since the last unplug, to go as runs.
    plugged: Vec<IoRequest>,
    workers: Vec<JoinHandle<()>>,
    done: Completer,
}

impl SyncEngine {
    fn start(depth: u32, device: Arc<DeviceFile>, done: Completer) -> io::Result<SyncEngine> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let mut engine = SyncEngine {
            tx: Some(tx),
            rx,
            plugged: Vec::new(),
            workers: Vec::new(),
            done,
        };
        let workers = depth.clamp(1, MAX_WORKERS) as usize;
        // What the workers' first waits for a request allocate is made
        // before `start` returns, while nobody can submit yet (see `idle`):
        // here, room in the channel for every worker to wait at once; on
        // each worker's thread, its wait context. `start` returns once
        // every worker has made its own, so their start-up (std's part
        // too) is over by then.
        crate::idle::prepare_to_wait(&engine.rx, workers);
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(workers);
        for _ in 0..workers {
            let (rx, done, device) = (engine.rx.clone(), engine.done.clone(), Arc::clone(&device));
            let ready = ready_tx.clone();
            let spawned = thread::Builder::new()
                .name("blockcache-sync".into())
                .spawn(move || {
                    crate::idle::prepare_to_wait(&rx, 1);
                    let _ = ready.send(());
                    for job in &rx {
                        match job {
                            Job::One(mut req) => {
                                let result = perform(&device, &mut req);
                                done.complete(req, result);
                            }
                            Job::Run(run) => perform_run(&device, run, &done),
                        }
                    }
                });
            // On error, dropping `engine` stops the workers already running.
            engine.workers.push(spawned?);
        }
        drop(ready_tx);
        // Ends early only if a worker died before it was ready (a panic);
        // the others serve on.
        for _ in 0..workers {
            if ready_rx.recv().is_err() {
                break;
            }
        }
        Ok(engine)
    }
}

impl Engine for SyncEngine {
    /// Takes `req`; it goes to the workers at the next `unplug`, in a run
    /// with the adjacent blocks submitted with it.
    fn submit(&mut self, req: IoRequest) {
        match &self.tx {
            Some(_) => self.plugged.push(req),
            None => fail(&self.done, req, "engine is stopped"),
        }
    }

    fn unplug(&mut self) {
        let Some(tx) = &self.tx else { return };
        let mut batch = std::mem::take(&mut self.plugged);
        // The channel is unbounded and we hold a receiver, so a send
        // cannot fail.
        split_into_runs(&mut batch, |job| drop(tx.send(job)));
        self.plugged = batch;
    }

    fn stop(&mut self) {
        // Called with nothing in flight; anything plugged still goes.
        self.unplug();
        // A worker's receive loop ends once the channel is empty and this,
        // the only sender, is gone: everything submitted is done first.
        self.tx = None;
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                log::error!("a blockcache sync worker panicked");
            }
        }
        // Only non-empty if every worker died (a panic).
        fail_all(&self.rx, &self.done, "blockcache sync workers have exited");
    }
}

impl Drop for SyncEngine {
    fn drop(&mut self) {
        if self.tx.is_some() || !self.workers.is_empty() {
            self.stop();
        }
    }
}

/// Do one request to completion on this thread.
fn perform(device: &DeviceFile, req: &mut IoRequest) -> io::Result<()> {
    let (kind, offset) = (req.kind(), req.offset());
    if kind == IoKind::Fsync {
        return retry_eintr(|| device.file().sync_data());
    }
    let Some(buf) = req.buffer_mut() else {
        return Err(no_buffer());
    };
    let len = buf.len();
    let file = device.file();
    let mut done = 0;
    while done < len {
        let at = offset + done as u64;
        let n = match kind {
            IoKind::Read => retry_eintr(|| file.read_at(&mut buf[done..], at))?,
            _ => retry_eintr(|| file.write_at(&buf[done..], at))?,
        };
        done += n;
        if done < len && (n == 0 || ends_at_eof(device, kind, done)) {
            return Err(short_transfer(kind, offset, done, len));
        }
    }
    Ok(())
}

/// Move a run of adjacent blocks with one `preadv`/`pwritev`, and complete
/// each request: those it moved whole with success, the rest done again
/// one by one (where short transfers, EOF and errors are handled per
/// block).
fn perform_run(device: &DeviceFile, mut run: Vec<IoRequest>, done: &Completer) {
    let kind = run[0].kind();
    let offset = run[0].offset() as libc::off_t;
    let fd = device.file().as_raw_fd();
    let moved = retry_eintr(|| {
        // `as c_int` cannot truncate: a run has at most runs::MAX_RUN blocks.
        let rc = if kind == IoKind::Read {
            let mut iov: Vec<IoSliceMut<'_>> = run
                .iter_mut()
                .filter_map(|r| r.buffer_mut().map(IoSliceMut::new))
                .collect();
            // SAFETY: `IoSliceMut` has the layout of `iovec` on Unix; each
            // of the `iov.len()` points into one request's block, borrowed
            // mutably (and so exclusively) from the run for the call.
            unsafe { libc::preadv(fd, iov.as_mut_ptr().cast(), iov.len() as libc::c_int, offset) }
        } else {
            let iov: Vec<IoSlice<'_>> = run.iter().filter_map(|r| r.buffer().map(IoSlice::new)).collect();
            // SAFETY: `IoSlice` has the layout of `iovec` on Unix; each of
            // the `iov.len()` points into one request's block, borrowed
            // from the run for the call, and is only read.
            unsafe { libc::pwritev(fd, iov.as_ptr().cast(), iov.len() as libc::c_int, offset) }
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc as usize)
        }
    })
    .unwrap_or(0);
    let ok = whole(&run, moved);
    for (i, mut req) in run.into_iter().enumerate() {
        let result = if i < ok { Ok(()) } else { perform(device, &mut req) };
        done.complete(req, result);
    }
}

/// Complete every request still queued in `rx` with an error saying `why`:
/// those an engine's threads will never take.
fn fail_all(rx: &Receiver<Job>, done: &Completer, why: &str) {
    for req in rx.try_iter().flat_map(Job::into_requests) {
        fail(done, req, why);
    }
}

/// Complete `req` with an error saying `why`.
fn fail(done: &Completer, req: IoRequest, why: &str) {
    done.complete(req, Err(io::Error::other(why.to_owned())));
}

fn retry_eintr<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::conformance::{self, completer, request};
    use crate::shared::pool::Pool;

    #[test]
    fn sync_engine_conformance() {
        conformance::run_everywhere(|depth| Box::new(SyncFactory { depth }));
    }

    #[test]
    fn dropping_the_engine_drains_it() {
        let (_tmp, dev) = conformance::device_file(&std::env::temp_dir(), 8, 0);
        let pool = Pool::new(conformance::BS, 8).unwrap();
        let (done, rx) = completer();
        let mut engine = SyncFactory { depth: 2 }.start(dev, done).unwrap();
        for tag in 0..8 {
            engine.submit(request(&pool, tag, IoKind::Read, tag));
        }
        drop(engine);
        assert_eq!(rx.try_iter().count(), 8);
    }

    #[test]
    fn submit_after_stop_fails_the_request() {
        let (_tmp, dev) = conformance::device_file(&std::env::temp_dir(), 1, 0);
        let pool = Pool::new(conformance::BS, 1).unwrap();
        let (done, rx) = completer();
        let mut engine = SyncFactory { depth: 1 }.start(dev, done).unwrap();
        engine.stop();
        engine.submit(request(&pool, 0, IoKind::Read, 0));
        let (_, result) = rx.try_recv().unwrap();
        assert!(result.is_err());
    }
}
