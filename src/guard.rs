//! RAII block guards.
//!
//! # Why the byte access is sound
//!
//! A guard dereferences to its block's bytes through a raw pointer into
//! the pool. Each slot has one atomic word (`shared::slot_state`) that
//! counts its readers and marks its writer; a guard exists exactly while
//! its share is counted there, or, for a read guard, announced in an entry
//! of a reader record that everyone who would exclude readers scans first
//! (`shared::readers`; the argument is in `slot_state`). Clients take that share with a
//! compare-and-swap that fails on a writer (or, for a writer, on any
//! holder), and the owner thread, which grants shares to waiting clients
//! too, does the same checks on the same word. The owner does I/O on a
//! slot, or gives it to another block, only after closing the word with a
//! compare-and-swap that fails while anyone holds it. So at any time a
//! block has either any number of read guards or one write guard, and
//! never an I/O alongside them. A write guard is the only way to get
//! `&mut [u8]` of a block, and it gives it out only through `&mut self`;
//! so no block memory is reachable by two `&mut` at once, nor by a `&mut`
//! and a `&`. The guard gives up its share only in `Drop`, after its last
//! borrow has ended.
//!
//! # Why the guard's pointers stay valid
//!
//! A guard points into the cache's shared state (`Core`: pool, slot words,
//! owner channel) without counting a reference: a shared reference count
//! would be one cache line written by every hit of every thread. What keeps
//! `Core` alive instead is its owner thread, which holds a reference until
//! it exits, and exits only when no slot has a holder. So while a guard's
//! share is counted, `Core` lives. Its drop either releases the share with
//! one CAS and touches nothing after (the quiet case), or, when the owner
//! must hear of it, first takes a counted reference (`Arc`) while it still
//! holds the share, then asks the owner to release the share for it.
//!
//! # A write guard dropped during a panic
//!
//! It still marks the block dirty, like `parking_lot`'s locks, which do not
//! poison: the cache cannot know which of the bytes the panicking code
//! meant to keep, and discarding the block would also discard every
//! earlier, completed change to it that has not been written back yet.
//! Callers that need all-or-nothing updates of a block should build the
//! new contents elsewhere and copy them in with one `copy_from_slice`.

use crate::cache::{Core, Taken};
use crate::shared::readers::Entry;
use crate::DeviceId;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Arc;

/// What a guard knows of its slot. `core` is valid while the share is
/// held (module docs).
struct Share {
    core: NonNull<Core>,
    ptr: NonNull<u8>,
    len: usize,
    slot: u32,
    /// A visible read share: the entry of a reader record (in `Core`'s
    /// shared state) that names our slot. `None`: counted in the word.
    entry: Option<NonNull<Entry>>,
}

impl Share {
    fn new(core: &Arc<Core>, taken: Taken) -> Share {
        Share {
            core: NonNull::from(&**core),
            ptr: NonNull::new(core.pool.block_ptr(taken.slot)).expect("pool memory is non-null"),
            len: core.pool.block_size(),
            slot: taken.slot,
            entry: taken.entry,
        }
    }

    /// Give the share up; `dirtied` for a write guard. Nothing of `Core` is
    /// touched after the share is gone unless a counted reference is held.
    fn release(&self, write: bool, dirtied: bool) {
        if let Some(entry) = self.entry {
            // SAFETY: the entry lies in Core's shared state. While our share
            // is visible (not yet counted), the owner has not handled Stop
            // (which counts every visible share first), so it is running and
            // holds Core; once counted, the argument for `live` below holds.
            // Emptying the entry is our last use of it, as the quiet release
            // is below.
            let entry: &Entry = unsafe { entry.as_ref() };
            if entry.release(self.slot) {
                return;
            }
            // The owner counted our share in the word meanwhile: release
            // it as a counted one.
        }
        let core = self.core.as_ptr();
        // SAFETY: our share is still counted, so the owner thread, which
        // holds a reference to Core until no slot has a holder, is alive and
        // so is Core (module docs). The quiet release is the last use of
        // this borrow on success, as in `Arc::drop`'s final decrement.
        let live: &Core = unsafe { &*core };
        let state = &live.shared.slots[self.slot as usize].state;
        if state.try_release_quietly(write, dirtied) {
            return;
        }
        // SAFETY: still holding the share, so Core is alive and its strong
        // count is at least the owner's 1; we add our own reference, which
        // `from_raw` takes over and drops after the owner has answered.
        let core = unsafe {
            Arc::increment_strong_count(core);
            Arc::from_raw(core)
        };
        core.release_through_owner(self.slot, write, dirtied);
    }
}

