//! Byte-range helpers: any offset and length, across blocks.
//!
//! Whole blocks inside a written range are taken with `zeroed` (never read
//! from the device); a partial block at either edge is read, modified and
//! marked dirty. The range is checked against the device size first, so an
//! out-of-range call changes nothing. The range is then walked one block at
//! a time, never laid out in memory: its length costs no memory, however
//! large.

use crate::{Cache, DeviceId, Error};

/// One block's share of a byte range.
struct Piece {
    block: u64,
    /// Byte range within the block.
    start: usize,
    end: usize,
    /// Where this piece starts within the caller's buffer.
    at: usize,
}

/// The pieces of `offset..end`, first block first, made as they are taken.
struct Pieces {
    block_size: u64,
    /// The range's first byte.
    offset: u64,
    /// The next piece's first byte.
    pos: u64,
    end: u64,
}

impl Iterator for Pieces {
    type Item = Piece;

    fn next(&mut self) -> Option<Piece> {
        if self.pos >= self.end {
            return None;
        }
        let bs = self.block_size;
        let block = self.pos / bs;
        let start = (self.pos % bs) as usize;
        // Cannot overflow: `end` is within the device, whose size in bytes
        // fits a u64, and this block ends at or before the device's end.
        let stop = self.end.min((block + 1) * bs);
        let piece = Piece {
            block,
            start,
            end: start + (stop - self.pos) as usize,
            // Fits a usize when the range is a caller's buffer; the fills
            // of `set_bytes` ignore it.
            at: (self.pos - self.offset) as usize,
        };
        self.pos = stop;
        Some(piece)
    }
}

impl Cache {
    /// Copy `buf.len()` bytes starting at byte `offset` of `dev` into `buf`.
    ///
    /// ```
    /// # use blockcache::{Cache, Config, EngineKind};
    /// # let f = tempfile::NamedTempFile::new().unwrap();
    /// # f.as_file().set_len(8 * 4096).unwrap();
    /// # let cache = Cache::new(Config::new(4096, 4).engine(EngineKind::Sync)).unwrap();
    /// # let dev = cache.open(f.path()).unwrap();
    /// cache.write_bytes(dev, 4090, b"across a boundary")?;
    /// let mut back = [0u8; 17];
    /// cache.read_bytes(dev, 4090, &mut back)?;
    /// assert_eq!(&back, b"across a boundary");
    /// # Ok::<(), blockcache::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The range is checked first: [`Error::UnknownDevice`] and
    /// [`Error::OutOfRange`] (a range past the device's end, or whose end
    /// overflows a `u64`) leave `buf` untouched. [`Error::Io`] when a block
    /// cannot be read, [`Error::Closed`] when the owner thread has stopped
    /// (it panicked); the part of `buf` before the failing block has been
    /// filled.
    ///
    /// # Deadlocks
    ///
    /// Takes a [`read`](Cache::read) guard on each block of the range in
    /// turn, so it waits for ever where `read` would: when the calling
    /// thread holds a guard on a block of the range (a read guard only while
    /// a writer waits for that block), or, for a block not in the cache,
    /// guards on every block of the cache.
    pub fn read_bytes(&self, dev: DeviceId, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        for p in self.pieces(dev, offset, buf.len() as u64)? {
            let g = self.read(dev, p.block)?;
            buf[p.at..p.at + (p.end - p.start)].copy_from_slice(&g[p.start..p.end]);
        }
        Ok(())
    }

    /// Write `data` at byte `offset` of `dev`.
    ///
    /// # Errors
    ///
    /// The range is checked first: [`Error::UnknownDevice`] and
    /// [`Error::OutOfRange`] (a range past the device's end, or whose end
    /// overflows a `u64`) change nothing. [`Error::ReadOnly`] for a device
    /// opened read-only, [`Error::Io`] when a block at an edge of the range
    /// cannot be read (or no slot can be had), [`Error::Closed`] when the
    /// owner thread has stopped (it panicked); the blocks before the
    /// failing one have been written (in the cache: dirty, not yet on the
    /// device).
    ///
    /// # Deadlocks
    ///
    /// Takes a [`write`](Cache::write) or [`zeroed`](Cache::zeroed) guard
    /// on each block of the range in turn, so it waits for ever where those
    /// would: when the calling thread holds any guard on a block of the
    /// range, or, for a block not in the cache, guards on every block of
    /// the cache.
    pub fn write_bytes(&self, dev: DeviceId, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.fill_range(dev, offset, data.len() as u64, |dst, at| {
            dst.copy_from_slice(&data[at..at + dst.len()])
        })
    }

    /// Zero `len` bytes at byte `offset` of `dev`.
    ///
    /// # Errors
    ///
    /// As [`write_bytes`](Cache::write_bytes).
    ///
    /// # Deadlocks
    ///
    /// Waits for ever where [`write_bytes`](Cache::write_bytes) would.
    pub fn zero_bytes(&self, dev: DeviceId, offset: u64, len: u64) -> Result<(), Error> {
        self.set_bytes(dev, offset, len, 0)
    }

    /// Set `len` bytes at byte `offset` of `dev` to `byte`.
    ///
    /// # Errors
    ///
    /// As [`write_bytes`](Cache::write_bytes).
    ///
    /// # Deadlocks
    ///
    /// Waits for ever where [`write_bytes`](Cache::write_bytes) would.
    pub fn set_bytes(&self, dev: DeviceId, offset: u64, len: u64, byte: u8) -> Result<(), Error> {
        self.fill_range(dev, offset, len, |dst, _| dst.fill(byte))
    }

    fn fill_range(
        &self,
        dev: DeviceId,
        offset: u64,
        len: u64,
        mut fill: impl FnMut(&mut [u8], usize),
    ) -> Result<(), Error> {
        let bs = self.block_size();
        for p in self.pieces(dev, offset, len)? {
            let mut g = if p.start == 0 && p.end == bs {
                self.zeroed(dev, p.block)?
            } else {
                self.write(dev, p.block)?
            };
            fill(&mut g[p.start..p.end], p.at);
        }
        Ok(())
    }

    /// The per-block pieces of `offset..offset+len`, after checking the
    /// whole range lies inside the device.
    fn pieces(&self, dev: DeviceId, offset: u64, len: u64) -> Result<Pieces, Error> {
        let bs = self.block_size() as u64;
        let blocks = self.device_blocks(dev)?;
        let end = offset.checked_add(len).ok_or(Error::OutOfRange {
            dev,
            block: offset / bs,
        })?;
        if end > blocks.saturating_mul(bs) {
            return Err(Error::OutOfRange {
                dev,
                block: end.saturating_sub(1) / bs,
            });
        }
        Ok(Pieces {
            block_size: bs,
            offset,
            pos: offset,
            end,
        })
    }
}
