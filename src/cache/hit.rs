//! The hit path: a resident block taken in the client's own thread, with
//! no message to the owner. A lookup in the shared index, then for a
//! reader an entry in the thread's reader record, else one CAS on the
//! slot's word, and a check of the slot's key.

use super::{Core, Taken};
use crate::shared::readers::{self, Entry};
use crate::shared::slot_state::{SlotState, Visible};
use crate::DeviceId;
use std::ptr::NonNull;

impl Core {
    /// The fast path: take a resident block without asking the owner. A
    /// lookup that only loads (see `src/shared/index.rs`), then for a reader an
    /// entry in this thread's record (`src/shared/readers.rs`), else one CAS on
    /// the slot's word; and a check that the slot still holds our block
    /// (see `shared::slot_state` for why that makes the race with eviction
    /// harmless). `None` sends the get to the owner: not resident, in I/O,
    /// contended, or gets queued on it.
    ///
    /// # Memory traffic
    ///
    /// A hit on a big cache costs what it loads from lines no other hit of
    /// this thread brought in. Those are two, whatever the capacity:
    ///
    /// 1. the index place the key hashes to (`src/shared/index.rs`; a second,
    ///    rarely, when the probe runs past the line's eight places — the
    ///    table is at most half full, so a probe is ~1.5 places). Needed:
    ///    it is how a client finds the slot without asking the owner.
    /// 2. the slot's `SharedSlot` line: the state word a reader checks
    ///    (and a counted reader or writer CASes) and the key confirmed
    ///    against the block asked for, both on one line (the struct is one
    ///    cache line, aligned) so that checking the key costs nothing more.
    ///    Needed: the word is what excludes the owner's reuse of the slot.
    ///
    /// Everything else stays in this core's cache between hits: the
    /// thread's claim (TLS), its record of visible entries (the entry
    /// written and emptied), its stripe of the hit counter, and the
    /// `Core`/`Shared` headers. The block's bytes are not touched until the
    /// caller reads them. Huge pages (`Config::huge_pages`) keep the two
    /// lines' translations in the TLB: 80 MiB of index and slot words at
    /// 1M blocks are 40 huge pages, where 4 KiB pages need a page walk on
    /// nearly every hit. One line would need the state word and key in
    /// the index entry itself (an index of slots), which the owner's
    /// backward-shift removal would then have to move atomically.
    #[inline]
    pub(super) fn take_resident(&self, dev: DeviceId, block: u64, write: bool) -> Option<Taken> {
        let slot = self.shared.lookup(dev, block)?;
        let shared_slot = &self.shared.slots[slot as usize];
        let state = &shared_slot.state;
        // A reader tries its own record first; `entry` is the share's entry
        // if it is held visibly, `None` if it is counted in the word.
        let free = if write { None } else { self.my_free_entry() };
        let entry = match free.map(|e| (e, state.try_acquire_visible(slot, e))) {
            Some((e, Visible::Held)) => Some(e),
            Some((_, Visible::Counted)) => None,
            Some((_, Visible::CountedBesideWriter)) => {
                self.release_counted(slot, false);
                return None;
            }
            Some((_, Visible::Refused)) | None => {
                let prev = state.acquire_counted(write)?;
                if write && SlotState::visible_readers_beside(prev, slot, &self.shared.readers) {
                    self.release_counted(slot, true);
                    return None;
                }
                None
            }
        };
        // Held (visibly through `entry`, or counted): keep it if the slot
        // still holds our block, else give it back.
        if shared_slot.key.is(dev.0, block) {
            return Some(Taken {
                slot,
                entry: entry.map(NonNull::from),
            });
        }
        if !entry.is_some_and(|e| e.release(slot)) {
            self.release_counted(slot, write);
        }
        None
    }

    /// This thread's record's free entry, if it has (or can claim) one.
    #[inline]
    fn my_free_entry(&self) -> Option<&Entry> {
        let record = readers::my_record(&self.shared)?;
        self.shared.readers.record(record).free_entry()
    }

