//! Visible readers: a read hit announced in the reading thread's own
//! record instead of counted in the slot's shared word.
//!
//! # Why
//!
//! Counting a reader writes the slot's word, and when threads hit the same
//! blocks that cache line moves between cores on about every other hit, so
//! hits stop scaling with threads.
//! A reader that writes only its own thread's record leaves the slot's
//! line shared in every core's cache. This is BRAVO (Dice and Kogan,
//! "BRAVO: Biased Locking for Reader-Writer Locks", USENIX ATC '19) applied
//! per slot: readers announce themselves while the slot is *biased*, and
//! whoever needs the exact holder count revokes the bias and scans.
//!
//! # The protocol (the argument is in `slot_state`)
//!
//! - Each thread claims one [`Record`] per cache: a few entries, each
//!   holding `slot + 1` of a block it reads, or 0. Only the claiming thread
//!   fills an empty entry; whoever drops the guard empties it.
//! - The owner, before it decides anything from a slot's holder count,
//!   clears the slot's bias and *converts* every entry naming the slot:
//!   adds one to the word's reader count and marks the entry `CONVERTED`.
//!   From then on that share is an ordinary counted one, released as such.
//! - A client writer that takes a biased slot scans the entries and backs
//!   off if any names the slot.
//!
//! Records are preallocated ([`RECORDS`] per cache); a thread that finds
//! none free reads through the shared count, as before.

#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::*};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::*};

/// Records per cache: threads beyond this many read through the count.
pub(crate) const RECORDS: usize = 64;
/// Read guards one thread can hold visibly at once, per cache; more are
/// counted.
const ENTRIES: usize = 7;
/// An entry the owner has turned into a counted share. Above every
/// `slot + 1` (see `config::MAX_CAPACITY`).
pub(crate) const CONVERTED: u32 = 1 << 31;
const _: () = assert!(crate::config::MAX_CAPACITY < CONVERTED as usize);

/// One visible read share: `slot + 1`, that or'd with [`CONVERTED`], or 0.
pub(crate) struct Entry(pub(crate) AtomicU32);

impl Entry {
    fn new() -> Entry {
        Entry(AtomicU32::new(0))
    }

    /// Client: give up a visible share. `false`: the owner had converted
    /// it into a counted share, which the caller now releases as one. The
    /// entry is free either way.
    ///
    /// Release: the holder's reads of the block happen before an owner
    /// scan that finds the entry empty (and then reuses the slot).
    #[inline]
    pub(crate) fn release(&self, slot: u32) -> bool {
        match self.0.compare_exchange(slot + 1, 0, Release, Acquire) {
            Ok(_) => true,
            Err(now) => {
                debug_assert_eq!(now, (slot + 1) | CONVERTED);
                // Release: a fast writer may decide from this empty entry
                // (it scans converted entries too).
                self.0.store(0, Release);
                false
            }
        }
    }
}

/// One thread's entries, on a cache line pair of their own.
#[repr(align(128))]
pub(crate) struct Record {
    claimed: AtomicBool,
    pub(crate) entries: [Entry; ENTRIES],
}

impl Record {
    fn new() -> Record {
        Record {
            claimed: AtomicBool::new(false),
            entries: std::array::from_fn(|_| Entry::new()),
        }
    }

    /// An empty entry, for the claiming thread only. Acquire: it may have
    /// been emptied by a guard dropped on another thread, whose reads must
    /// come before our next use of the entry is seen.
    #[inline]
    pub(crate) fn free_entry(&self) -> Option<&Entry> {
        self.entries.iter().find(|e| e.0.load(Acquire) == 0)
    }
}

/// Every record of one cache.
pub(crate) struct Readers {
    records: Box<[Record]>,
    /// Records ever claimed: scans stop here.
    in_use: AtomicUsize,
}

impl Readers {
    pub(crate) fn new(records: usize) -> Readers {
        Readers {
            records: (0..records).map(|_| Record::new()).collect(),
            in_use: AtomicUsize::new(0),
        }
    }

