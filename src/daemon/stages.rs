//! Where a queued packet's time goes: latency histograms per stage of the
//! live path, kept only when `appwall run --stage-timings` asks for them.
//!
//! Stages, in a packet's order: `queue_wait` (from the kernel's receive
//! timestamp of the packet to the worker holding it: the PREROUTING hooks
//! before the queue, the wait in the queue and the socket, and the receive
//! system call, which takes up to a batch of packets at once), `judge` (the
//! shared parse -> connection -> engine step, [`crate::source::Tracker`])
//! and `verdict` (handing the verdict to the source: usually a note in the
//! pending batch, a system call when a batch or a non-accept verdict goes
//! out). The split of `judge` into parsing, the connection table and the
//! engine is measured offline by `appwall bench` (docs/performance.md),
//! where no clock read disturbs it; the CPU cost of the kernel's side by
//! `benches/e2e.sh --perf`.
//!
//! Guarantees: recording is a few relaxed atomic adds in the worker's own
//! histograms (no lock, no allocation); when timings are off nothing is
//! recorded and no clock is read. Buckets are powers of two from 128 ns to
//! about 67 ms, plus one for anything longer, so a percentile read from
//! them is an upper bound within a factor of two.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// The stages timed, in a packet's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Kernel receive timestamp to the worker holding the packet.
    QueueWait,
    /// Parse, connection lookup and the engine, per packet.
    Judge,
    /// One verdict message sent.
    Verdict,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 3] = [Stage::QueueWait, Stage::Judge, Stage::Verdict];

    /// The stage's name in the status file and the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Stage::QueueWait => "queue_wait",
            Stage::Judge => "judge",
            Stage::Verdict => "verdict",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Number of finite buckets: upper bounds 2^7 .. 2^26 ns.
pub const BUCKETS: usize = 20;
const FIRST_SHIFT: u32 = 7;

/// Upper bound of finite bucket `i`, in nanoseconds.
pub fn bucket_bound_ns(i: usize) -> u64 {
    1u64 << (FIRST_SHIFT as usize + i.min(BUCKETS - 1))
}

fn bucket_of(ns: u64) -> usize {
    // Smallest i with ns <= 2^(7+i); the last slot holds everything longer.
    let bits = 64 - ns.saturating_sub(1).leading_zeros();
    usize::try_from(bits.saturating_sub(FIRST_SHIFT)).map_or(BUCKETS, |i| i.min(BUCKETS))
}

/// Latency histograms of one worker, one per [`Stage`].
#[derive(Debug, Default)]
pub struct StageHistograms {
    counts: [[AtomicU64; BUCKETS + 1]; Stage::ALL.len()],
    sum_ns: [AtomicU64; Stage::ALL.len()],
}

impl StageHistograms {
    /// Records one duration of `stage`.
    #[inline]
    pub fn record(&self, stage: Stage, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let s = stage.index();
        self.counts[s][bucket_of(ns)].fetch_add(1, Relaxed);
        self.sum_ns[s].fetch_add(ns, Relaxed);
    }

    /// Records the time from a kernel timestamp to now; a timestamp in the
    /// future (clock stepped) is ignored rather than counted as zero.
    #[inline]
    pub fn record_since(&self, stage: Stage, then: SystemTime) {
        if let Ok(d) = SystemTime::now().duration_since(then) {
            self.record(stage, d);
        }
    }

    /// Adds this worker's figures into `into` (one entry per stage).
    pub fn add_to(&self, into: &mut [StageSummary]) {
        for (st, out) in Stage::ALL.iter().zip(into.iter_mut()) {
            let s = st.index();
            for (b, c) in out.buckets.iter_mut().zip(&self.counts[s]) {
                *b += c.load(Relaxed);
            }
            out.sum_ns += self.sum_ns[s].load(Relaxed);
        }
    }
}

