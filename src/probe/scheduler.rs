//! Check scheduler: one task per target, random initial offset, hard timeout, and a cadence that
//! follows the target's health.
//!
//! Each target's task waits a uniformly random offset in `[0, interval - GRID)` (so N targets spread
//! over the interval instead of firing together), then checks at `start + k * interval` while
//! nothing is changing, each check starting at the next point of a process-wide 5 ms grid
//! ([`GRID`]) so that one wake-up starts every check due there. A check that overran its slot (the runtime was busy) skips the missed
//! slots and resumes at the next future one: it never bursts to catch up. Before each check it
//! records how late it woke into the [`LagHistogram`].
//!
//! # Cadence
//! How often a target is checked depends on its health ([`Cadence`], decided by
//! `health::HealthState::cadence`): `interval` while steady, `fast_interval` while a flip is in
//! the balance (after a failed check until the target is marked down or passes `rise` checks
//! again; while a down target recovers), `down_interval` for a down target that keeps failing.
//! The next check is planned from the previous one's slot with the period of the cadence in
//! force; on the fast cadence a check that took longer than `fast_interval` (a timeout longer
//! than the fast period) is followed at once by the next, never overlapping it.
//!
//! The scheduler is told the cadence, it does not work it out: a `watch` channel carries it from
//! the core, which feeds every result into the target's `HealthState` anyway and is the only one
//! that sees what health sees (a drill's force-down turns passes into failures there, a restart
//! or reload may restore health the probe task never saw). Mirroring the hysteresis from the
//! task's own results would be simpler but would put a force-down drill on the steady cadence,
//! so a drill would no longer rehearse what a real failure does. The hint arrives microseconds
//! after the report that caused it; the task re-plans its sleeping slot when it changes, so a
//! late hint costs at most that delay, and a core that never answers leaves the target on the
//! cadence it had (at worst the steady one, which is the old behaviour).
//!
//! Checks of one target never overlap: the task awaits each check (including a hedged second
//! attempt, which runs *inside* the check's timeout, see [`hedged`]) before planning the next,
//! so at most two attempts of one check are in flight and never two checks. A slow or hung
//! target only holds its own task.
//!
//! It must not interpret results (that is `health/`), block the runtime, or outlive its
//! cancellation token or its report channel.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::lag::LagHistogram;
use super::{CheckResult, Probe, Verdict, now_us};
use crate::health::Cadence;

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

/// The cadences of one target beyond the steady `interval`, and where the current one comes
/// from.
pub struct Cadences {
    pub fast_interval: Duration,
    pub down_interval: Duration,
    /// The cadence the target is on now, kept up to date by whoever owns its health.
    pub current: watch::Receiver<Cadence>,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub id: u64,
    pub result: CheckResult,
}

/// Start the task that checks `job` every `interval` until `cancel` fires or `tx` is closed.
pub fn spawn(
    tracker: &TaskTracker,
    job: Scheduled,
    tx: UnboundedSender<Report>,
    cancel: CancellationToken,
    lag: Arc<LagHistogram>,
) {
    // A sender dropped at once: the cadence stays steady forever.
    let (_, current) = watch::channel(Cadence::Steady);
    let cadences = Cadences { fast_interval: job.interval, down_interval: job.interval, current };
    tracker.spawn(run(job, cadences, tx, cancel, lag));
}

/// Like [`spawn`], with the period following `cadences.current`.
pub fn spawn_adaptive(
    tracker: &TaskTracker,
    job: Scheduled,
    cadences: Cadences,
    tx: UnboundedSender<Report>,
    cancel: CancellationToken,
    lag: Arc<LagHistogram>,
) {
    tracker.spawn(run(job, cadences, tx, cancel, lag));
}

