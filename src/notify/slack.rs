//! Slack-compatible incoming webhooks (Slack, Mattermost, Rocket.Chat...): `POST {"text": ...}`
//! with a short, readable message in Slack's `mrkdwn`.

use std::time::Duration;

use serde_json::{Value, json};

use super::notice::{Notice, Severity, Status, human_ms};
use super::{BoxFuture, DeliveryError, Notifier, Receipt, http_client, send_http};
use crate::notify::config::Secret;

pub struct Slack {
    client: reqwest::Client,
    url: Secret,
}

/// Slack wants `&`, `<` and `>` escaped in message text.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

impl Slack {
    pub fn new(url: Secret, timeout: Duration) -> Result<Self, String> {
        Ok(Slack { client: http_client(timeout)?, url })
    }

    pub fn body(n: &Notice) -> Value {
        let icon = match (n.status, n.severity) {
            (Status::Resolved, _) => ":white_check_mark:",
            (_, Severity::Critical) => ":rotating_light:",
            (_, Severity::Warning) => ":warning:",
            (_, Severity::Info) => ":information_source:",
        };
        let mut text = format!("{icon} *{}*\n", esc(&n.title()));
        if let Some(i) = &n.incident {
            text.push_str(&format!(
                "• failed: *{}* → traffic on *{}*\n• detection {} · switch {} · RTO {}\n",
                esc(i.failed.as_deref().unwrap_or("-")),
                esc(i.to.as_deref().unwrap_or("(none)")),
                human_ms(i.detection_ms),
                human_ms(i.switch_ms),
                human_ms(i.rto_ms)
            ));
            if let Some(last) = i.timeline.last() {
                text.push_str(&format!("• latest: {} {}\n", last.time.get(11..23).unwrap_or(&last.time), esc(&last.what)));
            }
        } else {
            for d in n.details.iter().take(5) {
                text.push_str(&format!("• {}\n", esc(d)));
            }
        }
        text.push_str(&format!("_{} · {}_", n.event.as_str(), esc(&n.key)));
        json!({ "text": text })
    }
}

impl Notifier for Slack {
    fn deliver<'a>(&'a self, n: &'a Notice) -> BoxFuture<'a, Result<Receipt, DeliveryError>> {
        Box::pin(async move {
            let req = self.client.post(self.url.expose()).header("X-Understudy-Key", &n.key).json(&Self::body(n));
            send_http(req).await
        })
    }
}
