//! Failover through three real `understudy run` nodes in cluster mode (a real three-member etcd
//! on 127.0.0.1-3, lease TTL 2 s) beside one standalone node, same checks (HTTP every 200 ms,
//! fall 3) against the same nginx pair (primary 127.0.0.2, backup 127.0.0.3), each node with its
//! own DNS server for `www.example.test`.
//!
//! Per run the primary's nginx is killed and the bench measures, from the kill:
//! - **detection**: the first `target_down` of the primary any node recorded;
//! - **decision**: the failover decision recorded (for the cluster: committed in etcd, heard
//!   by the leader), and the commit's share: decision minus the quorum's second `target_down`;
//! - **first / every DNS**: the first node's and the last node's DNS server answering the
//!   backup (each polled every 2 ms with a hand-built UDP query).
//!
//! Then the primary comes back and the failback completes before the next run. Last, the
//! **leader loss**: the leading node is killed (kill -9) until another node leads (polled every
//! 10 ms through `/api/v1/cluster`), and restarted. Prints medians (and p90, max).
//!
//! Run: `cargo bench --bench cluster_failover -- [--runs 10]`. Bounded: every wait gives up
//! after 20 s; every process is killed by PID at the end (also on panic).

#[path = "../tests/support/mod.rs"]
mod support;
#[path = "../tests/support/etcd.rs"]
mod etcd_support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use etcd_support::EtcdCluster;
use hickory_proto::op::Message;
use hickory_proto::rr::RData;
use support::{Daemon, api_addr, dns_block, free_port, two_target_config, wait_for};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn report(what: &str, mut d: Vec<Duration>) {
    if d.is_empty() {
        println!("{what:<44} (no samples)");
        return;
    }
    d.sort();
    let at = |q: f64| d[((d.len() - 1) as f64 * q).round() as usize];
    println!("{what:<44} median {:>10.1?}  p90 {:>10.1?}  max {:>10.1?}  (n = {})", at(0.5), at(0.9), d[d.len() - 1], d.len());
}

