//! The drill protocol, against a running daemon through its API.
//!
//! 1. Baseline: every target of the service is healthy and in rotation, the primary is active
//!    and not pinned away, and the observing client (if any) gets answers from the primary.
//! 2. Fault: force-down (an override), the user's command, or an nftables drop rule.
//! 3. Measure from the daemon's events: detection (fault -> marked down), switch (marked down
//!    -> every actuator done), and from the client: RTO (last success on the primary -> first
//!    success on the backup).
//! 4. Verify the client's answers now come from the backup.
//! 5. Restore, then measure the switch back the same way and check traffic returned.
//!
//! The fault is always undone before this returns: on success, on error, on timeout and on
//! cancellation (Ctrl-C), and only then is the report written. And if this process dies
//! (SIGKILL, a closed SSH session), the daemon undoes it: before installing the fault the drill
//! registers what undoes it, then renews a lease every third of [`Options::lease`] while it runs.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio_util::sync::CancellationToken;

use super::observer::{self, ObserveSpec, Observer};
use super::{Fault, LeaseRequest, LeaseResponse, Report, StartRequest, StartResponse, Step, Undo};
use crate::api::client::Client;
use crate::api::wire;
use crate::events::Event;
use crate::clock::now_us;

/// Everything a drill needs to know.
#[derive(Debug, Clone)]
pub struct Options {
    pub service: String,
    pub fault: Fault,
    /// The client's view; `None` measures from the daemon's events only.
    pub observe: Option<ObserveSpec>,
    /// Budget for the whole drill (fault to traffic back).
    pub timeout: Duration,
    /// Who runs it (recorded in events).
    pub by: String,
    /// How long the daemon keeps the fault if this process stops renewing (it renews every
    /// third of this): the longest a killed drill can leave its fault behind.
    pub lease: Duration,
}

/// Progress lines as they happen.
pub type Progress<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// What the drill would do, without touching anything.
pub async fn plan(client: &Client, opts: &Options) -> Result<Vec<String>> {
    let svc: wire::Service = client.get(&format!("/api/v1/services/{}", opts.service)).await?;
    let primary = svc.targets.first().context("the service has no targets")?;
    let mut lines = vec![format!("service {} (active now: {})", svc.name, svc.active.as_deref().unwrap_or("(none)"))];
    lines.push(format!("1. baseline: all {} targets healthy and in rotation, {} active", svc.targets.len(), primary.name));
    match &opts.observe {
        Some(o) => lines.push(format!("   observing client: GET {} every {} ms via {:?}", o.url(), o.every.as_millis(), o.resolver)),
        None => lines.push("   no observing client (give --url or configure a DNS record for the service)".into()),
    }
    lines.push(match &opts.fault {
        Fault::ForceDown => format!("2. fault: force {} down (its checks count as failing; no real outage; lapses by itself)", primary.name),
        Fault::Exec { cmd, .. } => format!("2. fault: run `{cmd}`"),
        Fault::Block => format!("2. fault: nftables drop of traffic to {}:{}", primary.check_address, primary.check_port.map(|p| p.to_string()).unwrap_or("-".into())),
    });
    lines.push(format!(
        "3. measure detection (expect about {} ms), switch, client RTO",
        svc.check.interval_ms * svc.check.fall as u64 + svc.check.timeout_ms
    ));
    lines.push("4. verify the client gets answers from the backup".into());
    lines.push(match &opts.fault {
        Fault::Exec { restore_cmd: Some(r), .. } => format!("5. restore: run `{r}`, wait for failback after the {} ms hold", svc.failback_hold_ms),
        Fault::Exec { restore_cmd: None, .. } => "5. restore: none given (--restore-cmd); the drill ends when the backup serves".into(),
        _ => format!("5. restore: undo the fault, wait for failback after the {} ms hold", svc.failback_hold_ms),
    });
    lines.push(format!(
        "budget: {} s; the fault is undone on Ctrl-C, timeout or error, and by the daemon {} s after this command stops renewing its lease (killed, SSH closed)",
        opts.timeout.as_secs(),
        opts.lease.as_secs()
    ));
    Ok(lines)
}

struct Ctx<'a> {
    client: &'a Client,
    opts: &'a Options,
    progress: Progress<'a>,
    steps: Vec<Step>,
    cursor: u64,
}

