//! Prometheus metrics, in the text exposition format served at `GET /metrics`.
//!
//! The core updates these as events happen; nothing here decides anything. Label sets are kept
//! small on purpose: the check-duration histogram is per service, not per target, so a daemon
//! with 10,000 targets does not emit hundreds of thousands of bucket lines per scrape.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::decision::Reason;
use crate::events::{Event, Step};
use crate::health::Health;
use crate::probe::lag::LagHistogram;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub service: String,
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub service: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub service: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActuatorLabels {
    pub service: String,
    pub actuator: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    pub channel: String,
}

/// `result`: delivered, failed (retried), rejected, superseded, resent, resend_failed,
/// test_ok, test_failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelResultLabels {
    pub channel: String,
    pub result: String,
}

/// One answer of a client canary: `target` is the target whose address it named (`none` when the
/// name did not resolve, `other` for an address no target has); `result` is ok or failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CanaryLabels {
    pub service: String,
    pub canary: String,
    pub resolver: String,
    pub target: String,
    pub result: String,
}

/// `reason`: host (not one of the API's names), origin (cross-site), content_type, token.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VipStateLabels {
    pub vip: String,
    pub state: String,
}

/// `direction`: sent, received.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VipDirLabels {
    pub vip: String,
    pub direction: String,
}

/// `reason`: why a VRRP packet was dropped (ttl, checksum, short, version, type, length...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VipReasonLabels {
    pub vip: String,
    pub reason: String,
}

/// The VRRP speakers' metrics (`vrrp/`). Kinds are started without a handle on [`Metrics`],
/// so these live once per process and every [`Metrics`] registry exposes them.
#[derive(Debug, Default)]
pub struct VipMetrics {
    /// 1 for the instance's current state, 0 for the others.
    pub state: Family<VipStateLabels, Gauge>,
    /// Transitions into each state.
    pub transitions: Family<VipStateLabels, Counter>,
    pub adverts: Family<VipDirLabels, Counter>,
    pub dropped: Family<VipReasonLabels, Counter>,
}

pub static VIP: std::sync::LazyLock<VipMetrics> = std::sync::LazyLock::new(VipMetrics::default);

/// The schedule-lag histogram as a Prometheus histogram, read at scrape time from the
/// lock-free [`LagHistogram`] the probes record into.
#[derive(Debug)]
struct LagMetric(Arc<LagHistogram>);

impl prometheus_client::encoding::EncodeMetric for LagMetric {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error> {
        let (buckets, count) = self.0.prometheus_buckets();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(self.0.sum().as_secs_f64(), count, &buckets, None)
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

impl prometheus_client::metrics::TypedMetric for LagMetric {
    const TYPE: prometheus_client::metrics::MetricType = prometheus_client::metrics::MetricType::Histogram;
}

pub struct Metrics {
    registry: Registry,
    pub target_up: Family<TargetLabels, Gauge>,
    pub target_enabled: Family<TargetLabels, Gauge>,
    /// Replication lag of replicas whose check measures it (database standbys), from the last
    /// check; a target whose last check measured none (a primary, a failed connection) has no
    /// sample.
    pub replication_lag_bytes: Family<TargetLabels, Gauge>,
    pub replication_lag_seconds: Family<TargetLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub active_target: Family<TargetLabels, Gauge>,
    pub epoch: Family<ServiceLabels, Gauge>,
    pub all_down: Family<ServiceLabels, Gauge>,
    pub check_duration: Family<ServiceLabels, Histogram>,
    pub checks: Family<ResultLabels, Counter>,
    /// Checks the monitor could not make (probe::checker): no health input.
    pub checker_errors: Family<TargetLabels, Counter>,
    pub failovers: Family<ServiceLabels, Counter>,
    /// Times a service's failover records started being answered with their suspicion TTL.
    pub dns_suspect: Family<ServiceLabels, Counter>,
    pub decisions: Family<ReasonLabels, Counter>,
    pub actuations: Family<ActuatorLabels, Counter>,
    pub event_log_errors: Counter,
    pub event_log_behind: Gauge,
    pub open_incidents: Family<ServiceLabels, Gauge>,
    pub notifications: Family<ChannelResultLabels, Counter>,
    pub notifications_pending: Family<ChannelLabels, Gauge>,
    pub lag: Arc<LagHistogram>,
    pub api_refused: Family<RefusedLabels, Counter>,
    pub api_connections_refused: Counter,
    /// Time the core loop spends on one check result, fed by [`Metrics::core_result`].
    pub core_result: Histogram,
    /// Check results waiting for the core when it took the last one ([`Metrics::core_queue`]).
    pub core_queue: Gauge,
    /// 1 while this node leads its cluster (`[cluster]`), else 0.
    pub cluster_leading: Gauge,
    /// 1 while this node reaches etcd and its lease is alive, else 0.
    pub cluster_connected: Gauge,
    /// Client canary answers, per target they named.
    pub canary_answers: Family<CanaryLabels, Counter>,
    /// Client-observed RTO per incident and resolver (the canary's `client_rto` events).
    pub client_rto: Family<ServiceLabels, Histogram>,
}

/// 1 us .. ~16 ms: one result costs the core microseconds; a millisecond is already trouble at
/// 10,000 results a second.
fn core_result_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.000_001, 2.0, 15))
}