/// A query for www.example.test A, without recursion desired.
fn query(id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(40);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in ["www", "example", "test"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The A addresses a DNS server on 127.0.0.1:`port` answers (empty on no answer within 200 ms).
async fn answer(sock: &tokio::net::UdpSocket, port: u16, id: u16) -> Vec<Ipv4Addr> {
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    if sock.send_to(&query(id), server).await.is_err() {
        return Vec::new();
    }
    let mut buf = [0u8; 1500];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
    loop {
        let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await else { return Vec::new() };
        let Ok(m) = Message::from_vec(&buf[..n]) else { continue };
        if m.metadata.id != id {
            continue; // a late answer to an earlier query
        }
        return m.answers.iter().filter_map(|r| if let RData::A(a) = &r.data { Some(a.0) } else { None }).collect();
    }
}

struct Node {
    daemon: Daemon,
    dns_port: u16,
}

async fn start_node(dir: &std::path::Path, name: &str, web_port: u16, cluster: Option<(&EtcdCluster, &str)>) -> Node {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let api = api_addr();
    let dns_port = free_port("127.0.0.1");
    let mut extra = dns_block(&format!("127.0.0.1:{dns_port}"));
    if let Some((etcd, prefix)) = cluster {
        let endpoints: Vec<String> = etcd.endpoints().iter().map(|u| format!("\"{}\"", u.as_str().trim_end_matches('/'))).collect();
        extra.push_str(&format!(
            "\n[cluster]\nkind = \"etcd\"\nnode = \"{name}\"\nendpoints = [{}]\nprefix = \"{prefix}\"\nlease_ttl = \"2s\"\nquorum = \"majority\"\n",
            endpoints.join(", ")
        ));
    }
    let daemon = Daemon::start(&d, &two_target_config(&d.join("data"), api, web_port, 200, "1s", &extra), api).await;
    Node { daemon, dns_port }
}

/// Microseconds since the epoch of the first event of `kind` for `target` after `after_us`.
fn first_event_us(events: &[serde_json::Value], kind: &str, pick: impl Fn(&serde_json::Value) -> bool, after_us: u64) -> Option<u64> {
    events.iter().filter(|e| e["event"]["kind"] == kind && pick(&e["event"])).filter_map(|e| e["time_us"].as_u64()).find(|t| *t >= after_us)
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64
}

#[derive(Default)]
struct Figures {
    detection: Vec<Duration>,
    decision: Vec<Duration>,
    commit: Vec<Duration>,
    first_dns: Vec<Duration>,
    every_dns: Vec<Duration>,
}

/// Poll every node's DNS until each answers `addr`; when each did, counted from `t`.
async fn wait_all(nodes: &[Node], sock: &tokio::net::UdpSocket, addr: Ipv4Addr, id: &mut u16, t: Instant) -> Vec<Option<Duration>> {
    let mut seen = vec![None; nodes.len()];
    while seen.iter().any(Option::is_none) {
        assert!(t.elapsed() < Duration::from_secs(20), "every node's DNS answers {addr}");
        for (i, n) in nodes.iter().enumerate() {
            if seen[i].is_none() {
                *id = id.wrapping_add(1);
                if answer(sock, n.dns_port, *id).await == [addr] {
                    seen[i] = Some(t.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    seen
}

async fn failovers(label: &str, nodes: &[Node], primary: &mut support::Nginx, runs: usize) -> Figures {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut id = 0u16;
    let mut f = Figures::default();
    let (p, b) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    for run in 0..runs {
        wait_all(nodes, &sock, p, &mut id, Instant::now()).await;
        let killed_us = now_us();
        let t = Instant::now();
        primary.kill();
        let seen: Vec<Duration> = wait_all(nodes, &sock, b, &mut id, t).await.into_iter().flatten().collect();
        f.first_dns.push(*seen.iter().min().unwrap());
        f.every_dns.push(*seen.iter().max().unwrap());
        // Detection and the decision from the nodes' own logs.
        let mut downs = Vec::new();
        let mut decided = None;
        for n in nodes {
            let events = n.daemon.events().await;
            if let Some(d) = first_event_us(&events, "target_down", |e| e["target"] == "primary", killed_us) {
                downs.push(d);
            }
            if let Some(d) = first_event_us(&events, "decision", |e| e["to"] == "backup" && e["reason"] == "failover", killed_us) {
                decided = Some(decided.map_or(d, |x: u64| x.min(d)));
            }
        }
        downs.sort();
        let us = |x: u64| Duration::from_micros(x.saturating_sub(killed_us));
        if let (Some(first), Some(d)) = (downs.first(), decided) {
            f.detection.push(us(*first));
            f.decision.push(us(d));
            // The decision needs a quorum of views: one node alone, two of three in the cluster.
            let quorum = if nodes.len() == 1 { 0 } else { 1 };
            if let Some(q) = downs.get(quorum) {
                f.commit.push(Duration::from_micros(d.saturating_sub(*q)));
            }
        }
        eprintln!("{label} run {run}: every node's DNS answered the backup after {:?}", f.every_dns.last().unwrap());
        primary.start().await;
    }
    wait_all(nodes, &sock, p, &mut id, Instant::now()).await;
    f
}

fn print(label: &str, f: Figures) {
    println!("\n{label}");
    report("  detection (first target_down)", f.detection);
    report("  decision recorded (committed)", f.decision);
    report("  commit (decision - quorum's target_down)", f.commit);
    report("  first node's DNS answers the backup", f.first_dns);
    report("  every node's DNS answers the backup", f.every_dns);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs = arg("--runs", 10);
    let (dir, web_port, mut primary, _backup) = support::two_nginx().await;
    let etcd = EtcdCluster::start(dir.path()).await;
    let prefix = format!("/understudy-bench-{}", std::process::id());

    let standalone = vec![start_node(dir.path(), "solo", web_port, None).await];
    let solo = failovers("standalone", &standalone, &mut primary, runs).await;
    drop(standalone);

    let mut nodes = Vec::new();
    for name in ["mon-a", "mon-b", "mon-c"] {
        nodes.push(start_node(dir.path(), name, web_port, Some((&etcd, &prefix))).await);
    }
    let three = failovers("cluster", &nodes, &mut primary, runs).await;

    // Leader loss: kill -9 the leader until another node leads.
    let mut loss = Vec::new();
    for run in 0..runs.min(5) {
        let leader = wait_for(Duration::from_secs(20), "one leader", || async {
            let mut l = Vec::new();
            for (i, n) in nodes.iter().enumerate() {
                if n.daemon.get("/api/v1/cluster").await["leading"] == true {
                    l.push(i);
                }
            }
            (l.len() == 1).then(|| l[0])
        })
        .await;
        let t = Instant::now();
        nodes[leader].daemon.kill9();
        wait_for(Duration::from_secs(20), "another leader", || async {
            for (i, n) in nodes.iter().enumerate() {
                if i != leader && n.daemon.get("/api/v1/cluster").await["leading"] == true {
                    return Some(());
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            None
        })
        .await;
        loss.push(t.elapsed());
        eprintln!("leader loss run {run}: another node leads after {:?}", t.elapsed());
        nodes[leader].daemon.restart().await;
    }

    println!("\nunderstudy failover, {runs} runs each (HTTP checks every 200 ms, fall 3; lease_ttl 2 s), times from the primary's kill:");
    print("standalone (one node)", solo);
    print("cluster (three nodes on etcd)", three);
    println!();
    report("leader killed -> another node leads", loss);
}
