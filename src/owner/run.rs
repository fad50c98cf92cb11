//! The owner's event loop: requests and completions from its channel,
//! completions queued quietly (`shared::quiet`) or inline (`deliver`), bounded
//! steps of long ops, and what happens when the owner itself panics
//! (`dead`).

use super::device_slots::Chain;
use super::{dead, Device, Msg, OpKind, Owner, INLINE};
use crate::shared::reply::Answer;
use crossbeam_channel::Sender;
use std::collections::VecDeque;

impl Owner {
    pub(super) fn run(mut self, tx: Sender<Msg>) {
        INLINE.with(|q| *q.borrow_mut() = Some((tx, VecDeque::new())));
        // A panic here is a bug (ours, or a custom engine's): the state it
        // leaves cannot be trusted to make decisions, but clients still
        // wait for answers and guards still point into the pool. So the
        // thread stays, answering `Closed` (see `dead`).
        if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.serve())) {
            log::error!(
                "blockcache: the owner thread panicked: {}; the cache answers Closed from now on",
                dead::panic_message(&*payload)
            );
            return self.answer_closed();
        }
        self.stop_engines();
        // No slot has a holder now (`may_exit`): no guard is left to use
        // what this reference kept alive.
        // SAFETY: taken once, here, and never used again.
        let keepalive = unsafe { std::mem::ManuallyDrop::take(&mut self.keepalive) };
        drop(keepalive);
    }

    /// The event loop, until `may_exit` lets it end.
    fn serve(&mut self) {
        loop {
            let msg = match self.rx.try_recv() {
                Ok(msg) => msg,
                Err(_) => {
                    // Everything queued is handled. One bounded step of a
                    // long pass, if an op has one under way: requests that
                    // came meanwhile wait for one step, not the whole pass.
                    if let Some(id) = self.continuing.pop_front() {
                        self.continue_op(id);
                        if !self.slot_queue.is_empty() {
                            self.serve_slot_queue();
                        }
                        self.drain_inline();
                        self.unplug();
                        continue;
                    }
                    // Unplug the engines (one kernel entry per batch, not
                    // per request), then sleep.
                    self.unplug();
                    if self.exit {
                        break;
                    }
                    if self.before_sleep() {
                        continue;
                    }
                    match self.rx.recv() {
                        Ok(msg) => msg,
                        Err(_) => break,
                    }
                }
            };
            self.handle_all(msg);
        }
    }

    /// Say whether a quiet completion must wake us: when a get or an op
    /// waits (for anything: a read's end among it). Then take those that
    /// came meanwhile; `true` if there were any (look again before
    /// sleeping). See `shared::quiet` for why none is left unseen.
    fn before_sleep(&mut self) -> bool {
        let wanted = !self.waiters.is_empty() || !self.ops.is_empty();
        self.shared.quiet.want(wanted);
        wanted && self.handle_quiet()
    }

    /// Handle every quiet completion queued; `true` if there was one.
    fn handle_quiet(&mut self) -> bool {
        let mut any = false;
        while let Some(req) = self.shared.quiet.take() {
            any = true;
            self.handle(Msg::Completed(req, Ok(())));
            self.drain_inline();
        }
        any
    }

    /// Handle `msg`, after every quiet completion queued before it (a
    /// request that follows from an answered read finds the read done),
    /// and then every completion an engine delivered inline meanwhile.
    fn handle_all(&mut self, msg: Msg) {
        self.handle_quiet();
        self.handle(msg);
        self.drain_inline();
    }

    /// Handle the completions engines delivered inline (see [`deliver`](super::deliver)).
    fn drain_inline(&mut self) {
        while let Some(msg) = INLINE.with(|q| q.borrow_mut().as_mut().and_then(|(_, q)| q.pop_front())) {
            self.handle(msg);
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Completed(req, result) => self.completed(req, result),
            Msg::Get {
                dev,
                block,
                mode,
                wait,
                reply,
            } => self.get(dev, block, mode, wait, reply),
            Msg::Release {
                slot,
                write,
                dirtied,
                reply,
            } => {
                self.let_go(slot, write, dirtied);
                self.released(slot);
                if self.handles_gone && !self.any_held() {
                    // The last guard after the last handle: flush, wait out
                    // I/O, exit, and only then answer it.
                    self.start_op(OpKind::Final, Some(reply));
                } else {
                    reply.send(Ok(Answer::Stopping(false)));
                }
            }
            Msg::Prefetch { dev, block } => self.prefetch(dev, block),
            // Only wakes us: the quiet queue was drained before this.
            Msg::Wake => {}
            Msg::Open {
                dev,
                file,
                engine,
                blocks,
                reply,
            } => {
                self.devices.insert(
                    dev,
                    Device {
                        file,
                        engine,
                        blocks,
                        in_flight: 0,
                        unsynced: false,
                        closing: false,
                        quiesced: false,
                        plugged: false,
                        slots: Chain::default(),
                        readahead: Default::default(),
                    },
                );
                reply.send(Ok(Answer::Unit));
            }
            Msg::DeviceBlocks { dev, reply } => {
                reply.send(self.open_device(dev).map(|d| Answer::Blocks(d.blocks)));
            }
            Msg::Op { kind, reply } => self.start_op(kind, Some(reply)),
            Msg::Stop { reply } => {
                self.handles_gone = true;
                // From now on the last holder of every slot tells us when it
                // leaves (armed before the final op looks at holders).
                for slot in 0..self.shared.slots.len() as u32 {
                    self.shared.wake_on_release(slot);
                }
                self.start_op(OpKind::Final, Some(reply));
            }
        }
        if !self.slot_queue.is_empty() {
            self.serve_slot_queue();
        }
    }
}
