//! Schedule-lag histogram: how late each check started compared with its slot.
//!
//! The scheduler records `actual wake time - scheduled time` before every check; the daemon's
//! metrics and the probe-capacity benchmark read quantiles from it. Buckets are 100 µs wide up to
//! 1 s, plus one overflow bucket; each is an `AtomicU64`, so recording is lock-free and cheap
//! enough to do on every check from any task.
//!
//! [`LagHistogram::prometheus_buckets`] folds the fine buckets into a few Prometheus `le`
//! bounds, so `/metrics` exposes a real histogram (`_bucket`, `_sum`, `_count`) rather than
//! precomputed quantiles that cannot be aggregated across daemons.
//!
//! It must not allocate or lock on `record`, and it does not try to be exact: a quantile is the
//! upper bound of the bucket it falls in (the largest value seen, for the overflow bucket).
//! `reset` is not atomic with respect to concurrent `record` calls; a record racing a reset may
//! survive it, which is fine for a measurement window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Width of one bucket.
const BUCKET_US: u64 = 100;
/// Number of 100 µs buckets below 1 s; index `BUCKETS` is the overflow bucket.
const BUCKETS: usize = 10_000;

/// A lock-free histogram of schedule lag (100 µs resolution up to 1 s, then one overflow bucket).
pub struct LagHistogram {
    buckets: Box<[AtomicU64]>,
    /// Largest value recorded since the last reset, in microseconds.
    max_us: AtomicU64,
    /// Sum of every value recorded since the last reset, in microseconds (saturating).
    sum_us: AtomicU64,
}

/// The `le` bounds exposed to Prometheus, in seconds (each a multiple of the bucket width).
pub const PROMETHEUS_BOUNDS: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, f64::INFINITY];

impl Default for LagHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for LagHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagHistogram")
            .field("count", &self.count())
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("max", &self.max())
            .finish()
    }
}

impl LagHistogram {
    pub fn new() -> Self {
        LagHistogram { buckets: (0..=BUCKETS).map(|_| AtomicU64::new(0)).collect(), max_us: AtomicU64::new(0), sum_us: AtomicU64::new(0) }
    }

