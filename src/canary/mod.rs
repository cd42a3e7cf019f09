//! The client canary (`[[canary]]`): an always-on client that sees the service the way users do.
//!
//! Every `interval` it resolves the service's public name through each configured resolver (the
//! system resolver by default) and, with a `url`, requests it at the address obtained, like a
//! drill's observing client but all the time. From what it sees and the daemon's decisions it
//! tells which target clients are on, raises `clients_stale` when they are still sent elsewhere
//! than the committed decision for longer than the record's TTL plus a margin (and resolves it
//! when they follow), and records each incident's client-observed figures (`client_rto`: last good
//! answer from the old target, first failed request, first good answer from the new one).
//!
//! Layout: `config.rs` (`[[canary]]`, raw and validated), `view.rs` (the pure fold, tested on a
//! simulated clock), `run.rs` (the I/O: samplers and the fold task; [`spawn`] is the daemon's
//! entry point). The canary never changes a decision or an actuator: it only observes and
//! hands events to the daemon, which records them.

pub mod config;
pub mod run;
pub mod view;

pub use run::{Views, spawn};

/// One canary's view through one resolver (see `canary::view`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CanaryView {
    pub canary: String,
    pub name: String,
    pub resolver: String,
    /// The address its last answer named (null: the name did not resolve), and the target
    /// that has it.
    pub address: Option<std::net::IpAddr>,
    pub target: Option<String>,
    /// Whether its last request succeeded (resolving only, without a `url`).
    pub ok: bool,
    pub detail: String,
    /// When that answer was obtained (RFC 3339; null before the first one).
    pub at: Option<String>,
    /// The answer agrees with the committed decision (null before a decision or an answer).
    pub agrees: Option<bool>,
    /// A `clients_stale` event is open for this resolver.
    pub stale: bool,
}

