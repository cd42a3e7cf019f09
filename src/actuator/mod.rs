//! Actuators: make the world match a decision, idempotently, and say whether it worked.
//!
//! Each actuator is handed the *desired state* of one service ([`Desired`]: "www -> 127.0.0.3,
//! epoch 7") and applies it. Repeating the same desired state is always safe; after a restart
//! the daemon hands every actuator the current state again (reason `reconcile`). Epochs fence
//! stale commands: [`runner`] never applies an epoch older than one it already applied.
//! Every actuator of a service runs in its own task, so a slow hook never delays the DNS
//! change; failed steps are retried with backoff ([`crate::retry`]) and actuators that can
//! verify are re-verified periodically (see [`runner`]).
//!
//! One implementation per file: `hooks.rs` (commands, like keepalived's notify scripts).
//! The DNS server (`dns/`) provides another. Every kind is built from config by
//! [`registry`], which the daemon asks for a service's actuators. Actuators do not decide
//! anything and do not write events themselves: they return [`Outcome`]s, and the runner turns
//! them into events.

pub mod hooks;
pub mod leader;
pub mod registry;
pub mod runner;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::decision::Reason;

/// A target as actuators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRef {
    pub name: String,
    pub address: IpAddr,
}

/// What one service should look like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub service: Arc<str>,
    pub epoch: u64,
    /// The target traffic should go to; `None` when failing closed (`all_down = "none"`).
    pub active: Option<TargetRef>,
    /// What was active before this decision, for hooks that want both ends.
    pub previous: Option<TargetRef>,
    pub reason: Reason,
    /// True when no target is eligible and the `all_down` policy chose `active`.
    pub all_down: bool,
    /// When the decision was made (recorded durably), so actuators can report how long after
    /// it their change took effect.
    pub decided_at: std::time::Instant,
}

/// The result of one step of one actuator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    /// What happened, for people: the hook's output, "serving 127.0.0.3 since serial 12"...
    pub detail: String,
    /// For a failure: whether trying again can help (a timeout, a refused connection) or not
    /// (a rejected key, a record that does not exist). A failure that cannot be retried is
    /// reported once and waits for the next decision or reload.
    pub retryable: bool,
}

impl Outcome {
    /// The step worked.
    pub fn ok(detail: impl Into<String>) -> Outcome {
        Outcome { ok: true, detail: detail.into(), retryable: false }
    }

    /// The step failed; trying again may work.
    pub fn failed(detail: impl Into<String>) -> Outcome {
        Outcome { ok: false, detail: detail.into(), retryable: true }
    }

    /// The step failed and trying again cannot help until something changes (config, key).
    pub fn fatal(detail: impl Into<String>) -> Outcome {
        Outcome { ok: false, detail: detail.into(), retryable: false }
    }
}

pub type ActFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// One way of moving traffic.
pub trait Actuator: Send + Sync + 'static {
    /// Stable name used in events and metrics (`hooks`, `dns`...).
    fn name(&self) -> &str;

    /// Make the world match `desired`. Must be idempotent.
    fn apply<'a>(&'a self, desired: &'a Desired) -> ActFuture<'a>;

    /// Whether this actuator acts on `desired` at all (hooks filter by reason).
    fn wants(&self, desired: &Desired) -> bool {
        let _ = desired;
        true
    }

    /// Whether a failed step is retried with backoff until it succeeds or a newer epoch
    /// supersedes it (hooks opt in with `retry = true`; applying a decision in-process is
    /// idempotent and cheap, so by default yes).
    fn retries(&self) -> bool {
        true
    }

    /// Check from the outside that `desired` is in effect (query the nameserver, connect
    /// through the proxy...). `None` when this actuator has no independent way to check.
    /// Actuators that can verify are also re-verified every `verify_every`, and re-applied when
    /// the check fails (drift).
    fn verify<'a>(&'a self, desired: &'a Desired) -> Option<ActFuture<'a>> {
        let _ = desired;
        None
    }

    /// In a cluster: whether this actuator runs on every node, because it serves from this
    /// node (its DNS server, its proxy), rather than only on the leader, because it changes
    /// something outside that one writer must own (hooks, a provider's records, a load
    /// balancer, a database). Outside actuators by default.
    fn on_every_node(&self) -> bool {
        false
    }
}

/// What a service serves now (its last recorded decision), as kinds that keep state of their
/// own (the DNS server, a proxy) need it when they start or reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    pub epoch: u64,
    /// `None`: the decision was to serve nothing (`all_down = "none"`).
    pub active: Option<IpAddr>,
}
