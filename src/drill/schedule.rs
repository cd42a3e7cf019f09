//! Background jobs the daemon runs for drills: scheduled drills and the heartbeat push.
//!
//! Scheduled drills talk to the daemon's own API, exactly like `understudy drill`, so they
//! take the same path (and leave the same events and reports). The next run of a schedule is
//! `every` after the last finished drill of that service (from the daemon's records), or after
//! start-up when there is none. The heartbeat pings a URL every `every` while the daemon is
//! healthy (core loop turning, checks arriving), so that a monitor elsewhere notices when it
//! stops: a dead man's switch.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::{HeartbeatConfig, Schedule};
use super::observer::{ObserveSpec, Resolver};
use super::{Fault, Summary, run};
use crate::api::client::{Client, Endpoint};

/// Whether the daemon is working (`Err` says why not); the heartbeat is withheld while not.
pub type SelfHealth = std::sync::Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// Start every schedule and the heartbeat. They stop with `cancel`. Scheduled drills reach the
/// daemon through its API at `endpoint`.
pub fn spawn(
    tracker: &TaskTracker,
    cancel: &CancellationToken,
    schedules: &[Schedule],
    heartbeat: Option<&HeartbeatConfig>,
    endpoint: &Endpoint,
    health: SelfHealth,
) {
    for s in schedules {
        let (s, cancel, endpoint) = (s.clone(), cancel.clone(), endpoint.clone());
        tracker.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = scheduled(s, endpoint, cancel.clone()) => {}
            }
        });
    }
    if let Some(hb) = heartbeat {
        let (hb, cancel) = (hb.clone(), cancel.clone());
        tracker.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = beat(hb, health) => {}
            }
        });
    }
}

fn observe_spec(s: &Schedule) -> Option<ObserveSpec> {
    let url = s.url.as_ref()?;
    Some(ObserveSpec {
        scheme: url.scheme().to_string(),
        host: url.host_str()?.to_string(),
        port: url.port_or_known_default()?,
        path: url.path().to_string(),
        resolver: s.resolver.map(Resolver::Server).unwrap_or(Resolver::System),
        every: Duration::from_millis(50),
        timeout: Duration::from_secs(1),
        tls_verify: true,
    })
}

async fn scheduled(s: Schedule, endpoint: Endpoint, cancel: CancellationToken) {
    let client = match Client::new(&endpoint) {
        Ok(c) => c,
        Err(e) => return tracing::error!("scheduled drills for {} cannot run: {e:#}", s.service),
    };
    let started = crate::clock::now_us();
    loop {
        let last = client
            .get::<Vec<Summary>>("/api/v1/drills")
            .await
            .ok()
            .and_then(|list| list.iter().filter(|d| d.service == s.service).map(|d| d.started.clone()).max())
            .and_then(|t| humantime::parse_rfc3339(&t).ok())
            .map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros() as u64)
            .unwrap_or(started);
        let due = last + s.every.as_micros() as u64;
        let now = crate::clock::now_us();
        if due > now {
            tokio::time::sleep(Duration::from_micros(due - now)).await;
        }
        let opts = run::Options {
            service: s.service.clone(),
            fault: Fault::ForceDown,
            observe: observe_spec(&s),
            timeout: s.timeout,
            by: "schedule".into(),
            lease: crate::drill::LeaseRequest::DEFAULT,
        };
        let service = s.service.clone();
        let progress = move |line: &str| tracing::info!(service = %service, "scheduled drill: {line}");
        match run::run(&client, &opts, &progress, cancel.clone()).await {
            Ok(r) if r.ok => tracing::info!("scheduled drill #{} of {} passed", r.id, r.service),
            Ok(r) => tracing::warn!("scheduled drill #{} of {} missed: {}", r.id, r.service, r.missed.join("; ")),
            Err(e) => {
                // Not even started (baseline not met): try again after a while, not at once.
                tracing::warn!("scheduled drill of {} did not run: {e:#}", s.service);
                tokio::time::sleep(s.every.min(Duration::from_secs(3600))).await;
            }
        }
    }
}

async fn beat(hb: HeartbeatConfig, health: SelfHealth) {
    crate::crypto::install_provider();
    let client = match reqwest::Client::builder().timeout(hb.timeout).build() {
        Ok(c) => c,
        Err(e) => return tracing::error!("heartbeat cannot run: {e}"),
    };
    let mut tick = tokio::time::interval(hb.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match health() {
            Ok(_) => match client.request(hb.method.clone(), hb.url.clone()).send().await {
                Ok(r) if r.status().is_success() => tracing::debug!("heartbeat sent ({})", r.status()),
                // Only the origin: a ping URL's path is usually its secret (hc-ping.com/<uuid>).
                Ok(r) => tracing::warn!("heartbeat to {} answered {}", hb.url.origin().ascii_serialization(), r.status()),
                Err(e) => tracing::warn!("heartbeat to {} failed: {}", hb.url.origin().ascii_serialization(), e.without_url()),
            },
            Err(why) => tracing::warn!("heartbeat withheld, the daemon is unhealthy: {why}"),
        }
    }
}