/// One stage's histogram summed over workers, as reported.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StageSummary {
    /// Stage name ([`Stage::name`]).
    pub stage: &'static str,
    /// Durations recorded.
    pub count: u64,
    /// Their sum, nanoseconds.
    pub sum_ns: u64,
    /// Upper bounds of the median, 90th and 99th percentile, nanoseconds
    /// (`None` with no samples; `u64::MAX` when beyond the last bucket).
    pub p50_ns: Option<u64>,
    /// See `p50_ns`.
    pub p90_ns: Option<u64>,
    /// See `p50_ns`.
    pub p99_ns: Option<u64>,
    /// Count per bucket (not cumulative); the last is beyond 2^26 ns.
    pub buckets: [u64; BUCKETS + 1],
}

impl StageSummary {
    /// Empty summaries, one per stage, in [`Stage::ALL`] order.
    pub fn empty() -> Vec<StageSummary> {
        Stage::ALL
            .iter()
            .map(|s| StageSummary {
                stage: s.name(),
                count: 0,
                sum_ns: 0,
                p50_ns: None,
                p90_ns: None,
                p99_ns: None,
                buckets: [0; BUCKETS + 1],
            })
            .collect()
    }

    /// Fills `count` and the percentiles from the buckets.
    pub fn finish(&mut self) {
        self.count = self.buckets.iter().sum();
        self.p50_ns = self.quantile(50);
        self.p90_ns = self.quantile(90);
        self.p99_ns = self.quantile(99);
    }

    /// Upper bound of the bucket holding the `pct`-th percentile.
    fn quantile(&self, pct: u64) -> Option<u64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        // Rank of the percentile, rounded up, at least 1.
        let rank = (total.saturating_mul(pct)).div_ceil(100).max(1);
        let mut seen = 0u64;
        for (i, c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(if i < BUCKETS { bucket_bound_ns(i) } else { u64::MAX });
            }
        }
        Some(u64::MAX)
    }
}

/// Sums the workers' histograms into one summary per stage.
pub fn summarize<'a>(workers: impl IntoIterator<Item = &'a StageHistograms>) -> Vec<StageSummary> {
    let mut out = StageSummary::empty();
    for w in workers {
        w.add_to(&mut out);
    }
    for s in &mut out {
        s.finish();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_with_an_overflow_slot() {
        for (ns, b) in [
            (0, 0),
            (1, 0),
            (128, 0),
            (129, 1),
            (256, 1),
            (257, 2),
            (1 << 26, BUCKETS - 1),
            ((1 << 26) + 1, BUCKETS),
            (u64::MAX, BUCKETS),
        ] {
            assert_eq!(bucket_of(ns), b, "{ns} ns");
        }
        assert_eq!(bucket_bound_ns(0), 128);
        assert_eq!(bucket_bound_ns(BUCKETS - 1), 1 << 26);
    }

    #[test]
    fn percentiles_are_bucket_upper_bounds_summed_over_workers() {
        let a = StageHistograms::default();
        let b = StageHistograms::default();
        for _ in 0..98 {
            a.record(Stage::Judge, Duration::from_nanos(200)); // bucket <= 256
        }
        b.record(Stage::Judge, Duration::from_micros(3)); // <= 4096
        b.record(Stage::Judge, Duration::from_secs(1)); // overflow
        let s = summarize([&a, &b]);
        let judge = s.iter().find(|s| s.stage == "judge").unwrap();
        assert_eq!(judge.count, 100);
        assert_eq!(judge.p50_ns, Some(256));
        assert_eq!(judge.p90_ns, Some(256));
        assert_eq!(judge.p99_ns, Some(4096));
        assert_eq!(judge.sum_ns, 98 * 200 + 3000 + 1_000_000_000);
        let wait = s.iter().find(|s| s.stage == "queue_wait").unwrap();
        assert_eq!((wait.count, wait.p50_ns), (0, None));
    }

    #[test]
    fn a_timestamp_from_the_future_is_not_counted() {
        let h = StageHistograms::default();
        h.record_since(Stage::QueueWait, SystemTime::now() + Duration::from_secs(60));
        h.record_since(Stage::QueueWait, SystemTime::now() - Duration::from_micros(50));
        let s = summarize([&h]);
        assert_eq!(s[0].count, 1);
        assert_eq!(s[0].p50_ns, Some(65_536));
    }
}
