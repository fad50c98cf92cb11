//! Completions the owner need not be woken for.
//!
//! A read that carries the get that caused it (`engine::Grant`) is answered
//! by the thread that completes it; what is left for the owner is
//! bookkeeping: the slot becomes resident, joins the clean list and opens
//! to clients. Waking the owner for that alone costs a park and a wake per
//! miss. So the completing thread puts such a completion on this queue,
//! which the owner drains whenever it is awake anyway:
//!
//! - before every message it handles, so a request that follows from the
//!   answer (the guard's release, a close after it) always finds the
//!   completion handled first: the completion is queued before the get is
//!   answered;
//! - before it sleeps, when it waits on something a read may end (a get
//!   queued on a block, an op): then it also asks to be woken ([`want`]).
//!
//! The handshake that keeps a wanted completion from being left unseen
//! while the owner sleeps: the owner stores `wanted`, fences, and drains;
//! the completing thread queues, fences, and loads `wanted`, and wakes the
//! owner if it is set. With a `SeqCst` fence between each side's store and
//! load, at least one of them sees the other's store: the owner finds the
//! completion, or the completing thread sees it wanted and wakes it.
//!
//! [`want`]: Quiet::want

use crate::engine::IoRequest;
use crossbeam_channel::{bounded, Receiver, Sender};
#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicBool, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{fence, AtomicBool, Ordering};

/// Room in the queue. When it is full a completion goes to the owner's
/// channel as any other (waking it), so posting never blocks and never
/// allocates.
const CAPACITY: usize = 1024;

/// What became of a completion offered to [`Quiet::post`].
pub(crate) enum Posted {
    /// Queued; the owner will handle it when next awake.
    Quietly,
    /// Queued, and the owner waits for it: wake it.
    WakeOwner,
    /// No room: send it to the owner's channel.
    Full(IoRequest),
}

/// The queue of quiet completions, and whether the owner wants to be woken
/// for them. Each is a read that succeeded: the request alone says it.
pub(crate) struct Quiet {
    tx: Sender<IoRequest>,
    rx: Receiver<IoRequest>,
    wanted: Wanted,
}

impl Quiet {
    pub(crate) fn new() -> Quiet {
        let (tx, rx) = bounded(CAPACITY);
        Quiet {
            tx,
            rx,
            wanted: Wanted::new(),
        }
    }

    /// Completing thread: queue `completion`, a read that succeeded
    /// (module docs).
    pub(crate) fn post(&self, completion: IoRequest) -> Posted {
        match self.tx.try_send(completion) {
            Ok(()) if self.wanted.after_queueing() => Posted::WakeOwner,
            Ok(()) => Posted::Quietly,
            Err(e) => Posted::Full(e.into_inner()),
        }
    }

    /// Owner: the next queued completion.
    pub(crate) fn take(&self) -> Option<IoRequest> {
        self.rx.try_recv().ok()
    }

    /// Owner, before it sleeps: whether a queued completion must wake it.
    /// Drain the queue after this (module docs).
    pub(crate) fn want(&self, wanted: bool) {
        self.wanted.set_before_draining(wanted);
    }
}

/// The two halves of the handshake (module docs), apart from the queue so
/// that the loom model runs exactly this code.
struct Wanted(AtomicBool);

impl Wanted {
    fn new() -> Wanted {
        Wanted(AtomicBool::new(false))
    }

    /// Completing thread, after queueing: must the owner be woken?
    fn after_queueing(&self) -> bool {
        fence(Ordering::SeqCst);
        self.0.load(Ordering::Relaxed)
    }

    /// Owner, before draining the queue.
    fn set_before_draining(&self, wanted: bool) {
        self.0.store(wanted, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }
}

/// `RUSTFLAGS="--cfg loom" cargo test --release --lib loom_tests`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::Wanted;
    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::sync::Arc;
    use loom::thread;

    /// The owner asks to be woken and then drains; a completion is queued
    /// meanwhile (a flag stands for the queue's slot, written `Release` and
    /// read `Acquire` as crossbeam's array channel does). Whatever the
    /// interleaving, the owner finds the completion or the completing
    /// thread wakes it. Fails when either fence is removed.
    #[test]
    fn a_wanted_quiet_completion_is_found_or_wakes_the_owner() {
        loom::model(|| {
            let wanted = Arc::new(Wanted::new());
            let queued = Arc::new(AtomicBool::new(false));
            let (w, q) = (Arc::clone(&wanted), Arc::clone(&queued));
            let completer = thread::spawn(move || {
                q.store(true, Ordering::Release);
                w.after_queueing()
            });
            wanted.set_before_draining(true);
            let found = queued.load(Ordering::Acquire);
            let woken = completer.join().unwrap();
            assert!(
                found || woken,
                "a wanted completion left unseen while the owner sleeps"
            );
        });
    }
}
