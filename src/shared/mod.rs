//! What clients share with the owner thread, and the completing threads
//! with both: the memory a hit reads and CASes without a message.
//!
//! - the index, block to slot, written only by the owner and searched by
//!   clients without a lock ([`index`]);
//! - one atomic word per slot that counts its holders, and the slot's key
//!   ([`slot_state`], where the protocol and its proof live);
//! - the visible readers' records ([`readers`]);
//! - the block memory ([`pool`]), and the zeroed per-block tables the
//!   index, the slot words and the owner's own records are made of
//!   ([`table`]);
//! - the queue of completed reads the owner handles without being woken
//!   ([`quiet`]);
//! - the one-answer reply channel each request carries, answered by the
//!   owner or by the thread that completes the request's read ([`reply`]).

pub(crate) mod index;
pub(crate) mod pool;
pub(crate) mod quiet;
pub(crate) mod readers;
pub(crate) mod reply;
pub(crate) mod slot_state;
pub(crate) mod table;

use crate::error::Error;
use crate::DeviceId;
use index::Index;
use quiet::Quiet;
use readers::Readers;
use slot_state::{SlotKey, SlotState};
use std::sync::Arc;

/// One slot's client-visible part, on a cache line of its own so that
/// threads hitting neighbouring blocks do not contend.
#[repr(align(64))]
pub(crate) struct SharedSlot {
    pub(crate) state: SlotState,
    pub(crate) key: SlotKey,
}

// SAFETY: both fields are `Zeroed` (a free slot's word, no block's key)
// and the rest is alignment padding. Not under loom (see `SlotState`).
#[cfg(not(loom))]
unsafe impl table::Zeroed for SharedSlot {}

/// The slots' shared words: zero pages from the kernel, a free slot each.
/// Under loom, whose atomics are not plain words, made one by one.
#[cfg(not(loom))]
type SharedSlots = table::ZeroedTable<SharedSlot>;
#[cfg(loom)]
type SharedSlots = Box<[SharedSlot]>;

/// What clients read (and CAS) without asking the owner: the index, each
/// slot's state word and key, and the visible readers' records. Written
/// only by the owner, except for the holder counts clients change through
/// `SlotState` and the records clients fill.
pub(crate) struct Shared {
    pub(crate) index: Index,
    pub(crate) slots: SharedSlots,
    pub(crate) readers: Readers,
    /// Completions of reads whose get was answered by the completing
    /// thread: the owner handles them without being woken (see `quiet`).
    pub(crate) quiet: Quiet,
}

impl Shared {
    /// `Io` (`OutOfMemory`) when the index or the slot words of `capacity`
    /// blocks cannot be allocated (see `table`). `huge`: ask for transparent huge pages
    /// (`Config::huge_pages`).
    pub(crate) fn new(capacity: usize, huge: bool) -> Result<Arc<Shared>, Error> {
        let index = Index::new(capacity, huge).map_err(|t| t.for_capacity(capacity))?;
        #[cfg(not(loom))]
        let slots = table::ZeroedTable::new("the slots' shared words", capacity, huge);
        #[cfg(loom)]
        let slots = table::filled("the slots' shared words", capacity, |_| SharedSlot {
            state: SlotState::new(),
            key: SlotKey::new(),
        })
        .map(Vec::into_boxed_slice);
        Ok(Arc::new(Shared {
            index,
            readers: Readers::new(readers::RECORDS),
            slots: slots.map_err(|t| t.for_capacity(capacity))?,
            quiet: Quiet::new(),
        }))
    }

    /// The slot holding `(dev, block)`: exact on the owner thread, a hint
    /// for clients, who must confirm the key after acquiring (see `index`).
    #[inline]
    pub(crate) fn lookup(&self, dev: DeviceId, block: u64) -> Option<u32> {
        self.index
            .get(dev, block, |slot| self.slots[slot as usize].key.is(dev.0, block))
    }

    // The owner's closes: each counts the slot's visible readers first, so
    // that every holder count the owner reads afterwards is exact.

    /// Close `slot` if nobody holds it; see [`SlotState::try_close`].
    pub(crate) fn try_close(&self, slot: u32) -> bool {
        self.slots[slot as usize].state.try_close(slot, &self.readers)
    }

    /// See [`SlotState::close_and_wake`].
    pub(crate) fn close_and_wake(&self, slot: u32) {
        self.slots[slot as usize]
            .state
            .close_and_wake(slot, &self.readers)
    }

    /// See [`SlotState::wake_on_release`].
    pub(crate) fn wake_on_release(&self, slot: u32) {
        self.slots[slot as usize]
            .state
            .wake_on_release(slot, &self.readers)
    }

    /// See [`SlotState::close`].
    pub(crate) fn close(&self, slot: u32) {
        self.slots[slot as usize].state.close(slot, &self.readers)
    }
}
