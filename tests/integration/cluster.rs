//! Cluster mode against a real etcd: three members from Debian's `etcd-server` on 127.0.0.1,
//! 127.0.0.2 and 127.0.0.3, started by each test and stopped by PID; several `Etcd`
//! coordinators in this process stand for the understudy nodes (the daemon's core does not
//! call the coordinator yet, so the real binary cannot be used here).
//!
//! What a user would notice: one node cut off from a target never makes it down for the
//! cluster; exactly one node decides and the others refuse and learn its decisions; a leader
//! whose lease lapses is replaced within the lease TTL and epochs continue upward; a stale
//! leader's commit fails in etcd; one etcd member down changes nothing, two down stops every
//! node from deciding (and they say why) until etcd is back.

#[path = "../support/etcd.rs"]
pub(crate) mod etcd_support;

use std::time::{Duration, Instant};

use etcd_support::*;
use understudy::coordinator::gateway::{Gateway, http_client};
use understudy::coordinator::quorum::{Committed, Quorum};
use understudy::coordinator::{Commit, Coordinator, etcd::commit_txn};
use understudy::health::Health;

trait EtcdConfigExt {
    fn with_ttl(self, ttl: Duration) -> Self;
}

impl EtcdConfigExt for understudy::coordinator::config::EtcdConfig {
    fn with_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_vantage_point_cut_off_from_the_primary_does_not_make_it_down_for_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = EtcdCluster::start(dir.path()).await;
    let mut nodes = three_nodes(&cluster, Quorum::Majority);
    for n in nodes.iter_mut() {
        assert_eq!(n.c().observe("www", "primary", Health::Up), None, "a cluster verdict comes later, as an input");
        n.c().observe("www", "backup", Health::Up);
    }
    until(&mut nodes, Duration::from_secs(10), "every node hears primary up", |ns| ns.iter().all(|n| n.verdict("www", "primary") == Some(Health::Up))).await;

    // mon-a loses its path to the primary; the others still reach it.
    nodes[0].c().observe("www", "primary", Health::Down);
    until(&mut nodes, Duration::from_secs(5), "every node's status shows mon-a's view of the primary as down", |ns| {
        ns.iter().all(|n| {
            let s = n.c.as_ref().unwrap().status().unwrap();
            s.views.get("mon-a").and_then(|v| v.get(&("www".to_string(), "primary".to_string()))) == Some(&Health::Down)
        })
    })
    .await;
    for n in &nodes {
        assert_eq!(n.verdict("www", "primary"), Some(Health::Up), "{}: one vantage point of three must not make the primary down", n.name);
        assert!(!n.verdict_log.iter().any(|(_, t, h)| t == "primary" && *h == Health::Down), "{}: a down verdict was delivered: {:?}", n.name, n.verdict_log);
        let s = n.c.as_ref().unwrap().status().unwrap();
        assert_eq!(s.views.len(), 3, "{}: each node's view is listed: {:?}", n.name, s.views);
        assert_eq!(s.verdicts.get(&("www".to_string(), "primary".to_string())), Some(&Health::Up));
    }

    // A second node sees it down: two of three is the majority.
    nodes[1].c().observe("www", "primary", Health::Down);
    until(&mut nodes, Duration::from_secs(5), "every node hears primary down", |ns| ns.iter().all(|n| n.verdict("www", "primary") == Some(Health::Down))).await;

