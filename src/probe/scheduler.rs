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
            outcome = hedged(job.probe.as_ref(), job.timeout) => outcome,
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

/// Run one check within `timeout`. When the probe allows it and the first attempt has not
/// answered after half the timeout, a second attempt starts, and the first to pass wins (the
/// check fails only when both fail or the timeout expires). Under random packet loss a dropped
/// SYN or request then costs a hedge, not a failed check, so loss does not add up to `fall`
/// false failures; a dead target still fails at the same moment, and one that refuses
/// connections fails at once without any hedge.
async fn hedged(probe: &dyn Probe, timeout: Duration) -> Result<Verdict, tokio::time::error::Elapsed> {
    let deadline = Instant::now() + timeout;
    let first = probe.check();
    tokio::pin!(first);
    if !probe.hedge() {
        return tokio::time::timeout_at(deadline, first).await;
    }
    tokio::select! {
        v = &mut first => return Ok(v),
        _ = tokio::time::sleep_until(Instant::now() + timeout / 2) => {}
    }
    let second = probe.check();
    tokio::pin!(second);
    let (mut a, mut b): (Option<Verdict>, Option<Verdict>) = (None, None);
    let run = async {
        loop {
            tokio::select! {
                v = &mut first, if a.is_none() => {
                    if v.ok { return v; }
                    a = Some(v);
                }
                v = &mut second, if b.is_none() => {
                    if v.ok { return v; }
                    b = Some(v);
                }
            }
            if let (Some(first_failure), Some(_)) = (&a, &b) {
                return first_failure.clone();
            }
        }
    };
    tokio::time::timeout_at(deadline, run).await
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

    /// A network-like probe: attempts listed in `plan` either answer after a delay or hang
    /// (a lost SYN); it allows hedging.
    struct Lossy {
        plan: std::sync::Mutex<Vec<Option<Duration>>>,
        started: std::sync::atomic::AtomicUsize,
    }

    impl Probe for Lossy {
        fn check(&self) -> crate::probe::CheckFuture<'_> {
            self.started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let step = self.plan.lock().unwrap().remove(0);
            Box::pin(async move {
                match step {
                    Some(d) => {
                        tokio::time::sleep(d).await;
                        Verdict::pass("ok")
                    }
                    None => std::future::pending().await,
                }
            })
        }
        fn describe(&self) -> String {
            "lossy".into()
        }
        fn hedge(&self) -> bool {
            true
        }
    }

    fn lossy(plan: Vec<Option<Duration>>) -> Lossy {
        Lossy { plan: std::sync::Mutex::new(plan), started: Default::default() }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_first_attempt_is_rescued_by_the_hedge() {
        let p = lossy(vec![None, Some(Duration::from_millis(5))]);
        let t0 = Instant::now();
        let v = hedged(&p, Duration::from_millis(500)).await.expect("passes before the timeout");
        assert!(v.ok);
        assert_eq!(t0.elapsed(), Duration::from_millis(255), "hedge at half the timeout, answer 5 ms later");
        assert_eq!(p.started.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_answer_is_never_hedged_and_a_dead_target_fails_at_the_timeout() {
        let p = lossy(vec![Some(Duration::from_millis(3))]);
        assert!(hedged(&p, Duration::from_millis(500)).await.unwrap().ok);
        assert_eq!(p.started.load(std::sync::atomic::Ordering::SeqCst), 1);

        let dead = lossy(vec![None, None]);
        let t0 = Instant::now();
        assert!(hedged(&dead, Duration::from_millis(500)).await.is_err());
        assert_eq!(t0.elapsed(), Duration::from_millis(500), "the hedge does not extend the timeout");
    }
}
