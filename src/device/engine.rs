//! The engine interface: how the owner thread hands I/O to a device and
//! hears back.
//!
//! Each open device gets one [`Engine`], made by an [`EngineFactory`]. The
//! owner thread calls [`Engine::submit`] with an [`IoRequest`] that carries
//! the block's memory; the engine performs the I/O and hands the request
//! back, with its result, to the [`Completer`] it was started with. The
//! built-in engines are io_uring (the owner thread submits into each
//! device's ring, one reaper thread per device completes) and sync
//! (pread/pwrite worker threads); a custom factory, given
//! through [`Config::custom_engine`](crate::Config::custom_engine), lets a
//! test script or fault the exact I/O the cache issues.
//!
//! The contract an engine keeps:
//! - exactly one completion per submitted request, on any thread, with
//!   that request's own outcome (an engine may move adjacent blocks of one
//!   batch in one I/O, as the io_uring engine does, but a block whose
//!   transfer failed fails only its own request);
//! - a read fills the whole block or fails (a short read is continued or is
//!   an error, never success); likewise a write;
//! - `Fsync` makes every write that *completed* before it was submitted
//!   durable (fdatasync);
//! - [`Engine::stop`] returns only when every submitted request has been
//!   completed and the kernel no longer uses any buffer.
//!
//! # Whose memory a request's buffer is
//!
//! From `submit` until the engine passes the request to
//! [`Completer::complete`], the request's block is the engine's alone: no
//! guard can reach it, and the owner does not touch it. Safe code reaches
//! the bytes only through [`IoRequest::buffer`] and
//! [`IoRequest::buffer_mut`], borrowed from the request itself, so the
//! memory cannot be moved to another request, swapped between two, or kept
//! after the request is handed back: once the cache has the request again,
//! guards may read the block.
//!
//! An engine that gives the kernel a pointer ([`IoRequest::buffer_raw`])
//! steps outside what the borrow checker sees, and takes on the one rule
//! the cache cannot check: the kernel must be done with the memory before
//! the request is completed or dropped. Using that pointer is `unsafe`,
//! and that is where an engine argues it.
//!
//! Two requests' blocks cannot be exchanged:
//!
//! ```compile_fail,E0277
//! use blockcache::engine::IoRequest;
//! fn swap(a: &mut IoRequest, b: &mut IoRequest) {
//!     std::mem::swap(a.buffer_mut().unwrap(), b.buffer_mut().unwrap()); // [u8] is unsized
//! }
//! ```
//!
//! nor a block kept past its completion:
//!
//! ```compile_fail,E0505
//! use blockcache::engine::{Completer, IoRequest};
//! fn keep(done: &Completer, mut req: IoRequest) -> &'static mut [u8] {
//!     let buf: &mut [u8] = req.buffer_mut().unwrap();
//!     done.complete(req, Ok(())); // moved while borrowed
//!     buf
//! }
//! ```
//!
//! ```
//! use blockcache::engine::{Engine, EngineFactory, Completer, IoRequest};
//! use blockcache::device::DeviceFile;
//! use std::{io, sync::Arc};
//!
//! /// An engine whose device reads as zeroes and swallows writes.
//! struct Zeroes(Completer);
//! impl Engine for Zeroes {
//!     fn submit(&mut self, mut req: IoRequest) {
//!         if let Some(buf) = req.buffer_mut() { buf.fill(0) }
//!         self.0.complete(req, Ok(()));
//!     }
//!     fn stop(&mut self) {}
//! }
//! struct ZeroesFactory;
//! impl EngineFactory for ZeroesFactory {
//!     fn start(&self, _dev: Arc<DeviceFile>, done: Completer) -> io::Result<Box<dyn Engine>> {
//!         Ok(Box::new(Zeroes(done)))
//!     }
//! }
//! ```

use crate::device::DeviceFile;
use crate::error::IoFailure;
use crate::shared::quiet::Posted;
use crate::shared::reply::{Answer, Replier};
use crate::shared::Shared;
use crate::DeviceId;
use std::fmt;
use std::io;
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::ptr::NonNull;
use std::sync::Arc;

pub(crate) use crate::shared::pool::BlockBuf;

/// What an I/O does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoKind {
    /// Fill the buffer from the device.
    Read,
    /// Write the buffer to the device.
    Write,
    /// fdatasync the device.
    Fsync,
}

/// One I/O from the owner thread to an engine. Hand it back through
/// [`Completer::complete`] when done; until then its block's memory is the
/// engine's (module docs).
pub struct IoRequest {
    pub(crate) tag: u64,
    pub(crate) dev: DeviceId,
    pub(crate) kind: IoKind,
    pub(crate) block: u64,
    pub(crate) offset: u64,
    pub(crate) buf: Option<BlockBuf>,
    /// A read's first waiter, handed the block by whoever completes the
    /// read (see [`Completer::complete`]).
    pub(crate) grant: Option<Grant>,
}

/// The get that caused a read, waiting for its block. On success the
/// completing thread grants it the slot and answers it itself, right after
/// queueing the completion for the owner: the block reaches its reader in
/// one hand-off, not two, and the owner handles the completion off the
/// reader's path (without being woken for it, see `shared::quiet`). On failure it goes back to the owner with the request,
/// which answers it with the error.
///
/// Granting here is sound because the owner keeps a slot closed while its
/// read is in flight and changes no holder count of a `Reading` slot: this
/// grant is the only change to the word's holders until the owner handles
/// the completion, which it does knowing the grant was made.
pub(crate) struct Grant {
    pub(crate) shared: Arc<Shared>,
    pub(crate) slot: u32,
    pub(crate) write: bool,
    pub(crate) reply: Replier,
}