impl Ctx<'_> {
    fn step(&mut self, what: impl Into<String>) {
        let what = what.into();
        (self.progress)(&what);
        self.steps.push(Step { time_us: now_us(), what });
    }

    /// Poll events until `pred` matches one (returns it with its time), or the deadline.
    async fn wait_event(&mut self, deadline: tokio::time::Instant, what: &str, pred: impl Fn(&Event) -> bool) -> Result<(u64, Event)> {
        loop {
            let page: wire::Events =
                self.client.get(&format!("/api/v1/events?since={}&limit=1000&service={}", self.cursor, self.opts.service)).await?;
            self.cursor = page.next.max(self.cursor);
            if let Some(e) = page.events.into_iter().find(|e| pred(&e.event)) {
                self.cursor = e.seq;
                return Ok((e.time_us, e.event));
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("gave up waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Installed fault, so it can be undone.
enum Installed {
    ForceDown { target: String },
    Exec { restore: Option<String> },
    Block { table: String },
    None,
}

async fn shell(cmd: &str, what: &str) -> Result<String> {
    let argv = vec!["/bin/sh".to_string(), "-c".to_string(), cmd.to_string()];
    let out = crate::process::run(&argv, &[], Duration::from_secs(120), 4096).await;
    if !out.ok {
        bail!("{what} `{cmd}` failed: {}", out.summary());
    }
    Ok(out.summary())
}

/// The nftables table a block drill installs.
fn block_table(id: u64) -> String {
    format!("understudy_drill_{id}")
}

/// What undoes `fault` if this process dies: registered with the daemon before it is installed.
fn undo(fault: &Fault, id: u64, primary: &wire::Target) -> Option<Undo> {
    match fault {
        Fault::ForceDown => Some(Undo::Unforce { target: primary.name.clone() }),
        Fault::Exec { restore_cmd, .. } => restore_cmd.as_ref().map(|cmd| Undo::Command { cmd: cmd.clone() }),
        Fault::Block => Some(Undo::NftTable { table: block_table(id) }),
    }
}

async fn lease(client: &Client, id: u64, undo: Option<Undo>, lasts: Duration) -> Result<LeaseResponse> {
    let body = LeaseRequest { undo, lasts: Some(format!("{}ms", lasts.as_millis())) };
    client.post(&format!("/api/v1/drills/{id}/lease"), Some(serde_json::to_value(body)?)).await
}

/// Renew drill `id`'s lease every third of `lasts`, forever. A refused renewal (the daemon
/// already undid the fault: this process was stalled for longer than the lease) sets `lost`.
async fn renew_lease(client: &Client, id: u64, lasts: Duration, lost: &std::sync::atomic::AtomicBool) {
    let mut tick = tokio::time::interval(lasts / 3);
    tick.tick().await; // the first tick is now; the lease was just taken
    loop {
        tick.tick().await;
        if let Err(e) = lease(client, id, None, lasts).await {
            tracing::warn!("drill #{id}: renewing its lease failed: {e:#}");
            if format!("{e:#}").contains("not running") {
                lost.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

async fn inject(client: &Client, opts: &Options, id: u64, primary: &wire::Target) -> Result<Installed> {
    match &opts.fault {
        Fault::ForceDown => {
            let lasts = format!("{}s", opts.timeout.as_secs() + 60);
            let body = serde_json::json!({ "for": lasts, "by": format!("drill {id}") });
            let _: wire::Service = client
                .post(&format!("/api/v1/services/{}/targets/{}/force-down", opts.service, primary.name), Some(body))
                .await
                .context("force-down")?;
            Ok(Installed::ForceDown { target: primary.name.clone() })
        }
        Fault::Exec { cmd, restore_cmd } => {
            shell(cmd, "fault command").await?;
            Ok(Installed::Exec { restore: restore_cmd.clone() })
        }
        Fault::Block => {
            let port = primary.check_port.ok_or_else(|| anyhow!("--fault block needs a check with a port (this is an exec check)"))?;
            let table = block_table(id);
            let family = if primary.check_address.is_ipv4() { "ip" } else { "ip6" };
            let script = format!(
                "nft add table inet {table} && nft 'add chain inet {table} out {{ type filter hook output priority 0 ; policy accept ; }}' && \
                 nft add rule inet {table} out {family} daddr {} tcp dport {port} drop",
                primary.check_address
            );
            if let Err(e) = shell(&script, "installing the nftables block (needs root and the nftables package, on the host understudy runs on)").await {
                // Leave nothing half-installed (the table may exist without its rule).
                let _ = shell(&format!("nft delete table inet {table}"), "cleanup").await;
                return Err(e);
            }
            Ok(Installed::Block { table })
        }
    }
}

async fn restore(client: &Client, opts: &Options, installed: &Installed) -> Result<Option<String>> {
    match installed {
        Installed::ForceDown { target } => {
            let _: wire::Service = client.post(&format!("/api/v1/services/{}/targets/{target}/unforce", opts.service), None).await?;
            Ok(Some(format!("cleared the force-down of {target}")))
        }
        Installed::Exec { restore: Some(cmd) } => {
            shell(cmd, "restore command").await?;
            Ok(Some(format!("ran `{cmd}`")))
        }
        Installed::Exec { restore: None } => Ok(None),
        Installed::Block { table } => {
            shell(&format!("nft delete table inet {table}"), "removing the nftables block").await?;
            Ok(Some(format!("removed nftables table {table}")))
        }
        Installed::None => Ok(None),
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Run a drill. `cancel` (Ctrl-C) stops it early; the fault is undone first either way.
pub async fn run(client: &Client, opts: &Options, progress: Progress<'_>, cancel: CancellationToken) -> Result<Report> {
    let svc: wire::Service = client.get(&format!("/api/v1/services/{}", opts.service)).await?;
    let primary = svc.targets.first().cloned().context("the service has no targets")?;
    // Baseline.
    let mut problems = Vec::new();
    for t in &svc.targets {
        if !t.healthy {
            problems.push(format!("{} is not healthy ({})", t.name, t.last_check.as_ref().map(|c| c.reason.as_str()).unwrap_or("no result")));
        }
        if !t.enabled {
            problems.push(format!("{} is drained", t.name));
        }
        if t.forced_down_until.is_some() {
            problems.push(format!("{} is already forced down", t.name));
        }
    }
    if svc.active.as_deref() != Some(primary.name.as_str()) {
        problems.push(format!("the primary {} is not active ({} is)", primary.name, svc.active.as_deref().unwrap_or("nothing")));
    }
    if let Some(p) = &svc.pinned {
        problems.push(format!("the service is pinned to {p}"));
    }
    if svc.targets.len() < 2 {
        problems.push("the service has no backup to fail over to".into());
    }
    if !problems.is_empty() {
        bail!("baseline not met, nothing was changed: {}", problems.join("; "));
    }
    let observer = match &opts.observe {
        Some(spec) => {
            let obs = Observer::start(spec.clone());
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                if obs.samples().iter().any(|s| s.ok && s.addr == Some(primary.address)) {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    let last = obs.samples().last().map(|s| format!("{:?}: {}", s.addr, s.detail)).unwrap_or_default();
                    obs.stop().await;
                    bail!("baseline not met: the client never got an answer from the primary at {} ({last})", primary.address);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Some(obs)
        }
        None => None,
    };

    let start: StartResponse = client
        .post(
            "/api/v1/drills",
            Some(serde_json::to_value(StartRequest {
                service: opts.service.clone(),
                fault: opts.fault.name().into(),
                target: primary.name.clone(),
                by: opts.by.clone(),
            })?),
        )
        .await
        .context("registering the drill")?;
    let mut cx = Ctx { client, opts, progress, steps: Vec::new(), cursor: start.since };
    cx.step(format!("drill #{} on {}: baseline ok ({} active, all targets healthy)", start.id, opts.service, primary.name));

    let mut report = Report {
        id: start.id,
        service: opts.service.clone(),
        fault: opts.fault.name().into(),
        target: primary.name.clone(),
        to: None,
        started_us: now_us(),
        finished_us: 0,
        ok: false,
        error: None,
        targets: start.targets,
        detection_ms: None,
        switch_ms: None,
        monitor_rto_ms: None,
        client_rto_ms: None,
        client_failed_requests: None,
        client_switch_ms: None,
        backup_verified: None,
        recovery_detection_ms: None,
        failback_hold_ms: None,
        failback_reason: None,
        failback_switch_ms: None,
        client_return_ms: None,
        traffic_returned: None,
        observed_url: opts.observe.as_ref().map(|o| o.url()),
        client_requests: 0,
        missed: Vec::new(),
        steps: Vec::new(),
    };

    // The daemon owns the fault from here on: it undoes it if this process stops renewing.
    let lost = std::sync::atomic::AtomicBool::new(false);
    let leased = lease(client, start.id, undo(&opts.fault, start.id, &primary), opts.lease).await;
    let renewing = renew_lease(client, start.id, opts.lease, &lost);
    tokio::pin!(renewing);
    let fault_us = now_us();
    let installed = match leased {
        Err(e) => {
            report.error = Some(format!("registering the fault with the daemon: {e:#}"));
            Installed::None
        }
        Ok(l) => match inject(client, opts, start.id, &primary).await {
            Ok(i) => {
                cx.step(format!("fault injected: {} (the daemon undoes it if this drill is killed; lease until {})", opts.fault.name(), l.expires));
                i
            }
            Err(e) => {
                report.error = Some(format!("{e:#}"));
                Installed::None
            }
        },
    };
    let mut restored = false;
    if report.error.is_none() {
        let measured = tokio::select! {
            r = measure(&mut cx, &mut report, &svc, &primary, fault_us, &installed, &mut restored, observer.as_ref()) => r,
            _ = tokio::time::sleep(opts.timeout) => Err(anyhow!("the drill took longer than its {} s budget", opts.timeout.as_secs())),
            _ = cancel.cancelled() => Err(anyhow!("interrupted")),
            _ = &mut renewing => unreachable!("renewing a lease never ends"),
        };
        if let Err(e) = measured {
            report.error = Some(format!("{e:#}"));
        }
    }
    if lost.load(std::sync::atomic::Ordering::Relaxed) {
        let msg = "this drill stopped renewing its lease for too long, so the daemon undid the fault before the drill ended".to_string();
        report.error = Some(report.error.map(|x| format!("{x}; {msg}")).unwrap_or(msg));
    }
    if !restored {
        let undone = tokio::select! {
            r = restore(client, opts, &installed) => r,
            _ = &mut renewing => unreachable!("renewing a lease never ends"),
        };
        match undone {
            Ok(Some(what)) => cx.step(format!("restored: {what}")),
            Ok(None) => {}
            Err(e) => {
                let msg = format!("RESTORE FAILED, undo the fault by hand: {e:#}");
                cx.step(msg.clone());
                report.error = Some(report.error.map(|x| format!("{x}; {msg}")).unwrap_or(msg));
            }
        }
    }
    if let Some(obs) = observer {
        let samples = obs.stop().await;
        report.client_requests = samples.len();
    }
    report.finished_us = now_us();
    report.judge();
    if let Some(e) = &report.error {
        cx.step(format!("drill failed: {e}"));
    } else if report.ok {
        cx.step("drill passed: every target met");
    } else {
        cx.step(format!("drill missed its targets: {}", report.missed.join("; ")));
    }
    report.steps = std::mem::take(&mut cx.steps);
    let _: serde_json::Value =
        client.post(&format!("/api/v1/drills/{}/finish", report.id), Some(serde_json::to_value(&report)?)).await.context("recording the report")?;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    cx: &mut Ctx<'_>,
    report: &mut Report,
    svc: &wire::Service,
    primary: &wire::Target,
    fault_us: u64,
    installed: &Installed,
    restored: &mut bool,
    observer: Option<&Observer>,
) -> Result<()> {
    let far = tokio::time::Instant::now() + cx.opts.timeout;
    let p = primary.name.clone();
    let (down_us, _) =
        cx.wait_event(far, &format!("{p} to be marked down"), |e| matches!(e, Event::TargetDown { target, .. } if *target == p)).await?;
    report.detection_ms = Some(ms(down_us.saturating_sub(fault_us)));
    cx.step(format!("{p} marked down after {:.0} ms", ms(down_us - fault_us.min(down_us))));
    let (_, decision) = cx
        .wait_event(far, "the failover decision", |e| matches!(e, Event::Decision { from: Some(f), .. } if *f == p))
        .await?;
    let Event::Decision { epoch, to, address, .. } = decision else { unreachable!("matched a decision") };
    report.to = to.clone();
    cx.step(format!("decision: traffic to {} (epoch {epoch})", to.as_deref().unwrap_or("(none)")));
    let (switched_us, done) = cx.wait_event(far, "the switch to complete", |e| matches!(e, Event::Switched { epoch: x, .. } if *x == epoch)).await?;
    if let Event::Switched { ok: false, .. } = done {
        bail!("an actuator failed to apply the failover (see `understudy events`)");
    }
    report.switch_ms = Some(ms(switched_us.saturating_sub(down_us)));
    report.monitor_rto_ms = Some(ms(switched_us.saturating_sub(fault_us)));
    cx.step(format!("switch complete {:.1} ms after marked down", ms(switched_us.saturating_sub(down_us))));

    let backup_ip: Option<IpAddr> = address;
    if let (Some(obs), Some(backup_ip)) = (observer, backup_ip) {
        let sw = loop {
            if let Some(sw) = observer::switch(&obs.samples(), primary.address, backup_ip, fault_us) {
                break sw;
            }
            if tokio::time::Instant::now() >= far {
                bail!("the client never got an answer from the backup at {backup_ip}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        report.client_rto_ms = sw.rto_us().map(ms);
        report.client_failed_requests = Some(sw.failures);
        report.client_switch_ms = Some(ms(sw.first_new_us.saturating_sub(fault_us)));
        cx.step(format!(
            "client: first answer from the backup {} ms after its last from the primary ({} failed requests between)",
            sw.rto_us().map(|u| format!("{:.0}", ms(u))).unwrap_or("?".into()),
            sw.failures
        ));
        // Verify: the next answers keep coming from the backup.
        let verified = settle(obs, sw.first_new_us, backup_ip, far).await;
        report.backup_verified = Some(verified);
        cx.step(if verified { "verified: the client's answers come from the backup".to_string() } else { "the client's answers did not settle on the backup".into() });
    }

    // Restore and measure the way back.
    let restore_us = now_us();
    match restore(cx.client, cx.opts, installed).await? {
        Some(what) => cx.step(format!("restored: {what}")),
        None => {
            *restored = true;
            cx.step("no restore step given: traffic stays on the backup");
            return Ok(());
        }
    }
    *restored = true;
    if svc.failback == crate::config::Failback::Manual {
        cx.step("failback is manual: traffic stays on the backup until an operator moves it");
        return Ok(());
    }
    let (up_us, _) = cx.wait_event(far, &format!("{p} to be marked up"), |e| matches!(e, Event::TargetUp { target, .. } if *target == p)).await?;
    report.recovery_detection_ms = Some(ms(up_us.saturating_sub(restore_us)));
    cx.step(format!("{p} marked up {:.0} ms after the restore; failback after the {} ms hold", ms(up_us.saturating_sub(restore_us)), svc.failback_hold_ms));
    let (fb_us, fb) = cx
        .wait_event(far, "the failback decision", |e| matches!(e, Event::Decision { to: Some(t), .. } if *t == p))
        .await?;
    let Event::Decision { epoch: fb_epoch, reason: fb_reason, .. } = fb else { unreachable!("matched a decision") };
    report.failback_reason = Some(fb_reason.to_string());
    if fb_reason == crate::decision::Reason::Failback {
        report.failback_hold_ms = Some(ms(fb_us.saturating_sub(up_us)));
    } else {
        // Not the hold: the backup failed (or an operator moved traffic) while it ran.
        cx.step(format!("traffic returned to {p} by a {fb_reason} decision {:.0} ms after it was marked up, before the hold ended", ms(fb_us.saturating_sub(up_us))));
    }
    let (fb_done_us, _) = cx.wait_event(far, "the failback switch", |e| matches!(e, Event::Switched { epoch: x, .. } if *x == fb_epoch)).await?;
    report.failback_switch_ms = Some(ms(fb_done_us.saturating_sub(fb_us)));
    cx.step(format!("failback complete {:.1} ms after the decision", ms(fb_done_us.saturating_sub(fb_us))));
    if let (Some(obs), Some(backup_ip)) = (observer, backup_ip) {
        let sw = loop {
            if let Some(sw) = observer::switch(&obs.samples(), backup_ip, primary.address, fb_us) {
                break sw;
            }
            if tokio::time::Instant::now() >= far {
                report.traffic_returned = Some(false);
                bail!("the client never got an answer from the primary again");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        report.client_return_ms = Some(ms(sw.first_new_us.saturating_sub(fb_us)));
        let back = settle(obs, sw.first_new_us, primary.address, far).await;
        report.traffic_returned = Some(back);
        cx.step(format!("client back on the primary {:.0} ms after the failback decision", ms(sw.first_new_us.saturating_sub(fb_us))));
    }
    Ok(())
}

/// After `from_us`, do the next 10 successful answers all come from `ip`? Waits for them.
async fn settle(obs: &Observer, from_us: u64, ip: IpAddr, deadline: tokio::time::Instant) -> bool {
    loop {
        let ok: Vec<_> = obs.samples().into_iter().filter(|s| s.at_us >= from_us && s.ok).take(10).collect();
        if ok.len() == 10 {
            return ok.iter().all(|s| s.addr == Some(ip));
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
