//! Generic webhooks: by default a JSON body with every field of the notice (including the
//! incident and the event that caused it), or a user-defined body from a
//! [`Template`](super::template::Template).
//!
//! Headers: `X-Understudy-Key` and `Idempotency-Key` (the notice's idempotency key, the same on
//! every retry), `X-Understudy-Event`, and, when a secret is set,
//! `X-Understudy-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::notice::Notice;
use super::template::Template;
use super::{BoxFuture, DeliveryError, Notifier, Receipt, http_client, send_http};
use crate::notify::config::Secret;
use crate::events::format_time_us;

pub struct Webhook {
    client: reqwest::Client,
    url: Secret,
    secret: Option<Secret>,
    template: Option<Template>,
    content_type: String,
    headers: Vec<(String, String)>,
}

/// `sha256=<hex>` of HMAC-SHA256(`secret`, `body`).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The default body: the notice with readable times and a format version.
pub fn default_body(n: &Notice) -> Value {
    let mut v = serde_json::to_value(n).expect("notices serialize");
    if let Value::Object(m) = &mut v {
        m.insert("version".into(), 1.into());
        m.insert("source".into(), "understudy".into());
        m.insert("time".into(), format_time_us(n.time_us).into());
        m.insert("started".into(), format_time_us(n.started_us).into());
        m.insert("ended".into(), n.ended_us.map(format_time_us).into());
    }
    v
}

impl Webhook {
    pub fn new(
        url: Secret,
        secret: Option<Secret>,
        template: Option<Template>,
        content_type: String,
        headers: Vec<(String, String)>,
        timeout: Duration,
    ) -> Result<Self, String> {
        Ok(Webhook { client: http_client(timeout)?, url, secret, template, content_type, headers })
    }

    pub fn body(&self, n: &Notice) -> String {
        let default = default_body(n);
        match &self.template {
            Some(t) => t.render(n, &default),
            None => default.to_string(),
        }
    }
}

impl Notifier for Webhook {
    fn deliver<'a>(&'a self, n: &'a Notice) -> BoxFuture<'a, Result<Receipt, DeliveryError>> {
        Box::pin(async move {
            let body = self.body(n);
            let mut req = self
                .client
                .post(self.url.expose())
                .header(reqwest::header::CONTENT_TYPE, &self.content_type)
                .header("X-Understudy-Key", &n.key)
                .header("Idempotency-Key", &n.key)
                .header("X-Understudy-Event", n.event.as_str());
            if let Some(s) = &self.secret {
                req = req.header("X-Understudy-Signature", signature(s.expose().as_bytes(), body.as_bytes()));
            }
            for (h, v) in &self.headers {
                req = req.header(h, v);
            }
            send_http(req.body(body)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
