//! One atomic word per slot: who holds the block, and whether a client may
//! take it without asking the owner thread.
//!
//! # Why a client can never hold a slot the owner is reusing
//!
//! The owner changes what a slot holds (evicts, reads, writes back, frees,
//! reassigns) only while it has *closed* the slot with no holders, and it
//! can close a slot only by a compare-and-swap from a word with no readers
//! and no writer ([`SlotState::try_close`]). A client takes a slot only by
//! a compare-and-swap from a word that is *not* closed
//! ([`SlotState::try_acquire`]). The two CASes are on the same word, so
//! exactly one of them wins: either the client holds the slot (and the
//! owner's close fails: the block is "held") or the owner has closed it
//! (and the client's acquire fails: it asks the owner instead).
//!
//! A client finds the slot through the shared index before it acquires,
//! and between the two the owner may have closed, reused and reopened the
//! slot for another block. So after acquiring, the client checks the
//! slot's key ([`SlotKey`]); the owner writes the key only while the slot
//! is closed, and reopening is a release store, so an acquirer that sees
//! the slot open sees the key of the block it now holds. On a mismatch it
//! releases and takes the slow path. (The key check is what a generation
//! counter would give; the key itself is cheaper to compare.)
//!
//! The owner may also *grant* a slot to a waiting client while it is closed
//! (it is the only one that can change a closed word's holders then), and
//! it keeps the slot closed while gets are queued on it, so that queued
//! writers are not starved by a stream of fast readers.
//!
//! Memory ordering: acquires are `Acquire` (they see the block's bytes as
//! the last releaser or the owner's I/O completion left them); releases
//! and reopening are `Release`; the owner's close is `Acquire` (it sees
//! every holder's writes before it writes the block back).

#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering::*};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, Ordering::*};

/// Readers holding the block (bits 0–23).
const READERS: u64 = (1 << 24) - 1;
/// A writer holds the block.
pub(crate) const WRITER: u64 = 1 << 24;
/// Clients must ask the owner: the slot is free, in I/O, being evicted or
/// invalidated, or has gets queued on it.
pub(crate) const CLOSED: u64 = 1 << 25;
/// The owner wants to hear (a `Released` message) when the last holder
/// goes.
pub(crate) const WAKE: u64 = 1 << 26;
/// Changed by a write guard and not yet written back.
pub(crate) const DIRTY: u64 = 1 << 27;
/// CLOCK reference bit: taken since the owner last looked.
pub(crate) const REFERENCED: u64 = 1 << 28;
/// The block's device is read-only: no write guards on the fast path.
pub(crate) const READ_ONLY: u64 = 1 << 29;

/// What a release asks of its releaser.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Notify {
    /// Nothing: the owner is not waiting for this release.
    No,
    /// Tell the owner (the slot's last holder left while it wanted to
    /// know, or the block was written).
    Owner,
}

/// The word itself. See the module docs for the protocol.
pub(crate) struct SlotState(AtomicU64);

impl SlotState {
    /// A free slot: closed, no holders.
    pub(crate) fn new() -> SlotState {
        SlotState(AtomicU64::new(CLOSED))
    }

    pub(crate) fn load(&self) -> u64 {
        self.0.load(Acquire)
    }

