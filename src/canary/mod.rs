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
