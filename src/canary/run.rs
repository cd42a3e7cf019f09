//! The canary's I/O: one sampler task per resolver and one fold task per canary.
//!
//! Each sampler, every `interval`, resolves the canary's name through its resolver and (with a
//! `url`) requests the URL at the address obtained, exactly like the drill's observing client
//! (`drill::observer::once`), the whole attempt bounded by `timeout`; one attempt at a time per
//! resolver, a late one skips ticks rather than piling up. The fold task feeds those samples
//! and the daemon's records (a broadcast subscription) through [`View`], sends the events it
//! returns to the daemon (which records them like any other), counts answers, and publishes
//! the view for the API. The client RTO histogram is observed when the `client_rto` record
//! comes back through the broadcast, so it counts only what is in the log.
//!
//! It only observes: it never changes a decision, never waits on the core (the event channel
//! is unbounded) and stops when the token is cancelled.

use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::{CanaryConfig, CanaryResolver};
use super::view::{Observation, View};
use crate::drill::observer::{ObserveSpec, Resolver, Sample};
use crate::events::{Event, Record, format_time_us};
use crate::metrics::{CanaryLabels, Metrics, ServiceLabels};

/// (service, canary, what it shows through each resolver).
type Entry = (String, String, Vec<super::CanaryView>);

/// What every canary shows now, per service, for `GET /api/v1/services`.
#[derive(Clone, Default)]
pub struct Views(Arc<Mutex<Vec<Entry>>>);

impl Views {
    /// The views of the canaries watching `service` (one entry per canary and resolver).
    pub fn for_service(&self, service: &str) -> Vec<super::CanaryView> {
        let v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        v.iter().filter(|(s, _, _)| s == service).flat_map(|(_, _, l)| l.iter().cloned()).collect()
    }

    fn set(&self, service: &str, canary: &str, lanes: Vec<super::CanaryView>) {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match v.iter_mut().find(|(s, c, _)| s == service && c == canary) {
            Some(e) => e.2 = lanes,
            None => v.push((service.to_string(), canary.to_string(), lanes)),
        }
    }
}

/// Start every configured canary. Call it before the core starts deciding: each canary
/// subscribes to `records` here, so it sees the first decision. `events` receives what the
/// canaries have to record (`clients_stale`, `client_rto`); the daemon must append them to its
/// log (they are events like any other). `views` is kept up to date with what they see.
pub fn spawn(
    tracker: &TaskTracker,
    cancel: &CancellationToken,
    config: &crate::config::Config,
    events: mpsc::UnboundedSender<Event>,
    records: &broadcast::Sender<Record>,
    metrics: Arc<Metrics>,
    views: &Views,
) {
    for c in &config.canaries {
        let Some(svc) = config.services.iter().find(|s| s.name == c.service) else { continue };
        crate::probe::http::install_crypto_provider();
        let targets = svc.targets.iter().map(|t| (t.name.clone(), t.address)).collect();
        let labels: Vec<String> = c.resolvers.iter().map(CanaryResolver::label).collect();
        let stale_after_us = c.stale_after().as_micros().min(u64::MAX as u128) as u64;
        let view = View::new(&c.name, &c.service, stale_after_us, targets, &labels);
        let (tx, rx) = mpsc::channel(64);
        for r in &c.resolvers {
            tracker.spawn(sample_loop(c.clone(), r.clone(), tx.clone(), cancel.clone()));
        }
        drop(tx);
        let fold = Fold { cfg: c.clone(), view, views: views.clone(), events: events.clone(), metrics: metrics.clone() };
        views.set(&c.service, &c.name, fold.wire());
        tracker.spawn(fold.run(rx, records.subscribe(), cancel.clone()));
    }
}

/// The observing client's spec for one resolver.
fn spec(c: &CanaryConfig, r: &CanaryResolver) -> ObserveSpec {
    let (scheme, port, path) = match &c.url {
        Some(u) => {
            let path = match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_string(),
            };
            (u.scheme().to_string(), u.port_or_known_default().unwrap_or(80), path)
        }
        None => ("http".to_string(), 80, "/".to_string()),
    };
    let resolver = match r {
        CanaryResolver::System => Resolver::System,
        CanaryResolver::Server(a) => Resolver::Server(*a),
    };
    ObserveSpec { scheme, host: c.name.clone(), port, path, resolver, every: c.interval, timeout: c.timeout, tls_verify: true }
}

