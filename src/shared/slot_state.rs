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
//! ([`SlotState::acquire_counted`]). The two CASes are on the same word, so
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
//! writers are not starved by a stream of fast readers. One grant is made
//! off the owner thread: the thread that completes a read grants the slot
//! to the get that caused it (`engine::Grant`). The owner makes no change
//! to the holders of a slot whose read is in flight, so that grant is
//! still the only change to a closed word's holders; the owner learns of
//! it from the completion, which reaches it before anything the granted
//! client does next.
//!
//! # Visible readers: a read hit that does not write this word
//!
//! Counting a reader writes the word, and when threads hit the same blocks
//! its cache line moves between cores on about every other hit, and hits
//! stop scaling with threads. So a reader may instead write `slot + 1` into an entry of its own
//! thread's record (`readers`), leaving this line shared between cores
//! (BRAVO, Dice and Kogan, USENIX ATC '19). The rules that keep the
//! argument above whole:
//!
//! 1. A reader goes visible only while the word is `BIASED` (and
//!    referenced, open, without writer or wake mark): it publishes its
//!    entry, fences (`SeqCst`), and reads the word again; if that second
//!    look fails it takes the entry back.
//! 2. Every owner operation that reads holders to decide something
//!    (close, close-and-wake, wake-on-release, try-close) sets its mark
//!    (closed or wake) in a read-modify-write, fences, scans the entries,
//!    and only then clears `BIASED`. Each entry naming the slot is
//!    *converted*: counted in the word, then marked so that its holder
//!    releases it as a counted share ([`Entry::release`] says which). Two
//!    threads that each store, fence and load the other's location cannot
//!    both miss the other's store; so either the reader sees the owner's
//!    mark and backs off, or the owner finds the entry and counts it. Once
//!    the scan is over the word's count is exact, and stays so: no reader
//!    goes visible until a counted reader sets `BIASED` again.
//! 3. A fast writer that takes a biased slot fences and scans too, and
//!    backs off if an entry names the slot, converted or not (the reader,
//!    symmetrically, sees the writer and backs off). Because the owner
//!    clears the bias only after its scan, a writer that takes the slot in
//!    the middle of one still scans. A reader backing off whose entry the
//!    owner converted meanwhile holds a counted share; it looks for a
//!    writer once more and lets go if one holds the slot.
//! 4. Only a counted reader sets `BIASED`, and only the end of a count
//!    (rule 2) clears it; so an owner RMW that finds it clear knows no
//!    unconverted entry names the slot, and skips the scan.
//!
//! The loom models at the end check rules 1-3 against eviction and
//! reassignment, a fast writer, an armed wake, and a writer and the owner
//! together. Loom does not explore every interleaving of `SeqCst` fences,
//! so the unit tests also replay, step by step, the
//! interleavings each of rules 1-3 exists for.
//!
//! Memory ordering: acquires are `Acquire` (they see the block's bytes as
//! the last releaser or the owner's I/O completion left them); releases,
//! emptying an entry, filling an entry and reopening are `Release`, and
//! finding a free entry is `Acquire`, so that an entry's every value
//! carries its past holders' reads; the owner's close is `AcqRel` and its
//! scan `Acquire` (it sees every holder's accesses before it writes the
//! block back or reuses the slot).

use super::readers::{Entry, Readers, CONVERTED};
#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicU64, Ordering::*};
#[cfg(not(loom))]
use std::sync::atomic::{fence, AtomicU64, Ordering::*};

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
/// Readers may hold the slot through their own records (`readers`) rather
/// than the count. Set by a counted reader; cleared by the owner, who then
/// counts the visible readers ([`SlotState::try_close`] and the other
/// owner closes).
pub(crate) const BIASED: u64 = 1 << 30;

/// Whether a reader may take the slot visibly: biased, referenced (so the
/// owner's CLOCK still learns of the first hit after it cleared the bit),
/// and nothing the owner or a writer needs to see counted.
#[inline]
fn visible_ok(word: u64) -> bool {
    word & (BIASED | REFERENCED | CLOSED | WRITER | WAKE) == BIASED | REFERENCED
}

