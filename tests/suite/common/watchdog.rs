//! Turning a hang into a failure, and watching a device's descriptors.

use std::panic::resume_unwind;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

/// Generous: only a hang (a deadlock, a lost wakeup) gets near it. Not a
/// timing assertion: a healthy run takes a small fraction of it.
pub const HANG: Duration = Duration::from_secs(300);

/// Run `f` on its own thread and return its result; panic naming `what`
/// if it has not finished after [`HANG`], re-raise its panic if it
/// panicked.
pub fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(HANG) {
        Ok(()) => h.join().unwrap_or_else(|p| resume_unwind(p)),
        Err(RecvTimeoutError::Disconnected) => h.join().unwrap_or_else(|p| resume_unwind(p)),
        Err(RecvTimeoutError::Timeout) => panic!("{what}: no progress for {HANG:?} (hang)"),
    }
}

/// How many of this process's descriptors are open on `path`.
pub fn fds_on(path: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l == path)
        .count()
}

/// [`within`] for a loop over seeds: `current` holds the seed being run,
/// and a hang names it.
pub fn within_seeds<T: Send + 'static>(
    what: &str,
    current: &std::sync::Arc<std::sync::atomic::AtomicU64>,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(HANG) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => h.join().unwrap_or_else(|p| resume_unwind(p)),
        Err(RecvTimeoutError::Timeout) => {
            let seed = current.load(std::sync::atomic::Ordering::Relaxed);
            panic!("{what}: seed {seed} made no progress for {HANG:?} (hang); rerun: BLOCKCACHE_SEED={seed}")
        }
    }
}
