//! Per-block tables: zero pages, mapped on demand, allocated fallibly.
//!
//! Every table the cache keeps per block (the index, the slots' shared
//! words, the owner's slot records, lists, op wait queues and device
//! chains) grows with the capacity the caller asks for. Each starts as all
//! zero bytes ([`Zeroed`]: every one is encoded so that zero is its
//! initial state) and is an anonymous mapping of its own
//! ([`ZeroedTable`]), which the kernel fills with zeros page by page as
//! entries are first written: a cache of a million blocks starts in about
//! the time of a small one, and holds memory only for the slots it uses.
//!
//! A capacity whose tables cannot be mapped is an [`Error::Io`] of kind
//! `OutOfMemory` from `Cache::new` that names the table and its sizes, not
//! an abort of the process. A table whose size does not even fit the
//! address space is an [`Error::InvalidConfig`], as a pool's is.

use crate::error::Error;
use std::io;
use std::ptr::NonNull;

/// A table that could not be allocated: which one, and its size.
#[derive(Debug)]
pub(crate) struct TooLarge {
    what: &'static str,
    len: usize,
    each: usize,
}

impl TooLarge {
    /// A table of `len` entries of `T`, named `what`.
    fn of<T>(what: &'static str, len: usize) -> TooLarge {
        TooLarge {
            what,
            len,
            each: size_of::<T>(),
        }
    }

    /// The error `Cache::new` returns for a cache of `capacity` blocks:
    /// out of memory, or (a size past `isize::MAX`) a config that cannot
    /// work.
    pub(crate) fn for_capacity(self, capacity: usize) -> Error {
        let (what, len, each) = (self.what, self.len, self.each);
        match len.checked_mul(each).filter(|&b| b <= isize::MAX as usize) {
            Some(bytes) => Error::Io(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "a cache of {capacity} blocks needs {what} of {len} entries of {each} bytes \
                     ({bytes} bytes), which could not be allocated"
                ),
            )),
            None => Error::InvalidConfig(format!(
                "a cache of {capacity} blocks needs {what} of {len} entries of {each} bytes, \
                 more than the address space"
            )),
        }
    }
}

/// `len` entries, entry `i` made by `make(i)`, in a vector whose capacity
/// is exactly `len` (so `into_boxed_slice` keeps the allocation as it is).
/// `what` names the table in the error. For the loom models, whose atomics
/// cannot start as zero bytes.
#[cfg(loom)]
pub(crate) fn filled<T>(
    what: &'static str,
    len: usize,
    make: impl FnMut(usize) -> T,
) -> Result<Vec<T>, TooLarge> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| TooLarge::of::<T>(what, len))?;
    // Within the capacity just reserved: extending does not allocate.
    v.extend((0..len).map(make));
    debug_assert_eq!(v.capacity(), len);
    Ok(v)
}

/// A type whose all-zero bytes are a valid value, and the value a new
/// per-block entry starts from: such a table can come straight from
/// anonymous memory ([`ZeroedTable`]), which the kernel zero-fills as it
/// is first touched, instead of being written entry by entry.
///
/// # Safety
///
/// An implementor guarantees that `size_of::<Self>()` zero bytes are a
/// valid value of `Self`, and that it needs no drop (so a table never has
/// to visit its entries to free them: untouched pages stay untouched).
pub(crate) unsafe trait Zeroed: Sized {}

// SAFETY: zero is a valid integer, and an integer has no drop.
unsafe impl Zeroed for u32 {}
// SAFETY: `AtomicU64` has the same in-memory representation as `u64`,
// for which zero is valid; it has no drop.
unsafe impl Zeroed for std::sync::atomic::AtomicU64 {}

/// Memory from the kernel for a table or the pool: page-aligned,
/// zero-filled as it is first touched, unmapped when dropped.
pub(crate) struct Mapping {
    base: NonNull<u8>,
    bytes: usize,
}