/// How [`SlotState::try_acquire_visible`] went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Visible {
    /// Held through the entry: release it with [`Entry::release`].
    Held,
    /// Not taken; the entry is free again.
    Refused,
    /// The owner counted the share while we were backing off: held as a
    /// counted share (the entry is free again).
    Counted,
    /// Counted by the owner, but a writer holds the slot: the caller
    /// releases the counted share without touching the block.
    CountedBesideWriter,
}

/// The word itself. See the module docs for the protocol.
///
/// Stored with [`CLOSED`] inverted (the bit in memory means "open"), so
/// that all zero bytes are a free slot, closed with no holders: the
/// slots' table then starts as untouched zero pages (`table::Zeroed`).
/// Every access goes through [`get`](SlotState::get) and
/// [`cas`](SlotState::cas), which flip the bit, or is a read-modify-write
/// that leaves the bit alone (counts, `WRITER`, `BIASED` and the flags)
/// or sets it in memory exactly where the word's `CLOSED` is cleared.
pub(crate) struct SlotState(AtomicU64);

/// What is stored differs from the word by this.
const FLIP: u64 = CLOSED;

// SAFETY: one `AtomicU64` (the representation of a `u64`: zero bytes are
// a valid value), and zero is the word of a free slot, closed with no
// holders, because CLOSED is stored inverted (above). No drop. Not under
// loom, whose atomics are not plain words.
#[cfg(not(loom))]
unsafe impl super::table::Zeroed for SlotState {}

impl SlotState {
    /// A free slot: closed, no holders.
    #[cfg(any(test, loom))]
    pub(crate) fn new() -> SlotState {
        SlotState(AtomicU64::new(CLOSED ^ FLIP))
    }

    /// The word.
    #[inline]
    fn get(&self, order: std::sync::atomic::Ordering) -> u64 {
        self.0.load(order) ^ FLIP
    }

    /// `compare_exchange_weak` of the word; `Err` carries the word found.
    #[inline]
    fn cas(
        &self,
        cur: u64,
        next: u64,
        success: std::sync::atomic::Ordering,
        failure: std::sync::atomic::Ordering,
    ) -> Result<u64, u64> {
        self.0
            .compare_exchange_weak(cur ^ FLIP, next ^ FLIP, success, failure)
            .map(|w| w ^ FLIP)
            .map_err(|w| w ^ FLIP)
    }

    pub(crate) fn load(&self) -> u64 {
        self.get(Acquire)
    }

    /// [`acquire_counted`](SlotState::acquire_counted) as a yes or no.
    #[cfg(test)]
    pub(crate) fn try_acquire(&self, write: bool) -> bool {
        self.acquire_counted(write).is_some()
    }

    /// Client: take the slot shared (`write == false`) or exclusive, if it
    /// is open and free in that mode, counted in the word; returns the word
    /// it replaced. Marks it referenced; a reader also sets `BIASED`, so
    /// that the next readers may go visible.
    #[inline]
    pub(crate) fn acquire_counted(&self, write: bool) -> Option<u64> {
        let mut cur = self.get(Relaxed);
        loop {
            let blocked = if write {
                cur & (CLOSED | WRITER | READERS | READ_ONLY) != 0
            } else {
                cur & (CLOSED | WRITER) != 0 || cur & READERS == READERS
            };
            if blocked {
                return None;
            }
            let next = if write {
                cur | WRITER | REFERENCED
            } else {
                (cur + 1) | REFERENCED | BIASED
            };
            match self.cas(cur, next, Acquire, Relaxed) {
                Ok(_) => return Some(cur),
                Err(now) => cur = now,
            }
        }
    }

