//! The replication-lag alert ("alert when lag > 30 s"): when a replica's measured lag crosses its
//! service's `max_lag`, and when it is back well under it.
//!
//! Pure and per target: fed the lag of each check result ([`crate::probe::Lag`], measured by the
//! database check), it says when the alert opens or resolves. Hysteresis so a lag hovering
//! around the limit does not flap: the alert opens as soon as a check measures more than
//! `max_lag`, and resolves only when a check measures half of `max_lag` or less. A check that
//! measured no lag (the server is unreachable, or it is a primary now) changes nothing.
//!
//! It does not decide eligibility (a standby beyond `max_lag` fails its check, see
//! `probe/postgres.rs`) and does no I/O: the service machine records what it returns as a
//! `replication_lag` event, which the notification planner turns into a condition that opens
//! and resolves whether or not an incident is open. Its state is not persisted: after a restart
//! a still-lagging replica alerts again (the planner folds that into the open condition).

use super::config::MaxLag;
use crate::probe::Lag;

/// One replica's alert state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LagWatch {
    high: bool,
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LagAlert {
    /// The lag went beyond `max_lag`.
    Exceeded(Lag),
    /// The lag is back at half of `max_lag` or less.
    Recovered(Lag),
}

impl LagWatch {
    /// Whether the alert is open.
    pub fn is_high(&self) -> bool {
        self.high
    }

    /// Feed one check's lag; returns the change it makes, if any.
    pub fn observe(&mut self, lag: Option<Lag>, max: MaxLag) -> Option<LagAlert> {
        let lag = lag?;
        let (over, under) = match max {
            MaxLag::Time(d) => {
                let limit = d.as_secs_f64();
                (lag.seconds.is_some_and(|s| s > limit), lag.seconds.is_some_and(|s| s <= limit / 2.0))
            }
            MaxLag::Bytes(b) => (lag.bytes > b, lag.bytes <= b / 2),
        };
        if !self.high && over {
            self.high = true;
            return Some(LagAlert::Exceeded(lag));
        }
        if self.high && under {
            self.high = false;
            return Some(LagAlert::Recovered(lag));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn secs(s: f64) -> Option<Lag> {
        Some(Lag { bytes: 100, seconds: Some(s) })
    }

    #[test]
    fn opens_beyond_max_lag_and_resolves_only_at_half_of_it() {
        let max = MaxLag::Time(Duration::from_secs(30));
        let mut w = LagWatch::default();
        assert_eq!(w.observe(secs(29.0), max), None);
        assert_eq!(w.observe(secs(30.0), max), None, "at the limit is within it");
        assert_eq!(w.observe(secs(31.5), max), Some(LagAlert::Exceeded(secs(31.5).unwrap())));
        assert!(w.is_high());
        // Hovering around the limit: no flapping.
        for s in [29.0, 31.0, 20.0, 35.0, 15.1] {
            assert_eq!(w.observe(secs(s), max), None, "{s}");
        }
        // Unknown: the server did not answer, or it is a primary now.
        assert_eq!(w.observe(None, max), None);
        assert_eq!(w.observe(Some(Lag { bytes: 5, seconds: None }), max), None);
        assert_eq!(w.observe(secs(15.0), max), Some(LagAlert::Recovered(secs(15.0).unwrap())));
        assert!(!w.is_high());
        assert_eq!(w.observe(secs(0.0), max), None);
        assert_eq!(w.observe(secs(31.0), max), Some(LagAlert::Exceeded(secs(31.0).unwrap())), "and again");
    }

    #[test]
    fn a_size_limit_counts_bytes() {
        let max = MaxLag::Bytes(16 << 20);
        let mut w = LagWatch::default();
        let b = |bytes| Some(Lag { bytes, seconds: Some(1.0) });
        assert_eq!(w.observe(b(16 << 20), max), None);
        assert_eq!(w.observe(b((16 << 20) + 1), max), Some(LagAlert::Exceeded(b((16 << 20) + 1).unwrap())));
        assert_eq!(w.observe(b((8 << 20) + 1), max), None);
        assert_eq!(w.observe(b(8 << 20), max), Some(LagAlert::Recovered(b(8 << 20).unwrap())));
    }
}