    /// Give back a counted share taken by mistake (the block unchanged).
    fn release_counted(&self, slot: u32, write: bool) {
        if !self.shared.slots[slot as usize]
            .state
            .try_release_quietly(write, false)
        {
            self.release_through_owner(slot, write, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, EngineKind};
    use crate::error::Error;
    use crate::guard::ReadGuard;
    use crate::{Cache, DeviceId};

    fn sync_cache_with_file(capacity: usize) -> (Cache, DeviceId, tempfile::NamedTempFile) {
        let f = tempfile::NamedTempFile::new_in("/var/tmp").unwrap();
        f.as_file().set_len(64 * 4096).unwrap();
        let cache = Cache::new(Config::new(4096, capacity).engine(EngineKind::Sync)).unwrap();
        let dev = cache.open(f.path()).unwrap();
        (cache, dev, f)
    }

    /// A miss is granted by whoever completes its read (counted). A get
    /// that comes before the owner has handled that completion waits for
    /// it and is granted by the owner (counted); the first hit in the
    /// client thread is counted too and biases the slot; from then on hits
    /// are visible.
    #[test]
    fn repeated_hits_become_visible_reads() {
        let (cache, dev, _f) = sync_cache_with_file(8);
        assert!(!cache.read(dev, 1).unwrap().is_visible(), "a miss");
        let counted = (0..3)
            .take_while(|_| !cache.read(dev, 1).unwrap().is_visible())
            .count();
        assert!(
            (1..=2).contains(&counted),
            "{counted} counted hits before a visible one"
        );
        let g = cache.read(dev, 1).unwrap();
        assert!(g.is_visible());
        // Held visibly, the block is held: no writer, no invalidation.
        assert!(matches!(cache.try_write(dev, 1), Err(Error::WouldBlock)));
        assert!(matches!(cache.invalidate(dev, 1), Err(Error::Busy)));
        drop(g);
        drop(cache.try_write(dev, 1).unwrap());
        cache.invalidate(dev, 1).unwrap();
    }

    /// A thread's record has a few entries; guards beyond them are counted,
    /// and every one is released whichever way it was taken.
    #[test]
    fn guards_beyond_the_record_are_counted() {
        let (cache, dev, _f) = sync_cache_with_file(32);
        // A miss, then gets until one in the client thread has biased the
        // slot (see `repeated_hits_become_visible_reads`).
        for b in 0..20 {
            for _ in 0..3 {
                drop(cache.read(dev, b).unwrap());
            }
        }
        let guards: Vec<ReadGuard> = (0..20).map(|b| cache.read(dev, b).unwrap()).collect();
        let visible = guards.iter().filter(|g| g.is_visible()).count();
        assert!(visible > 0 && visible < 20, "{visible} of 20 visible");
        for b in 0..20 {
            assert!(matches!(cache.try_write(dev, b), Err(Error::WouldBlock)));
        }
        drop(guards);
        for b in 0..20 {
            drop(cache.try_write(dev, b).unwrap());
        }
        let s = cache.stats();
        assert_eq!(s.read_hits + s.read_misses, 80);
    }

    /// The owner counts visible readers before it closes a slot: a flush
    /// skips a held dirty block, and writes it once the guard is gone.
    #[test]
    fn a_visible_reader_holds_off_writeback_until_it_leaves() {
        let (cache, dev, f) = sync_cache_with_file(8);
        cache.write(dev, 2).unwrap().fill(7);
        drop(cache.read(dev, 2).unwrap());
        let g = cache.read(dev, 2).unwrap();
        assert!(g.is_visible());
        cache.flush().unwrap(); // writes every *unheld* dirty block
        let mut back = [0u8; 4096];
        std::os::unix::fs::FileExt::read_exact_at(f.as_file(), &mut back, 2 * 4096).unwrap();
        assert!(back.iter().all(|&b| b == 0), "a held block was written back");
        drop(g);
        cache.flush().unwrap();
        std::os::unix::fs::FileExt::read_exact_at(f.as_file(), &mut back, 2 * 4096).unwrap();
        assert!(back.iter().all(|&b| b == 7));
    }
}
