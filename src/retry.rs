//! Retry with exponential backoff: how long to wait after the n-th consecutive failure.
//!
//! Shared by the notification channels (`notify/dispatch.rs`) and the actuator workers
//! (`actuator/runner.rs`). Pure: no clock, no sleeping, no randomness of its own; the caller
//! passes the jitter (a number in `0.0..=1.0`, usually `rand::random()`), so tests can pin it.
//! It must not schedule anything or know what is being retried.

use std::time::Duration;

/// `base x 2^(failures-1)`, capped at `max`, then scaled into the upper half of that wait
/// by the jitter (so many retriers that failed together do not retry together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure (before jitter).
    pub base: Duration,
    /// The longest wait (before jitter).
    pub max: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, max: Duration) -> Backoff {
        Backoff { base, max }
    }

    /// The wait after `failures` consecutive failures (0 is treated as 1), with `jitter` in
    /// `0.0..=1.0` choosing a point between half the wait and the whole wait. Out-of-range or
    /// NaN jitter is clamped, so no input panics.
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        let full = self.base.saturating_mul(1u32 << doublings).min(self.max);
        let jitter = if jitter.is_nan() { 1.0 } else { jitter.clamp(0.0, 1.0) };
        Duration::try_from_secs_f64(full.as_secs_f64() * (0.5 + 0.5 * jitter)).map_or(full, |d| d.min(full))
    }

    /// [`Backoff::delay`] with random jitter.
    pub fn delay_random(&self, failures: u32) -> Duration {
        self.delay(failures, rand::random_range(0.0..=1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));

    #[test]
    fn doubles_from_the_base_and_stops_at_the_cap() {
        let full = |n| B.delay(n, 1.0);
        assert_eq!(full(0), Duration::from_millis(500));
        assert_eq!(full(1), Duration::from_millis(500));
        assert_eq!(full(2), Duration::from_secs(1));
        assert_eq!(full(4), Duration::from_secs(4));
        assert_eq!(full(5), Duration::from_secs(8));
        assert_eq!(full(6), Duration::from_secs(10));
        assert_eq!(full(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn jitter_picks_a_point_in_the_upper_half() {
        assert_eq!(B.delay(4, 0.0), Duration::from_secs(2));
        assert_eq!(B.delay(4, 0.5), Duration::from_secs(3));
        assert_eq!(B.delay(4, 1.0), Duration::from_secs(4));
        // Nonsense jitter is clamped, never a panic or a zero wait.
        assert_eq!(B.delay(4, -3.0), Duration::from_secs(2));
        assert_eq!(B.delay(4, 7.0), Duration::from_secs(4));
        assert_eq!(B.delay(4, f64::NAN), Duration::from_secs(4));
        for _ in 0..50 {
            let d = B.delay_random(30);
            assert!(d >= Duration::from_secs(5) && d <= Duration::from_secs(10), "{d:?}");
        }
    }

    #[test]
    fn huge_bases_saturate_instead_of_overflowing() {
        let b = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(b.delay(40, 1.0), Duration::MAX);
    }
}
