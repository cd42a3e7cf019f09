//! The actuator runner: carries a service's decisions out, one task per actuator.
//!
//! ```text
//! core ──watch(Command)──▶ service task ──watch(Job)──▶ one worker task per actuator ──▶ apply, verify
//!   ▲                        │   ▲                           │
//!   └──── Report::Done ──────┘   └──── Finished(epoch, ok) ──┤
//!   ▲                                                        │
//!   └──── Report::Step / Report::Drift ──────────────────────┘
//! ```
//!
//! The daemon's core publishes the latest [`Command`] (desired state plus the actuators to use)
//! on a `watch` channel and never waits for actuators. The service task hands the newest desired
//! state to every actuator's worker on its own `watch` channel, so a slow hook for decision N
//! never delays decision N+1's DNS change: each worker takes the newest epoch it has been given
//! when it is free, skipping the ones in between (actuators are idempotent; only the latest
//! desired state matters), and never takes an epoch older than or equal to one it took.
//!
//! [`Report::Done`] (the `switched` event) still means "every actuator is done with epoch E":
//! the service task counts each worker's result for E, and an actuator that moved on to a newer
//! epoch without doing E counts as superseded. An epoch that every actuator skipped reports
//! nothing. If a step of E failed, `Done { ok: false }` is reported when all have answered, and
//! if retries then make every actuator succeed while E is still the newest epoch, a second
//! `Done { ok: true }` follows.
//!
//! A worker retries a failed step (apply, then verify) with backoff ([`RETRY`]) when its
//! actuator [`retries`](super::Actuator::retries), until it succeeds or a newer epoch arrives.
//! An actuator that can verify is re-verified every `verify_every`; when that check fails, the
//! worker applies the desired state again and reports [`Report::Drift`] (the `drift_repaired`
//! event). Once started, a step is finished even during shutdown, so the world is left in a
//! defined state. Workers decide nothing and write no events: everything goes back as reports.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::{Actuator, Desired, Outcome};
use crate::events::Step;
use crate::retry::Backoff;

/// Waits between attempts of a failed step: 1 s, 2 s, 4 s... up to 30 s (jittered).
pub const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

/// Epochs tracked for `Done` at once; older ones are given up (their actuators are long past).
const MAX_SWITCHES: usize = 64;

/// What the runner should make true.
#[derive(Clone)]
pub struct Command {
    pub desired: Desired,
    pub actuators: Arc<[Arc<dyn Actuator>]>,
    /// How often actuators that can verify re-check the desired state (`verify_every`).
    pub verify_every: Duration,
}

/// What a runner sends back to the core; each becomes an event.
#[derive(Debug, Clone)]
pub enum Report {
    /// One actuator step finished.
    Step(StepReport),
    /// Every actuator has handled `epoch` (the switch is complete, or failed).
    Done { service: Arc<str>, epoch: u64, ok: bool, steps: u32, duration_us: u64 },
    /// A periodic verification failed and the desired state was applied again.
    Drift(DriftReport),
}

/// One finished actuator step.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub service: Arc<str>,
    pub epoch: u64,
    pub actuator: String,
    pub step: Step,
    pub outcome: Outcome,
    pub duration_us: u64,
}

/// A repair after drift: what the verification said, and how the repair went.
#[derive(Debug, Clone)]
pub struct DriftReport {
    pub service: Arc<str>,
    pub epoch: u64,
    pub actuator: String,
    pub drift: String,
    /// The repair (apply, then verify).
    pub repair: Outcome,
}

/// What one worker should make true.
#[derive(Clone)]
struct Job {
    desired: Desired,
    actuator: Arc<dyn Actuator>,
    verify_every: Duration,
}

/// A worker's answer for one attempt at one epoch.
#[derive(Debug)]
struct Finished {
    actuator: String,
    epoch: u64,
    ok: bool,
    steps: u32,
}

/// One actuator's part in one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Pending,
    Done(bool),
    Superseded,
}

/// The bookkeeping behind `Done` for one epoch.
struct Switch {
    service: Arc<str>,
    begun: Instant,
    parts: HashMap<String, Part>,
    steps: u32,
    /// The `ok` of the last `Done` sent for this epoch.
    reported: Option<bool>,
}

