//! LVM bcache's bugs A–E (a dirty counter never decremented, a failed
//! prefetch written back, held blocks cleaned by an invalidate, freed
//! slots left indexed, a duplicate after an abort), one test each,
//! checked against the exact I/O the cache issues (the fault engine
//! records every operation).

use crate::common;

use blockcache::engine::IoKind::{Fsync, Read, Write};
use blockcache::{Cache, DeviceId, Error};
use common::fault::*;
use common::*;

const EIO: i32 = libc::EIO;

/// A round trip through the owner: every message this thread sent before
/// (puts included) has been handled when it returns.
fn sync_owner(cache: &Cache, dev: DeviceId) {
    cache.device_blocks(dev).unwrap();
}

/// Dirty blocks `base..base+16` one at a time until preemptive writeback
/// fires. Returns how many blocks were dirty when it fired, the blocks it
/// wrote (relative to `base`) and the change in `preemptive_writebacks`.
fn dirty_until_writeback(cache: &Cache, plan: &FaultPlan, dev: DeviceId, base: u64) -> (u64, Vec<u64>, u64) {
    plan.take_ops();
    let before = cache.stats().preemptive_writebacks;
    for i in 0..16 {
        cache.write(dev, base + i).unwrap().fill(i as u8);
        sync_owner(cache, dev);
        let written = writes(&plan.take_ops());
        if !written.is_empty() {
            let relative = written.iter().map(|b| b - base).collect();
            return (i + 1, relative, cache.stats().preemptive_writebacks - before);
        }
    }
    panic!("no preemptive writeback with every block dirty");
}

/// A: LVM's dirty counter was never decremented, so after enough
/// dirty/flush cycles it believed the cache was always dirty. Here the
/// threshold must fire exactly where it fires in a fresh cache.
#[test]
fn lvm_a_dirty_accounting_survives_flush_cycles() {
    let f = patterned_file(256 * BS as u64);
    let plan = FaultPlan::new();

    let fresh = fault_cache(&plan, 16);
    let dev = fresh.open(f.path()).unwrap();
    let expected = dirty_until_writeback(&fresh, &plan, dev, 200);
    // The rule in get.rs: fewer than a third of 16 clean or free (≤ 5, so
    // 11 dirty) starts writeback until two thirds (11) are or soon will be:
    // the 6 oldest dirty blocks.
    assert_eq!(expected, (11, vec![0, 1, 2, 3, 4, 5], 6));
    fresh.shutdown().unwrap();

    let cache = fault_cache(&plan, 16);
    let dev = cache.open(f.path()).unwrap();
    for cycle in 0..16u64 {
        for b in 64 + 4 * cycle..64 + 4 * cycle + 4 {
            cache.write(dev, b).unwrap().fill(cycle as u8);
        }
        cache.flush().unwrap();
    }
    let s = cache.stats();
    assert_eq!(
        s.preemptive_writebacks, 0,
        "4 dirty of 16 never crosses the threshold"
    );
    assert_eq!(s.writes_issued, 64, "each flush wrote its 4 blocks");
    assert_eq!(
        dirty_until_writeback(&cache, &plan, dev, 200),
        expected,
        "same threshold after 16 cycles"
    );
    cache.shutdown().unwrap();
}

/// B: a prefetch whose read failed left an unread buffer in the cache,
/// which a later flush wrote back as data.
#[test]
fn lvm_b_failed_prefetch_is_never_written_back() {
    let f = patterned_file(32 * BS as u64);
    let plan = FaultPlan::new();
    let cache = fault_cache(&plan, 8);
    let dev = cache.open(f.path()).unwrap();
    plan.fail(Read, Some(7), 1, EIO);

    cache.prefetch(dev, 7);
    wait_until(|| cache.stats().io_errors == 1);
    assert_eq!(cache.stats().prefetches, 1);
    cache.flush().unwrap();
    assert_eq!(
        plan.take_ops(),
        [(dev, Read, 7)],
        "the flush wrote and synced nothing"
    );
    assert_block(&on_disk(f.path(), 7), &original(7), "block 7 on disk");

    // A get reads the block again and returns the disk's bytes, not the
    // poisoned buffer the failed read left.
    assert_block(
        &cache.read(dev, 7).unwrap(),
        &original(7),
        "block 7 from the cache",
    );
    assert_eq!(plan.take_ops(), [(dev, Read, 7)]);
    cache.shutdown().unwrap();
    assert_block(&on_disk(f.path(), 7), &original(7), "block 7 on disk");
    assert_eq!(plan.count(Write), 0, "nothing was ever written");
}

