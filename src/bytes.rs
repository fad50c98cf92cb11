//! Byte-range helpers: any offset and length, across blocks.
//!
//! Whole blocks inside a written range are taken with `zeroed` (never read
//! from the device); a partial block at either edge is read, modified and
//! marked dirty. The range is checked against the device size first, so an
//! out-of-range call changes nothing.

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
    pub fn read_bytes(&self, dev: DeviceId, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        for p in self.pieces(dev, offset, buf.len() as u64)? {
            let g = self.read(dev, p.block)?;
            buf[p.at..p.at + (p.end - p.start)].copy_from_slice(&g[p.start..p.end]);
        }
        Ok(())
    }

    /// Write `data` at byte `offset` of `dev`.
    pub fn write_bytes(&self, dev: DeviceId, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.fill_range(dev, offset, data.len() as u64, |dst, at| {
            dst.copy_from_slice(&data[at..at + dst.len()])
        })
    }

    /// Zero `len` bytes at byte `offset` of `dev`.
    pub fn zero_bytes(&self, dev: DeviceId, offset: u64, len: u64) -> Result<(), Error> {
        self.set_bytes(dev, offset, len, 0)
    }

    /// Set `len` bytes at byte `offset` of `dev` to `byte`.
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

    /// Split `offset..offset+len` into per-block pieces, after checking the
    /// whole range lies inside the device.
    fn pieces(&self, dev: DeviceId, offset: u64, len: u64) -> Result<Vec<Piece>, Error> {
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
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < end {
            let block = pos / bs;
            let start = (pos % bs) as usize;
            let stop = end.min((block + 1) * bs);
            out.push(Piece {
                block,
                start,
                end: start + (stop - pos) as usize,
                at: (pos - offset) as usize,
            });
            pos = stop;
        }
        Ok(out)
    }
}
