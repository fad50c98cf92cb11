//! The owner thread: the one place cache decisions are made.
//!
//! A single thread assigns slots, reads, writes back, evicts, wakes
//! waiters and keeps the lists (see [`lists`]), the waiters and the device
//! table, with each device's slots ([`device_slots`]) and the ops waiting
//! for each slot's I/O ([`op_waits`]). Clients and engines reach it through one crossbeam channel of
//! [`Msg`], and it answers each request through the [`Replier`] the
//! request carried.
//!
//! Two things are shared with clients, so that a hit needs no message
//! (see [`shared`](crate::shared)): the index (written only here, read by
//! clients: [`index`](crate::shared::index)) and one atomic word per slot
//! that counts its holders ([`slot_state`](crate::shared::slot_state),
//! where the protocol and its proof live). Everything here that depends on whether
//! a block is held reads that word, and everything that must exclude
//! holders — I/O, eviction, invalidation — first closes it by CAS.
//!
//! # Who may wait on whom
//!
//! Deadlock freedom rests on these rules, each enforced where it is noted:
//!
//! 1. **The owner never blocks except in `recv`.** Replies go to a
//!    per-request channel with room for exactly that reply (`try_send`);
//!    submits go to engines, which queue rather than block
//!    ([`Engine::submit`]). The io_uring
//!    engine's submission lock, which the owner shares with the device's
//!    reaper thread, is held only for pushes and bookkeeping, never across
//!    a send or a wait. So every message sent to the owner is eventually
//!    handled.
//! 2. **Engines never wait on the owner** except to hand back a completion
//!    on the owner's channel, which the owner drains (rule 1).
//! 3. **The owner stops an engine only when that device has no I/O in
//!    flight** (`close` drains first, exit waits for `in_flight == 0`), so
//!    `Engine::stop` never waits for a completion the owner would have to
//!    receive.
//! 4. **Clients wait only for the owner** (the fast path never waits: a
//!    failed CAS falls back to asking), and the owner makes a client
//!    wait only for (a) a guard held by some client, (b) an I/O in flight,
//!    or (c) a free slot while some slot is held, dirty or in flight.
//!    (b) always ends — an op that still has writebacks to start keeps
//!    one of its I/Os in flight, whose completion starts the next
//!    ([`ops`]) — and (a) and (c) end when guards are dropped. A thread
//!    that waits for a block while itself holding a conflicting guard (or
//!    holding every block) waits forever, exactly as with a `RwLock`:
//!    use `try_read`/`try_write` where that can happen.
//! 5. **A get never waits for a slot that cannot come**: when every unheld
//!    block is dirty and its writeback failed and nothing is in flight, it
//!    fails with that error ([`get`] `no_slot`).
//!
//! # Slot states
//!
//! A slot is `Free`, `Reading`, `Writing` or `Resident` (clean or dirty).
//! Guards exist only on `Resident` slots; I/O only on `Reading`/`Writing`
//! slots. Hence a held block is never written back or evicted, and a
//! buffer the kernel is filling is never visible to a guard.

mod completions;
mod dead;
mod issue;
mod run;
mod waiters;
pub(crate) use issue::SyncWait;
pub(crate) use waiters::{QueueId, WaitQueue, Waiter};
pub(crate) mod device_slots;
pub(crate) mod get;
pub(crate) mod lists;
pub(crate) mod op_waits;
pub(crate) mod ops;
pub(crate) mod readahead;

use crate::device::engine::ToOwner;
use crate::device::DeviceFile;
use crate::engine::{Engine, IoRequest};
use crate::error::{Error, IoFailure};
use crate::shared::pool::Pool;
use crate::shared::reply::Replier;
use crate::shared::slot_state::{holders, CLOSED};
use crate::shared::{table, Shared};
use crate::stats::Counters;
use crate::DeviceId;
use crossbeam_channel::{Receiver, Sender};
use device_slots::{Chain, DeviceSlots};
use lists::{List, Lists};
use op_waits::OpWaits;
use rustc_hash::FxHashMap;
use slab::Slab;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;

/// How a client wants a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Read,
    Write,
    /// Write access to a zero-filled block; the disk is never read.
    Zeroed,
}

