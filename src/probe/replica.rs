//! What the `redis` and `mysql` checks share at run time: a small history of the primary's
//! replication offsets that turns an offset lag into a time lag, and the lag comparison and
//! wording. Their settings ([`ReplicaCheck`]) live in `probe/config.rs`.
//!
//! Nothing here does I/O or reads the clock: time is a parameter.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use super::config::{Engine, MYSQL_PORT, MaxLag, REDIS_PORT, ReplicaCheck};

/// How many of the primary's offsets a Redis probe remembers (one per check).
const HISTORY: usize = 256;

/// The primary's replication offset as the probe saw it, check after check.
///
/// A replica at offset `R` has everything the primary had written at every moment the primary's
/// offset was at most `R`: its time lag is at most the time since the latest such sample. An idle
/// primary does not make a replica look late (its offset stops moving and the replica reaches
/// it), and a replica that stops applying grows late at the rate of the clock, however fast or
/// slow the primary writes.
#[derive(Debug, Default)]
pub struct OffsetHistory {
    /// (when the primary was read, its offset); oldest first, offsets non-decreasing.
    samples: VecDeque<(Instant, u64)>,
}

impl OffsetHistory {
    /// Remember the primary's offset `offset` read at `at`. An offset that goes backwards (the
    /// primary restarted or changed) starts a new history.
    pub fn record(&mut self, at: Instant, offset: u64) {
        if self.samples.back().is_some_and(|(_, o)| *o > offset) {
            self.samples.clear();
        }
        self.samples.push_back((at, offset));
        while self.samples.len() > HISTORY {
            self.samples.pop_front();
        }
    }

    /// Forget everything (the replica follows another primary).
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// How far behind a replica at `replica_offset` is, in seconds, at `now`: zero when it has
    /// the latest sample, else the time since the latest sample it has, else (it has none of
    /// them) at least the age of the oldest sample. `None` with no sample at all.
    pub fn lag(&self, replica_offset: u64, now: Instant) -> Option<Duration> {
        let (_, latest) = *self.samples.back()?;
        if replica_offset >= latest {
            return Some(Duration::ZERO);
        }
        let have = self.samples.iter().rev().find(|(_, o)| *o <= replica_offset);
        let since = have.or(self.samples.front()).map(|(t, _)| *t)?;
        Some(now.saturating_duration_since(since))
    }
}

/// `lag` over `max_lag`? Bytes are compared with a byte limit, seconds with a time limit; an
/// unknown measure is never over.
pub fn over(max_lag: MaxLag, bytes: Option<u64>, secs: Option<f64>) -> bool {
    match max_lag {
        MaxLag::Time(d) => secs.is_some_and(|s| s > d.as_secs_f64()),
        MaxLag::Bytes(b) => bytes.is_some_and(|x| x > b),
    }
}

/// `"120 bytes / 3.0 s behind"`, the shape the postgres check reports its lag in.
pub fn describe_lag(bytes: Option<u64>, secs: Option<f64>) -> String {
    match (bytes, secs) {
        (Some(b), Some(s)) => format!("{b} bytes / {s:.1} s behind"),
        (Some(b), None) => format!("{b} bytes behind"),
        (None, Some(s)) => format!("{s:.1} s behind"),
        (None, None) => "lag unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_primary_does_not_make_a_caught_up_replica_late() {
        let t0 = Instant::now();
        let mut h = OffsetHistory::default();
        for i in 0..10 {
            h.record(t0 + Duration::from_secs(i), 500);
        }
        assert_eq!(h.lag(500, t0 + Duration::from_secs(10)), Some(Duration::ZERO));
    }

    #[test]
    fn a_stalled_replica_grows_late_with_the_clock() {
        let t0 = Instant::now();
        let mut h = OffsetHistory::default();
        // The primary writes 100 bytes a second; the replica stopped at offset 300 (t0 + 3 s).
        for i in 0..=10u64 {
            h.record(t0 + Duration::from_secs(i), i * 100);
        }
        assert_eq!(h.lag(300, t0 + Duration::from_secs(10)), Some(Duration::from_secs(7)));
        assert_eq!(h.lag(1000, t0 + Duration::from_secs(10)), Some(Duration::ZERO));
        // Behind every sample: at least the age of the oldest.
        let mut late = OffsetHistory::default();
        late.record(t0, 1000);
        assert_eq!(late.lag(10, t0 + Duration::from_secs(4)), Some(Duration::from_secs(4)));
        assert_eq!(OffsetHistory::default().lag(10, t0), None);
    }

    #[test]
    fn a_restarted_primary_starts_a_new_history() {
        let t0 = Instant::now();
        let mut h = OffsetHistory::default();
        h.record(t0, 5000);
        h.record(t0 + Duration::from_secs(1), 10);
        assert_eq!(h.lag(10, t0 + Duration::from_secs(2)), Some(Duration::ZERO));
        assert_eq!(h.lag(5, t0 + Duration::from_secs(2)), Some(Duration::from_secs(1)));
    }

    #[test]
    fn limits_compare_like_with_like() {
        assert!(over(MaxLag::Time(Duration::from_secs(2)), Some(1), Some(2.5)));
        assert!(!over(MaxLag::Time(Duration::from_secs(2)), Some(1 << 30), Some(1.0)));
        assert!(over(MaxLag::Bytes(100), Some(101), Some(0.0)));
        assert!(!over(MaxLag::Bytes(100), None, Some(1e9)));
        assert_eq!(describe_lag(Some(5), Some(1.25)), "5 bytes / 1.2 s behind");
    }
}
