//! The JSON views of the daemon's state: [`crate::daemon::ServiceView`] (a service machine's
//! status plus what the runtime adds) rendered as [`wire::Service`]. The daemon builds no wire
//! types; the API renders what it is given.

use super::wire;
use crate::config::CheckKind;
use crate::daemon::ServiceView;
use crate::events::format_time_us;

pub fn service(v: &ServiceView) -> wire::Service {
    let (st, cfg) = (&v.status, &v.config);
    let check = &cfg.check;
    let port = |check_port: Option<u16>| match &check.kind {
        CheckKind::Http(h) => Some(check_port.unwrap_or(h.port)),
        CheckKind::Tcp(c) => Some(check_port.unwrap_or(c.port)),
        CheckKind::Exec(_) => None,
    };
    wire::Service {
        name: st.name.clone(),
        active: st.active.clone(),
        active_address: st.active_address,
        active_since: st.active_since_us.map(format_time_us),
        epoch: st.epoch,
        decided: st.decided,
        all_down: st.all_down,
        pinned: st.pinned.clone(),
        failback: cfg.failback,
        failback_hold_ms: cfg.failback_hold.as_millis() as u64,
        all_down_policy: cfg.all_down,
        check: wire::CheckSummary {
            // A PostgreSQL check connects like a TCP check and then speaks the protocol.
            kind: if check.postgres.is_some() { "postgres".into() } else if let Some(r) = &check.replica { r.engine.name().into() } else { check.kind.name().into() },
            port: port(None),
            path: match &check.kind {
                CheckKind::Http(h) => Some(h.path.clone()),
                _ => None,
            },
            host: match &check.kind {
                CheckKind::Http(h) => h.host.clone(),
                _ => None,
            },
            interval_ms: check.interval.as_millis() as u64,
            timeout_ms: check.timeout.as_millis() as u64,
            fall: check.fall,
            rise: check.rise,
            fast_interval_ms: Some(check.fast_interval.as_millis() as u64),
            down_interval_ms: Some(check.down_interval.as_millis() as u64),
        },
        targets: st
            .targets
            .iter()
            .map(|t| wire::Target {
                name: t.cfg.name.clone(),
                address: t.cfg.address,
                check: v.checks.get(&t.cfg.name).cloned().unwrap_or_default(),
                check_address: t.cfg.check_ip(),
                check_port: port(t.cfg.check_port),
                healthy: t.health == crate::health::Health::Up,
                health: t.health,
                health_since: t.health_since_us.map(format_time_us),
                enabled: t.enabled,
                forced_down_until: t.forced_down_until_us.map(|u| if u == u64::MAX { "never".into() } else { format_time_us(u) }),
                eligible: t.eligible,
                active: t.active,
                streak: t.streak,
                check_interval_ms: Some(check.interval_for(t.cadence).as_millis() as u64),
                cadence: Some(t.cadence),
                last_check: t.last.as_ref().map(|r| wire::LastCheck {
                    checker_error: r.checker_error,
                    ok: r.ok,
                    reason: r.reason.to_string(),
                    latency_ms: r.latency.as_secs_f64() * 1000.0,
                    at: format_time_us(r.started_us),
                    lag: r.lag.map(|l| wire::ReplicationLag { bytes: l.bytes, seconds: l.seconds }),
                }),
                drift: crate::probe::compare::drifted(&st.name, &t.cfg.name)
                    .into_iter()
                    .map(|d| wire::Drift { check: d.check, primary: d.primary, expected: d.expected, found: d.found, gate: d.gate })
                    .collect(),
            })
            .collect(),
        open_incident: v.open_incident,
        canary: v.canary.clone(),
        dns: v
            .dns
            .iter()
            .map(|r| wire::DnsRecord {
                name: r.name.clone(),
                zone: r.zone.clone(),
                addresses: r.addresses.clone(),
                types: r.types.clone(),
                ttl: r.ttl,
                suspect: r.suspect,
                epoch: r.epoch,
                since: format_time_us(r.since_us),
                serial: r.serial,
            })
            .collect(),
    }
}

/// A cluster's status as JSON: `views` is node -> "service/target" -> health.
pub fn cluster(s: &crate::coordinator::ClusterStatus) -> serde_json::Value {
    use crate::coordinator::quorum::health_text;
    let per_target = |m: &std::collections::BTreeMap<(String, String), crate::health::Health>| -> serde_json::Map<String, serde_json::Value> {
        m.iter().map(|((svc, t), h)| (format!("{svc}/{t}"), serde_json::Value::from(health_text(*h)))).collect()
    };
    serde_json::json!({
        "kind": s.kind,
        "node": s.node,
        "leader": s.role.leader,
        "leading": s.role.leading,
        "connected": s.role.connected,
        "why": s.role.why,
        "views": s.views.iter().map(|(n, v)| (n.clone(), serde_json::Value::Object(per_target(v)))).collect::<serde_json::Map<_, _>>(),
        "verdicts": per_target(&s.verdicts),
        "epochs": s.epochs,
    })
}
