//! The coordinator: where a service's proposed decision becomes committed, and where this
//! node's view of a target's health becomes the verdict the engine acts on.
//!
//! The per-service machine (`crate::service`) decides *what* it wants; the coordinator says
//! whether that stands and gives it its **epoch**, the fencing token every actuator checks.
//! [`Standalone`] (the default, one node) commits at once: its epochs only grow per service and
//! the durable event log makes them survive restarts. A cluster coordinator (etcd, next) commits
//! through the cluster, so the epoch becomes cluster-wide and a node that is not the leader, or
//! is cut off, cannot move traffic; it also combines every node's health verdicts (vantage
//! points) into one.
//!
//! Coordinators decide nothing about targets: they only agree on what the machines decided.
//! They never block the core: a verdict or commit that needs the network comes back later as an
//! [`Input`] on the core's channel.

pub mod standalone;

pub use standalone::Standalone;

use crate::health::Health;

/// What a service's machine proposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The epoch the machine would use (its last committed epoch + 1).
    pub epoch: u64,
    /// The target to make active (its name), `None` when failing closed.
    pub active: Option<String>,
    pub all_down: bool,
}

/// A coordinator's answer to a proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// Committed now, with this epoch (at least the proposed one).
    Now { epoch: u64 },
    /// Not this node's to make (another node leads, or the cluster is unreachable): the machine
    /// keeps its previous decision and its actuators are not touched.
    Refused { why: String },
}

/// What a coordinator tells the core later (cluster coordinators only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The cluster's verdict on a target changed.
    Verdict { service: String, target: String, health: Health },
}

/// Where decisions are committed. One per daemon; the core calls it from its loop, so every
/// method returns at once.
pub trait Coordinator: Send + 'static {
    /// `standalone`, `etcd`.
    fn kind(&self) -> &'static str;

    /// This node's health verdict on `service`/`target` changed. Returns the verdict the
    /// engine should act on now: the same one for a single node; `None` when it depends on
    /// other nodes (it then comes as [`Input::Verdict`]).
    fn observe(&mut self, service: &str, target: &str, health: Health) -> Option<Health>;

    /// `service`'s machine proposes a decision.
    fn propose(&mut self, service: &str, proposal: &Proposal) -> Commit;
}
