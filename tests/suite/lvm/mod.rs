//! LVM's bcache (lvm2, `lib/device/bcache.c`) as the reference: the
//! scenarios of its unit tests (`test/unit/bcache_t.c`) on the scripted
//! engine, which states exactly which reads, writes and fsyncs the cache
//! issues (`parity`, and its error, invalidate and abort scenarios in
//! `parity_errors`), and LVM's latent bugs A–E as regression tests
//! (`regressions`).

mod parity;
mod parity_errors;
mod regressions;