/// Operations that act on many blocks and may wait for I/O.
#[derive(Clone, Copy, Debug)]
pub(crate) enum OpKind {
    Flush(Option<DeviceId>),
    Invalidate(DeviceId, Option<u64>),
    Close(DeviceId),
    Abort(DeviceId),
    /// Flush everything; report lost blocks as `Error::Unwritten`.
    Shutdown,
    /// Flush everything after the last handle is gone; then maybe exit.
    Final,
}

/// Everything the owner thread receives.
pub(crate) enum Msg {
    /// An engine finished an I/O.
    Completed(IoRequest, Result<(), IoFailure>),
    Get {
        dev: DeviceId,
        block: u64,
        mode: Mode,
        wait: bool,
        reply: Replier,
    },
    /// A guard asks the owner to let go of its share for it (see
    /// `SlotState::try_release_quietly`): it made a clean block dirty, or
    /// it is the last holder of a slot the owner wants to hear about. It
    /// still holds the share while it asks, and waits for the answer, so
    /// the last guard's drop returns after the final flush.
    Release {
        slot: u32,
        write: bool,
        dirtied: bool,
        reply: Replier,
    },
    Prefetch {
        dev: DeviceId,
        block: u64,
    },
    Open {
        dev: DeviceId,
        file: Arc<DeviceFile>,
        engine: Box<dyn Engine>,
        blocks: u64,
        reply: Replier,
    },
    DeviceBlocks {
        dev: DeviceId,
        reply: Replier,
    },
    Op {
        kind: OpKind,
        reply: Replier,
    },
    /// The last handle is gone: flush, and exit once no guard is left.
    Stop {
        reply: Replier,
    },
    /// A completion the owner waits for is on the quiet queue.
    Wake,
}

/// `Free` is zero: a new slot record is all zero bytes (`Zeroed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum State {
    Free = 0,
    Reading,
    Writing,
    Resident,
}

/// The owner's private view of a slot. Who holds it, and whether it is
/// dirty, live in the shared atomic word (`Shared::slots`).
///
/// Why the last writeback of a slot failed is not here but in
/// `Owner::errors` (rare, and a record that needs no drop is what lets
/// the table start as zero pages).
pub(crate) struct Slot {
    pub(crate) key: (DeviceId, u64),
    pub(crate) state: State,
    pub(crate) waiters: WaitQueue,
    /// The read in flight carries the get that caused it (`Grant`): the
    /// block is awaited though no waiter is queued on the slot.
    pub(crate) read_awaited: bool,
}

// SAFETY: every field is valid as zero bytes and none needs a drop: the
// key's integers (device 0 is no device), `State::Free` (discriminant 0
// of a `repr(u8)` enum), an empty `WaitQueue` (itself `Zeroed`) and
// `false`. Zero is the record of a slot that holds nothing.
unsafe impl table::Zeroed for Slot {}

pub(crate) struct Device {
    pub(crate) file: Arc<DeviceFile>,
    pub(crate) engine: Box<dyn Engine>,
    pub(crate) blocks: u64,
    /// I/Os submitted and not completed (reads, writes, syncs).
    pub(crate) in_flight: u32,
    /// A write completed since the last fsync was issued.
    pub(crate) unsynced: bool,
    /// `close` has begun: no new gets or prefetches.
    pub(crate) closing: bool,
    /// A close or abort is under way: the owner keeps this device's blocks
    /// closed to clients (`reopen` skips them) until it ends, so that no
    /// client takes a block between the op's writeback and its drop.
    pub(crate) quiesced: bool,
    /// Submitted since the last unplug.
    pub(crate) plugged: bool,
    /// The slots holding its blocks (see [`device_slots`]).
    pub(crate) slots: Chain,
    /// Its runs of in-order reads (see [`readahead`]).
    pub(crate) readahead: readahead::Readahead,
}

