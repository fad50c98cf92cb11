//! The raw io_uring baseline: O_DIRECT reads kept `depth` deep on one ring
//! per thread, no cache, no registered files or buffers (fio's defaults for
//! `--ioengine=io_uring`). A read's latency runs from when it is queued to
//! when its completion is reaped, like fio's total latency (`lat`).

use crate::drive::Recorder;
use crate::files::AlignedBuf;
use anyhow::{anyhow, bail, Context, Result};
use io_uring::{opcode, types, IoUring};
use std::os::fd::RawFd;
use std::time::Instant;

/// Whether io_uring can be set up here.
pub fn probe() -> Result<()> {
    IoUring::new(2).map(drop).context("io_uring is unavailable")
}

/// A ring with one block buffer per slot. Dropping it waits for every read
/// in flight, so the kernel never writes into freed memory.
pub struct Ring {
    ring: IoUring,
    bufs: AlignedBuf,
    block: usize,
    started: Vec<Instant>,
    in_flight: usize,
    reaped: Vec<(usize, i32)>,
}

impl Ring {
    /// A ring for `slots` reads of `block` bytes at a time.
    pub fn new(slots: usize, block: usize) -> Result<Ring> {
        let entries = slots.next_power_of_two() as u32;
        // As fio 3.33 sets up its rings: cooperative task running and a
        // single issuer where the kernel has them (5.19, 6.0), plain otherwise.
        let ring = IoUring::builder()
            .setup_coop_taskrun()
            .setup_single_issuer()
            .build(entries)
            .or_else(|_| IoUring::new(entries))
            .context("setting up io_uring")?;
        Ok(Ring {
            ring,
            bufs: AlignedBuf::new(slots * block),
            block,
            started: vec![Instant::now(); slots],
            in_flight: 0,
            reaped: Vec::with_capacity(slots),
        })
    }

    /// Queue a read of `block` bytes at `offset` of `fd` into slot `slot`
    /// (which must be free); it is submitted by the next [`Ring::wait`].
    pub fn push(&mut self, slot: usize, fd: RawFd, offset: u64) -> Result<()> {
        let buf = self.bufs[slot * self.block..].as_mut_ptr();
        let e = opcode::Read::new(types::Fd(fd), buf, self.block as u32)
            .offset(offset)
            .build()
            .user_data(slot as u64);
        // SAFETY: the buffer stays allocated and untouched until the read
        // is reaped: slots are reused only after their completion, and Drop
        // waits for every read in flight.
        unsafe { self.ring.submission().push(&e) }.map_err(|_| anyhow!("io_uring submission queue full"))?;
        self.started[slot] = Instant::now();
        self.in_flight += 1;
        Ok(())
    }

    /// Submit what was queued, wait for at least one completion, collect
    /// (slot, result) of every completion in `reaped`; return the reap time.
    fn wait(&mut self) -> Result<Instant> {
        self.ring.submit_and_wait(1).context("io_uring_enter")?;
        let now = Instant::now();
        self.reaped.clear();
        for cqe in self.ring.completion() {
            self.reaped.push((cqe.user_data() as usize, cqe.result()));
        }
        self.in_flight -= self.reaped.len();
        Ok(now)
    }

    fn check(&self, res: i32) -> Result<()> {
        check_read(res, self.block)
    }

    /// Keep `slots` reads in flight, the i-th at `offset(i)` of `fd`,
    /// recording each until the run is over.
    pub fn read_loop(&mut self, fd: RawFd, offset: impl Fn(u64) -> u64, rec: &mut Recorder) -> Result<()> {
        let mut next = 0;
        for slot in 0..self.started.len() {
            self.push(slot, fd, offset(next))?;
            next += 1;
        }
        let mut over = false;
        while self.in_flight > 0 {
            let now = self.wait()?;
            over = over || rec.done(now);
            for k in 0..self.reaped.len() {
                let (slot, res) = self.reaped[k];
                self.check(res)?;
                if over {
                    continue;
                }
                rec.record(self.started[slot], now);
                over = rec.done(now);
                if !over {
                    self.push(slot, fd, offset(next))?;
                    next += 1;
                }
            }
        }
        Ok(())
    }

    /// Read block 0 of every fd at once (one per slot) and record each.
    pub fn read_batch(&mut self, fds: &[RawFd], rec: &mut Recorder) -> Result<()> {
        for (slot, &fd) in fds.iter().enumerate() {
            self.push(slot, fd, 0)?;
        }
        while self.in_flight > 0 {
            let now = self.wait()?;
            for k in 0..self.reaped.len() {
                let (slot, res) = self.reaped[k];
                self.check(res)?;
                rec.record(self.started[slot], now);
            }
        }
        Ok(())
    }
}

/// A read's completion result `res`: an error for a negative errno, or for
/// fewer (or more) bytes than the `len` asked for.
pub fn check_read(res: i32, len: usize) -> Result<()> {
    if res < 0 {
        return Err(std::io::Error::from_raw_os_error(-res)).context("io_uring read");
    }
    if res as usize != len {
        bail!("io_uring read returned {res} bytes, not {len}");
    }
    Ok(())
}

impl Drop for Ring {
    fn drop(&mut self) {
        while self.in_flight > 0 {
            if self.wait().is_err() {
                // Cannot tell when the kernel is done with the buffers:
                // leak them rather than free memory it may still write.
                std::mem::forget(std::mem::replace(&mut self.bufs, AlignedBuf::new(1)));
                return;
            }
        }
    }
}