fn client_rto_histogram() -> Histogram {
    // 100 ms .. ~7 min.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.1, 2.0, 13))
}

fn check_duration_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    pub fn new(lag: Arc<LagHistogram>) -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            target_up: Family::default(),
            target_enabled: Family::default(),
            replication_lag_bytes: Family::default(),
            replication_lag_seconds: Family::default(),
            active_target: Family::default(),
            epoch: Family::default(),
            all_down: Family::default(),
            check_duration: Family::new_with_constructor(check_duration_histogram),
            checks: Family::default(),
            checker_errors: Family::default(),
            failovers: Family::default(),
            dns_suspect: Family::default(),
            decisions: Family::default(),
            actuations: Family::default(),
            event_log_errors: Counter::default(),
            event_log_behind: Gauge::default(),
            open_incidents: Family::default(),
            notifications: Family::default(),
            notifications_pending: Family::default(),
            lag,
            api_refused: Family::default(),
            api_connections_refused: Counter::default(),
            core_result: core_result_histogram(),
            core_queue: Gauge::default(),
            cluster_leading: Gauge::default(),
            cluster_connected: Gauge::default(),
            canary_answers: Family::default(),
            client_rto: Family::new_with_constructor(client_rto_histogram),
            registry: Registry::default(),
        };
        registry.register("understudy_target_up", "1 when the target's checks say it is up", m.target_up.clone());
        registry.register("understudy_target_enabled", "0 when an operator drained the target", m.target_enabled.clone());
        registry.register("understudy_replication_lag_bytes", "Bytes of WAL a standby has not replayed yet (received or still on the primary), from its last check (database checks)", m.replication_lag_bytes.clone());
        registry.register("understudy_replication_lag_seconds", "Seconds a standby's replay is behind, from its last check (database checks)", m.replication_lag_seconds.clone());
        registry.register("understudy_service_active_target", "1 for the target that has the traffic", m.active_target.clone());
        registry.register("understudy_service_epoch", "Epoch of the service's last decision", m.epoch.clone());
        registry.register("understudy_service_all_down", "1 when no target of the service is eligible", m.all_down.clone());
        registry.register("understudy_check_duration_seconds", "Duration of health checks", m.check_duration.clone());
        registry.register("understudy_checks", "Health checks run, by result", m.checks.clone());
        registry.register(
            "understudy_checker_errors",
            "Checks the monitor could not make for its own reasons (out of file descriptors, no route from the monitor...); they do not count against the target",
            m.checker_errors.clone(),
        );
        registry.register("understudy_failovers", "Failovers (traffic moved because a target failed)", m.failovers.clone());
        registry.register(
            "understudy_dns_suspect",
            "Times a service's failover records were answered with suspect_ttl because the served target showed trouble",
            m.dns_suspect.clone(),
        );
        registry.register("understudy_decisions", "Decisions, by reason", m.decisions.clone());
        registry.register("understudy_actuations", "Actuator steps, by result", m.actuations.clone());
        registry.register("understudy_event_log_errors", "Failed attempts to write the durable event log (each is retried)", m.event_log_errors.clone());
        registry.register("understudy_event_log_behind", "Events recorded but not yet on disk (the disk is slow, stuck or failing)", m.event_log_behind.clone());
        registry.register("understudy_open_incidents", "Open incidents", m.open_incidents.clone());
        registry.register("understudy_notifications", "Notification delivery attempts and outcomes, by channel", m.notifications.clone());
        registry.register("understudy_notifications_pending", "Notifications waiting in the outbox, by channel", m.notifications_pending.clone());
        registry.register("understudy_probe_schedule_lag_seconds", "Check start lateness vs schedule, since start", LagMetric(m.lag.clone()));
        registry.register("understudy_api_requests_refused", "API requests refused before a handler ran, by reason", m.api_refused.clone());
        registry.register(
            "understudy_api_connections_refused",
            "API connections closed at once because the connection cap was reached",
            m.api_connections_refused.clone(),
        );
        registry.register(
            "understudy_core_result_seconds",
            "Time the core loop spends handling one check result (health, decision, events, metrics)",
            m.core_result.clone(),
        );
        registry.register("understudy_cluster_leading", "1 while this node leads its cluster (it decides and runs the actuators that act outside)", m.cluster_leading.clone());
        registry.register("understudy_cluster_connected", "1 while this node reaches etcd and its lease is alive (0: it decides nothing and serves the last committed decisions)", m.cluster_connected.clone());
        registry.register("understudy_core_queue", "Check results waiting for the core loop (a number that keeps growing: the core does not keep up)", m.core_queue.clone());
        crate::lb::METRICS.register(&mut registry);
        registry.register("understudy_vip_state", "1 for the VRRP state each virtual IP instance is in", VIP.state.clone());
        registry.register("understudy_vip_transitions", "VRRP state transitions, by the state entered", VIP.transitions.clone());
        registry.register("understudy_vip_adverts", "VRRP advertisements sent and received (for this instance's VRID)", VIP.adverts.clone());
        registry.register("understudy_vip_dropped", "Malformed VRRP packets dropped, by reason", VIP.dropped.clone());
        registry.register("understudy_canary_answers", "Client canary answers, by the target their address belongs to and result", m.canary_answers.clone());
        registry.register(
            "understudy_client_rto_seconds",
            "Client-observed RTO of incidents (client canary: first failed request to first good answer from the new target), one per resolver",
            m.client_rto.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The core loop handled one check result in `spent`, with `waiting` more results queued
    /// behind it. Call it once per result, around the handling:
    /// `let t = Instant::now(); self.on_check(r); metrics.core_result(t.elapsed(), probe_rx.len())`.
    pub fn core_result(&self, spent: std::time::Duration, waiting: usize) {
        self.core_result.observe(spent.as_secs_f64());
        self.core_queue.set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// This node's role in its cluster changed.
    pub fn cluster_role(&self, leading: bool, connected: bool) {
        self.cluster_leading.set(leading as i64);
        self.cluster_connected.set(connected as i64);
    }

    /// The replication lag a check result measured (call it for every result): a target whose
    /// last check measured none (a primary, a failed connection) has no sample.
    pub fn replication_lag(&self, service: &str, target: &str, lag: Option<crate::probe::Lag>) {
        let l = TargetLabels { service: service.to_string(), target: target.to_string() };
        match lag {
            Some(lag) => {
                self.replication_lag_bytes.get_or_create(&l).set(i64::try_from(lag.bytes).unwrap_or(i64::MAX));
                match lag.seconds {
                    Some(s) => {
                        self.replication_lag_seconds.get_or_create(&l).set(s);
                    }
                    None => {
                        self.replication_lag_seconds.remove(&l);
                    }
                }
            }
            None => {
                self.replication_lag_bytes.remove(&l);
                self.replication_lag_seconds.remove(&l);
            }
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Count what an event says happened: decisions (and failovers), actuator steps, drift
    /// repairs. Called for every recorded event.
    pub fn observe(&self, event: &Event) {
        match event {
            Event::Decision { service, reason, .. } => {
                self.decisions.get_or_create(&ReasonLabels { service: service.clone(), reason: reason.to_string() }).inc();
                if *reason == Reason::Failover {
                    self.failovers.get_or_create(&ServiceLabels { service: service.clone() }).inc();
                }
            }
            Event::Actuated { service, actuator, step, ok, .. } => {
                let step = match step {
                    Step::Applied => "applied",
                    Step::Verified => "verified",
                };
                let result = format!("{step}_{}", if *ok { "ok" } else { "failed" });
                self.actuations.get_or_create(&ActuatorLabels { service: service.clone(), actuator: actuator.clone(), result }).inc();
            }
            Event::DriftRepaired { service, actuator, ok, .. } => {
                let result = if *ok { "drift_repaired" } else { "drift_unrepaired" };
                self.actuations.get_or_create(&ActuatorLabels { service: service.clone(), actuator: actuator.clone(), result: result.into() }).inc();
            }
            _ => {}
        }
    }

    /// The gauges that follow a service's state: each target's health, drain and activity, the
    /// epoch and the all-down flag.
    pub fn publish_service(&self, st: &crate::service::Status) {
        for t in &st.targets {
            let l = TargetLabels { service: st.name.clone(), target: t.cfg.name.clone() };
            self.target_up.get_or_create(&l).set((t.health == Health::Up) as i64);
            self.target_enabled.get_or_create(&l).set(t.enabled as i64);
            self.active_target.get_or_create(&l).set(t.active as i64);
        }
        let l = ServiceLabels { service: st.name.clone() };
        let _ = self.failovers.get_or_create(&l);
        let _ = self.check_duration.get_or_create(&l);
        self.epoch.get_or_create(&l).set(st.epoch as i64);
        self.all_down.get_or_create(&l).set(st.all_down as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_loop_time_and_queue_are_exposed() {
        let m = Metrics::new(Arc::new(LagHistogram::new()));
        m.core_result(std::time::Duration::from_micros(3), 0);
        m.core_result(std::time::Duration::from_micros(5), 7);
        let text = m.encode();
        assert!(text.contains("understudy_core_result_seconds_count 2"), "{text}");
        assert!(text.contains("understudy_core_result_seconds_sum 0.000008"), "{text}");
        assert!(text.contains("understudy_core_queue 7"), "{text}");
    }

    #[test]
    fn replication_lag_follows_the_last_check() {
        let m = Metrics::new(Arc::new(LagHistogram::new()));
        m.replication_lag("db", "pg2", Some(crate::probe::Lag { bytes: 4000, seconds: Some(42.5) }));
        let text = m.encode();
        assert!(text.contains("understudy_replication_lag_bytes{service=\"db\",target=\"pg2\"} 4000"), "{text}");
        assert!(text.contains("understudy_replication_lag_seconds{service=\"db\",target=\"pg2\"} 42.5"), "{text}");
        // Promoted (or unreachable): no lag sample rather than a stale one.
        m.replication_lag("db", "pg2", None);
        assert!(!m.encode().contains("target=\"pg2\""));
    }
}