impl Switch {
    /// A `Done` to send now, if this epoch just became complete (or just recovered).
    fn done(&mut self, epoch: u64) -> Option<Report> {
        if self.parts.values().any(|p| *p == Part::Pending) || self.parts.values().all(|p| *p == Part::Superseded) {
            return None;
        }
        let ok = !self.parts.values().any(|p| *p == Part::Done(false));
        if self.reported == Some(ok) || self.reported == Some(true) {
            return None;
        }
        self.reported = Some(ok);
        Some(Report::Done { service: self.service.clone(), epoch, ok, steps: self.steps, duration_us: self.begun.elapsed().as_micros() as u64 })
    }
}

/// Run until the command channel closes (the service was removed or the daemon stops); then
/// let every worker finish the step it is in, reporting as usual, and return.
pub async fn run(mut rx: watch::Receiver<Option<Command>>, reports: mpsc::UnboundedSender<Report>) {
    let (fin_tx, mut fin_rx) = mpsc::unbounded_channel::<Finished>();
    let mut workers: HashMap<String, watch::Sender<Option<Job>>> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut switches: BTreeMap<u64, Switch> = BTreeMap::new();
    let mut newest: Option<u64> = None;
    let mut pending_cmd = rx.borrow_and_update().clone();
    loop {
        if let Some(cmd) = pending_cmd.take()
            && newest.is_none_or(|e| cmd.desired.epoch > e)
        {
            newest = Some(cmd.desired.epoch);
            dispatch(&cmd, &mut workers, &mut tasks, &mut switches, &reports, &fin_tx);
        }
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    break;
                }
                pending_cmd = rx.borrow_and_update().clone();
            }
            Some(f) = fin_rx.recv() => finished(f, &mut switches, &reports),
        }
    }
    // Workers end after the step they are in; their results still count.
    drop(workers);
    drop(fin_tx);
    while let Some(f) = fin_rx.recv().await {
        finished(f, &mut switches, &reports);
    }
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            tracing::error!("an actuator task failed: {e}");
        }
    }
}

fn dispatch(
    cmd: &Command,
    workers: &mut HashMap<String, watch::Sender<Option<Job>>>,
    tasks: &mut JoinSet<()>,
    switches: &mut BTreeMap<u64, Switch>,
    reports: &mpsc::UnboundedSender<Report>,
    fin_tx: &mpsc::UnboundedSender<Finished>,
) {
    let d = &cmd.desired;
    // Older epochs that were already reported stop here: a later retry success is not news.
    switches.retain(|_, s| s.reported.is_none());
    while switches.len() >= MAX_SWITCHES {
        switches.pop_first();
    }
    let parts: HashMap<String, Part> = cmd.actuators.iter().filter(|a| a.wants(d)).map(|a| (a.name().to_string(), Part::Pending)).collect();
    if parts.is_empty() {
        let _ = reports.send(Report::Done { service: d.service.clone(), epoch: d.epoch, ok: true, steps: 0, duration_us: 0 });
    } else {
        switches.insert(d.epoch, Switch { service: d.service.clone(), begun: Instant::now(), parts, steps: 0, reported: None });
    }
    // Actuators no longer configured: their workers end after the step they are in, and they
    // no longer hold up the epochs they had not finished.
    workers.retain(|name, _| cmd.actuators.iter().any(|a| a.name() == name));
    let mut done = Vec::new();
    for (&epoch, s) in switches.range_mut(..d.epoch) {
        for (name, part) in s.parts.iter_mut() {
            if *part == Part::Pending && !workers.contains_key(name) {
                *part = Part::Superseded;
            }
        }
        done.extend(s.done(epoch));
    }
    for r in done {
        let _ = reports.send(r);
    }
    for a in cmd.actuators.iter() {
        let job = Job { desired: d.clone(), actuator: a.clone(), verify_every: cmd.verify_every };
        let tx = workers.entry(a.name().to_string()).or_insert_with(|| {
            let (tx, rx) = watch::channel(None);
            tasks.spawn(worker(rx, reports.clone(), fin_tx.clone()));
            tx
        });
        tx.send_replace(Some(job));
    }
}

