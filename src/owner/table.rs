//! Per-block tables, allocated fallibly.
//!
//! Every table the cache keeps per block (the index, the slots' shared
//! words, the owner's slot records, lists, op wait queues and device
//! chains) grows with the capacity the caller asks for. Each is allocated
//! with `try_reserve_exact` and then
//! filled, so a capacity whose tables do not fit in memory is an
//! [`Error::InvalidConfig`] from `Cache::new` that names the table and its
//! sizes, not an abort of the process.

use crate::error::Error;

/// A table that could not be allocated: which one, and its size.
#[derive(Debug)]
pub(crate) struct TooLarge {
    what: &'static str,
    len: usize,
    each: usize,
}

impl TooLarge {
    /// The error `Cache::new` returns for a cache of `capacity` blocks.
    pub(crate) fn for_capacity(self, capacity: usize) -> Error {
        Error::InvalidConfig(format!(
            "a cache of {capacity} blocks needs {} of {} entries of {} bytes ({} bytes), \
             which could not be allocated",
            self.what,
            self.len,
            self.each,
            self.len.saturating_mul(self.each),
        ))
    }
}

/// `len` entries, entry `i` made by `make(i)`, in a vector whose capacity
/// is exactly `len` (so `into_boxed_slice` keeps the allocation as it is).
/// `what` names the table in the error.
pub(crate) fn filled<T>(
    what: &'static str,
    len: usize,
    make: impl FnMut(usize) -> T,
) -> Result<Vec<T>, TooLarge> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| TooLarge {
        what,
        len,
        each: size_of::<T>(),
    })?;
    // Within the capacity just reserved: extending does not allocate.
    v.extend((0..len).map(make));
    debug_assert_eq!(v.capacity(), len);
    Ok(v)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_table_too_large_for_memory_is_an_error_naming_its_sizes() {
        let e = filled("the test table", usize::MAX / 16, |_| 0u64).unwrap_err();
        let Error::InvalidConfig(m) = e.for_capacity(12345) else {
            panic!("not InvalidConfig")
        };
        assert!(m.contains("12345 blocks"), "{m}");
        assert!(m.contains("the test table"), "{m}");
        assert!(
            m.contains(&format!("{} entries of 8 bytes", usize::MAX / 16)),
            "{m}"
        );
    }

    #[test]
    fn a_table_has_exactly_its_entries() {
        let v = filled("t", 5, |i| i * 2).unwrap();
        assert_eq!(v, [0, 2, 4, 6, 8]);
        assert_eq!(v.capacity(), 5);
    }
}
