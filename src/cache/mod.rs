//! The client handle. A get of a resident block is taken in the calling
//! thread (a lookup in the shared index, then one CAS on the slot's word
//! or an entry in the thread's reader record: [`hit`]); everything else is
//! a message to the owner thread, answered on the thread's reply channel.

mod hit;

use crate::config::{Config, EngineKind};
use crate::device::sync::SyncFactory;
use crate::device::uring::{self, UringFactory};
use crate::device::{with_path, DeviceFile};
use crate::engine::{Completer, EngineFactory};
use crate::error::Error;
use crate::guard::{ReadGuard, WriteGuard};
use crate::owner::{self, Mode, Msg, OpKind};
use crate::shared::pool::Pool;
use crate::shared::readers::Entry;
use crate::shared::reply::{Answer, Replier, Response};
use crate::shared::Shared;
use crate::stats::{Counters, Stats};
use crate::DeviceId;
use crossbeam_channel::{bounded, Receiver, Sender};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::thread::JoinHandle;

/// Room in the owner's channel. Senders block when it is full (the owner
/// always drains it, see owner rule 1); a fixed-size array channel never
/// allocates per message, which keeps the hit path allocation-free.
const OWNER_CHANNEL: usize = 4096;

/// A shared block cache. Cheap to clone: every clone talks to the same
/// owner thread and pool. Dropping the last clone flushes and stops the
/// threads once no guard is left.
///
/// ```
/// use blockcache::{Cache, Config, EngineKind};
/// # fn main() -> Result<(), blockcache::Error> {
/// let file = tempfile::NamedTempFile::new_in(std::env::temp_dir()).unwrap();
/// file.as_file().set_len(64 * 4096).unwrap();
///
/// let cache = Cache::new(Config::new(4096, 16).engine(EngineKind::Sync))?;
/// let dev = cache.open(file.path())?;
/// {
///     let mut w = cache.write(dev, 3)?;   // exclusive guard on block 3
///     w[..5].copy_from_slice(b"hello");
/// }                                       // dropped: block 3 is dirty
/// assert_eq!(&cache.read(dev, 3)?[..5], b"hello");
/// cache.flush()?;                         // written and fdatasync'd
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cache {
    handle: Arc<Handle>,
}

/// What only `Cache` clones share: its drop is "the last handle is gone".
struct Handle {
    core: Arc<Core>,
}

/// What handles and guards share. Guards keep it (and so the pool) alive;
/// whoever drops the last reference — a handle or a guard — stops the
/// threads (see `Drop for Core`).
pub(crate) struct Core {
    tx: Sender<Msg>,
    pub(crate) pool: Arc<Pool>,
    pub(crate) shared: Arc<Shared>,
    fast_hits: bool,
    counters: Arc<Counters>,
    factory: Arc<dyn EngineFactory>,
    /// Set once in `Cache::new`, taken once by whoever joins the owner:
    /// two short critical sections a cache's life, so a plain std mutex.
    owner_thread: Mutex<Option<JoinHandle<()>>>,
}

/// A share a get took: a slot, held counted in its word or (a reader on
/// the fast path) visibly through `entry` of the taking thread's record.
pub(crate) struct Taken {
    pub(crate) slot: u32,
    pub(crate) entry: Option<NonNull<Entry>>,
}

impl Taken {
    /// The slot of a share that is counted (every write share is).
    fn counted(self) -> u32 {
        debug_assert!(self.entry.is_none(), "a write share is always counted");
        self.slot
    }
}

