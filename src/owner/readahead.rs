//! Sequential readahead: a device read in order has its next blocks read
//! before they are asked for ([`Config::readahead`](crate::Config::readahead)).
//!
//! Only what reaches the owner drives it: read gets that miss (a new read
//! or one joining a read in flight). Hits never come here, and need not:
//!
//! - a reader slower than the device hits its way through a window and
//!   misses on the block after it, which continues the run and starts the
//!   next, larger window;
//! - a reader faster than the device catches up with the window's reads in
//!   flight and joins them, which starts the next window once it is within
//!   half a window of the end.
//!
//! So the hit path carries no readahead marks and stays as it is.
//!
//! Each device keeps a few runs ([`STREAMS`]), so that threads reading
//! separate ranges of one device in order do not reset each other; a miss
//! that continues none replaces the run least recently continued. A run
//! starts reading ahead on its second miss in order: a random reader
//! whose miss happens to follow its previous one costs one window at most.
//!
//! Readahead takes only what costs no waiting, as `prefetch` does: it
//! stops at the device's queue depth, when a get waits for a slot, and
//! when no slot is free or clean. Adjacent reads submitted in one batch
//! reach the device as one request (the block layer merges them).

use super::Owner;
use crate::stats::bump;
use crate::DeviceId;

/// Runs tracked per device.
pub(crate) const STREAMS: usize = 4;

/// Blocks in a run's first window (doubled per window up to the maximum).
const FIRST_WINDOW: u32 = 8;

/// One run of in-order reads on a device.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    /// Blocks `start..end` were asked for or read ahead, in order; a miss
    /// in `start..=end` continues the run.
    start: u64,
    end: u64,
    /// The size of the last window read ahead (0: none yet).
    window: u32,
    /// When the run was last continued (the device's miss count then).
    last: u64,
}

/// A device's runs.
#[derive(Debug, Default)]
pub(crate) struct Readahead {
    runs: [Run; STREAMS],
    misses: u64,
}

impl Readahead {
    /// A read get of `block` missed: the blocks to read ahead of it now,
    /// if any, as `first..end` (at most `max` of them), and the run they
    /// are for.
    fn on_miss(&mut self, block: u64, max: u32) -> Option<(usize, u64, u64)> {
        self.misses += 1;
        let now = self.misses;
        let Some(i) = self
            .runs
            .iter()
            .position(|r| r.last != 0 && r.start <= block && block <= r.end)
        else {
            let oldest = self.runs.iter_mut().min_by_key(|r| r.last).expect("STREAMS > 0");
            *oldest = Run {
                start: block,
                end: block + 1,
                window: 0,
                last: now,
            };
            return None;
        };
        let run = &mut self.runs[i];
        run.last = now;
        // Within half a window of the end: the next window is due.
        let ahead = run.end.saturating_sub(block + 1);
        if run.window != 0 && ahead > u64::from(run.window / 2) {
            return None;
        }
        run.window = if run.window == 0 {
            FIRST_WINDOW.min(max)
        } else {
            run.window.saturating_mul(2).min(max)
        };
        let first = run.end.max(block + 1);
        let end = first + u64::from(run.window);
        run.end = end;
        Some((i, first, end))
    }

    /// Run `i`'s window was read ahead only up to `end` (exclusive): the
    /// rest is for a later window.
    fn stopped_at(&mut self, i: usize, end: u64) {
        self.runs[i].end = end;
    }
}

impl Owner {
    /// A read get of `dev`'s `block` missed: read ahead of it if it
    /// continues a run in order. Called after the get's own read is
    /// issued, so that read is submitted first.
    pub(super) fn read_ahead(&mut self, dev: DeviceId, block: u64) {
        if self.readahead == 0 {
            return;
        }
        let Some(d) = self.devices.get_mut(&dev) else {
            return;
        };
        let Some((run, first, end)) = d.readahead.on_miss(block, self.readahead) else {
            return;
        };
        for b in first..end.min(d.blocks) {
            if self.shared.lookup(dev, b).is_some() {
                continue;
            }
            if !self.start_read(dev, b) {
                // Out of queue depth or slots: a later miss of the run
                // reads the rest.
                if let Some(d) = self.devices.get_mut(&dev) {
                    d.readahead.stopped_at(run, b);
                }
                return;
            }
            bump(&self.counters.readaheads);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(ra: &mut Readahead, blocks: impl IntoIterator<Item = u64>, max: u32) -> Vec<(u64, u64)> {
        blocks
            .into_iter()
            .filter_map(|b| ra.on_miss(b, max).map(|(_, first, end)| (first, end)))
            .collect()
    }

    #[test]
    fn a_run_starts_on_its_second_miss_in_order_and_doubles() {
        let mut ra = Readahead::default();
        // Misses at 10 and 11 start a window of 8 after 11.
        assert_eq!(windows(&mut ra, [10, 11], 64), [(12, 20)]);
        // The reader joins reads in flight: nothing until within half a
        // window of the end (block 16 leaves 3 ahead).
        assert_eq!(windows(&mut ra, [12, 13, 14], 64), []);
        assert_eq!(windows(&mut ra, [15], 64), [(20, 36)]);
        // A reader that hit its way to the end misses right after it.
        assert_eq!(windows(&mut ra, [36], 64), [(37, 69)]);
        assert_eq!(windows(&mut ra, [69, 133], 64), [(70, 134), (134, 198)]);
    }

    #[test]
    fn the_window_never_exceeds_the_maximum() {
        let mut ra = Readahead::default();
        assert_eq!(windows(&mut ra, [0, 1], 3), [(2, 5)]);
        assert_eq!(windows(&mut ra, [5], 3), [(6, 9)]);
        let mut ra = Readahead::default();
        assert_eq!(
            windows(&mut ra, [0, 1, 9, 25, 57], 1000),
            [(2, 10), (10, 26), (26, 58), (58, 122)]
        );
    }

    #[test]
    fn random_misses_start_no_window() {
        let mut ra = Readahead::default();
        assert_eq!(windows(&mut ra, [500, 7, 1000, 3, 501_000, 42, 9_000], 64), []);
    }

    #[test]
    fn interleaved_runs_keep_their_own_windows() {
        let mut ra = Readahead::default();
        let got = windows(&mut ra, [0, 1000, 1, 1001, 2000, 3000, 2, 1002], 64);
        assert_eq!(got, [(2, 10), (1002, 1010)]);
        // A fifth run replaces the one continued least recently (the one
        // at 2000), not the active ones.
        assert_eq!(windows(&mut ra, [7000, 3001], 64), [(3002, 3010)]);
        assert_eq!(windows(&mut ra, [6, 1006], 64), [(10, 26), (1010, 1026)]);
        assert_eq!(windows(&mut ra, [2001], 64), []);
    }
}
