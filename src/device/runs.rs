//! Runs: adjacent blocks submitted in one batch, moved as one vectored
//! I/O by either built-in engine. One pass through the filesystem's and
//! block layer's per-I/O work for a readahead window or a writeback batch,
//! instead of one per block. Each block keeps its own request: a run that
//! ends short or fails is split by its engine, the blocks moved whole
//! complete, and the rest are done again one by one, so a bad block fails
//! only its own request.

use super::engine::{IoKind, IoRequest};

/// Most blocks in one run.
pub(crate) const MAX_RUN: usize = 64;
/// Most bytes in one run: large enough that the per-I/O cost is spread
/// thin, small enough that the first block of a run is not kept long
/// behind the rest (256 KiB, a few hundred µs on a SATA SSD).
pub(crate) const MAX_RUN_BYTES: usize = 256 << 10;

/// Bytes a request moves (0 for fsync).
pub(super) fn block_len(req: &IoRequest) -> usize {
    req.buffer().map_or(0, <[u8]>::len)
}

/// `next` starts where `prev` ends, and both move a block the same way.
fn adjacent(prev: &IoRequest, next: &IoRequest) -> bool {
    prev.kind == next.kind
        && prev.kind != IoKind::Fsync
        && prev.buf.is_some()
        && next.buf.is_some()
        && prev.offset.checked_add(block_len(prev) as u64) == Some(next.offset)
}

/// What [`split_into_runs`] hands out: a request with no neighbour, or a
/// run of two or more adjacent ones in block order.
pub(super) enum Job {
    One(IoRequest),
    Run(Vec<IoRequest>),
}

impl Job {
    /// Every request, in block order.
    pub(super) fn into_requests(self) -> impl Iterator<Item = IoRequest> {
        let (one, run) = match self {
            Job::One(req) => (Some(req), Vec::new()),
            Job::Run(reqs) => (None, reqs),
        };
        one.into_iter().chain(run)
    }
}

/// Hand `batch`, sorted by kind and offset, to `start` as jobs: runs of
/// adjacent requests, at most [`MAX_RUN`] blocks and [`MAX_RUN_BYTES`],
/// and lone requests. A lone request costs no allocation. `batch` is left
/// empty, its allocation kept.
pub(super) fn split_into_runs(batch: &mut Vec<IoRequest>, mut start: impl FnMut(Job)) {
    batch.sort_by_key(|r| (r.kind as u8, r.offset));
    let mut run: Vec<IoRequest> = Vec::new();
    let mut run_bytes = 0;
    // A run of one leaves `run`'s allocation for the next; a longer run
    // takes it along.
    let mut hand_out = |run: &mut Vec<IoRequest>| match run.len() {
        1 => start(Job::One(run.pop().expect("a run of one"))),
        _ => start(Job::Run(std::mem::take(run))),
    };
    for req in batch.drain(..) {
        let joins = run.last().is_some_and(|last| {
            adjacent(last, &req) && run.len() < MAX_RUN && run_bytes + block_len(&req) <= MAX_RUN_BYTES
        });
        if !joins && !run.is_empty() {
            hand_out(&mut run);
            run_bytes = 0;
        }
        run_bytes += block_len(&req);
        run.push(req);
    }
    if !run.is_empty() {
        hand_out(&mut run);
    }
}

/// How many requests of `run`, in order, a transfer of `moved` bytes
/// finished whole.
pub(super) fn whole(run: &[IoRequest], moved: usize) -> usize {
    let mut end = 0;
    run.iter()
        .take_while(|r| {
            end += block_len(r);
            end <= moved
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::conformance::{request, BS};
    use crate::shared::pool::Pool;

    /// The runs `split_into_runs` makes of `reqs`, as (kind, first block,
    /// blocks) triples.
    fn runs_of(reqs: Vec<IoRequest>) -> Vec<(IoKind, u64, usize)> {
        let mut batch = reqs;
        let mut out = Vec::new();
        split_into_runs(&mut batch, |job| {
            let run: Vec<IoRequest> = job.into_requests().collect();
            for pair in run.windows(2) {
                assert_eq!(pair[0].block + 1, pair[1].block, "a run is adjacent, in order");
            }
            out.push((run[0].kind, run[0].block, run.len()));
        });
        assert!(batch.is_empty());
        out
    }

    #[test]
    fn adjacent_blocks_of_one_kind_make_runs_in_order() {
        let pool = Pool::new(BS, 256).unwrap();
        let r = |tag: u64, kind, block| request(&pool, tag, kind, block);
        let got = runs_of(vec![
            r(0, IoKind::Read, 12),
            r(1, IoKind::Write, 3),
            r(2, IoKind::Read, 10),
            r(3, IoKind::Read, 11),
            r(4, IoKind::Fsync, 0),
            r(5, IoKind::Write, 4),
            r(6, IoKind::Read, 20),
            r(7, IoKind::Write, 6),
        ]);
        assert_eq!(
            got,
            [
                (IoKind::Read, 10, 3),
                (IoKind::Read, 20, 1),
                (IoKind::Write, 3, 2),
                (IoKind::Write, 6, 1),
                (IoKind::Fsync, 0, 1),
            ]
        );
    }

    #[test]
    fn a_run_stops_at_its_limits() {
        let pool = Pool::new(BS, 256).unwrap();
        let reqs = (0..150).map(|b| request(&pool, b, IoKind::Read, b)).collect();
        let limit = MAX_RUN.min(MAX_RUN_BYTES / BS);
        let got = runs_of(reqs);
        let lens: Vec<usize> = got.iter().map(|r| r.2).collect();
        assert!(lens.iter().all(|&n| n <= limit), "{lens:?}");
        assert_eq!(lens.iter().sum::<usize>(), 150);
        assert_eq!(lens.len(), 150usize.div_ceil(limit));
    }

    #[test]
    fn whole_counts_the_blocks_a_transfer_finished() {
        let pool = Pool::new(BS, 4).unwrap();
        let run: Vec<IoRequest> = (0..4).map(|b| request(&pool, b, IoKind::Read, b)).collect();
        assert_eq!(whole(&run, 0), 0);
        assert_eq!(whole(&run, BS - 1), 0);
        assert_eq!(whole(&run, BS), 1);
        assert_eq!(whole(&run, 3 * BS + 100), 3);
        assert_eq!(whole(&run, 4 * BS), 4);
    }
}