impl Cache {
    /// Validate `config`, allocate the pool and start the owner thread.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidConfig`] for a config that cannot work (the
    ///   message says which rule it breaks), among them a capacity whose
    ///   pool does not fit the address space.
    /// - [`Error::Io`] of kind [`OutOfMemory`](std::io::ErrorKind::OutOfMemory)
    ///   when the pool or a per-block table cannot be allocated (the
    ///   message names which, and its size).
    /// - [`Error::Io`] when `EngineKind::Uring` was asked for and io_uring
    ///   cannot be set up, or a thread cannot be started.
    pub fn new(config: Config) -> Result<Cache, Error> {
        config.validate()?;
        let factory = choose_engine(&config)?;
        let pool = Pool::map(config.block_size, config.capacity, config.huge_pages)?;
        let counters = Arc::new(Counters::default());
        let (tx, rx) = bounded(OWNER_CHANNEL);
        let shared = Shared::new(config.capacity, config.huge_pages)?;
        let core = Arc::new(Core {
            tx: tx.clone(),
            pool: Arc::clone(&pool),
            shared: Arc::clone(&shared),
            fast_hits: config.fast_hits,
            counters: Arc::clone(&counters),
            factory,
            owner_thread: Mutex::new(None),
        });
        // The owner keeps the core alive until it exits: guards point into
        // it without counting references (see `guard`).
        let keepalive: Arc<dyn Send + Sync> = Arc::clone(&core) as _;
        let thread = owner::spawn(owner::Start {
            tx,
            rx,
            pool,
            shared,
            counters,
            depth: config.queue_depth,
            readahead: config.readahead,
            cpu: config.owner_cpu,
            huge_pages: config.huge_pages,
            keepalive,
        })?;
        *core.owner_thread() = Some(thread);
        Ok(Cache {
            handle: Arc::new(Handle { core }),
        })
    }

    fn core(&self) -> &Arc<Core> {
        &self.handle.core
    }

    /// Bytes per block.
    pub fn block_size(&self) -> usize {
        self.core().pool.block_size()
    }

    /// Blocks in the pool.
    pub fn capacity(&self) -> usize {
        self.core().pool.capacity()
    }

    /// Open a file or block device for reading and writing.
    ///
    /// O_DIRECT is used where the filesystem accepts it.
    ///
    /// # Errors
    ///
    /// - [`Error::Io`] for a path that cannot be opened, or is not a
    ///   regular file or block device (kind `InvalidInput`), or when the
    ///   device's I/O engine cannot be started (no descriptor or thread
    ///   left). An error from the kernel says what failed on which path and
    ///   keeps the OS error's kind; the OS error itself (with its errno) is
    ///   its `source()`.
    /// - [`Error::InvalidConfig`] when the cache's block size is not a
    ///   multiple of the device's logical block size.
    /// - [`Error::Closed`] when the owner thread has stopped (it panicked).
    ///
    /// ```
    /// # use blockcache::{Cache, Config, EngineKind, Error};
    /// # let cache = Cache::new(Config::new(4096, 4).engine(EngineKind::Sync)).unwrap();
    /// let Err(Error::Io(e)) = cache.open("/no/such/file") else { panic!() };
    /// assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    /// assert!(e.to_string().contains("/no/such/file"));
    /// let os = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<std::io::Error>());
    /// assert_eq!(os.and_then(|s| s.raw_os_error()), Some(2)); // ENOENT
    /// ```
    pub fn open(&self, path: impl AsRef<Path>) -> Result<DeviceId, Error> {
        self.open_device(path.as_ref(), false)
    }

    /// Open a file or block device for reading only: writes get
    /// [`Error::ReadOnly`].
    ///
    /// # Errors
    ///
    /// As [`open`](Cache::open).
    pub fn open_read_only(&self, path: impl AsRef<Path>) -> Result<DeviceId, Error> {
        self.open_device(path.as_ref(), true)
    }

    fn open_device(&self, path: &Path, read_only: bool) -> Result<DeviceId, Error> {
        let file = DeviceFile::open(path, read_only)?;
        let bs = self.block_size() as u64;
        let logical = u64::from(file.logical_block_size());
        if !bs.is_multiple_of(logical) {
            return Err(Error::InvalidConfig(format!(
                "block size {bs} is not a multiple of {}'s logical block size {logical}",
                path.display()
            )));
        }
        let blocks = file.size_bytes() / bs;
        let file = Arc::new(file);
        let core = self.core();
        // Ids come from one process-wide counter, so a DeviceId of another
        // cache is never mistaken for one of ours.
        static NEXT_DEV: AtomicU64 = AtomicU64::new(1);
        let dev = DeviceId(NEXT_DEV.fetch_add(1, Ordering::Relaxed));
        // Started here, on the caller's thread, so engine threads do not
        // inherit the pinned owner's CPU affinity. Its errors (no descriptor
        // left for a ring or an eventfd, no thread) name the path too.
        let engine = core
            .factory
            .start(
                Arc::clone(&file),
                Completer {
                    owner: Arc::new(core.tx.clone()),
                    dev,
                },
            )
            .map_err(|e| with_path(e, "cannot start I/O for", path))?;
        core.call(|reply| Msg::Open {
            dev,
            file,
            engine,
            blocks,
            reply,
        })?;
        Ok(dev)
    }

