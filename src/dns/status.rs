//! What each failover record serves now and since when, for the API and `understudy status`.
//!
//! Read-only: it copies from the server's state and table, never changes them.

use std::net::IpAddr;

use serde::Serialize;

use super::Dns;
use super::config::RecordKind;

/// One failover record as served now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordStatus {
    /// The zone apex, e.g. `example.test.`.
    pub zone: String,
    /// The record's absolute name, e.g. `www.example.test.`.
    pub name: String,
    pub service: String,
    /// The addresses answered (empty when failing closed: NODATA).
    pub addresses: Vec<IpAddr>,
    /// Record types answered (`A`, `AAAA`).
    pub types: Vec<String>,
    /// The TTL answered now: `suspect_ttl` while the served target is suspect, else the TTL.
    pub ttl: u32,
    /// Whether the served target shows signs of trouble (answered with `suspect_ttl`).
    pub suspect: bool,
    /// The decision epoch last applied; `None` before the daemon's first decision.
    pub epoch: Option<u64>,
    /// When these addresses started being served, wall time in microseconds since the Unix epoch.
    pub since_us: u64,
    /// The zone's SOA serial now.
    pub serial: u32,
}

/// Every failover record, in config order.
pub fn collect(dns: &Dns) -> Vec<RecordStatus> {
    let st = dns.inner.state.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::new();
    let suspect = st.suspect_services();
    for (i, z) in st.cfg.zones.iter().enumerate() {
        for r in &z.records {
            let RecordKind::Failover { service, .. } = &r.kind else { continue };
            let Some(s) = st.served.get(service) else { continue };
            let mut types = Vec::new();
            if s.addrs.iter().any(IpAddr::is_ipv4) {
                types.push("A".to_string());
            }
            if s.addrs.iter().any(IpAddr::is_ipv6) {
                types.push("AAAA".to_string());
            }
            out.push(RecordStatus {
                zone: z.apex.to_string(),
                name: r.name.to_string(),
                service: service.clone(),
                addresses: s.addrs.clone(),
                types,
                ttl: r.ttl_now(suspect.contains(service)),
                suspect: suspect.contains(service),
                epoch: s.epoch,
                since_us: s.since_us,
                serial: st.serials[i],
            });
        }
    }
    out
}