impl Mapping {
    /// `bytes` (> 0) of anonymous memory; transparent huge pages asked for
    /// when `huge` (a kernel that refuses keeps small pages). The kernel's
    /// error when it refuses the mapping.
    pub(crate) fn new(bytes: usize, huge: bool) -> std::io::Result<Mapping> {
        debug_assert!(bytes > 0);
        // SAFETY: a new anonymous private mapping: no descriptor, no fixed
        // address, nothing else refers to the memory it returns.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        if huge {
            advise_huge(base.cast(), bytes);
        }
        Ok(Mapping {
            base: NonNull::new(base.cast()).expect("a successful mmap is not null"),
            bytes,
        })
    }

    /// The first byte.
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: base..base+bytes is the mapping made in `new`, owned by
        // this value alone; whoever used it is gone: a table's entries are
        // borrowed from the table (the borrow checker sees to it), and the
        // pool's blocks are reached only through an `Arc<Pool>`.
        if unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) } != 0 {
            log::error!(
                "blockcache: unmapping {} bytes failed: {}",
                self.bytes,
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Below this, a mapping holds no whole huge page and asking is pointless.
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// Ask for transparent huge pages on `len` bytes at `base` (page-aligned,
/// the caller's mapping): fewer TLB misses on memory read at random. Only
/// advice: a kernel without THP, or with it off, answers `EINVAL` and the
/// memory keeps small pages, which is not an error.
pub(crate) fn advise_huge(base: *mut u8, len: usize) {
    if len < HUGE_PAGE {
        return;
    }
    // SAFETY: madvise changes no byte of the range, which is the caller's
    // own mapping; MADV_HUGEPAGE only changes how it is backed.
    let rc = unsafe { libc::madvise(base.cast(), len, libc::MADV_HUGEPAGE) };
    if rc != 0 {
        log::debug!(
            "blockcache: no transparent huge pages for {len} bytes: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// A per-block table whose entries start as zero bytes ([`Zeroed`]), in
/// anonymous memory of its own: making one of any size writes nothing and
/// takes no memory; a page becomes resident when an entry on it is first
/// written (a read maps the kernel's shared zero page).
pub(crate) struct ZeroedTable<T: Zeroed> {
    ptr: NonNull<T>,
    len: usize,
    /// `None` for a table of no bytes.
    _mapping: Option<Mapping>,
}

// SAFETY: the table owns its entries as a `Box<[T]>` would, so it may
// move to another thread when `T` may.
unsafe impl<T: Zeroed + Send> Send for ZeroedTable<T> {}
// SAFETY: `&ZeroedTable` hands out only `&[T]`, shareable when `T: Sync`.
unsafe impl<T: Zeroed + Sync> Sync for ZeroedTable<T> {}

impl<T: Zeroed> ZeroedTable<T> {
    /// `len` entries, every one all zero bytes; transparent huge pages
    /// asked for when `huge`. `what` names the table in the error.
    pub(crate) fn new(what: &'static str, len: usize, huge: bool) -> Result<Self, TooLarge> {
        const { assert!(align_of::<T>() <= 4096, "mmap aligns to pages only") };
        let too_large = || TooLarge::of::<T>(what, len);
        let bytes = len.checked_mul(size_of::<T>()).ok_or_else(too_large)?;
        if bytes > isize::MAX as usize {
            return Err(too_large());
        }
        if bytes == 0 {
            return Ok(ZeroedTable {
                ptr: NonNull::dangling(),
                len,
                _mapping: None,
            });
        }
        let mapping = Mapping::new(bytes, huge).map_err(|_| too_large())?;
        Ok(ZeroedTable {
            ptr: mapping.base.cast(),
            len,
            _mapping: Some(mapping),
        })
    }
}

impl<T: Zeroed> std::ops::Deref for ZeroedTable<T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` is aligned (a page-aligned mapping, or dangling for
        // no bytes) and its `len * size_of::<T>()` bytes are ours for the
        // table's life: zero bytes from the kernel, a valid `T` each
        // (`Zeroed`), or what a `&mut` access stored since.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Zeroed> std::ops::DerefMut for ZeroedTable<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`; `&mut self` makes this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_table_too_large_for_memory_is_an_error_naming_its_sizes() {
        // Fits the address space's arithmetic, not any machine's mappings.
        let len = isize::MAX as usize / 8;
        let Err(e) = ZeroedTable::<u32>::new("the test table", len, false) else {
            panic!("a table larger than memory was made")
        };
        let Error::Io(e) = e.for_capacity(12345) else {
            panic!("not Io")
        };
        assert_eq!(e.kind(), io::ErrorKind::OutOfMemory, "{e}");
        let m = e.to_string();
        assert!(m.contains("12345 blocks"), "{m}");
        assert!(m.contains("the test table"), "{m}");
        assert!(m.contains(&format!("{len} entries of 4 bytes")), "{m}");
        assert!(m.contains(&format!("({} bytes)", len * 4)), "{m}");
    }

    /// A size that overflows is not a lack of memory: no memory would do.
    #[test]
    fn a_table_larger_than_the_address_space_is_a_config_error() {
        for len in [usize::MAX / 4, usize::MAX] {
            let Err(e) = ZeroedTable::<u32>::new("the test table", len, false) else {
                panic!("{len}: a table larger than the address space was made")
            };
            let Error::InvalidConfig(m) = e.for_capacity(12345) else {
                panic!("{len}: not InvalidConfig")
            };
            assert!(m.contains("the test table"), "{m}");
            assert!(m.contains(&format!("{len} entries of 4 bytes")), "{m}");
        }
    }

    /// Pages of `bytes` at `base` that are resident.
    fn resident(base: *const u8, bytes: usize) -> usize {
        let pages = bytes.div_ceil(4096);
        let mut vec = vec![0u8; pages];
        // SAFETY: the range lies inside the caller's mapping, and `vec` has
        // one byte per page of it.
        let rc = unsafe { libc::mincore(base as *mut _, bytes, vec.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|&&v| v & 1 != 0).count()
    }

    /// A new table holds no memory and reads as zeros; a page becomes
    /// resident where an entry is written.
    #[test]
    fn a_new_table_is_zero_and_resident_only_where_written() {
        for huge in [false, true] {
            let len = 4 << 20; // 16 MiB of u32
            let mut t = ZeroedTable::<u32>::new("t", len, huge).unwrap();
            let (base, bytes) = (t.as_ptr().cast::<u8>(), len * 4);
            assert_eq!(resident(base, bytes), 0, "a new table touched its memory");
            assert_eq!(t.len(), len);
            t[len / 2] = 7;
            // One page, or one transparent huge page where the kernel
            // gives one.
            let used = resident(base, bytes);
            assert!((1..=512).contains(&used), "{used} pages resident for one entry");
            // (Reading maps the kernel's zero page, which mincore counts.)
            assert!(t[..1000].iter().chain(&t[len - 1000..]).all(|&x| x == 0));
            assert_eq!(t[len / 2], 7);
        }
        assert!(ZeroedTable::<u32>::new("empty", 0, true).unwrap().is_empty());
    }
}