/// Shared access to one block. Many may exist for a block at once; none
/// while a [`WriteGuard`] does. Dropping it releases the block.
///
/// ```
/// # use blockcache::{Cache, Config, EngineKind};
/// # let f = tempfile::NamedTempFile::new().unwrap();
/// # f.as_file().set_len(8 * 4096).unwrap();
/// # let cache = Cache::new(Config::new(4096, 4).engine(EngineKind::Sync)).unwrap();
/// # let dev = cache.open(f.path()).unwrap();
/// let a = cache.read(dev, 1)?;
/// let b = cache.read(dev, 1)?;            // readers share
/// assert_eq!(a.len(), 4096);
/// assert_eq!((a.device(), a.block()), (dev, 1));
/// assert_eq!(&a[..], &b[..]);
/// # Ok::<(), blockcache::Error>(())
/// ```
pub struct ReadGuard {
    share: Share,
    dev: DeviceId,
    block: u64,
}

/// Exclusive access to one block. Dropping it marks the block dirty and
/// releases it; the cache writes it back later (on flush, to make room, or
/// when a third of the cache is dirty).
///
/// ```
/// # use blockcache::{Cache, Config, EngineKind};
/// # let f = tempfile::NamedTempFile::new().unwrap();
/// # f.as_file().set_len(8 * 4096).unwrap();
/// # let cache = Cache::new(Config::new(4096, 4).engine(EngineKind::Sync)).unwrap();
/// # let dev = cache.open(f.path()).unwrap();
/// let mut w = cache.write(dev, 2)?;
/// w[0] = 0xab;
/// drop(w);
/// assert_eq!(cache.read(dev, 2)?[0], 0xab);
/// # Ok::<(), blockcache::Error>(())
/// ```
pub struct WriteGuard {
    share: Share,
    dev: DeviceId,
    block: u64,
}

// SAFETY: a guard is a share counted in its slot's atomic word or (a read
// guard) named in an entry of the taking thread's reader record, neither
// tied to that thread: any thread may release either (`Entry::release`
// empties the entry from wherever the guard is dropped), with an atomic
// operation (and maybe a message). The bytes it points at are not shared
// mutably with anyone while it lives (module docs).
unsafe impl Send for ReadGuard {}
// SAFETY: &ReadGuard only gives &[u8]; shared reads are what it grants.
unsafe impl Sync for ReadGuard {}
// SAFETY: as for ReadGuard; exclusivity is the writer mark in the slot's
// word.
unsafe impl Send for WriteGuard {}
// SAFETY: &WriteGuard only gives &[u8]; &mut needs &mut WriteGuard.
unsafe impl Sync for WriteGuard {}

impl ReadGuard {
    pub(crate) fn new(core: &Arc<Core>, taken: Taken, dev: DeviceId, block: u64) -> ReadGuard {
        ReadGuard {
            share: Share::new(core, taken),
            dev,
            block,
        }
    }

    /// The device the block belongs to.
    pub fn device(&self) -> DeviceId {
        self.dev
    }

    /// The block number.
    pub fn block(&self) -> u64 {
        self.block
    }

    /// Whether the share is held through the thread's reader record.
    #[cfg(test)]
    pub(crate) fn is_visible(&self) -> bool {
        self.share.entry.is_some()
    }
}

impl WriteGuard {
    /// `zero`: fill the block with zeroes before handing it out (`zeroed`).
    pub(crate) fn new(core: &Arc<Core>, slot: u32, dev: DeviceId, block: u64, zero: bool) -> WriteGuard {
        let mut g = WriteGuard {
            share: Share::new(core, Taken { slot, entry: None }),
            dev,
            block,
        };
        if zero {
            g.fill(0);
        }
        g
    }

    /// The device the block belongs to.
    pub fn device(&self) -> DeviceId {
        self.dev
    }

    /// The block number.
    pub fn block(&self) -> u64 {
        self.block
    }
}

impl Deref for ReadGuard {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: our reader share (counted in the slot's word, or in an
        // entry every writer and owner close scans) keeps writers out and
        // the owner from reusing the slot or doing I/O on it until our Drop;
        // the pool lives as long as `core` (module docs).
        unsafe { std::slice::from_raw_parts(self.share.ptr.as_ptr(), self.share.len) }
    }
}

impl Deref for WriteGuard {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: our writer mark in the slot's word excludes every other
        // holder and the owner's I/O until our Drop; &self excludes a live
        // &mut from deref_mut.
        unsafe { std::slice::from_raw_parts(self.share.ptr.as_ptr(), self.share.len) }
    }
}

impl DerefMut for WriteGuard {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: exclusive grant (as in deref) and &mut self: the only
        // reference to these bytes anywhere.
        unsafe { std::slice::from_raw_parts_mut(self.share.ptr.as_ptr(), self.share.len) }
    }
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        self.share.release(false, false);
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        // Dirty even when unwinding: see "A write guard dropped during a
        // panic" above.
        self.share.release(true, true);
    }
}

impl fmt::Debug for ReadGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadGuard")
            .field("dev", &self.dev)
            .field("block", &self.block)
            .finish()
    }
}

impl fmt::Debug for WriteGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteGuard")
            .field("dev", &self.dev)
            .field("block", &self.block)
            .finish()
    }
}