/// C: invalidating a device wrote back and cleaned blocks someone held,
/// so the holder's later changes were lost.
#[test]
fn lvm_c_invalidate_device_leaves_a_held_dirty_block_to_its_holder() {
    let f = patterned_file(32 * BS as u64);
    let plan = FaultPlan::new();
    let cache = fault_cache(&plan, 16);
    let dev = cache.open(f.path()).unwrap();

    cache.write(dev, 2).unwrap().fill(0xc1); // dirty
    cache.write(dev, 5).unwrap().fill(0x55); // dirty, unheld
    drop(cache.read(dev, 4).unwrap()); // clean, unheld
    let mut held = cache.write(dev, 2).unwrap(); // dirty and held
    held.fill(0xc2);
    plan.take_ops();

    assert!(matches!(cache.invalidate_device(dev), Err(Error::Busy)));
    let ops = plan.take_ops();
    assert_eq!(
        writes(&ops),
        [5],
        "only the unheld dirty block is written: {ops:?}"
    );
    assert_filled(&on_disk(f.path(), 5), 0x55, "block 5 on disk");
    assert_block(
        &on_disk(f.path(), 2),
        &original(2),
        "held block 2 was not written",
    );
    assert_filled(&held, 0xc2, "the holder's view");

    // The holder goes on changing it; the next flush writes its final bytes.
    held[..4].copy_from_slice(b"last");
    drop(held);
    cache.flush().unwrap();
    assert_eq!(plan.take_ops(), [(dev, Write, 2), (dev, Fsync, 0)]);
    let disk = on_disk(f.path(), 2);
    assert_eq!(&disk[..4], b"last");
    assert_filled(&disk[4..], 0xc2, "the rest of block 2 on disk");

    // The unheld blocks were dropped: getting them reads them.
    assert_filled(&cache.read(dev, 5).unwrap(), 0x55, "block 5 from the cache");
    assert_block(
        &cache.read(dev, 4).unwrap(),
        &original(4),
        "block 4 from the cache",
    );
    assert_eq!(plan.take_ops(), [(dev, Read, 5), (dev, Read, 4)]);
    cache.shutdown().unwrap();
}

/// D: an invalidate that failed part-way freed slots but left them in the
/// index, so a later get found a slot now holding another block.
#[test]
fn lvm_d_failed_invalidate_leaves_no_freed_slot_indexed() {
    let f = patterned_file(32 * BS as u64);
    let plan = FaultPlan::new();
    let cache = fault_cache(&plan, 4);
    let dev = cache.open(f.path()).unwrap();

    for b in [1u64, 2, 3] {
        drop(cache.read(dev, b).unwrap());
    }
    let held = cache.read(dev, 1).unwrap();
    plan.take_ops();
    assert!(matches!(cache.invalidate_device(dev), Err(Error::Busy)));

    // Reuse the freed slots for other blocks, then ask for 2 and 3 again:
    // each must be read from the device, not found in a reused slot.
    for b in [10u64, 11] {
        assert_block(&cache.read(dev, b).unwrap(), &original(b), &format!("block {b}"));
    }
    for b in [2u64, 3] {
        assert_block(&cache.read(dev, b).unwrap(), &original(b), &format!("block {b}"));
    }
    assert_eq!(reads(&plan.take_ops()), [10, 11, 2, 3]);
    // The held block was left alone: still resident, a hit.
    assert_block(&held, &original(1), "the held block");
    drop(held);
    assert_block(
        &cache.read(dev, 1).unwrap(),
        &original(1),
        "block 1 from the cache",
    );
    assert!(reads(&plan.take_ops()).is_empty(), "block 1 stayed cached");
    cache.shutdown().unwrap();
}

/// E: aborting a device with a held block left that block behind as a
/// duplicate of the one a later get created.
#[test]
fn lvm_e_abort_with_held_block_is_busy_and_leaves_no_duplicate() {
    let f = patterned_file(32 * BS as u64);
    let plan = FaultPlan::new();
    let cache = fault_cache(&plan, 16);
    let dev = cache.open(f.path()).unwrap();

    cache.write(dev, 3).unwrap().fill(0xe3);
    cache.write(dev, 4).unwrap().fill(0xe4);
    let held = cache.read(dev, 3).unwrap();
    plan.take_ops();

    assert!(matches!(cache.abort_device(dev), Err(Error::Busy)));
    // Busy means nothing done: block 4 is still cached, still dirty.
    assert_filled(&cache.read(dev, 4).unwrap(), 0xe4, "block 4 from the cache");
    assert!(plan.take_ops().is_empty(), "a busy abort does no I/O");
    drop(held);

    cache.abort_device(dev).unwrap();
    assert!(plan.take_ops().is_empty(), "abort writes nothing");
    // One copy of block 3 from now on: one read, then hits.
    for _ in 0..3 {
        assert_block(
            &cache.read(dev, 3).unwrap(),
            &original(3),
            "block 3 from the cache",
        );
    }
    assert_eq!(plan.take_ops(), [(dev, Read, 3)]);
    // Nothing of the aborted data is ever written.
    cache.flush().unwrap();
    assert!(writes(&plan.take_ops()).is_empty());
    assert_block(&on_disk(f.path(), 3), &original(3), "block 3 on disk");
    assert_block(&on_disk(f.path(), 4), &original(4), "block 4 on disk");

    // A new change to block 3 is written exactly once, with its new bytes.
    cache.write(dev, 3).unwrap().fill(0x77);
    cache.flush().unwrap();
    assert_eq!(plan.take_ops(), [(dev, Write, 3), (dev, Fsync, 0)]);
    assert_filled(&on_disk(f.path(), 3), 0x77, "block 3 on disk");
    cache.shutdown().unwrap();
    assert_block(&on_disk(f.path(), 4), &original(4), "block 4 on disk");
    assert_eq!(
        plan.count(Write),
        1,
        "block 3's new bytes, once; nothing else ever"
    );
}