    /// Entries of every record ever claimed.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &Entry> {
        let n = self.in_use.load(Acquire);
        self.records[..n].iter().flat_map(|r| r.entries.iter())
    }

    /// Whether an entry names `slot`, converted or not: either way its
    /// reader still holds the slot. Acquire: an entry found empty was
    /// emptied (with Release) after its holder's last read.
    pub(crate) fn any_of(&self, slot: u32) -> bool {
        self.entries().any(|e| e.0.load(Acquire) & !CONVERTED == slot + 1)
    }

    /// Claim a free record; `None` when all are taken.
    pub(crate) fn claim(&self) -> Option<usize> {
        let i = self
            .records
            .iter()
            .position(|r| r.claimed.compare_exchange(false, true, Acquire, Relaxed).is_ok())?;
        self.in_use.fetch_max(i + 1, AcqRel);
        Some(i)
    }

    /// Give a record back (its thread is exiting). Entries still held by
    /// guards that moved to other threads stay until those guards drop.
    pub(crate) fn unclaim(&self, i: usize) {
        self.records[i].claimed.store(false, Release);
    }

    pub(crate) fn record(&self, i: usize) -> &Record {
        &self.records[i]
    }
}

/// Which record of which cache this thread has claimed.
mod mine {
    use crate::shared::Shared;
    use std::cell::RefCell;
    use std::sync::{Arc, Weak};

    struct Claim {
        /// The cache's `Shared`, by address.
        at: usize,
        shared: Weak<Shared>,
        record: Option<usize>,
    }

    #[derive(Default)]
    struct Claims(Vec<Claim>);

    impl Drop for Claims {
        fn drop(&mut self) {
            for c in &self.0 {
                if let (Some(s), Some(i)) = (c.shared.upgrade(), c.record) {
                    s.readers.unclaim(i);
                }
            }
        }
    }

    thread_local! {
        static CLAIMS: RefCell<Claims> = RefCell::default();
    }

    /// This thread's record index in `shared`, claimed on first use;
    /// `None` when none is free (remembered: the thread reads counted in
    /// that cache from then on) or the thread is exiting.
    #[inline]
    pub(crate) fn record(shared: &Arc<Shared>) -> Option<usize> {
        let at = Arc::as_ptr(shared) as usize;
        CLAIMS
            .try_with(|claims| {
                let mut claims = claims.try_borrow_mut().ok()?;
                // Our Weak keeps the allocation, so no other cache's
                // `Shared` can be at this address while the claim exists.
                if let Some(c) = claims.0.iter().find(|c| c.at == at) {
                    return c.record;
                }
                claims.0.retain(|c| c.shared.strong_count() > 0);
                let record = shared.readers.claim();
                claims.0.push(Claim {
                    at,
                    shared: Arc::downgrade(shared),
                    record,
                });
                record
            })
            .ok()
            .flatten()
    }
}

pub(crate) use mine::record as my_record;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::shared::Shared;
    use std::sync::Arc;

    #[test]
    fn records_are_claimed_once_and_given_back() {
        let r = Readers::new(2);
        assert_eq!(r.entries().count(), 0, "nothing claimed, nothing to scan");
        assert_eq!((r.claim(), r.claim(), r.claim()), (Some(0), Some(1), None));
        assert_eq!(r.entries().count(), 2 * ENTRIES);
        r.unclaim(0);
        assert_eq!(r.claim(), Some(0));
    }

    #[test]
    fn a_thread_claims_one_record_per_cache_and_gives_it_back_at_exit() {
        let shared = Shared::new(4, false).unwrap();
        let other = Shared::new(4, false).unwrap();
        let (s, o) = (Arc::clone(&shared), Arc::clone(&other));
        // A joined thread (pthread_join) has run its TLS destructors.
        std::thread::spawn(move || {
            let mine = my_record(&s);
            assert_eq!(mine, Some(0));
            assert_eq!(my_record(&s), mine, "claimed once");
            assert_eq!(my_record(&o), Some(0), "its own record in each cache");
            assert!(s.readers.records[0].claimed.load(Relaxed));
        })
        .join()
        .unwrap();
        assert!(
            !shared.readers.records[0].claimed.load(Relaxed),
            "given back at thread exit"
        );
        assert!(!other.readers.records[0].claimed.load(Relaxed));
    }

    #[test]
    fn only_empty_entries_are_handed_out() {
        let r = Readers::new(1);
        r.claim();
        let rec = r.record(0);
        for slot in 0..ENTRIES as u32 {
            rec.free_entry().unwrap().0.store(slot + 1, Relaxed);
        }
        assert!(rec.free_entry().is_none(), "full: the next read is counted");
        assert!(r.any_of(3));
        assert!(rec.entries[3].release(3));
        assert!(!r.any_of(3));
        assert!(std::ptr::eq(rec.free_entry().unwrap(), &rec.entries[3]));
    }
}