fn finished(f: Finished, switches: &mut BTreeMap<u64, Switch>, reports: &mpsc::UnboundedSender<Report>) {
    let mut done = Vec::new();
    for (&epoch, s) in switches.range_mut(..=f.epoch) {
        let Some(part) = s.parts.get_mut(&f.actuator) else { continue };
        if epoch == f.epoch {
            *part = Part::Done(f.ok);
            s.steps += f.steps;
        } else if *part == Part::Pending {
            // The actuator moved on without doing this epoch.
            *part = Part::Superseded;
        } else {
            continue;
        }
        if let Some(r) = s.done(epoch) {
            done.push(r);
        }
    }
    // Epochs every actuator skipped will never report; forget them.
    switches.retain(|_, s| !s.parts.values().all(|p| *p == Part::Superseded));
    for r in done {
        let _ = reports.send(r);
    }
}

/// When a worker wakes up next without a new job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    Retry,
    Verify,
}

/// One actuator: take the newest job, apply (and verify) it, retry, re-verify.
async fn worker(mut rx: watch::Receiver<Option<Job>>, reports: mpsc::UnboundedSender<Report>, finished: mpsc::UnboundedSender<Finished>) {
    // The newest epoch taken: nothing at or below it is ever applied again (except repairs of it).
    let mut fence: Option<u64> = None;
    let mut current: Option<Job> = None;
    let mut failures = 0u32;
    let mut next: Option<(tokio::time::Instant, Wake)> = None;
    loop {
        let wake_at = next.map(|(at, _)| at);
        let sleep = async {
            match wake_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                let Some(job) = rx.borrow_and_update().clone() else { continue };
                if fence.is_some_and(|f| job.desired.epoch <= f) {
                    continue;
                }
                fence = Some(job.desired.epoch);
                (failures, next, current) = (0, None, None);
                if !job.actuator.wants(&job.desired) {
                    continue;
                }
                let (ok, retryable) = attempt(&job, &reports, &finished).await;
                next = schedule(&job, ok, retryable, &mut failures);
                current = Some(job);
            }
            _ = sleep => {
                let (Some(job), Some((_, why))) = (current.clone(), next) else {
                    next = None;
                    continue;
                };
                let (ok, retryable) = match why {
                    Wake::Retry => attempt(&job, &reports, &finished).await,
                    Wake::Verify => verify_or_repair(&job, &reports).await,
                };
                next = schedule(&job, ok, retryable, &mut failures);
            }
        }
    }
}

/// The next wake-up after a step that ended `ok` (or failed, `retryable` or not).
fn schedule(job: &Job, ok: bool, retryable: bool, failures: &mut u32) -> Option<(tokio::time::Instant, Wake)> {
    let now = tokio::time::Instant::now();
    if ok {
        *failures = 0;
        let verifies = job.actuator.verify(&job.desired).is_some();
        return verifies.then(|| (now + job.verify_every, Wake::Verify));
    }
    if !job.actuator.retries() || !retryable {
        return None;
    }
    *failures += 1;
    Some((now + RETRY.delay_random(*failures), Wake::Retry))
}

/// Apply, then verify if the apply worked; report each step and the result. Returns whether
/// both worked, and if not whether a retry can help.
async fn attempt(job: &Job, reports: &mpsc::UnboundedSender<Report>, finished: &mpsc::UnboundedSender<Finished>) -> (bool, bool) {
    let (d, a) = (&job.desired, &job.actuator);
    let mut retryable = true;
    let mut send = |step: Step, outcome: Outcome, started: Instant| {
        let ok = outcome.ok;
        retryable = outcome.retryable;
        let _ = reports.send(Report::Step(StepReport {
            service: d.service.clone(),
            epoch: d.epoch,
            actuator: a.name().to_string(),
            step,
            outcome,
            duration_us: started.elapsed().as_micros() as u64,
        }));
        ok
    };
    let mut steps = 1;
    let started = Instant::now();
    let mut ok = send(Step::Applied, a.apply(d).await, started);
    if ok && let Some(verify) = a.verify(d) {
        let started = Instant::now();
        ok = send(Step::Verified, verify.await, started);
        steps += 1;
    }
    let _ = finished.send(Finished { actuator: a.name().to_string(), epoch: d.epoch, ok, steps });
    (ok, retryable)
}