    /// Client: take the slot shared (`write == false`) or exclusive, if it
    /// is open and free in that mode. Marks it referenced.
    #[inline]
    pub(crate) fn try_acquire(&self, write: bool) -> bool {
        let mut cur = self.0.load(Relaxed);
        loop {
            let blocked = if write {
                cur & (CLOSED | WRITER | READERS | READ_ONLY) != 0
            } else {
                cur & (CLOSED | WRITER) != 0 || cur & READERS == READERS
            };
            if blocked {
                return false;
            }
            let next = if write { cur | WRITER } else { cur + 1 } | REFERENCED;
            match self.0.compare_exchange_weak(cur, next, Acquire, Relaxed) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Anyone holding the slot: let it go. A writer's release marks the
    /// block dirty. When the last holder leaves a slot marked `WAKE`, the
    /// mark is cleared and the caller must tell the owner; so must a writer
    /// that made a clean block dirty (the owner keeps the dirty list).
    #[inline]
    pub(crate) fn release(&self, write: bool) -> Notify {
        self.let_go(write, write)
    }

    /// Let go of a slot taken by mistake (its key did not match): like
    /// [`release`](SlotState::release), but a writer leaves it clean.
    pub(crate) fn abandon(&self, write: bool) -> Notify {
        self.let_go(write, false)
    }

    #[inline]
    fn let_go(&self, write: bool, dirtied: bool) -> Notify {
        let mut cur = self.0.load(Relaxed);
        loop {
            let mut next = if write {
                debug_assert!(cur & WRITER != 0, "write release without a writer");
                let next = cur & !WRITER;
                if dirtied {
                    next | DIRTY
                } else {
                    next
                }
            } else {
                debug_assert!(cur & READERS != 0, "read release without a reader");
                cur - 1
            };
            let last = next & (READERS | WRITER) == 0;
            let wake = last && cur & WAKE != 0;
            if wake {
                next &= !WAKE;
            }
            match self.0.compare_exchange_weak(cur, next, Release, Relaxed) {
                // A block already dirty is already on the owner's dirty list
                // (or its Released is on the way): only the first write
                // since the last writeback needs telling.
                Ok(_) => {
                    let newly_dirty = dirtied && cur & DIRTY == 0;
                    return if wake || newly_dirty {
                        Notify::Owner
                    } else {
                        Notify::No
                    };
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Owner: close the slot if nobody holds it (idempotent). `false` when
    /// it is held.
    pub(crate) fn try_close(&self) -> bool {
        let mut cur = self.0.load(Relaxed);
        loop {
            if cur & (READERS | WRITER) != 0 {
                return false;
            }
            match self.0.compare_exchange_weak(cur, cur | CLOSED, Acquire, Relaxed) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Owner: close the slot to clients whether or not it is held (gets
    /// are queued on it), and ask to hear when its holders are gone.
    pub(crate) fn close_and_wake(&self) {
        self.0.fetch_or(CLOSED | WAKE, AcqRel);
    }

    /// Owner: ask to hear when the holders are gone (the slot stays open).
    pub(crate) fn wake_on_release(&self) {
        self.0.fetch_or(WAKE, AcqRel);
    }

    /// Owner: close the slot to clients (holders keep it).
    pub(crate) fn close(&self) {
        self.0.fetch_or(CLOSED, Acquire);
    }

    /// Owner: let clients take the slot themselves again; `clear_wake`
    /// when the owner no longer needs to hear of releases.
    pub(crate) fn open(&self, clear_wake: bool) {
        let bits = if clear_wake { CLOSED | WAKE } else { CLOSED };
        self.0.fetch_and(!bits, Release);
    }

    /// Owner, on a closed slot: grant it to a waiting client. The caller
    /// has checked the mode is free (only releases can happen meanwhile).
    pub(crate) fn grant(&self, write: bool) {
        debug_assert!(self.0.load(Relaxed) & CLOSED != 0, "grant on an open slot");
        if write {
            self.0.fetch_or(WRITER, Acquire);
        } else {
            self.0.fetch_add(1, Acquire);
        }
    }

    /// Owner: set or clear flag bits (`DIRTY`, `REFERENCED`, `READ_ONLY`).
    pub(crate) fn set(&self, bits: u64, on: bool) {
        if on {
            self.0.fetch_or(bits, AcqRel);
        } else {
            self.0.fetch_and(!bits, AcqRel);
        }
    }
}

/// Readers and writer in a word.
pub(crate) fn holders(word: u64) -> u64 {
    word & (READERS | WRITER)
}

/// Whether `word` can be granted in this mode (ignoring `CLOSED`).
pub(crate) fn free_for(word: u64, write: bool) -> bool {
    if write {
        holders(word) == 0
    } else {
        word & WRITER == 0 && word & READERS != READERS
    }
}

/// The block a slot holds, readable by clients: written by the owner only
/// while the slot is closed with no holders (see the module docs).
pub(crate) struct SlotKey {
    dev: AtomicU64,
    block: AtomicU64,
}

impl SlotKey {
    pub(crate) fn new() -> SlotKey {
        SlotKey {
            dev: AtomicU64::new(0),
            block: AtomicU64::new(u64::MAX),
        }
    }

    /// Relaxed: published by the `Release` of [`SlotState::open`].
    pub(crate) fn set(&self, dev: u64, block: u64) {
        self.dev.store(dev, Relaxed);
        self.block.store(block, Relaxed);
    }

    /// Relaxed: read after a successful `Acquire` of the slot.
    #[inline]
    pub(crate) fn is(&self, dev: u64, block: u64) -> bool {
        self.dev.load(Relaxed) == dev && self.block.load(Relaxed) == block
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn readers_share_writers_exclude() {
        let s = SlotState::new();
        assert!(!s.try_acquire(false), "a free slot is closed");
        s.open(true);
        assert!(s.try_acquire(false));
        assert!(s.try_acquire(false));
        assert!(!s.try_acquire(true));
        assert!(!s.try_close(), "held");
        assert_eq!(s.release(false), Notify::No);
        assert_eq!(s.release(false), Notify::No);
        assert!(s.try_acquire(true));
        assert!(!s.try_acquire(false));
        assert_eq!(
            s.release(true),
            Notify::Owner,
            "a clean block made dirty is reported"
        );
        assert!(s.load() & DIRTY != 0);
        assert!(s.try_acquire(true));
        assert_eq!(s.release(true), Notify::No, "dirty already: the owner knows");
        assert!(s.try_close());
        assert!(!s.try_acquire(false), "closed");
    }

    #[test]
    fn the_last_release_of_a_woken_slot_notifies_once() {
        let s = SlotState::new();
        s.open(true);
        assert!(s.try_acquire(false));
        assert!(s.try_acquire(false));
        s.close_and_wake();
        assert!(!s.try_acquire(false), "closed while gets are queued");
        assert_eq!(s.release(false), Notify::No);
        assert_eq!(s.release(false), Notify::Owner);
        assert_eq!(s.load() & WAKE, 0, "the wake is consumed");
    }

    #[test]
    fn read_only_slots_refuse_fast_writers() {
        let s = SlotState::new();
        s.set(READ_ONLY, true);
        s.open(true);
        assert!(!s.try_acquire(true));
        assert!(s.try_acquire(false));
    }
}

/// Model tests of the acquire / release / close / reassign interleavings.
/// Run with `RUSTFLAGS="--cfg loom" cargo test --release --lib slot_state`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// A client acquiring block A races the owner evicting A and reusing
    /// the slot for B. Whatever the interleaving, the client ends up either
    /// holding the slot *with key A* (and the owner's close failed) or not
    /// holding it at all.
    #[test]
    fn acquire_races_evict_and_reassign() {
        loom::model(|| {
            let state = Arc::new(SlotState::new());
            let key = Arc::new(SlotKey::new());
            key.set(1, 10); // block A
            state.open(true);

            let (s, k) = (Arc::clone(&state), Arc::clone(&key));
            let client = thread::spawn(move || {
                if s.try_acquire(false) {
                    if k.is(1, 10) {
                        return true; // holds A
                    }
                    s.release(false);
                }
                false
            });

            // Owner: evict A, reassign to B, reopen.
            let evicted = state.try_close();
            if evicted {
                key.set(1, 20);
                state.open(true);
            }
            let holds_a = client.join().unwrap();
            if holds_a {
                // The owner must not have reassigned under the holder.
                assert!(!evicted, "evicted a held slot");
                assert!(key.is(1, 10));
                state.release(false);
            }
            assert_eq!(holders(state.load()), 0);
        });
    }

    /// Two writers never hold the slot at once; a writer and the owner's
    /// close never both succeed.
    #[test]
    fn exclusive_against_writer_and_owner() {
        loom::model(|| {
            let state = Arc::new(SlotState::new());
            state.open(true);
            let s = Arc::clone(&state);
            let writer = thread::spawn(move || {
                if s.try_acquire(true) {
                    assert_eq!(holders(s.load()), WRITER);
                    s.release(true);
                    true
                } else {
                    false
                }
            });
            let closed = state.try_close();
            let wrote = writer.join().unwrap();
            if closed && wrote {
                // The write happened entirely before the close: the close
                // saw no holder, and the block is dirty.
                assert!(state.load() & DIRTY != 0);
            }
            assert_eq!(holders(state.load()), 0);
        });
    }

    /// A release of the last holder of a slot the owner marked `WAKE`
    /// notifies exactly once, whatever the order of the two readers.
    #[test]
    fn wake_is_delivered_once() {
        loom::model(|| {
            let state = Arc::new(SlotState::new());
            state.open(true);
            assert!(state.try_acquire(false));
            assert!(state.try_acquire(false));
            state.close_and_wake();
            let s = Arc::clone(&state);
            let other = thread::spawn(move || s.release(false) == Notify::Owner);
            let mine = state.release(false) == Notify::Owner;
            let theirs = other.join().unwrap();
            assert!(mine ^ theirs, "exactly one release notifies");
        });
    }
}
