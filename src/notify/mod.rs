//! Notifications: telling people what happened, at least once, through the tools they use.
//!
//! # Layout
//! - [`notice`]: the [`Notice`](notice::Notice) (what a notification says, built once).
//! - [`plan`]: which events become notices (a pure fold over the event log).
//! - [`outbox`]: the durable outbox in the data directory; grouping of updates.
//! - [`dispatch`]: the dispatcher task (events → planner → outbox) and one delivery task per
//!   channel (outbox → [`Notifier`], retries with backoff and jitter, rate limit), status.
//! - One [`Notifier`] per file: [`alertmanager`], [`pagerduty`], [`slack`], [`webhook`]
//!   (with [`template`]), [`email`].
//!
//! # Invariants
//! - Nothing is sent before its outbox entry is on disk, and an outbox entry is planned only
//!   from an event that is already in the event log.
//! - The core never waits on this module: it hands each recorded event to an unbounded channel.
//! - A notifier does no retrying and keeps no state about deliveries; `dispatch` owns that.
//! - Every notice has an idempotency key that does not change across retries and restarts.

pub mod alertmanager;
pub mod config;
pub mod dispatch;
pub mod email;
pub mod notice;
pub mod outbox;
pub mod pagerduty;
pub mod plan;
pub mod slack;
pub mod status;
pub mod template;
pub mod webhook;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::notify::config::{NotifyConfig, NotifyKind};

pub use dispatch::{Base, NotifyHandle, start, start_from};
pub use notice::Notice;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the receiver answered (`HTTP 202 Accepted: {...}`, `250 2.0.0 Ok: queued`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub answer: String,
}

/// A failed delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth trying again: the receiver is unreachable, slow, overloaded or failing.
    #[error("{0}")]
    Retry(String),
    /// The receiver refused this notice for good (bad request, bad key); retrying the same
    /// bytes cannot help.
    #[error("rejected: {0}")]
    Rejected(String),
}

impl DeliveryError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, DeliveryError::Retry(_))
    }
}

/// One way of delivering a notice. Implementations send and report; they never retry.
pub trait Notifier: Send + Sync {
    fn deliver<'a>(&'a self, n: &'a Notice) -> BoxFuture<'a, Result<Receipt, DeliveryError>>;

    /// For receivers that forget what is not repeated (Alertmanager): how often to re-send
    /// every open condition.
    fn resend_every(&self) -> Option<Duration> {
        None
    }

    /// Re-send the open conditions (only called when `resend_every` is set).
    fn resend<'a>(&'a self, _firing: &'a [Notice]) -> BoxFuture<'a, Result<Receipt, DeliveryError>> {
        Box::pin(async { Ok(Receipt { answer: String::new() }) })
    }
}

/// Build the notifier for a channel.
pub fn build(cfg: &NotifyConfig) -> Result<Arc<dyn Notifier>, String> {
    Ok(match &cfg.kind {
        NotifyKind::Alertmanager { url, resend, labels } => Arc::new(alertmanager::Alertmanager::new(url, *resend, labels.clone(), cfg.timeout)?),
        NotifyKind::Pagerduty { url, routing_key } => Arc::new(pagerduty::PagerDuty::new(url, routing_key.clone(), cfg.timeout)?),
        NotifyKind::Slack { url } => Arc::new(slack::Slack::new(url.clone(), cfg.timeout)?),
        NotifyKind::Webhook { url, secret, template, content_type, headers } => Arc::new(webhook::Webhook::new(
            url.clone(),
            secret.clone(),
            template.clone(),
            content_type.clone(),
            headers.clone(),
            cfg.timeout,
        )?),
        NotifyKind::Email(e) => Arc::new(email::Email::new(e, cfg.timeout)?),
    })
}

/// An HTTP client for notifiers: no proxy from the environment, no redirects, a timeout.
pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    crate::crypto::install_provider();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .user_agent(concat!("understudy/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// Send a request and classify the answer: 2xx is delivered; 408, 429 and 5xx (and any
/// network error) are worth retrying; any other status is a rejection.
pub(crate) async fn send_http(req: reqwest::RequestBuilder) -> Result<Receipt, DeliveryError> {
    // Without the URL: webhook URLs are secrets, and this text ends up in logs and the API.
    let resp = req.send().await.map_err(|e| DeliveryError::Retry(error_chain(&e.without_url())))?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.trim().chars().take(500).collect();
    let answer = if body.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {body}") };
    if status.is_success() {
        Ok(Receipt { answer })
    } else if status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error() {
        Err(DeliveryError::Retry(answer))
    } else {
        Err(DeliveryError::Rejected(answer))
    }
}

/// `error: cause: cause` for errors whose `Display` hides the cause (reqwest's does).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// This machine's host name (for PagerDuty's `source` and e-mail Message-IDs).
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "localhost".into())
}