pub(crate) struct Owner {
    rx: Receiver<Msg>,
    pub(crate) pool: Arc<Pool>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) depth: u32,
    /// Most blocks read ahead of a run at once (0: no readahead).
    pub(crate) readahead: u32,
    pub(crate) slots: table::ZeroedTable<Slot>,
    /// Why the last writeback failed, for each slot on `Errored`.
    pub(crate) errors: FxHashMap<u32, IoFailure>,
    pub(crate) lists: Lists,
    pub(crate) shared: Arc<Shared>,
    pub(crate) waiters: Slab<Waiter>,
    /// Gets waiting for a slot to become free or clean.
    pub(crate) slot_queue: WaitQueue,
    pub(crate) devices: FxHashMap<DeviceId, Device>,
    pub(crate) ops: Slab<ops::Op>,
    /// For each slot with I/O in flight, the ops waiting for it.
    pub(crate) op_waits: OpWaits,
    /// For each device, the slots holding its blocks.
    pub(crate) dev_slots: DeviceSlots,
    /// Ops with a long pass under way that waits for no I/O, each given
    /// one bounded step whenever the channel is empty (see `ops`).
    pub(crate) continuing: VecDeque<usize>,
    /// Syncs in flight, each with the ops waiting for its result.
    pub(crate) syncs: Slab<SyncWait>,
    /// Writebacks submitted and not completed.
    pub(crate) writes_in_flight: u64,
    /// The last handle is gone: exit once guards, ops and I/O are done.
    pub(crate) handles_gone: bool,
    /// Keeps what guards point into alive until this thread exits, which it
    /// does only when no slot has a holder (see `guard`). Leaked, not
    /// dropped, if this thread unwinds: guards may still point into it.
    keepalive: std::mem::ManuallyDrop<Arc<dyn Send + Sync>>,
    exit: bool,
}

thread_local! {
    /// On an owner thread: its own channel, and the completions engines
    /// delivered from inside `submit`, i.e. on this very thread. Sending
    /// those into the owner's own bounded channel could find it full and
    /// block the only thread that drains it (rule 1).
    static INLINE: RefCell<Option<(Sender<Msg>, VecDeque<Msg>)>> = const { RefCell::new(None) };
}

/// Hand `msg` to the owner of `tx`: queued in place when called on that
/// owner's own thread, sent otherwise.
pub(crate) fn deliver(tx: &Sender<Msg>, msg: Msg) {
    let mut msg = Some(msg);
    // During thread-local teardown no owner runs on this thread: send.
    let _ = INLINE.try_with(|q| {
        if let Some((own, queue)) = q.borrow_mut().as_mut() {
            if own.same_channel(tx) {
                queue.extend(msg.take());
            }
        }
    });
    if let Some(msg) = msg {
        // The owner outlives every engine (it stops them before it exits),
        // so a send fails only while the owner is unwinding from a panic;
        // the request's buffer is then simply released.
        let _ = tx.send(msg);
    }
}

/// The owner's channel, as an engine's [`Completer`](crate::engine::Completer)
/// sees it.
impl ToOwner for Sender<Msg> {
    fn completed(&self, req: IoRequest, result: Result<(), IoFailure>) {
        deliver(self, Msg::Completed(req, result));
    }

    fn wake(&self) {
        deliver(self, Msg::Wake);
    }
}

/// The owner's per-slot tables, allocated before its thread starts.
struct Tables {
    slots: table::ZeroedTable<Slot>,
    lists: Lists,
    op_waits: OpWaits,
    dev_slots: DeviceSlots,
}

/// What the owner thread starts from.
pub(crate) struct Start {
    pub(crate) tx: Sender<Msg>,
    pub(crate) rx: Receiver<Msg>,
    pub(crate) pool: Arc<Pool>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) depth: u32,
    pub(crate) readahead: u32,
    pub(crate) cpu: Option<usize>,
    /// Ask for transparent huge pages on the large tables.
    pub(crate) huge_pages: bool,
    /// See `Owner::keepalive`.
    pub(crate) keepalive: Arc<dyn Send + Sync>,
}

/// Start the owner thread, and return its join handle once the thread is
/// ready to serve.
///
/// The owner's per-slot records and lists are allocated here, before the
/// thread starts: a capacity they do not fit is `InvalidConfig` for
/// `Cache::new` to return, not an abort on the owner thread.
pub(crate) fn spawn(start: Start) -> Result<std::thread::JoinHandle<()>, Error> {
    let capacity = start.pool.capacity();
    let huge = start.huge_pages;
    let slots = table::ZeroedTable::new("the owner's slot records", capacity, huge)
        .map_err(|t| t.for_capacity(capacity))?;
    // Cannot truncate: the capacity is at most `MAX_CAPACITY` (validated).
    let lists = Lists::new(capacity as u32, huge).map_err(|t| t.for_capacity(capacity))?;
    let op_waits = OpWaits::new(capacity as u32, huge).map_err(|t| t.for_capacity(capacity))?;
    let dev_slots = DeviceSlots::new(capacity as u32, huge).map_err(|t| t.for_capacity(capacity))?;
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    let thread = std::thread::Builder::new()
        .name("blockcache-owner".into())
        .spawn(move || {
            if let Some(id) = start.cpu {
                if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                    log::warn!("blockcache: could not pin the owner thread to CPU {id}");
                }
            }
            // What the owner's first wait for a message allocates, made now
            // (see `idle`). Nobody can send yet: `spawn` has not returned.
            crate::idle::prepare_to_wait(&start.rx, 1);
            let _ = ready_tx.send(());
            let tx = start.tx.clone();
            Owner::new(
                start,
                Tables {
                    slots,
                    lists,
                    op_waits,
                    dev_slots,
                },
            )
            .run(tx);
        })?;
    // An error means the thread died before it was ready; every call then
    // answers `Closed`, as it would for an owner that died later.
    let _ = ready_rx.recv();
    Ok(thread)
}

