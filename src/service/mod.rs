//! One service, one state machine: health, operator overrides, the decision engine and what to
//! do about them, with no I/O and no clock reads.
//!
//! ```text
//!  check result ─┐                                   ┌─▶ Record(event)     (the runtime appends)
//!  command ──────┤                                   ├─▶ Actuate(decision) (after the Record)
//!  tick ─────────┼──▶ Service ──propose──▶ Coordinator├─▶ Cadence / Suspect / Health
//!  reload diff ──┘     (health, overrides, engine)    └─▶ Refused
//! ```
//!
//! [`Service`] (`machine.rs`) takes check results, operator commands, ticks and reloads, and
//! returns [`Effect`]s (`effect.rs`) for the runtime (`crate::daemon`) to carry out in order.
//! Time is always a parameter ([`Now`]), so tests drive it on a simulated clock (`tests.rs`).
//! Decisions go through a [`crate::coordinator::Coordinator`], which commits them and gives
//! them their epoch. Reload is a pure diff (`reload.rs`): targets are matched by name, a target
//! whose check is unchanged keeps its health, and the diff says which probes to start and stop.
//!
//! Targets are kept in config order, which is also the engine's slot order: that invariant
//! lives here and nowhere else; callers name targets.

mod effect;
mod machine;
mod reload;
#[cfg(test)]
mod tests;

pub use effect::{Actuate, Effect};
pub use machine::{Now, Service, Status, TargetStatus};
pub use reload::ReloadPlan;

/// A refused operator request (unknown service, target not eligible...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no service named \"{0}\"")]
    NoService(String),
    #[error("service \"{service}\" has no target named \"{target}\"")]
    NoTarget { service: String, target: String },
    #[error("no incident #{0}")]
    NoIncident(u64),
    #[error("no report for drill #{0}")]
    NoDrill(u64),
    #[error("{0}")]
    Conflict(String),
    #[error("the daemon is shutting down")]
    ShuttingDown,
}
