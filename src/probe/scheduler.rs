//! Check scheduler: one task per target, fixed rate, random initial offset, hard timeout.
//!
//! Each target's task waits a uniformly random offset in `[0, interval)` (so N targets spread
//! over the interval instead of firing together), then checks at `start + k * interval`. A check
//! that overran its slot (the runtime was busy) skips the missed slots and resumes at the next
//! future one: it never bursts to catch up. Before each check it records how late it woke into
//! the [`LagHistogram`]. Checks of one target never overlap (the timeout is shorter than the
//! interval, and the task awaits each check); a slow or hung target only holds its own task.
//!
//! It must not interpret results (that is `health/`), block the runtime, or outlive its
//! cancellation token or its report channel.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::lag::LagHistogram;
use super::{CheckResult, Probe, Verdict, now_us};

/// Shortest interval we schedule at; config validation asks for much more, this only keeps a
/// zero from becoming a busy loop.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// One target's check, as the scheduler runs it.
pub struct Scheduled {
    /// The caller's name for this target; reports carry it back.
    pub id: u64,
    pub probe: Arc<dyn Probe>,
    pub interval: Duration,
    pub timeout: Duration,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub id: u64,
    pub result: CheckResult,
}

/// Start the task that checks `job` until `cancel` fires or `tx` is closed.
pub fn spawn(
    tracker: &TaskTracker,
    job: Scheduled,
    tx: UnboundedSender<Report>,
    cancel: CancellationToken,
    lag: Arc<LagHistogram>,
) {
    tracker.spawn(run(job, tx, cancel, lag));
}

async fn run(job: Scheduled, tx: UnboundedSender<Report>, cancel: CancellationToken, lag: Arc<LagHistogram>) {
    let interval = job.interval.max(MIN_INTERVAL);
    let mut next = Instant::now() + random_offset(interval);
    let sleep = tokio::time::sleep_until(next);
    tokio::pin!(sleep);
    loop {
        sleep.as_mut().reset(next);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tx.closed() => return,
            _ = sleep.as_mut() => {}
        }
        let woke = Instant::now();
        lag.record(woke.saturating_duration_since(next));

        let started_us = now_us();
        let outcome = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tx.closed() => return,
            outcome = tokio::time::timeout(job.timeout, job.probe.check()) => outcome,
        };
        let (verdict, latency) = match outcome {
            Ok(verdict) => (verdict, woke.elapsed()),
            Err(_) => (Verdict::fail(format!("timed out after {:?}", job.timeout)), job.timeout),
        };
        let result = CheckResult { ok: verdict.ok, latency, reason: verdict.reason, started_us };
        if tx.send(Report { id: job.id, result }).is_err() {
            return;
        }
        next = next_slot(next, Instant::now(), interval);
    }
}

/// A uniformly random offset in `[0, interval)`.
fn random_offset(interval: Duration) -> Duration {
    let nanos = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rand::rng().random_range(0..nanos))
}

/// The slot after `previous`: `previous + interval`, or when that is not in the future, the first
/// slot of the same grid that is (missed slots are skipped, never made up).
fn next_slot(previous: Instant, now: Instant, interval: Duration) -> Instant {
    let next = previous + interval;
    if next > now {
        return next;
    }
    let behind = now.duration_since(next).as_nanos();
    let step = interval.as_nanos().max(1);
    let skip = behind / step + 1;
    let skip = u32::try_from(skip).unwrap_or(u32::MAX);
    next + interval.saturating_mul(skip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_slot_is_one_interval_later_when_on_time() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(next_slot(t0, t0 + Duration::from_millis(300), s), t0 + s);
        assert_eq!(next_slot(t0, t0 + Duration::from_millis(999), s), t0 + s);
    }

    #[test]
    fn next_slot_skips_missed_slots_without_bursting() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        // Exactly on the next slot: that slot is not in the future, take the one after.
        assert_eq!(next_slot(t0, t0 + s, s), t0 + 2 * s);
        assert_eq!(next_slot(t0, t0 + Duration::from_millis(1_200), s), t0 + 2 * s);
        assert_eq!(next_slot(t0, t0 + Duration::from_millis(3_500), s), t0 + 4 * s);
    }

    #[test]
    fn random_offset_stays_inside_the_interval() {
        let s = Duration::from_millis(10);
        for _ in 0..1_000 {
            assert!(random_offset(s) < s);
        }
        assert_eq!(random_offset(Duration::ZERO), Duration::ZERO);
    }
}
