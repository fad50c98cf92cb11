//! Going idle without allocating.
//!
//! A blocking receive on a crossbeam channel allocates twice the first
//! time it has to wait: the waiting thread's context (a thread-local made
//! on the thread's first wait of any kind) and room in the channel's list
//! of waiting receivers (a `Vec`, which keeps its capacity). When that
//! first wait comes depends on timing: a thread that always finds work
//! queued never waits. The cache's threads that wait on a channel (the
//! owner, the sync engine's workers) therefore make both allocations when
//! they start, before anyone can send to them, so that going idle later —
//! say, while clients hit the cache, which must allocate nothing on any
//! thread — allocates nothing. (The io_uring engine's thread waits in the
//! kernel.)

use crossbeam_channel::{Receiver, Select};
use std::time::Instant;

/// Make, without waiting, the allocations that `waiters` threads blocked
/// at once in receiving from `rx` would make on this thread and on `rx`:
/// this thread's wait context, and room for `waiters` entries in `rx`'s
/// list of waiting receivers.
///
/// `rx` must be empty and have a sender, which only its creator can know
/// (nobody else may send on it yet). A select of `waiters` receives on
/// `rx` with a deadline already past then registers every receive, finds
/// the deadline gone and unregisters them, without blocking.
pub(crate) fn prepare_to_wait<T>(rx: &Receiver<T>, waiters: usize) {
    let mut select = Select::new();
    for _ in 0..waiters {
        select.recv(rx);
    }
    if let Ok(op) = select.select_deadline(Instant::now()) {
        // A selected operation must be completed before it is dropped.
        let _ = op.recv(rx);
        unreachable!("prepare_to_wait: the channel had a message or no sender");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::{bounded, unbounded};

    #[test]
    fn returns_at_once_and_leaves_the_channel_working() {
        let (tx, rx) = bounded::<u32>(1);
        prepare_to_wait(&rx, 1);
        let (utx, urx) = unbounded::<u32>();
        prepare_to_wait(&urx, 6);
        tx.send(1).unwrap();
        utx.send(2).unwrap();
        assert_eq!((rx.recv(), urx.recv()), (Ok(1), Ok(2)));
        assert!(rx.is_empty() && urx.is_empty());
    }
}