impl IoRequest {
    /// Read, write or fsync.
    pub fn kind(&self) -> IoKind {
        self.kind
    }

    /// The device.
    pub fn device(&self) -> DeviceId {
        self.dev
    }

    /// The block number (0 for fsync).
    pub fn block(&self) -> u64 {
        self.block
    }

    /// The byte offset in the device (0 for fsync).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The block's bytes: what a write sends. `None` for fsync.
    pub fn buffer(&self) -> Option<&[u8]> {
        self.buf.as_ref().map(|b| b.as_slice())
    }

    /// The block's bytes, to fill for a read. `None` for fsync.
    pub fn buffer_mut(&mut self) -> Option<&mut [u8]> {
        self.buf.as_mut().map(|b| b.as_mut_slice())
    }

    /// The block's memory as a pointer and length, for an engine that
    /// hands it to the kernel (io_uring, AIO). `None` for fsync.
    ///
    /// The memory stays valid, and the engine's alone, until the request
    /// is passed to [`Completer::complete`] or dropped; the engine must
    /// not do either while the kernel may still read or write through the
    /// pointer (module docs).
    pub fn buffer_raw(&mut self) -> Option<NonNull<[u8]>> {
        let buf = self.buf.as_mut()?;
        let ptr = NonNull::new(buf.as_mut_ptr()).expect("pool memory is non-null");
        Some(NonNull::slice_from_raw_parts(ptr, buf.len()))
    }
}

impl fmt::Debug for IoRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoRequest")
            .field("dev", &self.dev)
            .field("kind", &self.kind)
            .field("block", &self.block)
            .finish()
    }
}

/// Where an engine hands finished requests back to the owner thread.
/// Cheap to clone; usable from any thread, including from inside
/// [`Engine::submit`] (such completions are queued in place).
#[derive(Clone)]
pub struct Completer {
    pub(crate) owner: Arc<dyn ToOwner>,
    pub(crate) dev: DeviceId,
}

/// How a completion reaches the owner thread: on its channel, or queued in
/// place when the engine completes on the owner's own thread (from inside
/// `submit`). The owner implements it; an engine needs nothing more of the
/// owner than this.
pub(crate) trait ToOwner: Send + Sync + UnwindSafe + RefUnwindSafe {
    /// Hand the owner `req`, done with `result`.
    fn completed(&self, req: IoRequest, result: Result<(), IoFailure>);

    /// Wake the owner: a completion it waits for is on the quiet queue.
    fn wake(&self);
}

impl Completer {
    /// The device this engine serves.
    pub fn device(&self) -> DeviceId {
        self.dev
    }

    /// Report `req` done. A read must have filled the whole buffer and a
    /// write sent all of it for `Ok`.
    ///
    /// A successful read's block goes to the get waiting for it from here,
    /// on the completing thread; the owner then hears of the completion.
    pub fn complete(&self, mut req: IoRequest, result: io::Result<()>) {
        let Some(grant) = req.grant.take_if(|_| result.is_ok()) else {
            let result = result.map_err(|e| (&e).into());
            return self.owner.completed(req, result);
        };
        grant.shared.slots[grant.slot as usize].state.grant(grant.write);
        // The owner has only bookkeeping left: it takes the completion from
        // the quiet queue when next awake, and is woken only if it waits
        // for it (`shared::quiet`).
        match grant.shared.quiet.post(req) {
            Posted::Quietly => {}
            Posted::WakeOwner => self.owner.wake(),
            Posted::Full(req) => self.owner.completed(req, Ok(())),
        }
        // Answered only after the completion is queued for the owner, who
        // drains that queue before every request it handles: it never sees
        // a request that follows from a block it has not yet seen arrive
        // (a close right after the guard's drop, say).
        grant.reply.send(Ok(Answer::Slot(grant.slot)));
    }
}

/// The I/O engine of one device. Owned and called by the owner thread only.
///
/// Each request's block is the engine's from `submit` until it hands the
/// request to [`Completer::complete`], and must not be used after; an
/// engine that passes [`IoRequest::buffer_raw`] to the kernel completes
/// the request only once the kernel is done with it (see "Whose memory a
/// request's buffer is" in the [module docs](self)).
pub trait Engine: Send {
    /// Take `req`. Must not block on the device: queue what cannot start.
    /// An engine may wait for the next [`unplug`](Engine::unplug) before
    /// starting it; the owner always unplugs after a batch of submits.
    fn submit(&mut self, req: IoRequest);

    /// Called after a batch of submits: start anything queued (engines that
    /// batch submissions enter the kernel here, once per batch).
    fn unplug(&mut self) {}

    /// Release threads and kernel resources. Called once, and only when
    /// every submitted request has been completed: the owner, which
    /// receives completions, is the caller, so an engine must not wait
    /// here for a completion to be received.
    fn stop(&mut self);
}

/// Makes the [`Engine`] of each device the cache opens.
pub trait EngineFactory: Send + Sync {
    /// Start an engine for `device`, completing requests through `done`.
    /// Called on the thread that called `Cache::open`, never on the owner
    /// thread (so engine threads do not inherit the owner's CPU pinning).
    ///
    /// # Errors
    ///
    /// Whatever keeps the engine from starting (no descriptor, no thread):
    /// `Cache::open` fails with it as [`Error::Io`](crate::Error::Io),
    /// naming the path.
    fn start(&self, device: Arc<DeviceFile>, done: Completer) -> io::Result<Box<dyn Engine>>;
}