    /// Record one lag value.
    pub fn record(&self, lag: Duration) {
        let us = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        let index = usize::try_from(us / BUCKET_US).unwrap_or(BUCKETS).min(BUCKETS);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        // Saturating: a fetch_add could wrap on `Duration::MAX`.
        let _ = self.sum_us.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| Some(s.saturating_add(us)));
    }

    /// Sum of the recorded values.
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_us.load(Ordering::Relaxed))
    }

    /// `(upper bound in seconds, values in this bound's range)` for each of
    /// [`PROMETHEUS_BOUNDS`] (not cumulative; the last bound is `+Inf`), plus the total count.
    pub fn prometheus_buckets(&self) -> (Vec<(f64, u64)>, u64) {
        let mut out: Vec<(f64, u64)> = PROMETHEUS_BOUNDS.iter().map(|b| (*b, 0)).collect();
        let mut total = 0;
        for (index, bucket) in self.buckets.iter().enumerate() {
            let n = bucket.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            total += n;
            // Values in fine bucket `index` are below its upper edge, so they are <= every
            // bound at or above that edge.
            let upper = if index == BUCKETS { f64::INFINITY } else { ((index as u64 + 1) * BUCKET_US) as f64 / 1e6 };
            let slot = PROMETHEUS_BOUNDS.iter().position(|b| *b >= upper - 1e-9).unwrap_or(PROMETHEUS_BOUNDS.len() - 1);
            out[slot].1 += n;
        }
        (out, total)
    }

    /// Number of values recorded since the last reset.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Largest value recorded since the last reset (zero when empty).
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_us.load(Ordering::Relaxed))
    }

    /// The `q` quantile (`q` in `0.0..=1.0`, clamped), as the upper bound of its bucket; the
    /// largest recorded value when it falls in the overflow bucket; zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return Duration::ZERO;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        // The rank (1-based) of the value we want: the smallest value with at least q*total values
        // at or below it.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        for (index, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                if index == BUCKETS {
                    return self.max().max(Duration::from_micros(BUCKETS as u64 * BUCKET_US));
                }
                return Duration::from_micros((index as u64 + 1) * BUCKET_US);
            }
        }
        self.max()
    }

    /// Forget everything recorded so far.
    pub fn reset(&self) {
        for bucket in self.buckets.iter() {
            bucket.store(0, Ordering::Relaxed);
        }
        self.max_us.store(0, Ordering::Relaxed);
        self.sum_us.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn empty_histogram_reports_zero() {
        let h = LagHistogram::new();
        assert_eq!(h.count(), 0);
        assert_eq!(h.quantile(0.5), Duration::ZERO);
        assert_eq!(h.quantile(0.99), Duration::ZERO);
        assert_eq!(h.max(), Duration::ZERO);
    }

    #[test]
    fn quantile_is_the_upper_bound_of_the_bucket() {
        let h = LagHistogram::new();
        h.record(Duration::from_micros(0));
        assert_eq!(h.quantile(0.5), Duration::from_micros(100));
        h.record(Duration::from_micros(250)); // bucket [200, 300)
        assert_eq!(h.quantile(1.0), Duration::from_micros(300));
        assert_eq!(h.max(), Duration::from_micros(250));
    }

    #[test]
    fn quantiles_over_a_known_distribution() {
        let h = LagHistogram::new();
        // 98 values of 1 ms, one of 15 ms, one of 40 ms.
        for _ in 0..98 {
            h.record(ms(1));
        }
        h.record(ms(15));
        h.record(ms(40));
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile(0.5), Duration::from_micros(1_100));
        assert_eq!(h.quantile(0.98), Duration::from_micros(1_100));
        assert_eq!(h.quantile(0.99), Duration::from_micros(15_100));
        assert_eq!(h.quantile(1.0), Duration::from_micros(40_100));
        assert_eq!(h.max(), ms(40));
    }

    #[test]
    fn values_of_a_second_and_more_go_to_the_overflow_bucket() {
        let h = LagHistogram::new();
        h.record(Duration::from_micros(999_950)); // last regular bucket
        assert_eq!(h.quantile(1.0), Duration::from_secs(1));
        h.record(ms(2_500));
        h.record(Duration::MAX);
        assert_eq!(h.count(), 3);
        assert_eq!(h.quantile(0.5), Duration::from_micros(u64::MAX));
        assert_eq!(h.quantile(0.1), Duration::from_secs(1));
    }

    #[test]
    fn odd_quantile_arguments_do_not_panic() {
        let h = LagHistogram::new();
        h.record(ms(3));
        for q in [f64::NAN, -1.0, 0.0, 2.0, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(h.quantile(q), Duration::from_micros(3_100), "q = {q}");
        }
    }

    #[test]
    fn reset_forgets_everything() {
        let h = LagHistogram::new();
        for i in 0..50 {
            h.record(ms(i));
        }
        h.reset();
        assert_eq!(h.count(), 0);
        assert_eq!(h.quantile(0.99), Duration::ZERO);
        assert_eq!(h.max(), Duration::ZERO);
        h.record(ms(2));
        assert_eq!(h.quantile(0.5), Duration::from_micros(2_100));
    }

    #[test]
    fn prometheus_buckets_fold_the_fine_ones() {
        let h = LagHistogram::new();
        h.record(Duration::from_micros(50)); // <= 0.5 ms
        h.record(Duration::from_micros(499)); // <= 0.5 ms
        h.record(Duration::from_micros(500)); // fine bucket [500, 600): <= 1 ms
        h.record(ms(3)); // <= 5 ms
        h.record(ms(2_000)); // +Inf
        let (buckets, count) = h.prometheus_buckets();
        assert_eq!(count, 5);
        let get = |bound: f64| buckets.iter().find(|(b, _)| *b == bound).unwrap().1;
        assert_eq!((get(0.0005), get(0.001), get(0.002), get(0.005), get(1.0), get(f64::INFINITY)), (2, 1, 0, 1, 0, 1));
        assert_eq!(h.sum(), Duration::from_micros(50 + 499 + 500 + 3_000 + 2_000_000));
        h.record(Duration::MAX);
        assert_eq!(h.sum(), Duration::from_micros(u64::MAX), "the sum saturates");
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let h = std::sync::Arc::new(LagHistogram::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        h.record(Duration::from_micros((i * 37 + t) % 1_200_000));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("recording thread panicked");
        }
        assert_eq!(h.count(), 40_000);
    }
}