    /// The device's size in whole blocks (a partial last block is not
    /// addressable).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDevice`] when `dev` is not open in this cache;
    /// [`Error::Closed`] when the owner thread has stopped (it panicked).
    pub fn device_blocks(&self, dev: DeviceId) -> Result<u64, Error> {
        match self.core().call(|reply| Msg::DeviceBlocks { dev, reply })? {
            Answer::Blocks(n) => Ok(n),
            other => unreachable!("owner answered DeviceBlocks with {other:?}"),
        }
    }

    /// A shared guard on block `block` of `dev`: reads it on a miss, waits
    /// out a writer.
    ///
    /// # Errors
    ///
    /// - [`Error::UnknownDevice`]: `dev` is not open in this cache.
    /// - [`Error::OutOfRange`]: `block` is past the end of the device.
    /// - [`Error::Io`]: the read of the block failed (every get waiting
    ///   for that read hears it; nothing is cached), or no slot can be had
    ///   because every unheld block is dirty and its writeback failed.
    /// - [`Error::Closed`]: the owner thread has stopped (it panicked).
    ///
    /// # Deadlocks
    ///
    /// As with a `RwLock`, this waits for ever if the calling thread already
    /// holds a [`WriteGuard`] on the block, or a [`ReadGuard`] on it while
    /// another thread waits to write it (waiters are served in order: this
    /// read queues behind that writer, which waits for our guard); likewise
    /// for a block not in the cache while the calling thread holds guards on
    /// every one of its [`capacity`](Cache::capacity) blocks. Use
    /// [`try_read`](Cache::try_read), which never waits, where that can
    /// happen.
    pub fn read(&self, dev: DeviceId, block: u64) -> Result<ReadGuard, Error> {
        self.read_guard(dev, block, true)
    }

    /// An exclusive guard: reads the block on a miss, waits out readers and
    /// a writer. Dropping it marks the block dirty.
    ///
    /// # Errors
    ///
    /// As [`read`](Cache::read), and [`Error::ReadOnly`] when the device
    /// was opened with [`open_read_only`](Cache::open_read_only).
    ///
    /// # Deadlocks
    ///
    /// As with a `RwLock`, this waits for ever if the calling thread already
    /// holds a guard of either kind on the block; likewise for a block not
    /// in the cache while the calling thread holds guards on every one of
    /// its [`capacity`](Cache::capacity) blocks. Use
    /// [`try_write`](Cache::try_write), which never waits, where that can
    /// happen.
    pub fn write(&self, dev: DeviceId, block: u64) -> Result<WriteGuard, Error> {
        self.write_guard(dev, block, Mode::Write, true)
    }

    /// An exclusive guard on a zero-filled block, dirty; never reads the
    /// device.
    ///
    /// # Errors
    ///
    /// - [`Error::UnknownDevice`]: `dev` is not open in this cache.
    /// - [`Error::OutOfRange`]: `block` is past the end of the device.
    /// - [`Error::ReadOnly`]: the device was opened read-only.
    /// - [`Error::Io`]: no slot can be had because every unheld block is
    ///   dirty and its writeback failed.
    /// - [`Error::Closed`]: the owner thread has stopped (it panicked).
    ///
    /// # Deadlocks
    ///
    /// Waits for ever where [`write`](Cache::write) would: when the calling
    /// thread already holds a guard on the block, or (for a block not in the
    /// cache) guards on every block of the cache.
    pub fn zeroed(&self, dev: DeviceId, block: u64) -> Result<WriteGuard, Error> {
        self.write_guard(dev, block, Mode::Zeroed, true)
    }

    /// Like [`read`](Cache::read), but `Err(WouldBlock)` instead of waiting
    /// or reading: succeeds only for a resident block with no writer.
    ///
    /// # Errors
    ///
    /// - [`Error::WouldBlock`]: the block is not resident, or is held by a
    ///   writer or waited for.
    /// - [`Error::UnknownDevice`]: `dev` is not open in this cache.
    /// - [`Error::OutOfRange`]: `block` is past the end of the device.
    /// - [`Error::Closed`]: the owner thread has stopped (it panicked).
    pub fn try_read(&self, dev: DeviceId, block: u64) -> Result<ReadGuard, Error> {
        self.read_guard(dev, block, false)
    }

