//! An owner thread after a panic: it decides nothing more, and answers.
//!
//! A panic on the owner thread is a bug, in the cache or in a custom
//! engine, and the state it leaves behind cannot be trusted to assign
//! slots or write blocks back. But clients still wait on replies, guards
//! still hold blocks of the pool, and handles still send requests. If the
//! thread simply died, requests already queued in its channel would never
//! be answered (a queued message is dropped only when the whole channel
//! is), and the cache would keep serving hits from a pool nobody manages.
//!
//! So the thread stays and keeps these promises until the last handle and
//! guard are gone:
//! - every slot is closed, so no client takes a block without asking, and
//!   marked to wake us, so the last holder of each tells us when it leaves;
//! - every request is answered `Closed` (dropping its [`Replier`](crate::shared::reply::Replier) does
//!   that), and so is every get or op that was waiting;
//! - a guard's release is done as asked and answered as in normal life
//!   (`Stopping`), so a guard's drop never waits for ever;
//! - it exits, as a healthy owner does, once no handle and no holder is
//!   left; only then does it let go of what guards point into.
//!
//! Dirty blocks are lost: nothing writes them back.

use super::{Msg, Owner, WaitQueue, INLINE};
use crate::shared::reply::Answer;
use std::any::Any;

impl Owner {
    /// Serve as a dead owner until no handle and no guard is left, then
    /// exit (module docs).
    pub(super) fn answer_closed(mut self) {
        for slot in 0..self.shared.slots.len() as u32 {
            self.shared.close_and_wake(slot);
        }
        // Everyone waiting hears `Closed` as their replier is dropped.
        let _ = INLINE.try_with(|q| q.borrow_mut().as_mut().map(|(_, q)| q.clear()));
        self.waiters.clear();
        self.ops.clear();
        self.syncs.clear();
        self.slot_queue = WaitQueue::default();
        for slot in self.slots.iter_mut() {
            slot.waiters = WaitQueue::default();
        }

        while !self.handles_gone || self.any_held() {
            // INLINE holds a sender of this channel: `recv` cannot fail.
            let Ok(msg) = self.rx.recv() else { break };
            match msg {
                Msg::Release {
                    slot,
                    write,
                    dirtied,
                    reply,
                } => {
                    self.let_go(slot, write, dirtied);
                    let exiting = self.handles_gone && !self.any_held();
                    reply.send(Ok(Answer::Stopping(exiting)));
                }
                Msg::Stop { reply } => {
                    self.handles_gone = true;
                    reply.send(Ok(Answer::Stopping(!self.any_held())));
                }
                // A request's replier answers `Closed`; a completion's
                // buffer token goes back to the pool.
                other => drop(other),
            }
        }

        // No sender can reach us from here on: close the channel before
        // stopping the engines, whose threads may still be completing I/O
        // into it and must not wait on a full channel nobody drains.
        let _ = INLINE.try_with(|q| q.borrow_mut().take());
        let Owner {
            rx,
            devices,
            mut keepalive,
            ..
        } = self;
        drop(rx);
        drop(devices);
        // No handle and no holder is left (the loop's condition): no guard
        // can use what this reference kept alive.
        // SAFETY: taken once, here, and never used again.
        drop(unsafe { std::mem::ManuallyDrop::take(&mut keepalive) });
    }
}

/// The text of a panic's payload, as the default hook would print it.
pub(super) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a payload that is not a string)")
}