    /// Client: take a read share by writing `slot + 1` into `entry`, one of
    /// the calling thread's, instead of counting it here.
    ///
    /// The entry is published, then a `SeqCst` fence, then the word is
    /// read again. Every owner close clears `BIASED` in a read-modify-write
    /// of the word, then fences, then scans the entries. Of two threads
    /// that each write one location, fence, and read the other's, at least
    /// one reads the other's write: so either we see the close and back
    /// off, or the owner sees our entry and counts it (module docs).
    #[inline]
    pub(crate) fn try_acquire_visible(&self, slot: u32, entry: &Entry) -> Visible {
        if !visible_ok(self.get(Relaxed)) {
            return Visible::Refused;
        }
        // Release: whoever reads this value and finds our old slot free
        // must see our reads of it (the entry may have named it before).
        entry.0.store(slot + 1, Release);
        fence(SeqCst);
        // Acquire: the block's bytes as the last writer or the owner's
        // reopening left them.
        if visible_ok(self.get(Acquire)) {
            return Visible::Held;
        }
        match entry.0.compare_exchange(slot + 1, 0, Relaxed, Acquire) {
            Ok(_) => Visible::Refused,
            Err(now) => {
                debug_assert_eq!(now, (slot + 1) | CONVERTED);
                entry.0.store(0, Relaxed);
                // Converted while we were backing off, perhaps from a fast
                // writer that took the slot before our entry was up and so
                // did not see it. The count was added before the mark we
                // just read, so any writer still holding shows here, and
                // no writer can take the slot past our count from now on.
                if self.get(Acquire) & WRITER != 0 {
                    return Visible::CountedBesideWriter;
                }
                Visible::Counted
            }
        }
    }

    /// Client writer, after [`acquire_counted`](SlotState::acquire_counted)
    /// replaced `prev`: whether a visible reader holds the slot too, in
    /// which case the writer must let go. An entry the owner converted
    /// meanwhile counts too (its reader still holds). Only a slot that was
    /// biased can have one (every count ends by clearing the bias).
    #[inline]
    pub(crate) fn visible_readers_beside(prev: u64, slot: u32, readers: &Readers) -> bool {
        if prev & BIASED == 0 {
            return false;
        }
        fence(SeqCst);
        readers.any_of(slot)
    }

