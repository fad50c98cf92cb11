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

use super::Msg;
use crossbeam_channel::{bounded, Receiver, Sender};
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
    Full(Msg),
}

/// The queue of quiet completions, and whether the owner wants to be woken
/// for them.
pub(crate) struct Quiet {
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    wanted: AtomicBool,
}

impl Quiet {
    pub(crate) fn new() -> Quiet {
        let (tx, rx) = bounded(CAPACITY);
        Quiet {
            tx,
            rx,
            wanted: AtomicBool::new(false),
        }
    }

    /// Completing thread: queue `completion` (module docs).
    pub(crate) fn post(&self, completion: Msg) -> Posted {
        match self.tx.try_send(completion) {
            Ok(()) => {
                fence(Ordering::SeqCst);
                if self.wanted.load(Ordering::Relaxed) {
                    Posted::WakeOwner
                } else {
                    Posted::Quietly
                }
            }
            Err(e) => Posted::Full(e.into_inner()),
        }
    }

    /// Owner: the next queued completion.
    pub(crate) fn take(&self) -> Option<Msg> {
        self.rx.try_recv().ok()
    }

    /// Owner, before it sleeps: whether a queued completion must wake it.
    /// Drain the queue after this (module docs).
    pub(crate) fn want(&self, wanted: bool) {
        self.wanted.store(wanted, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }
}
