//! Cluster mode on a real three-member etcd (127.0.0.1-3, Debian's `etcd-server`), with three
//! `Etcd` coordinators in this process standing for three understudy nodes (lease TTL 2 s):
//!
//! - **commit**: a proposal at the leader until the leader hears it committed (the fencing
//!   transaction's round trip: the latency cluster mode adds to a decision; standalone commits in
//!   memory, timed alongside), and until every node has heard it (the watch);
//! - **verdict**: two of three nodes observe a target down (then up again) until every node
//!   hears the cluster verdict change;
//! - **leader loss**: the leader stops (a crash: no renewal, no release) until another node
//!   leads; and the leader releases its lease (a clean shutdown) until another node leads.
//!
//! Commits and verdicts are timed input by input (the coordinator's channel, no polling);
//! leader changes are polled every 2 ms. Prints the median, p90 and max of each. Run: `cargo bench --bench cluster -- [--runs 5]
//! [--commits 200]`. Bounded: every wait gives up after 10 s; the etcd members are killed by
//! PID at the end (also on panic).

#[path = "../tests/support/mod.rs"]
mod support;
#[path = "../tests/support/etcd.rs"]
mod etcd_support;

use std::time::{Duration, Instant};

use etcd_support::*;
use understudy::coordinator::quorum::Quorum;
use understudy::coordinator::{Commit, Coordinator, Standalone};
use understudy::health::Health;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn report(what: &str, mut d: Vec<Duration>) {
    d.sort();
    let at = |q: f64| d[((d.len() - 1) as f64 * q).round() as usize];
    println!("{what:<48} median {:>10.3?}  p90 {:>10.3?}  max {:>10.3?}  (n = {})", at(0.5), at(0.9), d[d.len() - 1], d.len());
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs = arg("--runs", 5);
    let commits = arg("--commits", 200);
    let dir = tempfile::tempdir().unwrap();
    let cluster = EtcdCluster::start(dir.path()).await;
    let mut nodes = three_nodes(&cluster, Quorum::Majority);
    let within = Duration::from_secs(10);

    // Commit latency.
    let l = one_leader(&mut nodes, within).await;
    let (mut at_leader, mut everywhere) = (Vec::new(), Vec::new());
    for i in 0..commits {
        let epoch = nodes[l].last_epoch("www").unwrap_or(0) + 1;
        let active = if i % 2 == 0 { "backup" } else { "primary" };
        let t = Instant::now();
        assert_eq!(nodes[l].c().propose("www", &proposal(epoch, active)), Commit::Later);
        until_each(&mut nodes[l..=l], within, "the leader hears its commit", |n| n.last_epoch("www") == Some(epoch)).await;
        at_leader.push(t.elapsed());
        until_each(&mut nodes, within, "every node hears the commit", |n| n.last_epoch("www") == Some(epoch)).await;
        everywhere.push(t.elapsed());
    }
    let mut standalone = Standalone::new([]);
    let mut local = Vec::new();
    for i in 0..commits {
        let t = Instant::now();
        let c = standalone.propose("www", &proposal(i as u64 + 1, "backup"));
        local.push(t.elapsed());
        assert!(matches!(c, Commit::Now { .. }));
    }
    report("commit, standalone (in memory)", local);
    report("commit, etcd: proposal -> leader hears it", at_leader);
    report("commit, etcd: proposal -> every node hears it", everywhere);

    // Verdict propagation.
    for n in nodes.iter_mut() {
        n.c().observe("www", "primary", Health::Up);
    }
    until(&mut nodes, within, "primary up everywhere", |ns| ns.iter().all(|n| n.verdict("www", "primary") == Some(Health::Up))).await;
    let mut verdicts = Vec::new();
    for i in 0..runs * 4 {
        let h = if i % 2 == 0 { Health::Down } else { Health::Up };
        nodes[0].c().observe("www", "primary", h);
        nodes[1].c().observe("www", "primary", h);
        verdicts.push(until_each(&mut nodes, within, "every node hears the verdict", |n| n.verdict("www", "primary") == Some(h)).await);
    }
    report("verdict: two of three see it -> every node hears", verdicts);

    // Leader loss.
    let (mut crash, mut release) = (Vec::new(), Vec::new());
    for i in 0..runs * 2 {
        let l = one_leader(&mut nodes, within).await;
        let name = nodes[l].name.clone();
        let t = Instant::now();
        if i % 2 == 0 {
            nodes[l].c = None;
        } else {
            nodes[l].c().release();
        }
        until(&mut nodes, within, "another node leads", |ns| {
            let ls = leaders(ns);
            ls.len() == 1 && ns[ls[0]].name != name
        })
        .await;
        if i % 2 == 0 { crash.push(t.elapsed()) } else { release.push(t.elapsed()) };
        // The stopped node comes back (a restart) for the next run.
        nodes[l] = Node::start(config(&cluster, &name, Quorum::Majority));
    }
    report(&format!("leader crash -> new leader (lease_ttl {LEASE_TTL:?})"), crash);
    report("leader release (shutdown) -> new leader", release);
}
