//! Alertmanager, API v2: `POST /api/v2/alerts` with a JSON list of alerts.
//!
//! One alert per open condition (an incident, all targets down, a failing actuator, a refused
//! config). Its labels are `alertname`, `severity`, `condition` (the stable key), and
//! `service` / `target` when known, plus the channel's static `labels`; annotations carry the
//! summary, the facts and, for incidents, the detection / switch / RTO times. A firing alert
//! gets `endsAt` = now + 4 x `resend`, and every open condition is re-sent each `resend`
//! (Alertmanager resolves alerts that stop arriving, as it does for Prometheus). A closed
//! condition is sent with `endsAt` = the time it closed. When a notice raised the severity, the
//! alert with the old `severity` label is resolved in the same request.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::notice::{Notice, Severity, Status, human_ms};
use super::{BoxFuture, DeliveryError, Notifier, Receipt, http_client, send_http};
use crate::events::format_time_us;
use crate::clock::now_us;

pub struct Alertmanager {
    client: reqwest::Client,
    url: String,
    resend: Duration,
    labels: BTreeMap<String, String>,
}

impl Alertmanager {
    pub fn new(base: &str, resend: Duration, labels: BTreeMap<String, String>, timeout: Duration) -> Result<Self, String> {
        let base = base.trim_end_matches('/');
        // Accept the base URL (as in the docs) or the full endpoint.
        let url = if base.ends_with("/api/v2/alerts") { base.to_string() } else { format!("{base}/api/v2/alerts") };
        Ok(Alertmanager { client: http_client(timeout)?, url, resend, labels })
    }

    /// The alert for `n` with severity label `severity`, ending at `ends_us` (or firing).
    fn alert(&self, n: &Notice, severity: Severity, ends_us: u64) -> Value {
        let mut labels = Map::new();
        labels.insert("alertname".into(), n.alertname.clone().into());
        labels.insert("severity".into(), severity.as_str().into());
        labels.insert("condition".into(), n.condition.clone().into());
        if let Some(s) = &n.service {
            labels.insert("service".into(), s.clone().into());
        }
        if let Some(t) = &n.target {
            labels.insert("target".into(), t.clone().into());
        }
        for (k, v) in &self.labels {
            labels.insert(k.clone(), v.clone().into());
        }
        let mut ann = Map::new();
        ann.insert("summary".into(), n.summary.clone().into());
        ann.insert("description".into(), n.details.join("\n").into());
        ann.insert("event".into(), n.event.as_str().into());
        if let Some(i) = &n.incident {
            ann.insert("incident".into(), i.id.to_string().into());
            ann.insert("detection".into(), human_ms(i.detection_ms).into());
            ann.insert("switch".into(), human_ms(i.switch_ms).into());
            ann.insert("rto".into(), human_ms(i.rto_ms).into());
            ann.insert("opened".into(), i.opened.clone().into());
            if let Some(to) = &i.to {
                ann.insert("traffic_on".into(), to.clone().into());
            }
        }
        json!({
            "labels": labels,
            "annotations": ann,
            "startsAt": format_time_us(n.started_us),
            "endsAt": format_time_us(ends_us),
        })
    }

    fn alerts(&self, n: &Notice, now: u64) -> Vec<Value> {
        let firing_until = now + 4 * self.resend.as_micros() as u64;
        let mut out = Vec::new();
        match n.status {
            Status::Firing => out.push(self.alert(n, n.severity, firing_until)),
            Status::Resolved => out.push(self.alert(n, n.severity, n.ended_us.unwrap_or(now))),
        }
        if let Some(old) = n.escalated_from.filter(|s| *s != n.severity) {
            out.push(self.alert(n, old, n.ended_us.unwrap_or(now).min(now)));
        }
        out
    }
}

impl Notifier for Alertmanager {
    fn deliver<'a>(&'a self, n: &'a Notice) -> BoxFuture<'a, Result<Receipt, DeliveryError>> {
        Box::pin(async move {
            let body = Value::Array(self.alerts(n, now_us()));
            send_http(self.client.post(&self.url).json(&body)).await
        })
    }

    fn resend_every(&self) -> Option<Duration> {
        Some(self.resend)
    }

    fn resend<'a>(&'a self, firing: &'a [Notice]) -> BoxFuture<'a, Result<Receipt, DeliveryError>> {
        Box::pin(async move {
            let now = now_us();
            let body: Vec<Value> = firing.iter().filter(|n| n.status == Status::Firing).map(|n| self.alert(n, n.severity, now + 4 * self.resend.as_micros() as u64)).collect();
            if body.is_empty() {
                return Ok(Receipt { answer: "nothing firing".into() });
            }
            send_http(self.client.post(&self.url).json(&body)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::notice::Phase;

    #[test]
    fn escalated_close_resolves_both_severities() {
        let am = Alertmanager::new("http://127.0.0.1:9093/", Duration::from_secs(60), BTreeMap::new(), Duration::from_secs(1)).unwrap();
        assert_eq!(am.url, "http://127.0.0.1:9093/api/v2/alerts");
        let mut n = Notice::test(1_000_000);
        n.phase = Phase::Close;
        n.status = Status::Resolved;
        n.severity = Severity::Critical;
        n.escalated_from = Some(Severity::Warning);
        n.ended_us = Some(2_000_000);
        n.service = Some("www".into());
        let alerts = am.alerts(&n, 3_000_000);
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0]["labels"]["severity"], "critical");
        assert_eq!(alerts[1]["labels"]["severity"], "warning");
        for a in &alerts {
            assert_eq!(a["endsAt"], format_time_us(2_000_000));
            assert_eq!(a["labels"]["service"], "www");
            assert_eq!(a["labels"]["alertname"], "UnderstudyTest");
        }
    }
}
