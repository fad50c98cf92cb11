//! The block memory: one page-aligned mapping of `capacity × block_size`
//! bytes, made when the cache starts and unmapped when the last reference
//! (cache, guard, or an I/O buffer token held by an engine) is gone.
//!
//! The mapping is anonymous: the kernel hands out zero-filled pages as
//! they are first touched, so starting a cache costs the same whatever its
//! size, and a block's memory is resident only once the block is used.
//! Transparent huge pages are asked for unless the config says not
//! (`Config::huge_pages`): a hit on a big pool then misses the TLB less.

use super::table::Mapping;
use crate::error::{Context, Error};
use std::io;
use std::ptr::NonNull;
use std::sync::Arc;

/// Page alignment satisfies O_DIRECT on every device (logical blocks are
/// at most 4 KiB) and keeps blocks from sharing cache lines. `mmap`
/// returns page-aligned memory.
#[cfg(test)]
const ALIGN: usize = 4096;

/// Raw block memory. It hands out pointers, never references: who may touch
/// which block is decided by the owner thread (one writer or many readers
/// per slot, and no guard while an I/O owns the slot), not by this type.
pub(crate) struct Pool {
    memory: Mapping,
    block_size: usize,
    capacity: usize,
}

// SAFETY: Pool is a mapping and its sizes, with no thread affinity, and
// it never touches the bytes itself. Who may touch a block, from whichever
// thread, is decided by the slot's word (`src/shared/slot_state.rs`: the
// clients' CASes and the owner's closes uphold it; `src/guard.rs` gives the
// argument) and, during an I/O, by the one `BlockBuf` the owner makes for
// the slot (below). That is what makes sharing the pointer sound.
unsafe impl Send for Pool {}
// SAFETY: as above; &Pool only yields raw pointers.
unsafe impl Sync for Pool {}

impl Pool {
    /// [`map`](Pool::map) with small pages.
    #[cfg(test)]
    pub(crate) fn new(block_size: usize, capacity: usize) -> Result<Arc<Pool>, Error> {
        Pool::map(block_size, capacity, false)
    }

    /// Map `capacity` zero-filled blocks, asking for transparent huge
    /// pages when `huge` (advice a kernel may ignore); `Io` of kind
    /// `OutOfMemory`, with the kernel's error as its source, when the
    /// kernel refuses the mapping (the caller has checked the product fits
    /// an `isize`).
    pub(crate) fn map(block_size: usize, capacity: usize, huge: bool) -> Result<Arc<Pool>, Error> {
        let bytes = block_size * capacity;
        let memory = Mapping::new(bytes, huge).map_err(|source| {
            let message =
                format!("cannot map a pool of {capacity} blocks of {block_size} bytes ({bytes} bytes)");
            Error::Io(io::Error::new(
                io::ErrorKind::OutOfMemory,
                Context { message, source },
            ))
        })?;
        Ok(Arc::new(Pool {
            memory,
            block_size,
            capacity,
        }))
    }

    pub(crate) fn block_size(&self) -> usize {
        self.block_size
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The first byte of `slot`'s block.
    #[inline]
    pub(crate) fn block_ptr(&self, slot: u32) -> *mut u8 {
        assert!((slot as usize) < self.capacity, "slot {slot} out of pool");
        // SAFETY: slot < capacity, so the offset stays inside the allocation.
        unsafe { self.memory.base().as_ptr().add(slot as usize * self.block_size) }
    }
}

/// Exclusive access to one block's memory for the duration of an I/O.
///
/// The owner thread makes one only for a slot that no guard holds and no
/// other I/O uses, and does not touch the slot again until the token comes
/// back in the I/O's completion. That exclusivity is what makes
/// [`as_slice`](BlockBuf::as_slice) and [`as_mut_slice`](BlockBuf::as_mut_slice)
/// sound; the `Arc<Pool>` inside keeps the memory alive even if an engine
/// holds the token past the cache's shutdown.
pub(crate) struct BlockBuf {
    /// Never read: held so the memory outlives the token.
    _pool: Arc<Pool>,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the token is the only accessor of its block while it exists
// (owner invariant above), so moving it to the engine thread is sound.
unsafe impl Send for BlockBuf {}

impl BlockBuf {
    /// Made by the owner thread only, under the exclusivity rule above.
    pub(crate) fn new(pool: &Arc<Pool>, slot: u32) -> BlockBuf {
        let ptr = NonNull::new(pool.block_ptr(slot)).expect("pool memory is non-null");
        BlockBuf {
            _pool: Arc::clone(pool),
            ptr,
            len: pool.block_size(),
        }
    }

    /// The block's bytes (what a write sends).
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is one block of a live pool (we hold an Arc)
        // and this token is its only accessor (owner invariant).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The block's bytes, to be filled by a read.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice, and &mut self makes this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Raw pointer for kernel I/O (io_uring). The memory stays valid while
    /// this token lives; the kernel must be done with it before the token
    /// is dropped or returned.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Bytes in the block.
    #[allow(clippy::len_without_is_empty)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_page_aligned_and_disjoint() {
        let pool = Pool::new(512, 9).unwrap();
        for slot in 0..9u32 {
            let p = pool.block_ptr(slot) as usize;
            assert_eq!(p % 512, 0);
            assert_eq!(p - pool.block_ptr(0) as usize, slot as usize * 512);
        }
        assert_eq!(pool.block_ptr(0) as usize % ALIGN, 0);
        let mut b = BlockBuf::new(&pool, 3);
        b.as_mut_slice().fill(7);
        assert!(BlockBuf::new(&pool, 2).as_slice().iter().all(|&x| x == 0));
        assert!(b.as_slice().iter().all(|&x| x == 7));
    }

    /// Pages of the pool's first `pages` pages that are resident.
    fn resident(pool: &Pool, pages: usize) -> usize {
        let mut vec = vec![0u8; pages];
        // SAFETY: the range lies inside the pool's mapping, and `vec` has
        // one byte per page of it.
        let rc = unsafe {
            libc::mincore(
                pool.memory.base().as_ptr().cast(),
                pages * ALIGN,
                vec.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|&&v| v & 1 != 0).count()
    }

    /// A new pool holds no memory: pages become resident as blocks are
    /// first touched, zero-filled.
    #[test]
    fn a_new_pool_is_resident_only_where_used() {
        let pages = 16_384; // 64 MiB
        let pool = Pool::new(ALIGN, pages).unwrap();
        assert_eq!(resident(&pool, pages), 0, "a new pool touched its memory");
        let mut b = BlockBuf::new(&pool, 100);
        assert!(b.as_slice().iter().all(|&x| x == 0));
        b.as_mut_slice().fill(1);
        // One page, or one transparent huge page where the system maps
        // anonymous memory that way.
        let used = resident(&pool, pages);
        assert!((1..=512).contains(&used), "{used} pages resident for one block");
    }
}
