//! The cluster's view as etcd's keys say it, and the quorum rule that turns every live node's
//! health verdict into the one verdict the engine acts on. Pure: no I/O, no clock, no tasks;
//! the etcd coordinator (`etcd.rs`) feeds it the keys it reads and watches, in revision order.
//!
//! Key layout under the cluster's `prefix` (names are config names: `[A-Za-z0-9._-]`, so `/`
//! never occurs inside one):
//!
//! | key | value | lease |
//! | --- | --- | --- |
//! | `nodes/<node>/alive` | the node's name | the node's |
//! | `nodes/<node>/health/<service>/<target>` | `up`, `down` or `unknown` | the node's |
//! | `leader` | the leading node's name | the leader's |
//! | `decisions/<service>` | JSON [`Committed`] | none (decisions outlive every node) |
//!
//! A node is **live** while its `alive` key exists, i.e. while its lease is kept alive; its
//! verdicts vanish with the lease. A verdict of a node without an `alive` key never counts.
//!
//! This module decides nothing about targets beyond counting views, and it never writes keys.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::health::Health;

/// How many live nodes must see a target down for the cluster to call it down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quorum {
    /// More than half of the live nodes.
    Majority,
    /// This many nodes (at least 1). With fewer live nodes the cluster never calls a target down.
    Nodes(u32),
}

impl Quorum {
    /// The number of down views that make a target down, with `live` live nodes.
    pub fn needed(self, live: usize) -> usize {
        match self {
            Quorum::Majority => live / 2 + 1,
            Quorum::Nodes(n) => n.max(1) as usize,
        }
    }
}

/// The cluster's verdict on one target, from the verdicts of the live nodes that published one
/// (`live` counts every live node, with or without a verdict on this target):
/// down when at least `quorum.needed(live)` of them see it down; otherwise up when any sees it
/// up; otherwise unknown (nobody has a verdict yet, or too few down views and no up view).
pub fn verdict(quorum: Quorum, live: usize, views: impl IntoIterator<Item = Health>) -> Health {
    let (mut up, mut down) = (0usize, 0usize);
    for h in views {
        match h {
            Health::Up => up += 1,
            Health::Down => down += 1,
            Health::Unknown => {}
        }
    }
    if down >= quorum.needed(live) {
        Health::Down
    } else if up > 0 {
        Health::Up
    } else {
        Health::Unknown
    }
}

/// A decision as committed in etcd (`decisions/<service>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The cluster-wide fencing token: strictly increasing per service.
    pub epoch: u64,
    pub active: Option<String>,
    pub all_down: bool,
    /// The node that committed it (the leader at the time).
    pub by: String,
    /// Why the leader decided it (absent in decisions written by older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<crate::decision::Reason>,
}

/// A key under the prefix, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Alive { node: String },
    Health { node: String, service: String, target: String },
    Leader,
    Decision { service: String },
    /// Operator overrides of a service (kept without a lease: they outlive every node).
    Overrides { service: String },
}

impl Key {
    /// Parse a key relative to the prefix (`nodes/mon-a/alive`); `None` for keys that are not ours.
    pub fn parse(rel: &str) -> Option<Key> {
        let parts: Vec<&str> = rel.split('/').collect();
        let name = |s: &str| !s.is_empty();
        match parts.as_slice() {
            ["nodes", node, "alive"] if name(node) => Some(Key::Alive { node: node.to_string() }),
            ["nodes", node, "health", service, target] if name(node) && name(service) && name(target) => {
                Some(Key::Health { node: node.to_string(), service: service.to_string(), target: target.to_string() })
            }
            ["leader"] => Some(Key::Leader),
            ["decisions", service] if name(service) => Some(Key::Decision { service: service.to_string() }),
            ["overrides", service] if name(service) => Some(Key::Overrides { service: service.to_string() }),
            _ => None,
        }
    }