impl Owner {
    /// `tables` have one entry per slot of `start.pool`.
    fn new(start: Start, tables: Tables) -> Owner {
        let Tables {
            slots,
            lists,
            op_waits,
            dev_slots,
        } = tables;
        Owner {
            rx: start.rx,
            counters: start.counters,
            depth: start.depth,
            readahead: start.readahead,
            slots,
            errors: FxHashMap::default(),
            lists,
            shared: start.shared,
            waiters: Slab::with_capacity(64),
            slot_queue: WaitQueue::default(),
            devices: FxHashMap::default(),
            ops: Slab::new(),
            op_waits,
            dev_slots,
            continuing: VecDeque::new(),
            syncs: Slab::new(),
            writes_in_flight: 0,
            handles_gone: false,
            keepalive: std::mem::ManuallyDrop::new(start.keepalive),
            exit: false,
            pool: start.pool,
        }
    }

    fn unplug(&mut self) {
        for d in self.devices.values_mut() {
            if d.plugged {
                d.plugged = false;
                d.engine.unplug();
            }
        }
    }

    /// Every device's I/O has completed (see `may_exit`): stopping engines
    /// cannot wait on the owner (rule 3).
    fn stop_engines(&mut self) {
        for (_, mut d) in self.devices.drain() {
            d.engine.stop();
        }
    }

    /// `dev`'s device, if it is open and not closing: requests for any
    /// other are `UnknownDevice`.
    pub(crate) fn open_device(&self, dev: DeviceId) -> Result<&Device, Error> {
        self.devices
            .get(&dev)
            .filter(|d| !d.closing)
            .ok_or(Error::UnknownDevice)
    }

    /// Some guard holds some block.
    pub(crate) fn any_held(&self) -> bool {
        self.shared.slots.iter().any(|s| holders(s.state.load()) > 0)
    }

    /// Let go of a client's share in `slot` for it, as its `Msg::Release`
    /// asks (see `SlotState::let_go`).
    pub(crate) fn let_go(&self, slot: u32, write: bool, dirtied: bool) {
        self.shared.slots[slot as usize].state.let_go(write, dirtied);
    }

    /// Nothing left to do for anyone: no handle, guard, op, waiter or I/O.
    pub(crate) fn may_exit(&self) -> bool {
        self.handles_gone
            && !self.any_held()
            && self.ops.is_empty()
            && self.slot_queue.is_empty()
            && self.devices.values().all(|d| d.in_flight == 0)
    }

    pub(crate) fn request_exit(&mut self) {
        self.exit = true;
    }

    /// Forget `slot`'s block and put the slot on `Free`. The caller has
    /// closed it with no holders. Waiters still queued on it start over as
    /// new gets (they will read it again).
    pub(crate) fn free_slot(&mut self, slot: u32) {
        let word = self.shared.slots[slot as usize].state.load();
        debug_assert!(word & CLOSED != 0 && holders(word) == 0);
        let s = &mut self.slots[slot as usize];
        debug_assert!(matches!(s.state, State::Resident | State::Reading));
        let key = s.key;
        s.state = State::Free;
        self.errors.remove(&slot);
        self.shared.index.remove(key.0, key.1, slot);
        self.leave_device(slot);
        self.lists.move_to(slot, List::Free);
        while let Some(w) = self.pop_waiter(QueueId::Block(slot)) {
            self.push_waiter(QueueId::Slots, w);
        }
    }
}