/// The periodic check: verify; on failure apply again (and verify), reporting the drift.
async fn verify_or_repair(job: &Job, reports: &mpsc::UnboundedSender<Report>) -> (bool, bool) {
    let (d, a) = (&job.desired, &job.actuator);
    let Some(verify) = a.verify(d) else { return (true, false) };
    let check = verify.await;
    if check.ok {
        return (true, false);
    }
    let mut repair = a.apply(d).await;
    if repair.ok
        && let Some(verify) = a.verify(d)
    {
        let after = verify.await;
        repair = Outcome { ok: after.ok, detail: format!("{}; {}", repair.detail, after.detail), retryable: after.retryable };
    }
    let (ok, retryable) = (repair.ok, repair.retryable);
    let _ = reports.send(Report::Drift(DriftReport {
        service: d.service.clone(),
        epoch: d.epoch,
        actuator: a.name().to_string(),
        drift: check.detail,
        repair,
    }));
    (ok, retryable)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    use super::*;
    use crate::actuator::{ActFuture, TargetRef};
    use crate::decision::Reason;

    /// A test actuator: its "world" is one epoch number.
    struct Fake {
        name: String,
        apply_takes: Duration,
        /// Applies that fail before the first success.
        failures_left: AtomicU32,
        retries: bool,
        verifies: bool,
        /// Failures say that retrying cannot help (a rejected key).
        fatal: bool,
        world: AtomicU64,
        applied: Mutex<Vec<u64>>,
    }

    impl Fake {
        fn new(name: &str) -> Fake {
            Fake {
                name: name.into(),
                apply_takes: Duration::ZERO,
                failures_left: AtomicU32::new(0),
                retries: true,
                verifies: false,
                fatal: false,
                world: AtomicU64::new(0),
                applied: Mutex::new(Vec::new()),
            }
        }
    }

    impl Actuator for Fake {
        fn name(&self) -> &str {
            &self.name
        }

        fn apply<'a>(&'a self, d: &'a Desired) -> ActFuture<'a> {
            Box::pin(async move {
                tokio::time::sleep(self.apply_takes).await;
                self.applied.lock().unwrap().push(d.epoch);
                let failing = self.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
                if failing {
                    return if self.fatal { Outcome::fatal("key rejected") } else { Outcome::failed("refused") };
                }
                self.world.store(d.epoch, Ordering::SeqCst);
                Outcome::ok(format!("epoch {}", d.epoch))
            })
        }

        fn retries(&self) -> bool {
            self.retries
        }

        fn verify<'a>(&'a self, d: &'a Desired) -> Option<ActFuture<'a>> {
            self.verifies.then(|| -> ActFuture<'a> {
                Box::pin(async move {
                    let w = self.world.load(Ordering::SeqCst);
                    Outcome { ok: w == d.epoch, detail: format!("world at epoch {w}"), retryable: true }
                })
            })
        }
    }

    fn cmd(epoch: u64, actuators: &[Arc<Fake>]) -> Command {
        Command {
            desired: Desired {
                service: "www".into(),
                epoch,
                active: Some(TargetRef { name: "backup".into(), address: [127, 0, 0, 3].into() }),
                previous: None,
                reason: Reason::Failover,
                all_down: false,
                decided_at: Instant::now(),
            },
            actuators: actuators.iter().map(|a| a.clone() as Arc<dyn Actuator>).collect(),
            verify_every: Duration::from_secs(30),
        }
    }

    /// Short form of a report: `dns@2 applied ok`, `done@2 ok`, `drift dns@2 ok`.
    fn short(r: &Report) -> String {
        let ok = |b: bool| if b { "ok" } else { "failed" };
        match r {
            Report::Step(s) => {
                format!("{}@{} {} {}", s.actuator, s.epoch, if s.step == Step::Applied { "applied" } else { "verified" }, ok(s.outcome.ok))
            }
            Report::Done { epoch, ok: o, .. } => format!("done@{epoch} {}", ok(*o)),
            Report::Drift(d) => format!("drift {}@{} {}", d.actuator, d.epoch, ok(d.repair.ok)),
        }
    }

    struct Rig {
        tx: watch::Sender<Option<Command>>,
        rx: mpsc::UnboundedReceiver<Report>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Rig {
        fn start() -> Rig {
            let (tx, crx) = watch::channel(None);
            let (rtx, rx) = mpsc::unbounded_channel();
            Rig { tx, rx, task: tokio::spawn(run(crx, rtx)) }
        }

        /// The next report and the (paused) time it arrived at.
        async fn next(&mut self) -> (String, tokio::time::Instant) {
            let r = tokio::time::timeout(Duration::from_secs(3600), self.rx.recv()).await.expect("a report within the hour").expect("runner alive");
            (short(&r), tokio::time::Instant::now())
        }

        async fn expect(&mut self, want: &[&str]) -> tokio::time::Instant {
            let mut at = tokio::time::Instant::now();
            for w in want {
                let (got, t) = self.next().await;
                assert_eq!(got, *w);
                at = t;
            }
            at
        }

        /// Nothing is reported for `d` (paused clock: this advances time, it does not wait).
        async fn quiet_for(&mut self, d: Duration) {
            if let Ok(r) = tokio::time::timeout(d, self.rx.recv()).await {
                panic!("unexpected report {:?}", r.as_ref().map(short));
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_actuator_does_not_delay_the_next_epoch_on_a_fast_one() {
        let dns = Arc::new(Fake::new("dns"));
        let hook = Arc::new(Fake { apply_takes: Duration::from_secs(10), ..Fake::new("hook") });
        let both = [dns.clone(), hook.clone()];
        let mut rig = Rig::start();
        let t0 = tokio::time::Instant::now();
        rig.tx.send_replace(Some(cmd(1, &both)));
        rig.expect(&["dns@1 applied ok"]).await;
        rig.tx.send_replace(Some(cmd(2, &both)));
        let at = rig.expect(&["dns@2 applied ok"]).await;
        assert_eq!(at - t0, Duration::ZERO, "epoch 2 reached the fast actuator while the slow one was busy");
        // `Done` still waits for every actuator, epoch by epoch.
        let at = rig.expect(&["hook@1 applied ok", "done@1 ok"]).await;
        assert_eq!(at - t0, Duration::from_secs(10));
        let at = rig.expect(&["hook@2 applied ok", "done@2 ok"]).await;
        assert_eq!(at - t0, Duration::from_secs(20));
        // A stale or repeated epoch is never applied.
        rig.tx.send_replace(Some(cmd(1, &both)));
        rig.tx.send_replace(Some(cmd(2, &both)));
        rig.quiet_for(Duration::from_secs(60)).await;
        assert_eq!(*dns.applied.lock().unwrap(), [1, 2]);
        assert_eq!(*hook.applied.lock().unwrap(), [1, 2]);
        drop(rig.tx);
        rig.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_actuator_skips_to_the_newest_epoch_and_the_skipped_one_still_completes() {
        let dns = Arc::new(Fake::new("dns"));
        let hook = Arc::new(Fake { apply_takes: Duration::from_secs(10), ..Fake::new("hook") });
        let both = [dns.clone(), hook.clone()];
        let mut rig = Rig::start();
        rig.tx.send_replace(Some(cmd(1, &both)));
        rig.expect(&["dns@1 applied ok"]).await;
        rig.tx.send_replace(Some(cmd(2, &both)));
        rig.expect(&["dns@2 applied ok"]).await;
        rig.tx.send_replace(Some(cmd(3, &both)));
        rig.expect(&["dns@3 applied ok"]).await;
        // The hook finishes 1, then goes straight to 3: epoch 2 is done (dns did it, the hook
        // moved past it) when the hook finishes 3.
        rig.expect(&["hook@1 applied ok", "done@1 ok", "hook@3 applied ok", "done@2 ok", "done@3 ok"]).await;
        assert_eq!(*hook.applied.lock().unwrap(), [1, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_step_is_retried_with_backoff_until_it_succeeds() {
        let a = Arc::new(Fake { failures_left: AtomicU32::new(2), ..Fake::new("dns") });
        let mut rig = Rig::start();
        rig.tx.send_replace(Some(cmd(1, std::slice::from_ref(&a))));
        let t0 = rig.expect(&["dns@1 applied failed", "done@1 failed"]).await;
        let t1 = rig.expect(&["dns@1 applied failed"]).await;
        let t2 = rig.expect(&["dns@1 applied ok", "done@1 ok"]).await;
        let (first, second) = (t1 - t0, t2 - t1);
        assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1), "{first:?}");
        assert!(second >= Duration::from_secs(1) && second <= Duration::from_secs(2), "{second:?}");
        rig.quiet_for(Duration::from_secs(600)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_that_cannot_be_retried_is_reported_once_and_the_next_epoch_still_applies() {
        let a = Arc::new(Fake { failures_left: AtomicU32::new(1), fatal: true, ..Fake::new("dns") });
        let mut rig = Rig::start();
        rig.tx.send_replace(Some(cmd(1, std::slice::from_ref(&a))));
        rig.expect(&["dns@1 applied failed", "done@1 failed"]).await;
        rig.quiet_for(Duration::from_secs(600)).await;
        assert_eq!(*a.applied.lock().unwrap(), [1]);
        rig.tx.send_replace(Some(cmd(2, std::slice::from_ref(&a))));
        rig.expect(&["dns@2 applied ok", "done@2 ok"]).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_epoch_supersedes_a_retry_and_a_hook_without_retry_runs_once() {
        let a = Arc::new(Fake { failures_left: AtomicU32::new(u32::MAX), ..Fake::new("dns") });
        let once = Arc::new(Fake { failures_left: AtomicU32::new(1), retries: false, ..Fake::new("hook") });
        let both = [a.clone(), once.clone()];
        let mut rig = Rig::start();
        rig.tx.send_replace(Some(cmd(1, &both)));
        let mut seen = vec![rig.next().await.0, rig.next().await.0, rig.next().await.0];
        seen.sort();
        assert_eq!(seen, ["dns@1 applied failed", "done@1 failed", "hook@1 applied failed"]);
        rig.expect(&["dns@1 applied failed"]).await; // a retry
        rig.tx.send_replace(Some(cmd(2, &both)));
        let mut seen = vec![rig.next().await.0, rig.next().await.0];
        seen.sort();
        assert_eq!(seen, ["dns@2 applied failed", "hook@2 applied ok"]);
        rig.expect(&["done@2 failed"]).await;
        // From now on only epoch 2 is retried; the hook is not run again.
        for _ in 0..5 {
            rig.expect(&["dns@2 applied failed"]).await;
        }
        assert!(a.applied.lock().unwrap().iter().skip(2).all(|&e| e == 2));
        assert_eq!(*once.applied.lock().unwrap(), [1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn drift_is_found_by_the_periodic_verification_and_repaired() {
        let a = Arc::new(Fake { verifies: true, ..Fake::new("dns") });
        let mut rig = Rig::start();
        rig.tx.send_replace(Some(cmd(4, std::slice::from_ref(&a))));
        let t0 = rig.expect(&["dns@4 applied ok", "dns@4 verified ok", "done@4 ok"]).await;
        // Verifications that pass report nothing.
        rig.quiet_for(Duration::from_secs(95)).await;
        a.world.store(3, Ordering::SeqCst); // someone changed the world behind our back
        let at = rig.expect(&["drift dns@4 ok"]).await;
        assert_eq!(at - t0, Duration::from_secs(120), "found at the next periodic verification");
        assert_eq!(a.world.load(Ordering::SeqCst), 4);
        // A repair that fails is retried with backoff like any failed step.
        a.world.store(3, Ordering::SeqCst);
        a.failures_left.store(1, Ordering::SeqCst);
        rig.expect(&["drift dns@4 failed", "dns@4 applied ok", "dns@4 verified ok"]).await;
        assert_eq!(a.world.load(Ordering::SeqCst), 4);
    }
}