    /// Like [`write`](Cache::write), but `Err(WouldBlock)` instead of
    /// waiting or reading: succeeds only for a resident, unheld block.
    ///
    /// # Errors
    ///
    /// As [`try_read`](Cache::try_read) (`WouldBlock` also when the block
    /// is held by a reader), and [`Error::ReadOnly`] when the device was
    /// opened read-only.
    pub fn try_write(&self, dev: DeviceId, block: u64) -> Result<WriteGuard, Error> {
        self.write_guard(dev, block, Mode::Write, false)
    }

    /// [`read`](Cache::read) (`wait`) or [`try_read`](Cache::try_read).
    fn read_guard(&self, dev: DeviceId, block: u64, wait: bool) -> Result<ReadGuard, Error> {
        let taken = self.core().get(dev, block, Mode::Read, wait)?;
        Ok(ReadGuard::new(self.core(), taken, dev, block))
    }

    /// [`write`](Cache::write), [`try_write`](Cache::try_write) or
    /// [`zeroed`](Cache::zeroed) (`Mode::Zeroed`: the block is zero-filled).
    fn write_guard(&self, dev: DeviceId, block: u64, mode: Mode, wait: bool) -> Result<WriteGuard, Error> {
        let slot = self.core().get(dev, block, mode, wait)?.counted();
        Ok(WriteGuard::new(
            self.core(),
            slot,
            dev,
            block,
            mode == Mode::Zeroed,
        ))
    }

    /// Start reading a block that is not resident. Never blocks and
    /// reports nothing: it is dropped when the block is resident or in
    /// flight, the device already has `queue_depth` I/Os in flight, no
    /// slot is free or clean, or the request is invalid.
    pub fn prefetch(&self, dev: DeviceId, block: u64) {
        // try_send: a full channel drops the hint rather than block.
        let _ = self.core().tx.try_send(Msg::Prefetch { dev, block });
    }

    /// Write back every unheld dirty block of every device, then fdatasync
    /// each device written. `Ok` means the data is on stable storage; on
    /// `Err` the blocks that failed stay dirty and the next flush retries.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] with the first write or sync error;
    /// [`Error::Closed`] when the owner thread has stopped (it panicked).
    pub fn flush(&self) -> Result<(), Error> {
        self.core().op(OpKind::Flush(None))
    }

    /// [`flush`](Cache::flush) for one device.
    ///
    /// # Errors
    ///
    /// As [`flush`](Cache::flush), and [`Error::UnknownDevice`] when `dev`
    /// is not open in this cache.
    pub fn flush_device(&self, dev: DeviceId) -> Result<(), Error> {
        self.core().op(OpKind::Flush(Some(dev)))
    }

    /// Drop a block from the cache, writing it back first if dirty. `Ok`
    /// when it is not resident; `Err(Busy)` when held (nothing done); an
    /// I/O error when its writeback failed (it stays dirty).
    ///
    /// # Errors
    ///
    /// - [`Error::UnknownDevice`]: `dev` is not open in this cache.
    /// - [`Error::OutOfRange`]: `block` is past the end of the device.
    /// - [`Error::Busy`]: the block is held by a guard; nothing was done.
    /// - [`Error::Io`]: its writeback failed; it stays dirty and resident.
    /// - [`Error::Closed`]: the owner thread has stopped (it panicked).
    pub fn invalidate(&self, dev: DeviceId, block: u64) -> Result<(), Error> {
        self.core().op(OpKind::Invalidate(dev, Some(block)))
    }

    /// Invalidate every block of a device. Held blocks are left exactly as
    /// their holders have them (not written, still dirty) and the result is
    /// `Err(Busy)`; every other block is written back if dirty and dropped.
    ///
    /// # Errors
    ///
    /// - [`Error::UnknownDevice`]: `dev` is not open in this cache.
    /// - [`Error::Busy`]: a block of the device is held (the others were
    ///   still written back and dropped).
    /// - [`Error::Io`]: a writeback failed; that block stays dirty and
    ///   resident.
    /// - [`Error::Closed`]: the owner thread has stopped (it panicked).
    pub fn invalidate_device(&self, dev: DeviceId) -> Result<(), Error> {
        self.core().op(OpKind::Invalidate(dev, None))
    }

