//! A restarted or reloaded daemon serves the decision it had made, from its first answer: never
//! the primary it had failed away from (issue: "restarts serve the dead primary"). The real
//! binary, real nginx, and `dig` as the client.

use std::time::{Duration, Instant};

use super::common::*;
use super::e2e::dig_www;
use super::support::require;

const DIG: &str = "/usr/bin/dig";
const PRIMARY: &str = "127.0.0.2";
const BACKUP: &str = "127.0.0.3";

type Seen = std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>;

/// dig www.example.test every 50 ms until `stop` is set or `limit` passes; every answer goes to
/// `seen`, in order.
fn dig_loop(ip: &'static str, port: u16, limit: Duration, stop: std::sync::Arc<std::sync::atomic::AtomicBool>, seen: Seen) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let end = Instant::now() + limit;
        while Instant::now() < end && !stop.load(std::sync::atomic::Ordering::Relaxed) {
            // Answer lines only: while the daemon is down dig prints ";; communications error".
            for line in dig_www(ip, port).await.iter().filter(|l| l.contains(" IN A ")) {
                seen.lock().unwrap().push((Instant::now(), line.rsplit(' ').next().unwrap_or_default().to_string()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_failover_never_serves_the_dead_primary() {
    require(DIG, "bind9-dnsutils");
    let (dir, port, mut primary, _backup) = two_nginx().await;
    let dns_ip = "127.0.0.25";
    let dns_port = super::support::free_port(dns_ip);
    let api = api_addr();
    // A long hold: nothing may fail back during the test.
    let cfg = two_target_config(
        &dir.path().join("data"),
        api,
        port,
        200,
        "60s",
        &dns_block(&format!("{dns_ip}:{dns_port}")),
    );
    let mut d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5))
        .await;
    primary.kill();
    d.wait_active("www", "backup", Duration::from_secs(5)).await;
    // The record's 5 s TTL, or the 1 s suspicion TTL when a loaded machine made one of the
    // backup's checks pass slowly (half the timeout or more).
    let answer = dig_www(dns_ip, dns_port).await;
    assert!(
        [5, 1].iter().any(|ttl| answer == vec![format!("www.example.test. {ttl} IN A {BACKUP}")]),
        "{answer:?}"
    );

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen: Seen = Default::default();
    let digs = dig_loop(dns_ip, dns_port, Duration::from_secs(60), stop.clone(), seen.clone());
    d.terminate().await;
    let restarted = Instant::now();
    d.restart().await;
    let epoch = d.service("www").await["epoch"].as_u64().unwrap();
    wait_for(Duration::from_secs(5), "the reconcile decision after the restart", || async {
        let ev = d.events().await;
        ev.iter().any(|e| e["event"]["reason"] == "reconcile").then_some(())
    })
    .await;
    // Watch the first answers and the first checks' results after the restart: at least 1.5 s
    // and at least 10 answers (fewer digs get through on a loaded machine).
    let watched = Instant::now();
    wait_for(Duration::from_secs(30), "10 answers after the restart", || async {
        let n = seen.lock().unwrap().iter().filter(|(t, _)| *t >= restarted).count();
        (n >= 10 && watched.elapsed() >= Duration::from_millis(1500)).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    digs.await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let after: Vec<&str> = seen.iter().filter(|(t, _)| *t >= restarted).map(|(_, a)| a.as_str()).collect();
    assert!(
        after.len() >= 10,
        "dig got only {} answers after the restart: {after:?}",
        after.len()
    );
    assert!(
        !after.contains(&PRIMARY),
        "the dead primary was served after the restart: {after:?}"
    );
    assert!(
        after.iter().all(|a| *a == BACKUP),
        "answers after the restart: {after:?}"
    );
    assert_eq!(d.active("www").await.as_deref(), Some("backup"));
    let svc = d.service("www").await;
    assert_eq!(
        svc["targets"][0]["health"], "down",
        "the dead primary's restored health: {svc}"
    );
    assert!(svc["epoch"].as_u64().unwrap() >= epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_added_by_reload_serves_the_current_decision_at_once() {
    require(DIG, "bind9-dnsutils");
    let (dir, port, mut primary, _backup) = two_nginx().await;
    let dns_ip = "127.0.0.26";
    let dns_port = super::support::free_port(dns_ip);
    let api = api_addr();
    let listen = format!("{dns_ip}:{dns_port}");
    // At first the zone has no failover record for www, only a static one.
    let without = dns_block(&listen).replace(
        "service = \"www\"\nttl = 5",
        "type = \"TXT\"\nvalues = [\"\\\"not yet\\\"\"]",
    );
    assert_ne!(without, dns_block(&listen));
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "60s", &without);
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5))
        .await;
    primary.kill();
    d.wait_active("www", "backup", Duration::from_secs(5)).await;
    assert!(
        dig_www(dns_ip, dns_port).await.is_empty(),
        "no A record yet"
    );

    let cfg = two_target_config(
        &dir.path().join("data"),
        api,
        port,
        200,
        "60s",
        &dns_block(&listen),
    );
    std::fs::write(&d.config, cfg).unwrap();
    d.signal(libc::SIGHUP);
    let first = wait_for(
        Duration::from_secs(5),
        "the new record to be served",
        || async {
            let a = dig_www(dns_ip, dns_port).await;
            (!a.is_empty()).then_some(a)
        },
    )
    .await;
    assert_eq!(
        first,
        vec![format!("www.example.test. 5 IN A {BACKUP}")],
        "the first answer is the current decision, never the primary"
    );
}
