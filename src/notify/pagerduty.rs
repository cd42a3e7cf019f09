//! PagerDuty Events API v2 (`POST https://events.pagerduty.com/v2/enqueue` by default; the URL
//! is configurable so a proxy or a test receiver can stand in).
//!
//! A condition opening or changing is a `trigger`, closing is a `resolve`, both with
//! `dedup_key` = the condition key (`understudy-www-incident-3`), so PagerDuty folds every
//! message about one incident into one alert, and a retried trigger is a no-op there.

use std::time::Duration;

use serde_json::{Value, json};

use super::notice::{Notice, Severity, Status};
use super::{BoxFuture, DeliveryError, Notifier, Receipt, hostname, http_client, send_http};
use crate::notify::config::Secret;
use crate::events::format_time_us;

pub struct PagerDuty {
    client: reqwest::Client,
    url: String,
    routing_key: Secret,
    source: String,
}

impl PagerDuty {
    pub fn new(url: &str, routing_key: Secret, timeout: Duration) -> Result<Self, String> {
        Ok(PagerDuty { client: http_client(timeout)?, url: url.to_string(), routing_key, source: format!("understudy@{}", hostname()) })
    }

    pub fn body(&self, n: &Notice) -> Value {
        let key = self.routing_key.expose();
        if n.status == Status::Resolved {
            return json!({ "routing_key": key, "event_action": "resolve", "dedup_key": n.condition });
        }
        let severity = match n.severity {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        let summary: String = n.title().chars().take(1024).collect();
        let mut details = json!({
            "event": n.event.as_str(),
            "details": n.details,
            "idempotency_key": n.key,
        });
        if let Some(i) = &n.incident {
            details["incident"] = serde_json::to_value(i).unwrap_or(Value::Null);
        }
        json!({
            "routing_key": key,
            "event_action": "trigger",
            "dedup_key": n.condition,
            "client": "understudy",
            "payload": {
                "summary": summary,
                "source": self.source,
                "severity": severity,
                "timestamp": format_time_us(n.time_us),
                "component": n.service,
                "group": n.target,
                "class": n.event.as_str(),
                "custom_details": details,
            },
        })
    }
}

impl Notifier for PagerDuty {
    fn deliver<'a>(&'a self, n: &'a Notice) -> BoxFuture<'a, Result<Receipt, DeliveryError>> {
        Box::pin(async move { send_http(self.client.post(&self.url).json(&self.body(n))).await })
    }
}