async fn run(
    job: Scheduled,
    mut cadences: Cadences,
    tx: UnboundedSender<Report>,
    cancel: CancellationToken,
    lag: Arc<LagHistogram>,
) {
    let interval = job.interval.max(MIN_INTERVAL);
    let (fast, down) = (cadences.fast_interval.max(MIN_INTERVAL), cadences.down_interval.max(MIN_INTERVAL));
    let period = move |c: Cadence| match c {
        Cadence::Steady => interval,
        Cadence::Fast => fast,
        Cadence::Down => down,
    };
    // Drawn one grid step short of the interval, so that the first check, moved to its grid
    // point, still starts within the first interval.
    let mut next = Instant::now() + random_offset(interval.saturating_sub(GRID));
    // The slot of the last check, once there has been one.
    let mut last: Option<Instant> = None;
    let mut hints_open = true;
    let sleep = tokio::time::sleep_until(next);
    tokio::pin!(sleep);
    // Made once and polled again on every turn: a fresh `cancelled()` or `closed()` future per
    // select would register and unregister a waiter twice per check, on a list shared by every
    // target's task. They come last in each `select!`: a turn whose own branch is ready at
    // once (the slot came, the check answered) does not poll them (polling the token takes its
    // lock), and a turn that waits polls every branch, so both stay registered and wake the
    // task when they fire.
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    let closed = tx.closed();
    tokio::pin!(closed);
    loop {
        // The slot as planned is `next`; the check starts at the grid point after it.
        let due = on_grid(next);
        sleep.as_mut().reset(due);
        tokio::select! {
            biased;
            _ = sleep.as_mut() => {}
            changed = cadences.current.changed(), if hints_open => {
                match changed {
                    Ok(()) => {
                        let c = *cadences.current.borrow_and_update();
                        if let Some(prev) = last {
                            next = plan(prev, Instant::now(), period(c), c);
                        }
                    }
                    Err(_) => hints_open = false,
                }
                continue;
            }
            _ = &mut cancelled => return,
            _ = &mut closed => return,
        }
        let woke = Instant::now();
        lag.record(woke.saturating_duration_since(due));

        let started_us = now_us();
        let outcome = tokio::select! {
            biased;
            outcome = hedged(job.probe.as_ref(), job.timeout) => outcome,
            _ = &mut cancelled => return,
            _ = &mut closed => return,
        };
        let (verdict, latency) = match outcome {
            Ok(verdict) => (verdict, woke.elapsed()),
            Err(_) => (Verdict::fail(format!("timed out after {:?}", job.timeout)), job.timeout),
        };
        let result = CheckResult {
            ok: verdict.ok,
            latency,
            reason: verdict.reason,
            started_us,
            checker_error: verdict.checker_error,
            lag: verdict.lag,
        };
        if tx.send(Report { id: job.id, result }).is_err() {
            return;
        }
        last = Some(next);
        // The cadence as it stands before this result is known; the hint for this result
        // arrives through `changed` and re-plans the slot.
        let c = *cadences.current.borrow_and_update();
        next = plan(next, Instant::now(), period(c), c);
    }
}

/// How long an immediate re-check waits for the core's cadence hint about the result just sent
/// (it usually takes microseconds): without it, the check that follows a timed-out one would
/// start before the core could say "marked down, slow down".
const HINT_GRACE: Duration = Duration::from_millis(5);

/// The slot after the check planned at `previous`, on a cadence of `period`, when the check has
/// ended at or before `now`. On the fast cadence a slot already passed means "now" (the check
/// itself outlasted the fast period, or the hint came late): a sick target is re-checked at once
/// (after [`HINT_GRACE`]), one check at a time. Otherwise missed slots are skipped
/// ([`next_slot`]).
fn plan(previous: Instant, now: Instant, period: Duration, cadence: Cadence) -> Instant {
    let next = previous + period;
    if next > now {
        return next;
    }
    match cadence {
        Cadence::Fast => now + HINT_GRACE,
        Cadence::Steady | Cadence::Down => next_slot(previous, now, period),
    }
}

/// Run one check within `timeout`. When the probe allows it and the first attempt has not
/// answered after half the timeout, a second attempt starts, and the first to pass wins (the
/// check fails only when both fail or the timeout expires). Under random packet loss a dropped
/// SYN or request then costs a hedge, not a failed check, so loss does not add up to `fall`
/// false failures; a dead target still fails at the same moment, and one that refuses
/// connections fails at once without any hedge. When both attempts fail before the timeout, a
/// real failure wins over a checker error (which says nothing about the target). A failed hedge
/// does not end the check while the first attempt is still pending: it may yet pass.
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
            if let (Some(first), Some(second)) = (&a, &b) {
                // A checker error says nothing about the target: the other attempt's failure,
                // if it is a real one, is the verdict.
                return if first.checker_error { second.clone() } else { first.clone() };
            }
        }
    };
    tokio::time::timeout_at(deadline, run).await
}

