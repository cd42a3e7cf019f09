//! What a service's machine asks the runtime to do, in order.

use std::net::IpAddr;

use crate::actuator::TargetRef;
use crate::decision::Reason;
use crate::events::Event;
use crate::health::{Cadence, Health};

/// One thing for the runtime to carry out. A machine's effects are carried out in the order it
/// returns them: a decision's `Record` comes before its `Actuate`, so a decision is on disk
/// before any actuator hears of it.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Append this event to the durable log (the runtime then folds it into incidents,
    /// metrics and notifications).
    Record(Event),
    /// Hand this committed decision to the service's actuators.
    Actuate(Actuate),
    /// Check `target` at this cadence from now on.
    Cadence { target: String, cadence: Cadence },
    /// `target` turned suspect (its first failed or troubled check) or clear again: actuators
    /// that can shorten what clients cache act on it (the DNS suspicion TTL).
    Suspect { target: String, address: IpAddr, suspect: bool, reason: String },
    /// `target`'s health flipped (for actuator kinds that act on health themselves).
    Health { target: String, health: Health },
    /// The coordinator did not commit a proposed decision; nothing was actuated.
    Refused { epoch: u64, why: String },
}

/// A committed decision, as actuators need it (the runtime adds the instant it was recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actuate {
    pub epoch: u64,
    pub active: Option<TargetRef>,
    pub previous: Option<TargetRef>,
    pub reason: Reason,
    pub all_down: bool,
}
