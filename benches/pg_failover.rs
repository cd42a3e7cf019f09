//! PostgreSQL failover: RTO from the primary's death to the first successful write through the
//! service's DNS name, and acknowledged writes lost, in async and sync mode (issue 14).
//!
//! Each run starts a real PostgreSQL 15 primary and two streaming standbys (Debian
//! `postgresql-15`, as the `postgres` user, on 127.x.y.z) and the daemon with its DNS server
//! (`db.example.test`, TTL 1) and default checks (1 s interval, 500 ms timeout, fall 3). Four
//! writers insert rows through the name (resolving again after every error) for 2 s, then the
//! primary gets `kill -9`. RTO is the time from the kill to the first row acknowledged by
//! another server; loss is the acknowledged rows missing on the new primary once writes flow
//! again. Prints every run and the medians.
//!
//! Run: `cargo bench --bench pg_failover -- [--runs N] [--mode async|sync|both]` (default 5 runs,
//! both modes). `cargo test --bench pg_failover -- --runs 3` runs it from a debug build. Needs
//! root (it runs the servers through `runuser -u postgres`). Every wait has a deadline; a failed
//! run is reported, not dropped.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::pg::{Cluster, NameClient};

struct Run {
    rto_ms: f64,
    acked: usize,
    lost: usize,
    promoted: String,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

async fn one(sync: bool) -> Result<Run, String> {
    let c = Cluster::start(2, sync);
    let dns: SocketAddr = format!("127.0.0.1:{}", support::free_port("127.0.0.1")).parse().unwrap();
    let api = support::api_addr();
    let extra = if sync { "synchronous = true" } else { "" };
    let config = format!(
        "[daemon]\ndata_dir = \"{}\"\napi = \"{api}\"\n\n[dns]\nlisten = [\"{dns}\"]\nudp_workers = 1\n[[dns.zone]]\nname = \"example.test\"\nnameservers = {{ \"ns1.example.test\" = \"127.0.0.1\" }}\n[[dns.zone.record]]\nname = \"db\"\nservice = \"db\"\nttl = 1\n\n{}",
        c.tmp.path().join("data").display(),
        c.service_toml(extra, "")
    );
    let d = support::Daemon::start(c.tmp.path(), &config, api).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = d.service("db").await;
        let pg2 = s["targets"].as_array().map(|t| t.iter().any(|x| x["name"] == "pg2" && x["healthy"] == true)).unwrap_or(false);
        if s["active"] == "pg1" && pg2 {
            break;
        }
        if Instant::now() > deadline {
            return Err("the service did not settle on pg1 with pg2 healthy".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Arc<Mutex<Vec<(i64, IpAddr, Instant)>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..4i64 {
        let (stop, acks, port) = (stop.clone(), acks.clone(), c.port);
        tasks.push(tokio::spawn(async move {
            let mut client = NameClient::new(dns, "db.example.test", port);
            let (mut id, t0) = (w + 1, Instant::now());
            while !stop.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(90) {
                match client.exec(&format!("INSERT INTO acks VALUES ({id})")).await {
                    Ok(ip) => {
                        acks.lock().unwrap().push((id, ip, Instant::now()));
                        id += 4;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pg1 = c.nodes[0].ip;
    let killed = Instant::now();
    c.kill9(0);
    let deadline = killed + Duration::from_secs(60);
    let (rto, new_ip) = loop {
        let first = acks.lock().unwrap().iter().filter(|(_, ip, at)| *ip != pg1 && *at > killed).map(|(_, ip, at)| (*at, *ip)).min_by_key(|(at, _)| *at);
        if let Some((at, ip)) = first {
            break (at - killed, ip);
        }
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            return Err("no write through the name within 60 s of the kill".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let node = c.nodes.iter().position(|n| n.ip == new_ip).ok_or("acknowledged by an unknown address")?;
    let ids: Vec<String> = acks.lock().unwrap().iter().map(|(id, _, _)| id.to_string()).collect();
    let found: usize = c.psql(node, "app", &format!("SELECT count(*) FROM acks WHERE id IN ({})", ids.join(","))).parse().map_err(|e| format!("count: {e}"))?;
    Ok(Run { rto_ms: rto.as_secs_f64() * 1000.0, acked: ids.len(), lost: ids.len() - found, promoted: c.nodes[node].name.clone() })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let runs: usize = arg("--runs").and_then(|r| r.parse().ok()).unwrap_or(5);
    let modes: Vec<bool> = match arg("--mode").as_deref() {
        Some("async") => vec![false],
        Some("sync") => vec![true],
        _ => vec![false, true],
    };
    println!("PostgreSQL failover, kill -9 of the primary, 1 s checks, fall 3, 500 ms timeout, DNS TTL 1, 4 writers through the name");
    for sync in modes {
        let mode = if sync { "sync" } else { "async" };
        let (mut rtos, mut acked, mut lost, mut failed) = (Vec::new(), 0, 0, Vec::new());
        for i in 0..runs {
            match one(sync).await {
                Ok(r) => {
                    println!("  {mode} run {}: RTO {:.0} ms, promoted {}, acknowledged {}, lost {}", i + 1, r.rto_ms, r.promoted, r.acked, r.lost);
                    rtos.push(r.rto_ms);
                    acked += r.acked;
                    lost += r.lost;
                }
                Err(e) => {
                    println!("  {mode} run {}: FAILED: {e}", i + 1);
                    failed.push(e);
                }
            }
        }
        let (min, max) = (rtos.iter().copied().fold(f64::INFINITY, f64::min), rtos.iter().copied().fold(0.0, f64::max));
        println!(
            "{mode}: RTO median {:.0} ms (min {min:.0}, max {max:.0}) over {} runs; acknowledged writes lost: {lost} of {acked}; failed runs: {}",
            median(&mut rtos),
            runs - failed.len(),
            failed.len()
        );
    }
}
