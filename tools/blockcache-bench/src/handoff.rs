//! The cache's thread shape without the cache: what a miss costs in
//! hand-offs alone. A client thread sends its read to an "owner" thread
//! over a bounded channel and waits on its own reply channel; the owner
//! pushes the read into one io_uring and enters the kernel to submit it; a
//! "reaper" thread waits in the kernel for completions and answers the
//! client. No index, no slots, no lists: set next to the cache's cold
//! get, it shows how much of a miss is the shape and how much the cache.

use crate::files::AlignedBuf;
use anyhow::{Context, Result};
use crossbeam_channel::{bounded, Receiver, Sender};
use io_uring::{opcode, types, IoUring};
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// `user_data` of the no-op that stops the reaper.
const STOP: u64 = u64::MAX;

struct Read {
    fd: RawFd,
    offset: u64,
    /// The client's block buffer, untouched by it until the reply comes.
    buf: usize,
    len: u32,
    reply: Sender<i32>,
}

/// The owner and reaper threads, and the ring they share.
pub struct Handoff {
    tx: Option<Sender<Read>>,
    ring: Arc<IoUring>,
    /// Reply channels of reads in flight, by `user_data`.
    waiting: Arc<Mutex<slab::Slab<Sender<i32>>>>,
    owner: Option<JoinHandle<Result<()>>>,
    reaper: Option<JoinHandle<Result<()>>>,
}

/// A client of a [`Handoff`]: its block buffer and reply channel.
pub struct Client {
    tx: Sender<Read>,
    buf: AlignedBuf,
    reply: (Sender<i32>, Receiver<i32>),
}

impl Handoff {
    /// Start the owner and reaper threads for up to `depth` reads at once.
    pub fn start(depth: usize) -> Result<Handoff> {
        let ring =
            Arc::new(IoUring::new((depth + 1).next_power_of_two() as u32).context("setting up io_uring")?);
        let waiting = Arc::new(Mutex::new(slab::Slab::with_capacity(depth)));
        let (tx, rx) = bounded::<Read>(4096);
        let (r, w) = (Arc::clone(&ring), Arc::clone(&waiting));
        let owner =
            std::thread::Builder::new()
                .name("handoff-owner".into())
                .spawn(move || -> Result<()> {
                    for read in rx {
                        let key = w.lock().unwrap().insert(read.reply);
                        let e = opcode::Read::new(types::Fd(read.fd), read.buf as *mut u8, read.len)
                            .offset(read.offset)
                            .build()
                            .user_data(key as u64);
                        // SAFETY: only this thread pushes while clients send; the
                        // client's buffer stays untouched until the reaper has
                        // reaped this read and answered it.
                        unsafe { r.submission_shared().push(&e) }
                            .map_err(|_| anyhow::anyhow!("queue full"))?;
                        r.submit().context("io_uring_enter")?;
                    }
                    let stop = opcode::Nop::new().build().user_data(STOP);
                    // SAFETY: a no-op names no memory.
                    unsafe { r.submission_shared().push(&stop) }
                        .map_err(|_| anyhow::anyhow!("queue full"))?;
                    r.submit().context("io_uring_enter")?;
                    Ok(())
                })?;
        let (r, w) = (Arc::clone(&ring), Arc::clone(&waiting));
        let reaper =
            std::thread::Builder::new()
                .name("handoff-reaper".into())
                .spawn(move || -> Result<()> {
                    loop {
                        // SAFETY: this thread alone reads the completion queue.
                        let done: Vec<(u64, i32)> = unsafe { r.completion_shared() }
                            .map(|c| (c.user_data(), c.result()))
                            .collect();
                        if done.is_empty() {
                            r.submitter().submit_and_wait(1).context("io_uring_enter")?;
                            continue;
                        }
                        for (key, res) in done {
                            if key == STOP {
                                return Ok(());
                            }
                            let reply = w.lock().unwrap().remove(key as usize);
                            let _ = reply.send(res);
                        }
                    }
                })?;
        Ok(Handoff {
            tx: Some(tx),
            ring,
            waiting,
            owner: Some(owner),
            reaper: Some(reaper),
        })
    }

    /// A client with a buffer of `block` bytes.
    pub fn client(&self, block: usize) -> Client {
        Client {
            tx: self.tx.clone().expect("running"),
            buf: AlignedBuf::new(block),
            reply: bounded(1),
        }
    }

    /// Stop both threads (every client is gone: no read is in flight).
    pub fn stop(mut self) -> Result<()> {
        drop(self.tx.take());
        let owner = self.owner.take().expect("once").join();
        let reaper = self.reaper.take().expect("once").join();
        owner.map_err(|_| anyhow::anyhow!("the owner thread panicked"))??;
        reaper.map_err(|_| anyhow::anyhow!("the reaper thread panicked"))??;
        debug_assert!(self.waiting.lock().unwrap().is_empty());
        debug_assert!(Arc::strong_count(&self.ring) == 1);
        Ok(())
    }
}

impl Client {
    /// The block the last read filled.
    pub fn block(&self) -> &[u8] {
        &self.buf
    }

    /// Read the block at `offset` of `fd` through the owner and the reaper,
    /// and wait for it.
    pub fn read(&mut self, fd: RawFd, offset: u64) -> Result<()> {
        let len = self.buf.len() as u32;
        self.tx
            .send(Read {
                fd,
                offset,
                buf: self.buf.as_mut_ptr() as usize,
                len,
                reply: self.reply.0.clone(),
            })
            .context("the owner thread is gone")?;
        let res = self.reply.1.recv().context("the reaper thread is gone")?;
        crate::uring::check_read(res, len as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    /// Reads through the two threads return each block's bytes, from two
    /// clients at once, and the threads stop cleanly.
    #[test]
    fn reads_through_owner_and_reaper_return_the_files_blocks() {
        if crate::uring::probe().is_err() {
            eprintln!("io_uring unavailable, skipping");
            return;
        }
        const BS: usize = 4096;
        let mut tmp = tempfile::NamedTempFile::new_in("/var/tmp").unwrap();
        let data: Vec<u8> = (0..64 * BS).map(|i| (i / BS) as u8 ^ (i % 251) as u8).collect();
        tmp.write_all(&data).unwrap();
        let file = crate::files::open_direct(tmp.path(), false).unwrap();
        let handoff = Handoff::start(2).unwrap();
        std::thread::scope(|s| {
            for t in 0..2usize {
                let (mut client, fd, data) = (handoff.client(BS), file.as_raw_fd(), &data);
                s.spawn(move || {
                    for b in (t..64).step_by(2) {
                        client.read(fd, (b * BS) as u64).unwrap();
                        assert!(client.block() == &data[b * BS..(b + 1) * BS], "block {b}");
                    }
                });
            }
        });
        handoff.stop().unwrap();
    }
}