    /// The key relative to the prefix (the inverse of [`Key::parse`]).
    pub fn render(&self) -> String {
        match self {
            Key::Alive { node } => format!("nodes/{node}/alive"),
            Key::Health { node, service, target } => format!("nodes/{node}/health/{service}/{target}"),
            Key::Leader => "leader".to_string(),
            Key::Decision { service } => format!("decisions/{service}"),
            Key::Overrides { service } => format!("overrides/{service}"),
        }
    }
}

/// How a health verdict is written in etcd.
pub fn health_text(h: Health) -> &'static str {
    match h {
        Health::Up => "up",
        Health::Down => "down",
        Health::Unknown => "unknown",
    }
}

fn parse_health(s: &[u8]) -> Option<Health> {
    match s {
        b"up" => Some(Health::Up),
        b"down" => Some(Health::Down),
        b"unknown" => Some(Health::Unknown),
        _ => None,
    }
}

/// The leader key as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub node: String,
    /// The key's create revision: leadership is this (node, revision) pair; a commit compares it.
    pub revision: i64,
}

/// A committed decision and the revision that wrote it (the commit's compare target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub decision: Committed,
    pub mod_revision: i64,
}

/// One change of a key, in revision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put { key: String, value: Vec<u8>, create_revision: i64, mod_revision: i64 },
    /// `revision`: the revision of the deletion.
    Delete { key: String, revision: i64 },
}

/// What the keys under the prefix say: live nodes and their verdicts, the leader, the
/// committed decisions. Built from a range read, then kept current by applying watch events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    alive: BTreeMap<String, ()>,
    /// node -> (service, target) -> verdict (also for nodes not (yet) alive; they do not count).
    health: BTreeMap<String, BTreeMap<(String, String), Health>>,
    pub leader: Option<Leader>,
    pub decisions: BTreeMap<String, Stored>,
    /// Each service's shared overrides and the revision that wrote them.
    pub overrides: BTreeMap<String, (super::OverrideChange, i64)>,
    /// Keys under the prefix that could not be read (skipped, reported once by the caller).
    pub unreadable: Vec<String>,
}