    /// Flush and sync the device, drop its blocks and close it. `Err(Busy)`
    /// (and nothing done) when one of its blocks is held or awaited; on a
    /// write error it stays open and its dirty blocks stay.
    ///
    /// # Errors
    ///
    /// - [`Error::UnknownDevice`]: `dev` is not open in this cache.
    /// - [`Error::Busy`]: a block of the device is held or waited for;
    ///   nothing was done.
    /// - [`Error::Io`]: a write or the sync failed; the device stays open
    ///   with its dirty blocks.
    /// - [`Error::Closed`]: the owner thread has stopped (it panicked).
    pub fn close(&self, dev: DeviceId) -> Result<(), Error> {
        self.core().op(OpKind::Close(dev))
    }

    /// Drop every block of a device, dirty ones unwritten (writebacks
    /// already in flight complete). `Err(Busy)` and nothing done when one
    /// of its blocks is held or awaited.
    ///
    /// # Errors
    ///
    /// - [`Error::UnknownDevice`]: `dev` is not open in this cache.
    /// - [`Error::Busy`]: a block of the device is held or waited for;
    ///   nothing was done.
    /// - [`Error::Closed`]: the owner thread has stopped (it panicked).
    pub fn abort_device(&self, dev: DeviceId) -> Result<(), Error> {
        self.core().op(OpKind::Abort(dev))
    }

    /// A snapshot of the counters, read without a round trip.
    pub fn stats(&self) -> Stats {
        self.core().counters.snapshot()
    }

