//! The integration tests: one test binary, one module per topic, all
//! sharing `common`. Run one topic with a filter on its module path, e.g.
//! `cargo test --test suite bad_input::`.

mod common;

mod alloc_free_hits;
mod bad_input;
mod block_device;
mod concurrency;
mod deadlock_edges;
mod enospc;
mod errors;
mod lvm;
mod model;
mod op_batches;
mod operations;
mod panics;
mod races;
mod readahead;
mod shrink;
mod shutdown;
mod smoke;
mod soak;