impl View {
    /// Apply one change; `rel` keys are relative to the prefix. Unknown keys are ignored.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Put { key, value, create_revision, mod_revision } => match Key::parse(key) {
                Some(Key::Alive { node }) => {
                    self.alive.insert(node, ());
                }
                Some(Key::Health { node, service, target }) => match parse_health(value) {
                    Some(h) => {
                        self.health.entry(node).or_default().insert((service, target), h);
                    }
                    None => self.unreadable.push(key.clone()),
                },
                // The leader and decisions are also set from this node's own transactions, which
                // can be ahead of the watch: an older event never rolls them back.
                Some(Key::Leader) => match std::str::from_utf8(value) {
                    Ok(_) if self.leader.as_ref().is_some_and(|l| l.revision > *create_revision) => {}
                    Ok(node) if !node.is_empty() => self.leader = Some(Leader { node: node.to_string(), revision: *create_revision }),
                    _ => self.unreadable.push(key.clone()),
                },
                Some(Key::Decision { service }) => match serde_json::from_slice::<Committed>(value) {
                    Ok(_) if self.decisions.get(&service).is_some_and(|d| d.mod_revision > *mod_revision) => {}
                    Ok(decision) => {
                        self.decisions.insert(service, Stored { decision, mod_revision: *mod_revision });
                    }
                    Err(_) => self.unreadable.push(key.clone()),
                },
                Some(Key::Overrides { service }) => match serde_json::from_slice::<super::OverrideChange>(value) {
                    Ok(_) if self.overrides.get(&service).is_some_and(|(_, r)| *r > *mod_revision) => {}
                    Ok(change) => {
                        self.overrides.insert(service, (change, *mod_revision));
                    }
                    Err(_) => self.unreadable.push(key.clone()),
                },
                None => {}
            },
            Change::Delete { key, revision } => match Key::parse(key) {
                Some(Key::Alive { node }) => {
                    self.alive.remove(&node);
                }
                Some(Key::Health { node, service, target }) => {
                    if let Some(m) = self.health.get_mut(&node) {
                        m.remove(&(service, target));
                        if m.is_empty() {
                            self.health.remove(&node);
                        }
                    }
                }
                Some(Key::Leader) if self.leader.as_ref().is_none_or(|l| l.revision < *revision) => self.leader = None,
                Some(Key::Decision { service }) if self.decisions.get(&service).is_none_or(|d| d.mod_revision < *revision) => {
                    self.decisions.remove(&service);
                }
                Some(Key::Overrides { service }) if self.overrides.get(&service).is_none_or(|(_, r)| *r < *revision) => {
                    self.overrides.remove(&service);
                }
                Some(Key::Leader | Key::Decision { .. } | Key::Overrides { .. }) => {}
                None => {}
            },
        }
    }

    /// Live nodes, by name.
    pub fn live(&self) -> impl Iterator<Item = &str> {
        self.alive.keys().map(String::as_str)
    }

    pub fn is_live(&self, node: &str) -> bool {
        self.alive.contains_key(node)
    }

    /// Each live node's verdicts (the status's "each node's view").
    pub fn node_views(&self) -> BTreeMap<String, BTreeMap<(String, String), Health>> {
        self.alive.keys().map(|n| (n.clone(), self.health.get(n).cloned().unwrap_or_default())).collect()
    }

    /// The cluster verdict on every target any live node has a verdict on.
    pub fn verdicts(&self, quorum: Quorum) -> BTreeMap<(String, String), Health> {
        let live = self.alive.len();
        let mut views: BTreeMap<(String, String), Vec<Health>> = BTreeMap::new();
        for node in self.alive.keys() {
            for (t, h) in self.health.get(node).into_iter().flatten() {
                views.entry(t.clone()).or_default().push(*h);
            }
        }
        views.into_iter().map(|(t, v)| (t, verdict(quorum, live, v))).collect()
    }

    /// The verdicts that differ from `delivered` (targets nobody sees any more become unknown),
    /// and `delivered` updated to match.
    pub fn changed_verdicts(&self, quorum: Quorum, delivered: &mut BTreeMap<(String, String), Health>) -> Vec<(String, String, Health)> {
        let now = self.verdicts(quorum);
        let mut out = Vec::new();
        for (t, h) in &now {
            if delivered.get(t) != Some(h) {
                out.push((t.0.clone(), t.1.clone(), *h));
            }
        }
        for (t, h) in delivered.iter() {
            if !now.contains_key(t) && *h != Health::Unknown {
                out.push((t.0.clone(), t.1.clone(), Health::Unknown));
            }
        }
        for (s, t, h) in &out {
            delivered.insert((s.clone(), t.clone()), *h);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn put(key: &str, value: &str, rev: i64) -> Change {
        Change::Put { key: key.into(), value: value.as_bytes().to_vec(), create_revision: rev, mod_revision: rev }
    }

    #[test]
    fn one_vantage_point_cut_off_from_a_target_does_not_make_it_down() {
        use Health::*;
        assert_eq!(verdict(Quorum::Majority, 3, [Down, Up, Up]), Up);
        assert_eq!(verdict(Quorum::Majority, 3, [Down, Down, Up]), Down);
        // Two of three live nodes have a verdict, both down: a majority of the three.
        assert_eq!(verdict(Quorum::Majority, 3, [Down, Down]), Down);
        // One down view and nobody else has a verdict yet: not enough either way.
        assert_eq!(verdict(Quorum::Majority, 3, [Down]), Unknown);
        assert_eq!(verdict(Quorum::Nodes(1), 3, [Down, Up, Up]), Down);
        assert_eq!(verdict(Quorum::Nodes(3), 2, [Down, Down]), Unknown);
        assert_eq!(verdict(Quorum::Majority, 0, []), Unknown);
    }

    #[test]
    fn keys_round_trip_and_foreign_keys_are_ignored() {
        for k in [
            Key::Alive { node: "mon-a".into() },
            Key::Health { node: "mon-a".into(), service: "www".into(), target: "primary".into() },
            Key::Leader,
            Key::Decision { service: "www".into() },
        ] {
            assert_eq!(Key::parse(&k.render()), Some(k));
        }
        for rel in ["", "nodes", "nodes//alive", "nodes/a/health/www", "decisions/", "leader/x", "other"] {
            assert_eq!(Key::parse(rel), None, "{rel}");
        }
    }

    #[test]
    fn a_dead_node_s_verdicts_stop_counting_and_a_leader_and_decisions_are_read() {
        let mut v = View::default();
        for c in [
            put("nodes/a/alive", "a", 1),
            put("nodes/b/alive", "b", 2),
            put("nodes/a/health/www/p", "down", 3),
            put("nodes/b/health/www/p", "down", 4),
            put("leader", "a", 5),
            put("decisions/www", r#"{"epoch":3,"active":"b","all_down":false,"by":"a"}"#, 6),
            put("decisions/bad", "{", 7),
        ] {
            v.apply(&c);
        }
        let mut delivered = BTreeMap::new();
        assert_eq!(v.changed_verdicts(Quorum::Majority, &mut delivered), vec![("www".into(), "p".into(), Health::Down)]);
        assert_eq!(v.leader, Some(Leader { node: "a".into(), revision: 5 }));
        assert_eq!(v.decisions["www"].decision.epoch, 3);
        assert_eq!(v.decisions["www"].mod_revision, 6);
        assert_eq!(v.unreadable, vec!["decisions/bad".to_string()]);
        // b dies: its alive key goes; a alone is a majority of one.
        v.apply(&Change::Delete { key: "nodes/b/alive".into(), revision: 8 });
        assert_eq!(v.changed_verdicts(Quorum::Majority, &mut delivered), vec![]);
        assert_eq!(v.changed_verdicts(Quorum::Nodes(2), &mut delivered), vec![("www".into(), "p".into(), Health::Unknown)]);
        v.apply(&Change::Delete { key: "leader".into(), revision: 9 });
        assert_eq!(v.leader, None);
    }

    #[test]
    fn a_late_watch_event_never_rolls_back_this_node_s_own_commit_or_leadership() {
        let decision = |epoch: u64| format!(r#"{{"epoch":{epoch},"active":"b","all_down":false,"by":"a"}}"#);
        let mut v = View::default();
        v.apply(&put("decisions/www", &decision(5), 10));
        // This node's commit of epoch 6 succeeded at revision 12 and was recorded at once ...
        v.decisions.insert("www".into(), Stored { decision: serde_json::from_str(&decision(6)).unwrap(), mod_revision: 12 });
        // ... before the watch delivered the older write of epoch 5 (revision 11).
        v.apply(&put("decisions/www", &decision(5), 11));
        assert_eq!((v.decisions["www"].decision.epoch, v.decisions["www"].mod_revision), (6, 12), "the next commit must compare against revision 12");
        v.apply(&put("decisions/www", &decision(6), 12));
        assert_eq!(v.decisions["www"].mod_revision, 12);
        // A campaign won at revision 20; the deletion of the previous leader key (revision 19)
        // and the old key's put arrive afterwards.
        v.leader = Some(Leader { node: "a".into(), revision: 20 });
        v.apply(&put("leader", "b", 15));
        v.apply(&Change::Delete { key: "leader".into(), revision: 19 });
        assert_eq!(v.leader, Some(Leader { node: "a".into(), revision: 20 }));
        v.apply(&Change::Delete { key: "leader".into(), revision: 21 });
        assert_eq!(v.leader, None);
    }

    fn health() -> impl Strategy<Value = Health> {
        prop_oneof![Just(Health::Up), Just(Health::Down), Just(Health::Unknown)]
    }

    fn quorum() -> impl Strategy<Value = Quorum> {
        prop_oneof![Just(Quorum::Majority), (1u32..5).prop_map(Quorum::Nodes)]
    }

    proptest! {
        /// The rule itself: down exactly when enough live nodes see it down; one more down view
        /// never turns a down target up; never down with fewer down views than the quorum.
        #[test]
        fn verdict_follows_the_quorum(q in quorum(), views in proptest::collection::vec(health(), 0..7), extra_live in 0usize..3) {
            let live = views.len() + extra_live;
            let downs = views.iter().filter(|h| **h == Health::Down).count();
            let ups = views.iter().filter(|h| **h == Health::Up).count();
            let v = verdict(q, live, views.clone());
            prop_assert_eq!(v == Health::Down, downs >= q.needed(live));
            if v != Health::Down {
                prop_assert_eq!(v == Health::Up, ups > 0);
            }
            let mut more = views.clone();
            more.push(Health::Down);
            if v == Health::Down {
                prop_assert_eq!(verdict(q, live, more), Health::Down);
            }
            // A strict minority seeing a target down never makes it down under `majority`.
            if q == Quorum::Majority && 2 * downs <= live {
                prop_assert_ne!(v, Health::Down);
            }
        }

        /// Membership churn: nodes join, publish, change their minds and die (their keys go,
        /// in any order). Applying the changes one by one gives the same view as reading the
        /// final keys at once, and the verdicts count only live nodes.
        #[test]
        fn churn_gives_the_same_view_as_a_fresh_read(
            q in quorum(),
            ops in proptest::collection::vec((0usize..4, 0usize..3, health(), 0u8..4), 0..60)
        ) {
            let nodes = ["a", "b", "c", "d"];
            let targets = ["p", "b1", "b2"];
            let mut incremental = View::default();
            let mut keys: BTreeMap<String, (String, i64)> = BTreeMap::new();
            let mut delivered = BTreeMap::new();
            let mut emitted: BTreeMap<(String, String), Health> = BTreeMap::new();
            for (rev, (n, t, h, op)) in ops.into_iter().enumerate() {
                let rev = rev as i64 + 1;
                let node = nodes[n];
                let changes = match op {
                    0 => vec![put(&format!("nodes/{node}/alive"), node, rev)],
                    1 | 2 => vec![put(&format!("nodes/{node}/health/www/{}", targets[t]), health_text(h), rev)],
                    // The lease lapses: etcd deletes every key of the node.
                    _ => keys.keys().filter(|k| k.starts_with(&format!("nodes/{node}/"))).map(|k| Change::Delete { key: k.clone(), revision: rev }).collect(),
                };
                for change in &changes {
                    match change {
                        Change::Put { key, value, .. } => {
                            keys.insert(key.clone(), (String::from_utf8(value.clone()).unwrap(), rev));
                        }
                        Change::Delete { key, .. } => {
                            keys.remove(key);
                        }
                    }
                    incremental.apply(change);
                }
                for (s, t, h) in incremental.changed_verdicts(q, &mut delivered) {
                    emitted.insert((s, t), h);
                }
            }
            let mut fresh = View::default();
            for (k, (v, rev)) in &keys {
                fresh.apply(&put(k, v, *rev));
            }
            prop_assert_eq!(&incremental.node_views(), &fresh.node_views());
            let verdicts = fresh.verdicts(q);
            prop_assert_eq!(&incremental.verdicts(q), &verdicts);
            // What was delivered, change by change, ends where a fresh read stands.
            for (t, h) in &emitted {
                prop_assert_eq!(verdicts.get(t).copied().unwrap_or(Health::Unknown), *h);
            }
            // Brute force from the final keys: only live nodes' views count.
            let live: Vec<&str> = nodes.iter().copied().filter(|n| keys.contains_key(&format!("nodes/{n}/alive"))).collect();
            for t in targets {
                let views: Vec<Health> = live.iter().filter_map(|n| keys.get(&format!("nodes/{n}/health/www/{t}")))
                    .map(|(v, _)| parse_health(v.as_bytes()).unwrap()).collect();
                let expect = if views.is_empty() { None } else { Some(verdict(q, live.len(), views)) };
                prop_assert_eq!(verdicts.get(&("www".to_string(), t.to_string())).copied(), expect);
            }
        }
    }
}