    /// Write back every dirty block and sync; then release this handle. If
    /// it was the last handle and no guard is live, the threads have
    /// stopped when this returns; otherwise they stop when the last handle
    /// and guard are gone.
    ///
    /// # Errors
    ///
    /// [`Error::Unwritten`] with the number of blocks that could not be
    /// written and the first error; [`Error::Closed`] when the owner thread
    /// has stopped (it panicked: dirty blocks are lost).
    pub fn shutdown(self) -> Result<(), Error> {
        let result = self.core().op(OpKind::Shutdown);
        drop(self);
        result
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("block_size", &self.block_size())
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

impl Drop for Handle {
    /// The last handle is gone. The owner writes back what is dirty, syncs
    /// and waits out reads in flight; if no guard is left it stops the
    /// engines and exits, and we join it, so the threads are gone when this
    /// returns. Otherwise the last guard's drop does the same.
    fn drop(&mut self) {
        let answer = self.core.call(|reply| Msg::Stop { reply });
        self.core.join_if_stopping(answer);
    }
}

impl Core {
    /// Send a request and wait for its reply, on a reply channel kept per
    /// thread: a hit allocates nothing.
    ///
    /// The channel has room for one reply, and it must be empty whenever
    /// no call is under way on this thread: a reply left in it would be
    /// taken by the thread's next call, to any cache, and the reply meant
    /// for that call would find the channel full and be lost. Every
    /// request carries one [`Replier`], which answers exactly once (sent,
    /// or `Closed` when dropped), and every call takes exactly one answer,
    /// including when the request never reached the owner.
    fn call(&self, make: impl FnOnce(Replier) -> Msg) -> Result<Answer, Error> {
        thread_local! {
            static REPLY: (Sender<Response>, Receiver<Response>) = bounded(1);
        }
        let ask = |tx: &Sender<Response>, rx: &Receiver<Response>| {
            debug_assert!(rx.is_empty(), "a reply was left unread");
            let sent = self.tx.send(make(Replier::new(tx.clone())));
            // Unsent (the owner is gone), the request is dropped with the
            // error, and its replier answers `Closed` into our channel
            // before `send` returns: take that answer like any other.
            drop(sent);
            rx.recv().map_err(|_| Error::Closed)?
        };
        let mut make = Some(ask);
        REPLY
            .try_with(|(tx, rx)| (make.take().expect("called once"))(tx, rx))
            .unwrap_or_else(|_| {
                // Thread-local storage is being torn down: use a fresh channel.
                let (tx, rx) = bounded(1);
                (make.take().expect("called once"))(&tx, &rx)
            })
    }

    fn get(&self, dev: DeviceId, block: u64, mode: Mode, wait: bool) -> Result<Taken, Error> {
        if self.fast_hits && mode != Mode::Zeroed {
            let write = mode == Mode::Write;
            if let Some(taken) = self.take_resident(dev, block, write) {
                if write {
                    self.counters.write_hits.add(1);
                } else {
                    self.counters.read_hits.add(1);
                }
                return Ok(taken);
            }
        }
        match self.call(|reply| Msg::Get {
            dev,
            block,
            mode,
            wait,
            reply,
        })? {
            Answer::Slot(slot) => Ok(Taken { slot, entry: None }),
            other => unreachable!("owner answered Get with {other:?}"),
        }
    }

    fn op(&self, kind: OpKind) -> Result<(), Error> {
        self.call(|reply| Msg::Op { kind, reply }).map(drop)
    }

    /// The owner thread's handle. No code panics while holding the lock
    /// (it only stores or takes the `Option`), so it cannot be poisoned;
    /// were it ever, the `Option` inside is still whole, so the guard is
    /// taken either way rather than turning a drop into a panic.
    fn owner_thread(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.owner_thread.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Have the owner let go of a share for us (we still hold it: see
    /// `SlotState::try_release_quietly`), and wait for it: if that was the
    /// last guard after the last handle, the owner flushes and exits first,
    /// and we join it.
    pub(crate) fn release_through_owner(&self, slot: u32, write: bool, dirtied: bool) {
        let answer = self.call(|reply| Msg::Release {
            slot,
            write,
            dirtied,
            reply,
        });
        self.join_if_stopping(answer);
    }

    /// Join the owner thread if `answer` says it is exiting. `Closed`
    /// means it has exited, or has panicked and answers as a dead owner
    /// (`owner::dead`) until the last handle and guard are gone: joining
    /// it then could wait for a guard this very thread holds.
    fn join_if_stopping(&self, answer: Result<Answer, Error>) {
        match answer {
            Ok(Answer::Stopping(true)) => {}
            Ok(Answer::Stopping(false)) | Err(Error::Closed) => return,
            Ok(other) => unreachable!("owner answered a release or stop with {other:?}"),
            Err(e) => {
                log::error!("blockcache: stopping: {e}");
                return;
            }
        }
        // Taken out before joining: the join waits outside the lock.
        let owner = self.owner_thread().take();
        if let Some(t) = owner {
            if t.join().is_err() {
                log::error!("blockcache: the owner thread panicked");
            }
        }
    }
}

/// The engine factory for `config`; `Auto` falls back to sync, saying so
/// once per process.
fn choose_engine(config: &Config) -> Result<Arc<dyn EngineFactory>, Error> {
    if let Some(f) = &config.custom_engine {
        return Ok(Arc::clone(f));
    }
    let depth = config.queue_depth;
    Ok(match config.engine {
        EngineKind::Sync => Arc::new(SyncFactory { depth }),
        EngineKind::Uring => {
            uring::probe()?;
            Arc::new(UringFactory { depth })
        }
        EngineKind::Auto => match uring::probe() {
            Ok(()) => Arc::new(UringFactory { depth }),
            Err(e) => {
                static WARNED: Once = Once::new();
                WARNED.call_once(|| {
                    log::warn!("blockcache: io_uring unavailable ({e}); using the sync engine")
                });
                Arc::new(SyncFactory { depth })
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::uring::{FORCE_LOCK, FORCE_UNAVAILABLE};

    #[test]
    fn auto_falls_back_to_the_sync_engine_when_io_uring_is_unavailable() {
        let _exclusive = FORCE_LOCK.write().unwrap();
        FORCE_UNAVAILABLE.store(true, Ordering::Relaxed);
        let f = tempfile::NamedTempFile::new_in("/var/tmp").unwrap();
        f.as_file().set_len(8 * 4096).unwrap();
        let uring = Cache::new(Config::new(4096, 8).engine(EngineKind::Uring));
        let auto = Cache::new(Config::new(4096, 8).engine(EngineKind::Auto)).map(|cache| {
            // Opened while io_uring is still "unavailable": an io_uring
            // engine would fail to start here, so this is the sync engine.
            let dev = cache.open(f.path());
            (cache, dev)
        });
        FORCE_UNAVAILABLE.store(false, Ordering::Relaxed);

        match uring {
            Err(Error::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::EPERM)),
            other => panic!("Uring without io_uring must fail, got {other:?}"),
        }
        let (cache, dev) = auto.expect("Auto works without io_uring");
        let dev = dev.expect("Auto opens devices on the sync engine");
        cache.write(dev, 3).unwrap().fill(9);
        cache.flush().unwrap();
        let mut back = [0u8; 4096];
        std::os::unix::fs::FileExt::read_exact_at(f.as_file(), &mut back, 3 * 4096).unwrap();
        assert!(back.iter().all(|&b| b == 9));
    }
}
