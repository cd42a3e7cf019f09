//! The coordinator: where a service's proposed decision becomes committed, and where this
//! node's view of a target's health becomes the verdict the engine acts on.
//!
//! The per-service machine (`crate::service`) decides *what* it wants; the coordinator says
//! whether that stands and gives it its **epoch**, the fencing token every actuator checks.
//! [`Standalone`] (the default, one node) commits at once: its epochs only grow per service and
//! the durable event log makes them survive restarts. A cluster coordinator ([`Etcd`], `etcd.rs`) commits
//! through the cluster, so the epoch becomes cluster-wide and a node that is not the leader, or
//! is cut off, cannot move traffic; it also combines every node's health verdicts (vantage
//! points) into one.
//!
//! Coordinators decide nothing about targets: they only agree on what the machines decided.
//! They never block the core: a verdict or commit that needs the network comes back later as an
//! [`Input`] on the core's channel.

pub mod config;
pub mod etcd;
pub mod gateway;
pub mod quorum;
pub mod standalone;

pub use etcd::Etcd;
pub use standalone::Standalone;

use std::collections::BTreeMap;

use crate::decision::Reason;
use crate::events::OverrideAction;
use crate::events::state::Overrides;
use crate::health::Health;

/// What a service's machine proposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The epoch the machine would use (its last committed epoch + 1).
    pub epoch: u64,
    /// The target to make active (its name), `None` when failing closed.
    pub active: Option<String>,
    pub all_down: bool,
    /// Why (followers record the leader's reason with the decision they adopt).
    pub reason: Reason,
}

/// A coordinator's answer to a proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// Committed now, with this epoch (at least the proposed one).
    Now { epoch: u64 },
    /// Not this node's to make (another node leads, or the cluster is unreachable): the machine
    /// keeps its previous decision and its actuators are not touched.
    Refused { why: String },
    /// Sent to the cluster (this node leads): the answer comes as [`Input::Committed`] (with the
    /// epoch the cluster gave it) or [`Input::Refused`]. Until then the machine keeps its previous
    /// decision and actuators are not touched.
    Later,
}

/// What a coordinator tells the core later (cluster coordinators only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The cluster's verdict on a target changed.
    Verdict { service: String, target: String, health: Health },
    /// A decision committed in the cluster, by this node or another (a follower learns every
    /// decision this way, and every node hears the committed decisions when it (re)connects):
    /// the machine adopts it as its current decision with this epoch, and the actuators apply it.
    /// Sent at most once per service and epoch, with epochs strictly increasing per service.
    /// It wins over an earlier [`Input::Refused`] of the same proposal (a commit whose answer
    /// timed out may still have been committed). `revision` is etcd's revision of the commit,
    /// unique in the cluster: an incident it opens takes it as its id on every node.
    Committed { service: String, epoch: u64, active: Option<String>, all_down: bool, reason: Option<Reason>, by: String, revision: u64 },
    /// A proposal answered [`Commit::Later`] was not committed: leadership was lost, another
    /// decision was committed meanwhile, or etcd could not be reached. The machine keeps its
    /// previous decision (and may propose again).
    Refused { service: String, epoch: u64, why: String },
    /// This node's role changed: who leads, whether this node may decide and act, and why not.
    Role(Role),
    /// An operator changed a service's overrides on some node (this one included): every
    /// node takes the new set. Sent once per change, in the order etcd holds them.
    Overrides { service: String, change: OverrideChange },
}

/// Operator intent for a service, shared by every node of a cluster: the whole set after the
/// change, and the command that made it (each node records it as an `override` event).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OverrideChange {
    pub overrides: Overrides,
    pub target: Option<String>,
    pub action: OverrideAction,
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_us: Option<u64>,
    /// The node the operator talked to.
    pub node: String,
}

/// This node's place in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Role {
    /// The leading node, as this node last saw it (`None`: no leader, or cut off).
    pub leader: Option<String>,
    /// This node leads, holds its lease within the safety margin, and may commit and act
    /// (actuators that act outside, such as hooks, run only while this is true).
    pub leading: bool,
    /// This node reaches etcd and its lease is alive.
    pub connected: bool,
    /// Why this node does not decide (`None` while it leads): "mon-b leads", "no leader elected
    /// yet", "cut off from etcd: ...".
    pub why: Option<String>,
}

/// What a cluster coordinator knows, for the status API and CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    pub kind: &'static str,
    pub node: String,
    pub role: Role,
    /// Each live node's verdicts: node -> (service, target) -> health.
    pub views: BTreeMap<String, BTreeMap<(String, String), Health>>,
    /// The cluster's verdicts (the quorum of the views).
    pub verdicts: BTreeMap<(String, String), Health>,
    /// The last committed epoch per service.
    pub epochs: BTreeMap<String, u64>,
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

    /// The cluster as this node sees it; `None` for a single node.
    fn status(&self) -> Option<ClusterStatus> {
        None
    }

    /// An operator changed `service`'s overrides on this node: share them with the cluster (they
    /// come back to every node as [`Input::Overrides`]). `Err` says why they cannot be shared
    /// now (cut off from etcd); a single node shares nothing.
    fn share(&mut self, service: &str, change: OverrideChange) -> Result<(), String> {
        let _ = (service, change);
        Ok(())
    }

    /// Whether operator commands can be taken now (a node cut off from etcd refuses them: they
    /// would not reach the cluster). `Err` says why.
    fn may_operate(&self) -> Result<(), String> {
        Ok(())
    }

    /// The daemon is stopping: hand leadership over now (release the lease) instead of letting
    /// it lapse. Returns at once; the release is best effort.
    fn release(&mut self) {}
}
