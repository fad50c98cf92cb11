//! Starting I/O: a read (with the get it is for), a writeback, an
//! fdatasync. Every submission goes through the device's engine and is
//! started at the next unplug, once per batch.

use super::lists::List;
use super::{Mode, Owner, State, Waiter};
use crate::device::engine::Grant;
use crate::engine::{IoKind, IoRequest};
use crate::shared::pool::BlockBuf;
use crate::shared::slot_state::{holders, CLOSED, DIRTY};
use crate::stats::bump;
use crate::DeviceId;
use std::sync::Arc;

impl Owner {
    /// Start reading `slot`'s block. The slot leaves every list a guard can
    /// be taken from until the completion arrives. `waiter`, the get that
    /// needs the block (none for a prefetch), is handed it by the thread
    /// that completes the read (see `engine::Grant`).
    pub(crate) fn issue_read(&mut self, slot: u32, waiter: Option<Waiter>) {
        let grant = waiter.map(|w| {
            debug_assert_ne!(w.mode, Mode::Zeroed, "a zeroed get never reads");
            Grant {
                shared: Arc::clone(&self.shared),
                slot,
                write: w.mode == Mode::Write,
                reply: w.reply,
            }
        });
        let s = &mut self.slots[slot as usize];
        s.state = State::Reading;
        s.read_awaited = grant.is_some();
        // Counted before it starts: the get may be answered by the thread
        // that completes the read before `issue` returns here, and its
        // caller must then see the read in `stats`.
        bump(&self.counters.reads_issued);
        self.issue(slot, IoKind::Read, grant);
    }

    /// Write `slot` back. The caller has closed it with no holders
    /// (`try_writeback`): a held block is never written back. The dirty
    /// mark goes now — nobody can change the block until the write ends —
    /// and comes back if the write fails.
    pub(crate) fn issue_write(&mut self, slot: u32) {
        let st = &self.shared.slots[slot as usize].state;
        let word = st.load();
        debug_assert!(word & CLOSED != 0 && holders(word) == 0 && word & DIRTY != 0);
        debug_assert_eq!(self.slots[slot as usize].state, State::Resident);
        st.set(DIRTY, false);
        self.slots[slot as usize].state = State::Writing;
        self.writes_in_flight += 1;
        bump(&self.counters.writes_issued);
        self.issue(slot, IoKind::Write, None);
    }

    fn issue(&mut self, slot: u32, kind: IoKind, grant: Option<Grant>) {
        let (dev, block) = self.slots[slot as usize].key;
        self.lists.move_to(slot, List::IoPending);
        let bs = self.pool.block_size() as u64;
        let req = IoRequest {
            tag: slot as u64,
            dev,
            kind,
            block,
            // Cannot overflow: block < device blocks, and the device size
            // in bytes fits a u64.
            offset: block * bs,
            buf: Some(BlockBuf::new(&self.pool, slot)),
            grant,
        };
        self.submit(req);
    }

    /// fdatasync `dev` on behalf of op `op`.
    pub(crate) fn issue_fsync(&mut self, dev: DeviceId, op: usize) {
        let tag = self.syncs.insert(SyncWait { dev, ops: vec![op] });
        self.devices.get_mut(&dev).expect("op devices are open").unsynced = false;
        self.submit(IoRequest {
            tag: tag as u64,
            dev,
            kind: IoKind::Fsync,
            block: 0,
            offset: 0,
            buf: None,
            grant: None,
        });
    }

    /// Hand `req` to its device's engine, counted in flight until it
    /// completes; started at the next unplug.
    fn submit(&mut self, req: IoRequest) {
        let d = self
            .devices
            .get_mut(&req.dev)
            .expect("I/O is issued only on open devices");
        d.in_flight += 1;
        d.plugged = true;
        d.engine.submit(req);
    }
}

/// An fdatasync in flight and the ops that wait for it.
pub(crate) struct SyncWait {
    pub(crate) dev: DeviceId,
    pub(crate) ops: Vec<usize>,
}