    // mon-b dies (its lease lapses): its view stops counting; one down view of two live nodes
    // is not a majority, so the primary is up again for the cluster.
    nodes[1].c = None;
    until(&mut nodes[..1], LEASE_TTL + Duration::from_secs(3), "mon-a hears primary up once mon-b's lease lapsed", |ns| ns[0].verdict("www", "primary") == Some(Health::Up)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_commits_with_growing_epochs_and_followers_refuse_and_learn_the_decision() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = EtcdCluster::start(dir.path()).await;
    let mut nodes = three_nodes(&cluster, Quorum::Majority);
    let l = one_leader(&mut nodes, Duration::from_secs(10)).await;
    let leader = nodes[l].name.clone();
    for (i, n) in nodes.iter_mut().enumerate().filter(|(i, _)| *i != l) {
        match n.c().propose("www", &proposal(1, "backup")) {
            Commit::Refused { why } => assert!(why.contains(&format!("{leader} leads")), "node {i}: {why}"),
            other => panic!("a follower must refuse, got {other:?}"),
        }
    }
    let t = Instant::now();
    assert_eq!(nodes[l].c().propose("www", &proposal(1, "backup")), Commit::Later);
    until(&mut nodes, Duration::from_secs(5), "every node hears epoch 1 committed", |ns| ns.iter().all(|n| n.last_epoch("www") == Some(1))).await;
    eprintln!("commit to every node: {:?}", t.elapsed());
    for n in &nodes {
        assert_eq!(n.committed["www"], vec![(1, Some("backup".to_string()), leader.clone())], "{}", n.name);
    }
    // A machine that proposes an epoch already used (rebuilt without history) gets the next one.
    assert_eq!(nodes[l].c().propose("www", &proposal(1, "primary")), Commit::Later);
    until(&mut nodes, Duration::from_secs(5), "epoch 2", |ns| ns.iter().all(|n| n.last_epoch("www") == Some(2))).await;
    // Services count separately; a machine ahead of the cluster keeps its higher epoch.
    assert_eq!(nodes[l].c().propose("db", &proposal(7, "db1")), Commit::Later);
    until(&mut nodes, Duration::from_secs(5), "db epoch 7", |ns| ns.iter().all(|n| n.last_epoch("db") == Some(7))).await;
    assert!(nodes.iter().all(|n| n.refused.is_empty()), "{:?}", nodes.iter().map(|n| &n.refused).collect::<Vec<_>>());

    // A node that joins later hears the committed decisions at once.
    let mut late = vec![Node::start(config(&cluster, "mon-d", Quorum::Majority))];
    until(&mut late, Duration::from_secs(5), "a late node hears the committed decisions", |ns| ns[0].last_epoch("www") == Some(2) && ns[0].last_epoch("db") == Some(7)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_stops_renewing_is_replaced_within_the_lease_and_a_released_one_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = EtcdCluster::start(dir.path()).await;
    let mut nodes = three_nodes(&cluster, Quorum::Majority);
    let first = one_leader(&mut nodes, Duration::from_secs(10)).await;
    nodes[first].c().propose("www", &proposal(1, "primary"));
    until(&mut nodes, Duration::from_secs(5), "epoch 1 everywhere", |ns| ns.iter().all(|n| n.last_epoch("www") == Some(1))).await;

    // The leader crashes (its task stops: no renewal, no release).
    nodes[first].c = None;
    let t = Instant::now();
    let second = one_leader(&mut nodes, LEASE_TTL + Duration::from_secs(2)).await;
    eprintln!("leader lost (crash) -> new leader: {:?}", t.elapsed());
    assert_ne!(second, first);
    nodes[second].c().propose("www", &proposal(2, "backup"));
    until(&mut nodes, Duration::from_secs(5), "the new leader's epoch 2 everywhere", |ns| {
        ns.iter().enumerate().filter(|(i, _)| *i != first).all(|(_, n)| n.last_epoch("www") == Some(2))
    })
    .await;

    // A leader that shuts down hands over without waiting for its lease.
    nodes[second].c().release();
    let t = Instant::now();
    let third = until(&mut nodes, LEASE_TTL - Duration::from_millis(500), "a new leader well within the lease TTL after a release", |ns| {
        let l = leaders(ns);
        l.len() == 1 && l[0] != second
    })
    .await;
    eprintln!("leader released -> new leader: {:?} ({third:?} in the wait)", t.elapsed());
    let l = leaders(&nodes)[0];
    nodes[l].c().propose("www", &proposal(2, "primary"));
    until(&mut nodes[l..=l], Duration::from_secs(5), "epoch 3", |ns| ns[0].last_epoch("www") == Some(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_leader_s_commit_is_refused_by_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = EtcdCluster::start(dir.path()).await;
    let mut nodes = three_nodes(&cluster, Quorum::Majority);
    let first = one_leader(&mut nodes, Duration::from_secs(10)).await;
    nodes[first].c().propose("www", &proposal(1, "primary"));
    until(&mut nodes, Duration::from_secs(5), "epoch 1", |ns| ns[first].last_epoch("www") == Some(1)).await;

    // What the first leader knows when it stalls: its leader key and the decision it wrote.
    let gw = Gateway::new(http_client(None, None, Duration::from_secs(2)).unwrap(), cluster.endpoints()[1].clone(), Duration::from_secs(2));
    let (_, kvs) = gw.range_prefix("/understudy-test/").await.unwrap();
    let rev = |k: &str| kvs.iter().find(|kv| kv.key == k).unwrap_or_else(|| panic!("{k} in {kvs:?}")).clone();
    let stale_leader = rev("/understudy-test/leader").create_revision;
    let stale_decision = rev("/understudy-test/decisions/www").mod_revision;

    nodes[first].c = None;
    let second = one_leader(&mut nodes, LEASE_TTL + Duration::from_secs(2)).await;
    nodes[second].c().propose("www", &proposal(2, "backup"));
    until(&mut nodes, Duration::from_secs(5), "epoch 2", |ns| ns[second].last_epoch("www") == Some(2)).await;
    let (_, kvs) = gw.range_prefix("/understudy-test/").await.unwrap();
    let current_leader = kvs.iter().find(|kv| kv.key == "/understudy-test/leader").unwrap().create_revision;
    let current_decision = kvs.iter().find(|kv| kv.key == "/understudy-test/decisions/www").unwrap().mod_revision;

    // The stalled leader wakes up and commits what it had in mind, with its old view: refused.
    let stale = Committed { epoch: 2, active: Some("primary".into()), all_down: false, by: nodes[first].name.clone(), reason: None };
    for (what, leader, seen) in [
        ("old leadership, old decision", stale_leader, stale_decision),
        ("old leadership, current decision", stale_leader, current_decision),
        ("current leadership, old decision", current_leader, stale_decision),
    ] {
        let r = commit_txn(&gw, "/understudy-test", "www", leader, seen, &stale).await.unwrap();
        assert!(!r.succeeded, "{what}: a stale commit went through");
    }
    let (_, kvs) = gw.range_prefix("/understudy-test/decisions/").await.unwrap();
    let d: Committed = serde_json::from_slice(&kvs[0].value).unwrap();
    assert_eq!((d.epoch, d.active.as_deref(), d.by.as_str()), (2, Some("backup"), nodes[second].name.as_str()), "the committed decision is untouched");
    // The same transaction with what the current leader knows does commit (the test can fail).
    let next = Committed { epoch: 3, active: Some("primary".into()), all_down: false, by: nodes[second].name.clone(), reason: None };
    assert!(commit_txn(&gw, "/understudy-test", "www", current_leader, current_decision, &next).await.unwrap().succeeded);
    until(&mut nodes, Duration::from_secs(5), "every live node hears epoch 3", |ns| {
        ns.iter().enumerate().filter(|(i, _)| *i != first).all(|(_, n)| n.last_epoch("www") == Some(3))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_etcd_member_down_changes_nothing_and_two_down_stop_every_node_from_deciding() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = EtcdCluster::start(dir.path()).await;
    // A 3 s lease: killing the member every node talks to may kill etcd's raft leader too, and
    // its election must fit in the window before the nodes' leases are at risk (2.25 s here).
    let ttl = Duration::from_secs(3);
    let mut nodes: Vec<Node> = ["mon-a", "mon-b", "mon-c"].iter().map(|n| Node::start(EtcdConfigExt::with_ttl(config(&cluster, n, Quorum::Majority), ttl))).collect();
    for n in nodes.iter_mut() {
        n.c().observe("www", "primary", Health::Up);
    }
    let l = one_leader(&mut nodes, Duration::from_secs(10)).await;
    nodes[l].c().propose("www", &proposal(1, "primary"));
    until(&mut nodes, Duration::from_secs(5), "epoch 1 everywhere", |ns| ns.iter().all(|n| n.last_epoch("www") == Some(1))).await;

    // Every node talks to the first endpoint first: kill that member.
    cluster.kill(0);
    let t = Instant::now();
    for n in nodes.iter_mut() {
        n.c().observe("www", "primary", Health::Down);
    }
    until(&mut nodes, Duration::from_secs(5), "primary down everywhere with one etcd member dead", |ns| ns.iter().all(|n| n.verdict("www", "primary") == Some(Health::Down))).await;
    eprintln!("verdict through a member loss: {:?}", t.elapsed());
    let l2 = one_leader(&mut nodes, Duration::from_secs(5)).await;
    assert_eq!(l2, l, "losing one etcd member of three must not move leadership");
    assert_eq!(nodes[l].c().propose("www", &proposal(2, "backup")), Commit::Later);
    until(&mut nodes, Duration::from_secs(5), "epoch 2 everywhere with one etcd member dead", |ns| ns.iter().all(|n| n.last_epoch("www") == Some(2))).await;
    assert!(nodes.iter().all(|n| n.refused.is_empty()));

    // A second member dies: no etcd quorum. Every node stops deciding before its lease could
    // expire, says why, and refuses proposals; nobody's last decision is undone.
    cluster.kill(1);
    let t = Instant::now();
    until(&mut nodes, ttl, "every node cut off, before its lease could lapse", |ns| ns.iter().all(|n| !n.role.connected && !n.role.leading)).await;
    eprintln!("etcd quorum lost -> every node stops deciding: {:?}", t.elapsed());
    for n in nodes.iter_mut() {
        let why = n.role.why.clone().unwrap_or_default();
        assert!(why.contains("cut off from etcd"), "{}: {why}", n.name);
        match n.c().propose("www", &proposal(3, "primary")) {
            Commit::Refused { why } => assert!(why.contains("cut off from etcd"), "{}: {why}", n.name),
            other => panic!("{}: a node without etcd must refuse, got {other:?}", n.name),
        }
        assert_eq!(n.last_epoch("www"), Some(2), "{}: keeps serving the last decision", n.name);
        let status = n.c.as_ref().unwrap().status().unwrap();
        assert_eq!(status.epochs.get("www"), Some(&2));
    }

    // etcd comes back: the nodes reconnect, elect, and epochs continue upward.
    cluster.spawn(0);
    cluster.spawn(1);
    let l3 = one_leader(&mut nodes, Duration::from_secs(30)).await;
    assert_eq!(nodes[l3].c().propose("www", &proposal(3, "primary")), Commit::Later);
    until(&mut nodes, Duration::from_secs(5), "epoch 3 everywhere after etcd is back", |ns| ns.iter().all(|n| n.last_epoch("www") == Some(3))).await;
}