/// One lookup (and request, with a URL), bounded by the canary's timeout.
async fn sample(c: &CanaryConfig, spec: &ObserveSpec) -> Sample {
    let at_us = crate::probe::now_us();
    let attempt = async {
        if c.url.is_some() {
            crate::drill::observer::once(spec).await
        } else {
            match crate::drill::observer::resolve(spec).await {
                Ok(ip) => Sample { at_us, addr: Some(ip), ok: true, detail: "resolved".into() },
                Err(detail) => Sample { at_us, addr: None, ok: false, detail },
            }
        }
    };
    match tokio::time::timeout(c.timeout, attempt).await {
        Ok(s) => s,
        Err(_) => Sample { at_us, addr: None, ok: false, detail: format!("no answer within {} ms", c.timeout.as_millis()) },
    }
}

async fn sample_loop(c: CanaryConfig, r: CanaryResolver, tx: mpsc::Sender<Observation>, cancel: CancellationToken) {
    let spec = spec(&c, &r);
    let label = r.label();
    let mut tick = tokio::time::interval(c.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = tokio::select! {
            _ = cancel.cancelled() => return,
            s = sample(&c, &spec) => s,
        };
        let o = Observation { at_us: s.at_us, resolver: label.clone(), addr: s.addr, ok: s.ok, detail: s.detail };
        if tx.send(o).await.is_err() {
            return;
        }
    }
}

struct Fold {
    cfg: CanaryConfig,
    view: View,
    views: Views,
    events: mpsc::UnboundedSender<Event>,
    metrics: Arc<Metrics>,
}

impl Fold {
    async fn run(mut self, mut rx: mpsc::Receiver<Observation>, mut records: broadcast::Receiver<Record>, cancel: CancellationToken) {
        loop {
            let out = tokio::select! {
                _ = cancel.cancelled() => return,
                o = rx.recv() => match o {
                    Some(o) => {
                        self.count(&o);
                        self.view.observe(o)
                    }
                    None => return,
                },
                r = records.recv() => match r {
                    Ok(r) => {
                        self.observe_histogram(&r);
                        self.view.on_record(&r)
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(canary = %self.cfg.name, missed = n, "the canary fell behind the event stream; it may miss a decision until the next one");
                        Vec::new()
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            for e in out {
                if self.events.send(e).is_err() {
                    return;
                }
            }
            self.views.set(&self.cfg.service, &self.cfg.name, self.wire());
        }
    }

    fn count(&self, o: &Observation) {
        let target = match o.addr {
            None => "none".to_string(),
            Some(a) => self.view.target_of(a).unwrap_or_else(|| "other".into()),
        };
        let labels = CanaryLabels {
            service: self.cfg.service.clone(),
            canary: self.cfg.name.clone(),
            resolver: o.resolver.clone(),
            target,
            result: if o.ok { "ok" } else { "failed" }.into(),
        };
        self.metrics.canary_answers.get_or_create(&labels).inc();
    }

    fn observe_histogram(&self, r: &Record) {
        if let Event::ClientRto { service, canary, rto_us: Some(us), .. } = &r.event
            && *service == self.cfg.service
            && *canary == self.cfg.name
        {
            self.metrics.client_rto.get_or_create(&ServiceLabels { service: service.clone() }).observe(*us as f64 / 1e6);
        }
    }

    fn wire(&self) -> Vec<super::CanaryView> {
        self.view
            .status()
            .into_iter()
            .map(|l| super::CanaryView {
                canary: self.cfg.name.clone(),
                name: self.cfg.name.clone(),
                resolver: l.resolver,
                address: l.last.as_ref().and_then(|o| o.addr),
                target: l.target,
                ok: l.last.as_ref().is_some_and(|o| o.ok),
                detail: l.last.as_ref().map(|o| o.detail.clone()).unwrap_or_default(),
                at: l.last.as_ref().map(|o| format_time_us(o.at_us)),
                agrees: l.agrees,
                stale: l.stale,
            })
            .collect()
    }
}
