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
    /// Client canary answers, per target they named.
    pub canary_answers: Family<CanaryLabels, Counter>,
    /// Client-observed RTO per incident and resolver (the canary's `client_rto` events).
    pub client_rto: Family<ServiceLabels, Histogram>,
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
            canary_answers: Family::default(),
            client_rto: Family::new_with_constructor(client_rto_histogram),
            registry: Registry::default(),
        };
        registry.register("understudy_target_up", "1 when the target's checks say it is up", m.target_up.clone());
        registry.register("understudy_target_enabled", "0 when an operator drained the target", m.target_enabled.clone());
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
        registry.register("understudy_canary_answers", "Client canary answers, by the target their address belongs to and result", m.canary_answers.clone());
        registry.register(
            "understudy_client_rto_seconds",
            "Client-observed RTO of incidents (client canary: first failed request to first good answer from the new target), one per resolver",
            m.client_rto.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub fn api_refused(&self, r: &crate::api::guard::Rejection) {
        use crate::api::guard::Rejection;
        let reason = match r {
            Rejection::BadHost(_) => "host",
            Rejection::CrossOrigin(_) => "origin",
            Rejection::NotJson => "content_type",
        };
        self.api_refused.get_or_create(&RefusedLabels { reason: reason.into() }).inc();
    }

    pub fn set_target_up(&self, service: &str, target: &str, up: bool) {
        self.target_up.get_or_create(&TargetLabels { service: service.into(), target: target.into() }).set(up as i64);
    }
}