    /// Client: let go of the slot — unless the owner must hear of it: the
    /// last holder leaving a slot marked `WAKE`, or a writer making a clean
    /// block dirty (the owner keeps the dirty list). Then nothing changes
    /// and the result is `false`: the client asks the owner to let go for
    /// it ([`let_go`](SlotState::let_go)), still holding its share, which is
    /// also what keeps the cache's shared state alive while it asks. After
    /// a `true`, the caller must not touch the cache again.
    ///
    /// `dirtied`: a writer that wrote (a write guard); `false` for a writer
    /// taken by mistake (its key did not match), which leaves the block as
    /// it was.
    #[inline]
    pub(crate) fn try_release_quietly(&self, write: bool, dirtied: bool) -> bool {
        let mut cur = self.get(Relaxed);
        loop {
            let next = after_release(cur, write, dirtied);
            let last = holders(next) == 0;
            if (last && cur & WAKE != 0) || (dirtied && cur & DIRTY == 0) {
                return false;
            }
            match self.cas(cur, next, Release, Relaxed) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Owner, for a client that asked: let go of the client's share (as in
    /// [`try_release_quietly`](SlotState::try_release_quietly)), consuming
    /// the `WAKE` mark if it was the last holder. Returns `true` if the
    /// release made a clean block dirty.
    pub(crate) fn let_go(&self, write: bool, dirtied: bool) -> bool {
        let mut cur = self.get(Relaxed);
        loop {
            let mut next = after_release(cur, write, dirtied);
            if holders(next) == 0 {
                next &= !WAKE;
            }
            match self.cas(cur, next, AcqRel, Relaxed) {
                Ok(_) => return dirtied && cur & DIRTY == 0,
                Err(now) => cur = now,
            }
        }
    }

    /// Owner: set `bits` in one read-modify-write, then count every
    /// visible reader of `slot` in the word, then clear `BIASED`.
    /// ([`try_close`](SlotState::try_close) does the two halves itself: its
    /// mark is conditional and it decides from the count.)
    ///
    /// The bias is cleared only after the scan: a fast writer that takes
    /// the slot while we scan must still see it, and scan too (rule 3).
    fn set_and_count(&self, slot: u32, readers: &Readers, bits: u64) {
        if let Some(prev) = self.mark(bits, |_| true) {
            self.count_visible(slot, readers, prev);
        }
    }

    /// The first half of [`set_and_count`](SlotState::set_and_count): the
    /// read-modify-write that puts up the owner's mark.
    fn mark(&self, bits: u64, may: impl Fn(u64) -> bool) -> Option<u64> {
        let mut cur = self.get(Relaxed);
        loop {
            if !may(cur) {
                return None;
            }
            match self.cas(cur, cur | bits, AcqRel, Relaxed) {
                Ok(_) => return Some(cur),
                Err(now) => cur = now,
            }
        }
    }

    /// The second half: with the mark up (the word was `prev` before it),
    /// count the visible readers of `slot` and clear the bias.
    fn count_visible(&self, slot: u32, readers: &Readers, prev: u64) -> u32 {
        if prev & BIASED == 0 {
            // No reader went visible since the last count ended (only a
            // counted reader sets the bias, and only a finished count
            // clears it).
            return 0;
        }
        fence(SeqCst);
        let mut counted = 0;
        for e in readers.entries() {
            if e.0.load(Acquire) != slot + 1 {
                continue;
            }
            // Counted before the entry says so: a holder that sees
            // CONVERTED releases a count, which must be there already.
            // (Counts are the low bits: the stored CLOSED is untouched.)
            let before = self.0.fetch_add(1, Relaxed);
            debug_assert_ne!(before & READERS, READERS, "reader count overflow");
            match e
                .0
                .compare_exchange(slot + 1, (slot + 1) | CONVERTED, AcqRel, Acquire)
            {
                Ok(_) => counted += 1,
                // Released meanwhile. Owner callers read the holders again
                // after this, so a counted release that our passing +1 kept
                // from seeing itself last is noticed there.
                Err(_) => {
                    self.0.fetch_sub(1, Relaxed);
                }
            }
        }
        // Only now (see above). A reader cannot go visible meanwhile: our
        // mark (closed or wake) is up until the owner, this thread, drops it.
        self.0.fetch_and(!BIASED, AcqRel);
        counted
    }

    /// Owner: close the slot if nobody holds it (idempotent). `false` when
    /// it is held, visibly or counted.
    pub(crate) fn try_close(&self, slot: u32, readers: &Readers) -> bool {
        let Some(prev) = self.mark(CLOSED, |w| w & (READERS | WRITER) == 0) else {
            return false;
        };
        let counted = self.count_visible(slot, readers, prev);
        self.closed_unless_held(prev, counted)
    }

    /// The end of [`try_close`](SlotState::try_close), after the count.
    fn closed_unless_held(&self, prev: u64, counted: u32) -> bool {
        // Visible readers held it (if `counted > 0`) and are counted now.
        // Decide by the count itself, exact once the scan is over: a
        // converted reader may already have left (and a passing +1 of a
        // failed conversion may have kept it from seeing itself last).
        if counted == 0 || holders(self.get(Acquire)) == 0 {
            return true;
        }
        // Still held: the slot goes back to as open as it was.
        if prev & CLOSED == 0 {
            // Clearing the word's CLOSED sets the stored bit.
            self.0.fetch_or(FLIP, Release);
        }
        false
    }

    /// Owner: close the slot to clients whether or not it is held (gets
    /// are queued on it), and ask to hear when its holders are gone.
    pub(crate) fn close_and_wake(&self, slot: u32, readers: &Readers) {
        self.set_and_count(slot, readers, CLOSED | WAKE);
    }

    /// Owner: ask to hear when the holders are gone (the slot stays open).
    pub(crate) fn wake_on_release(&self, slot: u32, readers: &Readers) {
        self.set_and_count(slot, readers, WAKE);
    }

    /// Owner: close the slot to clients (holders keep it).
    pub(crate) fn close(&self, slot: u32, readers: &Readers) {
        self.set_and_count(slot, readers, CLOSED);
    }

    /// Owner: let clients take the slot themselves again; `clear_wake`
    /// when the owner no longer needs to hear of releases.
    pub(crate) fn open(&self, clear_wake: bool) {
        if !clear_wake {
            // Clearing the word's CLOSED sets the stored bit.
            self.0.fetch_or(FLIP, Release);
            return;
        }
        // Clear CLOSED and WAKE in one read-modify-write: with CLOSED
        // stored inverted, no single fetch-op does both.
        let mut cur = self.get(Relaxed);
        while let Err(now) = self.cas(cur, cur & !(CLOSED | WAKE), Release, Relaxed) {
            cur = now;
        }
    }

    /// Owner, on a closed slot: grant it to a waiting client. The caller
    /// has checked the mode is free (only releases can happen meanwhile).
    /// Also the thread completing a read, for the get that caused it: the
    /// slot is closed with no holders then (module docs).
    pub(crate) fn grant(&self, write: bool) {
        debug_assert!(self.get(Relaxed) & CLOSED != 0, "grant on an open slot");
        if write {
            self.0.fetch_or(WRITER, Acquire);
        } else {
            self.0.fetch_add(1, Acquire);
        }
    }

    /// Owner: set or clear flag bits (`DIRTY`, `REFERENCED`, `READ_ONLY`).
    pub(crate) fn set(&self, bits: u64, on: bool) {
        debug_assert_eq!(bits & FLIP, 0, "CLOSED has its own methods");
        if on {
            self.0.fetch_or(bits, AcqRel);
        } else {
            self.0.fetch_and(!bits, AcqRel);
        }
    }
}

/// The word after one holder leaves: a writer clears its mark (and marks
/// the block dirty if it wrote), a reader drops the count.
#[inline]
fn after_release(word: u64, write: bool, dirtied: bool) -> u64 {
    if write {
        debug_assert!(word & WRITER != 0, "write release without a writer");
        (word & !WRITER) | if dirtied { DIRTY } else { 0 }
    } else {
        debug_assert!(word & READERS != 0, "read release without a reader");
        word - 1
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

// SAFETY: two `AtomicU64` (zero bytes are valid), and zero is the key
// of no block (`new`). No drop. Not under loom (see `SlotState`).
#[cfg(not(loom))]
unsafe impl super::table::Zeroed for SlotKey {}

impl SlotKey {
    /// No block: device 0, which no device is (ids start at 1), so the
    /// key of a slot never used matches no lookup. All zero bytes.
    #[cfg(loom)]
    pub(crate) fn new() -> SlotKey {
        SlotKey {
            dev: AtomicU64::new(0),
            block: AtomicU64::new(0),
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

    /// No reader records: every reader here is counted.
    fn no_readers() -> Readers {
        Readers::new(0)
    }

    #[test]
    fn readers_share_writers_exclude() {
        let s = SlotState::new();
        assert!(!s.try_acquire(false), "a free slot is closed");
        s.open(true);
        assert!(s.try_acquire(false));
        assert!(s.try_acquire(false));
        assert!(!s.try_acquire(true));
        assert!(!s.try_close(0, &no_readers()), "held");
        assert!(s.try_release_quietly(false, false));
        assert!(s.try_release_quietly(false, false));
        assert!(s.try_acquire(true));
        assert!(!s.try_acquire(false));
        assert!(
            !s.try_release_quietly(true, true),
            "making a clean block dirty goes through the owner"
        );
        assert!(s.let_go(true, true), "the owner's release reports it newly dirty");
        assert!(s.load() & DIRTY != 0);
        assert!(s.try_acquire(true));
        assert!(
            s.try_release_quietly(true, true),
            "dirty already: the owner knows"
        );
        assert!(s.try_close(0, &no_readers()));
        assert!(!s.try_acquire(false), "closed");
    }

    #[test]
    fn the_last_holder_of_a_woken_slot_goes_through_the_owner() {
        let s = SlotState::new();
        s.open(true);
        assert!(s.try_acquire(false));
        assert!(s.try_acquire(false));
        s.close_and_wake(0, &no_readers());
        assert!(!s.try_acquire(false), "closed while gets are queued");
        assert!(s.try_release_quietly(false, false), "not the last");
        assert!(!s.try_release_quietly(false, false), "the last: ask the owner");
        assert_eq!(holders(s.load()), 1, "a refused quiet release changes nothing");
        assert!(!s.let_go(false, false));
        assert_eq!(s.load() & WAKE, 0, "the wake is consumed");
        assert_eq!(holders(s.load()), 0);
    }

    #[test]
    fn a_writer_taken_by_mistake_leaves_the_block_clean() {
        let s = SlotState::new();
        s.open(true);
        assert!(s.try_acquire(true));
        assert!(s.try_release_quietly(true, false));
        assert_eq!(s.load() & DIRTY, 0);
    }

    /// A biased, referenced, open slot held by one visible reader (entry 0
    /// of record 0).
    fn held_visibly() -> (SlotState, Readers) {
        let s = SlotState::new();
        let r = Readers::new(1);
        assert_eq!(r.claim(), Some(0));
        s.open(true);
        assert!(s.try_acquire(false)); // counted: sets REFERENCED | BIASED
        assert!(s.try_release_quietly(false, false));
        let entry = r.record(0).free_entry().unwrap();
        assert_eq!(s.try_acquire_visible(0, entry), Visible::Held);
        (s, r)
    }

    // The interleavings below are the ones rules 1-3 exclude and loom's
    // models do not reach. Each replays one step by step through the
    // owner's halves, mark and count.

    /// A fast writer that takes the slot between the owner's mark (a wake,
    /// which leaves the slot open) and its count still sees the bias, so
    /// it scans and finds the reader.
    #[test]
    fn a_writer_between_the_owners_mark_and_count_still_scans() {
        let (s, r) = held_visibly();
        let owner_prev = s.mark(WAKE, |_| true).unwrap();
        let prev = s.acquire_counted(true).expect("open, no counted readers");
        assert!(
            SlotState::visible_readers_beside(prev, 0, &r),
            "a writer beside a reader"
        );
        // The writer backs off; the last counted holder of a woken slot
        // goes through the owner.
        assert!(!s.try_release_quietly(true, false));
        s.let_go(true, false);
        assert_eq!(s.count_visible(0, &r, owner_prev), 1);
        assert_eq!(holders(s.load()), 1, "the reader, counted");
    }

    /// A fast writer that scans after the owner converted the reader's
    /// entry still finds it.
    #[test]
    fn a_writer_scanning_after_a_conversion_sees_the_converted_reader() {
        let (s, r) = held_visibly();
        let prev = s.acquire_counted(true).expect("open, no counted readers");
        s.close_and_wake(0, &r);
        assert_eq!(holders(s.load()), WRITER | 1, "both, until the writer looks");
        assert!(
            SlotState::visible_readers_beside(prev, 0, &r),
            "a writer beside a reader"
        );
    }

    /// A try-close that converted a reader who then left at once closes
    /// the slot: it decides by the count, not by what it converted.
    #[test]
    fn a_try_close_whose_converted_reader_left_closes() {
        let (s, r) = held_visibly();
        let prev = s.mark(CLOSED, |w| w & (READERS | WRITER) == 0).unwrap();
        assert_eq!(s.count_visible(0, &r, prev), 1);
        assert!(!r.record(0).entries[0].release(0), "converted: a counted release");
        assert!(s.try_release_quietly(false, false));
        assert!(s.closed_unless_held(prev, 1));
        assert_ne!(s.load() & CLOSED, 0);
        assert_eq!(s.load() & BIASED, 0, "the count ended with the bias cleared");
    }

    /// A try-close that converted a reader still holding fails, and leaves
    /// the slot open as it was.
    #[test]
    fn a_try_close_with_a_visible_reader_fails_and_reopens() {
        let (s, r) = held_visibly();
        assert!(!s.try_close(0, &r));
        assert_eq!(s.load() & CLOSED, 0);
        assert_eq!(holders(s.load()), 1);
        assert!(!r.record(0).entries[0].release(0), "converted");
        assert!(s.try_release_quietly(false, false));
        assert!(s.try_close(0, &r));
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

/// Model tests (`slot_state/loom_tests.rs`). Run with
/// `RUSTFLAGS="--cfg loom" cargo test --release --lib slot_state`.
#[cfg(all(test, loom))]
mod loom_tests;
