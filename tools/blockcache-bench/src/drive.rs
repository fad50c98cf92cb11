//! Running a measured section on worker threads: start them together,
//! time every operation into an hdrhistogram, stop at a count or a deadline.

use crate::measure::own_voluntary_switches;
use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// How long each run lasts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Limit {
    /// This many operations per thread.
    Ops(u64),
    /// This many seconds.
    Seconds(f64),
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Ops(n) => write!(f, "{n} ops per thread per run"),
            Limit::Seconds(s) => write!(f, "{s} s per run"),
        }
    }
}

/// A latency histogram in nanoseconds, 1 ns to 100 s at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds")
}

/// One thread's recording of a measured section.
pub struct Recorder {
    hist: Histogram<u64>,
    ops: u64,
    max_ops: u64,
    deadline: Option<Instant>,
    excluded: Duration,
    parks_at_start: u64,
}

impl Recorder {
    fn new(limit: Limit, start: Instant) -> Recorder {
        let (max_ops, deadline) = match limit {
            Limit::Ops(n) => (n, None),
            Limit::Seconds(s) => (u64::MAX, Some(start + Duration::from_secs_f64(s))),
        };
        Recorder {
            hist: histogram(),
            ops: 0,
            max_ops,
            deadline,
            excluded: Duration::ZERO,
            parks_at_start: own_voluntary_switches(),
        }
    }

    /// Stop after at most `n` operations in all (a scan's length).
    pub fn cap_ops(&mut self, n: u64) {
        self.max_ops = self.max_ops.min(n);
    }

    /// Count one operation that took from `start` to `end`.
    #[inline]
    pub fn record(&mut self, start: Instant, end: Instant) {
        self.hist
            .saturating_record(end.duration_since(start).as_nanos().max(1) as u64);
        self.ops += 1;
    }

    /// Count `n` operations that together took from `start` to `end`,
    /// each recorded at their mean (for operations too short to time one
    /// by one).
    pub fn record_batch(&mut self, start: Instant, end: Instant, n: u64) {
        let mean = end.duration_since(start).as_nanos() as f64 / n.max(1) as f64;
        self.hist.saturating_record_n((mean.round() as u64).max(1), n);
        self.ops += n;
    }

    /// Whether the run is over (checked with a time already taken).
    #[inline]
    pub fn done(&self, now: Instant) -> bool {
        self.ops >= self.max_ops || self.deadline.is_some_and(|d| now >= d)
    }

    /// Leave `d` (set-up between batches, say) out of the run's time.
    /// Meaningful for one-thread runs.
    pub fn exclude(&mut self, d: Duration) {
        self.excluded += d;
        if let Some(dl) = &mut self.deadline {
            *dl += d;
        }
    }

    /// Operations so far.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Time `op(i)` for i = 0, 1, ... until the run is over.
    pub fn each(&mut self, mut op: impl FnMut(u64) -> Result<()>) -> Result<()> {
        let mut i = 0;
        if self.max_ops == 0 {
            return Ok(());
        }
        loop {
            let t0 = Instant::now();
            op(i)?;
            let t1 = Instant::now();
            self.record(t0, t1);
            i += 1;
            if self.done(t1) {
                return Ok(());
            }
        }
    }
}

/// What a measured section produced.
pub struct Timed {
    /// Every operation's latency, all threads merged.
    pub hist: Histogram<u64>,
    /// Operations, all threads.
    pub ops: u64,
    /// Wall time from the common start to the last thread's end, less
    /// excluded time.
    pub elapsed: Duration,
    /// Times the worker threads blocked (voluntary context switches).
    pub client_parks: u64,
}

/// Run `threads` threads: each calls `setup(t)`, all wait for each other,
/// then each runs `body(t, state, recorder)`. The first error of any thread
/// is returned after all have finished.
pub fn run_threads<S>(
    threads: usize,
    limit: Limit,
    setup: impl Fn(usize) -> Result<S> + Sync,
    body: impl Fn(usize, S, &mut Recorder) -> Result<()> + Sync,
) -> Result<Timed> {
    let barrier = Barrier::new(threads + 1);
    let (setup, body, barrier) = (&setup, &body, &barrier);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let state = setup(t);
                    barrier.wait();
                    let mut rec = Recorder::new(limit, Instant::now());
                    let result = state.and_then(|st| body(t, st, &mut rec));
                    let parks = own_voluntary_switches() - rec.parks_at_start;
                    (result, rec, Instant::now(), parks)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut hist = histogram();
        let (mut ops, mut end, mut excluded, mut client_parks) = (0, start, Duration::ZERO, 0);
        let mut first_err = None;
        for h in handles {
            let (result, rec, done, parks) = h.join().map_err(|_| anyhow!("a worker thread panicked"))?;
            if let Err(e) = result {
                first_err.get_or_insert(e);
            }
            hist.add(&rec.hist).expect("same bounds");
            ops += rec.ops;
            client_parks += parks;
            end = end.max(done);
            excluded = excluded.max(rec.excluded);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(Timed {
                hist,
                ops,
                elapsed: end.duration_since(start).saturating_sub(excluded),
                client_parks,
            }),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_limit_counts_per_thread_and_errors_surface() {
        let t = run_threads(3, Limit::Ops(100), |_| Ok(()), |_, (), rec| rec.each(|_| Ok(()))).unwrap();
        assert_eq!(t.ops, 300);
        assert_eq!(t.hist.len(), 300);
        let err = run_threads(
            2,
            Limit::Ops(10),
            |t| if t == 1 { Err(anyhow!("no file")) } else { Ok(()) },
            |_, (), rec| rec.each(|_| Ok(())),
        );
        assert_eq!(err.err().unwrap().to_string(), "no file");
        let capped = run_threads(
            1,
            Limit::Ops(10),
            |_| Ok(()),
            |_, (), rec| {
                rec.cap_ops(4);
                rec.each(|_| Ok(()))
            },
        )
        .unwrap();
        assert_eq!(capped.ops, 4);
    }
}
