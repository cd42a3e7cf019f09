//! The load-balancer level: steer the HAProxy or nginx a team runs, or forward TCP ourselves.
//!
//! Three actuator kinds, one file each, all started from config by the actuator registry
//! (`actuator::registry::KINDS`):
//! - `haproxy.rs`: `[[haproxy]]`, HAProxy's runtime API (`set server ... state`), verified
//!   with `show servers state`;
//! - `nginx.rs`: `[[nginx]]`, an upstream file written atomically, `nginx -t`, reload; the old
//!   file comes back when the test fails;
//! - `proxy.rs`: `[[proxy]]`, the built-in TCP forwarder; its listeners live in the kind and
//!   each decision swaps the route in one store; a connection the active target refuses or
//!   resets before answering is retried on the next target at once.
//!
//! `config.rs` reads the three sections. Like every actuator, these decide nothing and write no
//! events: they return outcomes, and the runner turns them into events. The proxy's counters
//! live here ([`METRICS`]) and are registered into every `metrics::Metrics`.

pub mod config;
pub mod haproxy;
pub mod nginx;
pub mod proxy;

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::ServiceLabels;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub service: String,
    /// `to_target` (what clients sent) or `to_client` (what targets answered).
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub service: String,
    /// `connect` (refused or timed out), `reset` (closed or reset before answering),
    /// `no_target` (nothing to forward to), `exhausted` (every target failed), `cut` (closed by
    /// a switch with `on_switch = "close"` or after `drain_timeout`), `io` (an error mid-stream).
    pub kind: String,
}

/// The built-in proxy's counters, shared by every proxy in the process.
pub struct LbMetrics {
    pub connections: Family<ServiceLabels, Counter>,
    pub open: Family<ServiceLabels, Gauge>,
    pub bytes: Family<DirectionLabels, Counter>,
    pub retries: Family<ServiceLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
}

pub static METRICS: LazyLock<LbMetrics> = LazyLock::new(|| LbMetrics {
    connections: Family::default(),
    open: Family::default(),
    bytes: Family::default(),
    retries: Family::default(),
    errors: Family::default(),
});

impl LbMetrics {
    /// Register the proxy's metrics into a Prometheus registry (`metrics::Metrics::new`).
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register("understudy_proxy_connections", "Client connections the built-in proxy accepted", self.connections.clone());
        registry.register("understudy_proxy_open_connections", "Client connections the built-in proxy holds open now", self.open.clone());
        registry.register("understudy_proxy_bytes", "Bytes the built-in proxy forwarded, by direction", self.bytes.clone());
        registry.register(
            "understudy_proxy_retries",
            "Connections retried on the next target because one refused, timed out or reset before answering (passive failures)",
            self.retries.clone(),
        );
        registry.register("understudy_proxy_errors", "Failures in the built-in proxy, by kind", self.errors.clone());
    }

    pub fn error(&self, service: &str, kind: &str) -> Counter {
        self.errors.get_or_create(&ErrorLabels { service: service.into(), kind: kind.into() }).clone()
    }
}