/// The step of the grid checks start on. A check planned for any instant starts at the next
/// point of one process-wide grid, so the runtime wakes once per point and starts every check due
/// there in one turn, as HAProxy's scheduler does, instead of once per check: at 1,000 targets a
/// second that was more than one `epoll_wait` per check (issue 17). Slots are planned off the
/// grid (`start + k * interval`) and only their start is moved, so a period that is not a
/// multiple of the step does not drift; each check starts at most this much after its slot.
pub const GRID: Duration = Duration::from_millis(5);

/// The first point of the process-wide [`GRID`] at or after `t`.
fn on_grid(t: Instant) -> Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = Instant::from_std(*EPOCH.get_or_init(std::time::Instant::now));
    let step = GRID.as_nanos();
    // How far `t` is past its grid point; before the epoch (a paused test clock starts earlier)
    // the grid extends backwards.
    let past = match t.checked_duration_since(epoch) {
        Some(after) => after.as_nanos() % step,
        None => (step - epoch.duration_since(t).as_nanos() % step) % step,
    };
    if past == 0 { t } else { t + Duration::from_nanos(u64::try_from(step - past).unwrap_or(0)) }
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
    fn checks_due_within_one_grid_step_start_together_and_never_early() {
        let t0 = Instant::now();
        for ms in 0..50u64 {
            let t = t0 + Duration::from_micros(ms * 700);
            let g = on_grid(t);
            assert!(g >= t && g < t + GRID, "{ms}: {:?} after", g - t);
            assert_eq!(on_grid(g), g, "a grid point is its own");
        }
        // The same before the grid's epoch: a step is a step on either side of it.
        let before = t0 - Duration::from_secs(3);
        for us in [0u64, 1, 2_500, 4_999, 7_300] {
            let t = before + Duration::from_micros(us);
            let g = on_grid(t);
            assert!(g >= t && g < t + GRID && on_grid(g) == g, "{us} us before the epoch: {:?} after", g - t);
        }
        // Every slot in the step before a point starts at that point: one wake-up for all.
        let point = on_grid(t0 + GRID);
        let starts: std::collections::BTreeSet<Instant> = (1..=5u64).map(|i| on_grid(point - GRID + Duration::from_millis(i))).collect();
        assert_eq!(starts.into_iter().collect::<Vec<_>>(), vec![point]);
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

    /// A scripted probe: each attempt takes the next step (after the script: pass at once).
    #[derive(Clone, Copy, Debug)]
    enum Step {
        Pass(Duration),
        Fail(Duration),
        CheckerError(Duration),
        Hang,
    }

    struct Script {
        steps: std::sync::Mutex<std::collections::VecDeque<Step>>,
        starts: std::sync::Mutex<Vec<Instant>>,
        in_flight: std::sync::atomic::AtomicUsize,
        max_in_flight: std::sync::atomic::AtomicUsize,
        hedge: bool,
    }

    struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);
    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Script {
        fn new(steps: &[Step], hedge: bool) -> Arc<Script> {
            Arc::new(Script {
                steps: std::sync::Mutex::new(steps.iter().copied().collect()),
                starts: Default::default(),
                in_flight: Default::default(),
                max_in_flight: Default::default(),
                hedge,
            })
        }
        fn starts(&self) -> Vec<Instant> {
            self.starts.lock().unwrap().clone()
        }
        fn max_in_flight(&self) -> usize {
            self.max_in_flight.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl Probe for Script {
        fn check(&self) -> crate::probe::CheckFuture<'_> {
            use std::sync::atomic::Ordering::SeqCst;
            self.starts.lock().unwrap().push(Instant::now());
            let step = self.steps.lock().unwrap().pop_front().unwrap_or(Step::Pass(Duration::ZERO));
            let n = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.max_in_flight.fetch_max(n, SeqCst);
            let guard = InFlight(&self.in_flight);
            Box::pin(async move {
                let _guard = guard;
                match step {
                    Step::Pass(d) => {
                        tokio::time::sleep(d).await;
                        Verdict::pass("ok")
                    }
                    Step::Fail(d) => {
                        tokio::time::sleep(d).await;
                        Verdict::fail(format!("failed after {d:?}"))
                    }
                    Step::CheckerError(d) => {
                        tokio::time::sleep(d).await;
                        Verdict::checker_error("checker error: EMFILE")
                    }
                    Step::Hang => std::future::pending().await,
                }
            })
        }
        fn describe(&self) -> String {
            "script".into()
        }
        fn hedge(&self) -> bool {
            self.hedge
        }
    }

    const MS: Duration = Duration::from_millis(1);
    const TIMEOUT: Duration = Duration::from_millis(500);

    #[tokio::test(start_paused = true)]
    async fn a_refused_connection_fails_at_once_without_a_hedge() {
        let p = Script::new(&[Step::Fail(Duration::ZERO)], true);
        let t0 = Instant::now();
        let v = hedged(p.as_ref(), TIMEOUT).await.expect("no timeout");
        assert!(!v.ok);
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert_eq!(p.starts().len(), 1, "no second attempt");
    }

    #[tokio::test(start_paused = true)]
    async fn when_both_attempts_fail_the_check_fails_when_the_second_answer_arrives() {
        // The first fails slowly (after the hedge started), the hedge fails sooner.
        let p = Script::new(&[Step::Fail(400 * MS), Step::Fail(50 * MS)], true);
        let t0 = Instant::now();
        let v = hedged(p.as_ref(), TIMEOUT).await.expect("both answered before the timeout");
        assert_eq!(v, Verdict::fail("failed after 400ms"), "the first attempt's failure is the reason");
        assert_eq!(t0.elapsed(), 400 * MS, "not before both failed, not as late as the timeout");
        assert_eq!(p.starts(), vec![t0, t0 + 250 * MS]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_hedge_waits_for_the_hung_first_attempt_until_the_timeout() {
        let hung = Script::new(&[Step::Hang, Step::Fail(10 * MS)], true);
        let t0 = Instant::now();
        assert!(hedged(hung.as_ref(), TIMEOUT).await.is_err(), "a timeout, not the hedge's failure");
        assert_eq!(t0.elapsed(), TIMEOUT);
        // Waiting is what lets a slow first attempt still pass.
        let slow = Script::new(&[Step::Pass(400 * MS), Step::Fail(10 * MS)], true);
        let t0 = Instant::now();
        assert!(hedged(slow.as_ref(), TIMEOUT).await.expect("passes").ok);
        assert_eq!(t0.elapsed(), 400 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_checker_error_of_one_attempt_gives_way_to_the_other_attempts_verdict() {
        let p = Script::new(&[Step::CheckerError(300 * MS), Step::Fail(100 * MS)], true);
        let v = hedged(p.as_ref(), TIMEOUT).await.expect("both answered");
        assert_eq!(v, Verdict::fail("failed after 100ms"), "the real failure counts");
        let p = Script::new(&[Step::Fail(300 * MS), Step::CheckerError(10 * MS)], true);
        assert_eq!(hedged(p.as_ref(), TIMEOUT).await.expect("both answered"), Verdict::fail("failed after 300ms"));
        let p = Script::new(&[Step::CheckerError(300 * MS), Step::CheckerError(10 * MS)], true);
        assert!(hedged(p.as_ref(), TIMEOUT).await.expect("both answered").checker_error, "only checker errors: a checker error");
        let p = Script::new(&[Step::CheckerError(300 * MS), Step::Pass(10 * MS)], true);
        assert!(hedged(p.as_ref(), TIMEOUT).await.expect("passes").ok);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_does_not_hedge_runs_one_attempt() {
        let p = Script::new(&[Step::Hang], false);
        assert!(hedged(p.as_ref(), TIMEOUT).await.is_err());
        assert_eq!(p.starts().len(), 1);
    }

    /// The real exec probe, with a real process: one run per check, however slow.
    #[tokio::test]
    async fn exec_probes_never_hedge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs = dir.path().join("runs");
        let check = crate::config::ExecCheck {
            command: vec!["/bin/sh".into(), "-c".into(), format!("echo run >> {}; sleep 0.4", runs.display())],
        };
        let target = crate::config::TargetConfig {
            name: "primary".into(),
            address: "127.0.0.1".parse().unwrap(),
            check_address: None,
            check_port: None,
        };
        let exec = crate::probe::exec::ExecProbe::new(&check, &target);
        assert!(!exec.hedge());
        // 400 ms of a 600 ms timeout: a network probe would have hedged at 300 ms.
        let v = hedged(&exec, Duration::from_millis(600)).await.expect("finishes in time");
        assert!(v.ok, "{v:?}");
        assert_eq!(std::fs::read_to_string(&runs).expect("ran").lines().count(), 1, "the command ran once");
    }

    /// Runs the adaptive scheduler against `probe` with a stand-in for the core: every result
    /// goes through a `HealthState` and the cadence it gives is sent back, as the daemon does.
    /// Returns the start of every check attempt and the health after each result.
    async fn drive(probe: Arc<Script>, fast: Duration, down: Duration, run_for: Duration) -> (Vec<Instant>, Vec<crate::health::Health>) {
        use crate::health::{HealthState, Thresholds};
        let th = Thresholds { fall: 3, rise: 2 };
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (cadence, current) = watch::channel(Cadence::Steady);
        let job = Scheduled { id: 1, probe: probe.clone(), interval: Duration::from_secs(1), timeout: TIMEOUT };
        spawn_adaptive(&tracker, job, Cadences { fast_interval: fast, down_interval: down, current }, tx, cancel.clone(), Arc::new(LagHistogram::new()));
        let mut health = HealthState::new();
        let mut seen = Vec::new();
        let end = tokio::time::sleep(run_for);
        tokio::pin!(end);
        loop {
            tokio::select! {
                r = rx.recv() => {
                    let r = r.expect("scheduler alive");
                    if !r.result.checker_error {
                        health.observe(r.result.ok, r.result.started_us, th);
                        let c = health.cadence(th);
                        cadence.send_if_modified(|old| std::mem::replace(old, c) != c);
                    }
                    seen.push(health.health());
                }
                _ = &mut end => break,
            }
        }
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
        (probe.starts(), seen)
    }

    fn gaps(starts: &[Instant]) -> Vec<u64> {
        starts.windows(2).map(|w| (w[1] - w[0]).as_millis() as u64).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_fast_cadence_starts_after_the_first_failure_and_stops_after_rise_passes() {
        use Step::*;
        let z = Duration::ZERO;
        let p = Script::new(&[Pass(z), Pass(z), Fail(z), Pass(z), Pass(z), Pass(z), Pass(z)], true);
        // 4.5 s of gaps after a random first start within the first interval.
        let (starts, health) = drive(p, 250 * MS, Duration::from_secs(2), Duration::from_millis(6_000)).await;
        // pass -> 1 s, pass -> 1 s, FAIL -> fast, 1st pass after it -> still fast (rise is 2),
        // 2nd pass -> steady again.
        assert_eq!(gaps(&starts)[..6], [1000, 1000, 250, 250, 1000, 1000]);
        assert!(health.iter().all(|h| *h == crate::health::Health::Up), "one failure never flips: {health:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_fast_cadence_stops_at_the_flip_and_a_down_target_is_checked_at_down_interval() {
        use Step::*;
        let z = Duration::ZERO;
        let p = Script::new(&[Pass(z), Fail(z), Fail(z), Fail(z), Fail(z), Pass(z), Fail(z), Pass(z), Pass(z), Pass(z)], true);
        let (starts, health) = drive(p, 250 * MS, Duration::from_secs(2), Duration::from_millis(11_000)).await;
        use crate::health::Health::{Down, Up};
        assert_eq!(health[..10], [Up, Up, Up, Down, Down, Down, Down, Down, Up, Up]);
        // pass -> 1 s; fail, fail -> fast; 3rd fail flips down -> 2 s; fail -> 2 s; a pass while
        // down -> fast (recovering); a fail breaks it off -> 2 s; pass -> fast; rise -> steady.
        assert_eq!(gaps(&starts)[..9], [1000, 250, 250, 2000, 2000, 250, 2000, 250, 1000]);
    }

    /// Gaps `[1000, t, t, 1000]` where `t` is a timed-out check's 500 ms, the hint grace and
    /// at most one step of the start grid (a timeout ends off the grid).
    fn assert_after_timeouts(gaps: &[u64]) {
        let after = 500 + HINT_GRACE.as_millis() as u64;
        let fits = |g: u64| (after..=after + GRID.as_millis() as u64).contains(&g);
        assert!(gaps.len() == 4 && gaps[0] == 1000 && fits(gaps[1]) && fits(gaps[2]) && gaps[3] == 1000, "gaps {gaps:?}: expected [1000, {after}..={}, same, 1000]", after + GRID.as_millis() as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn fast_checks_never_overlap_even_when_each_one_times_out() {
        use Step::*;
        // A hung target with a 500 ms timeout and a 250 ms fast interval (and hedging: each
        // check is two attempts). Down interval 1 s.
        let p = Script::new(&[Pass(Duration::ZERO), Hang, Hang, Hang, Hang, Hang, Hang, Hang, Hang], true);
        let (starts, health) = drive(p.clone(), 250 * MS, Duration::from_secs(1), Duration::from_millis(5_000)).await;
        // Attempts: the pass, then pairs (check at t, hedge at t + 250 ms).
        let checks: Vec<Instant> = std::iter::once(starts[0]).chain(starts[1..].iter().step_by(2).copied()).collect();
        for pair in starts[1..].chunks(2).filter(|c| c.len() == 2) {
            assert_eq!(pair[1] - pair[0], 250 * MS, "the hedge at half the timeout");
        }
        // pass -> 1 s; timed out -> the next starts as the previous ends (500 ms, not 250, plus
        // the moment it leaves the core to answer, then the next point of the start grid);
        // 3rd timeout flips down -> 1 s.
        assert_after_timeouts(&gaps(&checks)[..4]);
        assert!(p.max_in_flight() <= 2, "at most a check and its hedge at once: {}", p.max_in_flight());
        assert_eq!(health[3], crate::health::Health::Down);

        // Without hedging, exactly one attempt at a time.
        let p = Script::new(&[Pass(Duration::ZERO), Hang, Hang, Hang, Hang], false);
        let (starts, _) = drive(p.clone(), 250 * MS, Duration::from_secs(1), Duration::from_millis(5_000)).await;
        assert_after_timeouts(&gaps(&starts)[..4]);
        assert_eq!(p.max_in_flight(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn checker_errors_do_not_start_the_fast_cadence() {
        use Step::*;
        let z = Duration::ZERO;
        let p = Script::new(&[Pass(z), CheckerError(z), CheckerError(z), CheckerError(z), CheckerError(z), Pass(z)], true);
        let (starts, health) = drive(p, 250 * MS, Duration::from_secs(2), Duration::from_millis(7_000)).await;
        assert_eq!(gaps(&starts)[..5], [1000, 1000, 1000, 1000, 1000]);
        assert!(health.iter().all(|h| *h == crate::health::Health::Up), "{health:?}");
    }

    /// The cost of the fast cadence for a target that never fails: none. A simulated day.
    #[tokio::test(start_paused = true)]
    async fn a_healthy_target_gets_no_extra_checks_in_a_day() {
        let p = Script::new(&[], true);
        let day = Duration::from_secs(86_400);
        let (starts, _) = drive(p, 250 * MS, Duration::from_secs(1), day).await;
        let extra = starts.len() as i64 - 86_400;
        assert!(extra <= 0, "{extra} extra checks");
        assert!(starts.len() >= 86_399, "{} checks", starts.len());
        assert!(gaps(&starts).iter().all(|g| *g == 1000));
    }
}
