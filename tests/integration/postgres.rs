//! PostgreSQL failover against real PostgreSQL 15 servers (Debian `postgresql-15`): a primary
//! and two streaming standbys on their own 127.x.y.z addresses, the daemon's DNS name
//! `db.example.test` for the application, writes and pgbench through that name.
//!
//! - async: `kill -9` the primary while the priority standby's receiver is cut off: it is
//!   fast-forwarded from the standby with more WAL and promoted, nothing acknowledged and
//!   received by a standby is lost, the other standby is repointed, pgbench works through the
//!   name again.
//! - sync: `synchronous = true` with `synchronous_standby_names`: writers through the name lose
//!   no acknowledged write across the kill; the old primary comes back fenced (read-only) and
//!   `understudy pg rejoin` makes it a standby of the new primary.
//!   The old primary's commit made before the fence is rewound away (`pg rejoin` checkpoints the
//!   new primary first, or PostgreSQL 15's `pg_rewind` may find "the same timeline").
//! - lag: a standby with replay paused fails its check beyond `max_lag` and is never promoted;
//!   with no failover at all, the `replication_lag` event and webhook fire and resolve when
//!   replay resumes, and the lag shows in the API, `/metrics` and `understudy status`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::pg::{APP_PASSWORD, BIN, Cluster, NameClient, as_postgres};
use crate::support::{Daemon, api_addr, free_port, wait_for};

fn daemon_config(c: &Cluster, api: SocketAddr, dns: SocketAddr, service_extra: &str) -> String {
    format!(
        "[daemon]\ndata_dir = \"{}\"\napi = \"{api}\"\n\n[dns]\nlisten = [\"{dns}\"]\nudp_workers = 1\n[[dns.zone]]\nname = \"example.test\"\nnameservers = {{ \"ns1.example.test\" = \"127.0.0.1\" }}\n[[dns.zone.record]]\nname = \"db\"\nservice = \"db\"\nttl = 1\n\n{}",
        c.tmp.path().join("data").display(),
        c.service_toml(service_extra, "")
    )
}

fn fence_line(c: &Cluster) -> String {
    format!("fence = [\"/bin/sh\", \"-c\", \"echo $0 >> {}\", \"{{target}}\"]", c.tmp.path().join("fence.log").display())
}

/// Start the daemon; wait until pg1 is active and `healthy` pass their checks.
async fn start(c: &Cluster, extra: &str, healthy: &[&str]) -> (Daemon, SocketAddr) {
    let dns: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1")).parse().unwrap();
    let api = api_addr();
    let d = Daemon::start(c.tmp.path(), &daemon_config(c, api, dns, extra), api).await;
    d.wait_active("db", "pg1", Duration::from_secs(30)).await;
    for &t in healthy {
        wait_for(Duration::from_secs(30), &format!("{t} healthy"), || async {
            let s = d.service("db").await;
            s["targets"].as_array().unwrap().iter().any(|x| x["name"] == t && x["healthy"] == true).then_some(())
        })
        .await;
    }
    (d, dns)
}

/// The last check reason the API shows for `target`.
async fn reason(d: &Daemon, target: &str) -> String {
    let s = d.service("db").await;
    s["targets"].as_array().unwrap().iter().find(|x| x["name"] == target).and_then(|x| x["last_check"]["reason"].as_str()).unwrap_or("").to_string()
}

fn pgbench(ip: &str, port: u16, args: &[&str]) -> String {
    let port = port.to_string();
    let pgbench = format!("{BIN}/pgbench");
    let pw = format!("PGPASSWORD={APP_PASSWORD}");
    let mut argv = vec!["env", pw.as_str(), pgbench.as_str(), "-h", ip, "-p", port.as_str(), "-U", "app"];
    argv.extend_from_slice(args);
    argv.push("app");
    as_postgres(&argv)
}

/// Writers through the name: each inserts increasing ids (writer w: w, w + n, ...) until
/// stopped (or 60 s / 100,000 rows), and keeps the ids the server acknowledged.
fn writers(dns: SocketAddr, port: u16, n: i64, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<Vec<i64>>> {
    (0..n)
        .map(|w| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut client = NameClient::new(dns, "db.example.test", port);
                let (mut acked, mut id, t0) = (Vec::new(), w + 1, Instant::now());
                while !stop.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(60) && id < 100_000 {
                    match client.exec(&format!("INSERT INTO acks VALUES ({id})")).await {
                        Ok(_) => {
                            acked.push(id);
                            id += n;
                        }
                        // Committed but never acknowledged (the primary died between its
                        // commit and the reply, and a standby had it): not counted, move on.
                        Err(e) if e.contains("duplicate key") => id += n,
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                acked
            })
        })
        .collect()
}

/// Insert `id` through the name until it works; the address that took it.
async fn first_write(dns: SocketAddr, port: u16, id: i64, within: Duration) -> std::net::IpAddr {
    let mut client = NameClient::new(dns, "db.example.test", port);
    let deadline = Instant::now() + within;
    loop {
        match client.exec(&format!("INSERT INTO acks VALUES ({id})")).await {
            Ok(ip) => return ip,
            Err(e) => assert!(Instant::now() < deadline, "no write through the name within {within:?}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count_present(c: &Cluster, node: usize, ids: &[i64]) -> usize {
    if ids.is_empty() {
        return 0;
    }
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    c.psql(node, "app", &format!("SELECT count(*) FROM acks WHERE id IN ({})", list.join(","))).parse().unwrap()
}

/// Decisions, health flips and postgres actuations, one line each (for failure messages).
fn story(events: &[serde_json::Value]) -> String {
    events
        .iter()
        .map(|e| &e["event"])
        .filter(|e| ["decision", "target_down", "target_up", "actuated"].contains(&e["kind"].as_str().unwrap_or("")))
        .map(|e| format!("{} {} {} {} {}", e["kind"], e["target"], e["to"], e["reason"], e["detail"]))
        .collect::<Vec<_>>()
        .join("\n")
}

fn actuated(events: &[serde_json::Value]) -> Vec<String> {
    events.iter().filter(|e| e["event"]["kind"] == "actuated" && e["event"]["actuator"] == "postgres").map(|e| format!("{} {}", e["event"]["ok"], e["event"]["detail"].as_str().unwrap_or(""))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_failover_fast_forwards_the_chosen_standby_promotes_it_and_repoints_the_other() {
    let c = Cluster::start(2, false);
    // No periodic re-verify in this test: it would (rightly) repoint the standby cut off below.
    let (d, dns) = start(&c, &format!("verify_every = \"1h\"\n{}", fence_line(&c)), &["pg2", "pg3"]).await;
    let pg1 = c.nodes[0].ip.to_string();
    let resolved = understudy::dns::client::resolve(dns, "db.example.test", Duration::from_secs(1)).await.unwrap();
    assert_eq!(resolved.to_string(), pg1, "{}", story(&d.events().await));
    pgbench(&pg1, c.port, &["-i", "-s", "1", "-q"]);
    let out = pgbench(&pg1, c.port, &["-c", "2", "-T", "2", "-n"]);
    assert!(out.contains("number of failed transactions: 0"), "{out}");

    // Cut pg2 (the standby first in priority order) off the primary; pg3 keeps streaming.
    c.psql(1, "postgres", "ALTER SYSTEM SET primary_conninfo = ''");
    c.psql(1, "postgres", "SELECT pg_reload_conf()");
    wait_for(Duration::from_secs(20), "pg2's WAL receiver gone", || async { (c.psql(1, "postgres", "SELECT count(*) FROM pg_stat_wal_receiver") == "0").then_some(()) }).await;
    let stop = Arc::new(AtomicBool::new(false));
    let w = writers(dns, c.port, 1, stop.clone());
    wait_for(Duration::from_secs(20), "300 rows on pg3", || async { (c.psql(2, "app", "SELECT count(*) FROM acks").parse::<u64>().unwrap() >= 300).then_some(()) }).await;
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<i64> = w.into_iter().next().unwrap().await.unwrap();
    let on_pg3 = c.psql(2, "app", "SELECT count(*) FROM acks").parse::<usize>().unwrap();
    let on_pg2_before = c.psql(1, "app", "SELECT count(*) FROM acks").parse::<usize>().unwrap();
    assert!(on_pg2_before < on_pg3, "pg2 should be behind pg3: {on_pg2_before} vs {on_pg3}");
    let before = d.events().await;
    let decisions = before.iter().filter(|e| e["event"]["kind"] == "decision").count();
    assert_eq!(decisions, 1, "a decision before the kill:\n{}", story(&before));

    let killed = Instant::now();
    c.kill9(0);
    d.wait_active("db", "pg2", Duration::from_secs(30)).await;
    let ip = first_write(dns, c.port, 1_000_001, Duration::from_secs(60)).await;
    let rto = killed.elapsed();
    assert_eq!(ip, c.nodes[1].ip);
    let found = count_present(&c, 1, &acked);
    println!("async failover: acknowledged {} writes before the kill, {found} found on the promoted pg2 (pg3 had {on_pg3} rows, pg2 {on_pg2_before} before the fast-forward); first write through the name {} ms after the kill", acked.len(), rto.as_millis());
    assert_eq!(found, acked.len(), "acknowledged writes that pg3 had were lost");
    // The actuator's step is recorded when the whole step ends (promotion, first write,
    // repointing the other standby), which can be after clients already write through the name.
    let promoted = |a: &String| a.starts_with("true") && a.contains("fast-forwarded pg2 from pg3") && a.contains("promoted pg2");
    wait_for(Duration::from_secs(60), "the postgres actuator's promotion of pg2 (fast-forwarded from pg3) in the events", || async {
        actuated(&d.events().await).iter().any(promoted).then_some(())
    })
    .await;
    assert!(std::fs::read_to_string(c.tmp.path().join("fence.log")).unwrap_or_default().lines().any(|l| l == "pg1"), "the fence command did not run for pg1");

    // pg3 follows pg2 now, and gets what is written there.
    let want = c.conninfo("pg3", 1);
    wait_for(Duration::from_secs(30), "pg3 repointed and streaming from pg2", || async {
        let r = c.psql(2, "postgres", "SELECT current_setting('primary_conninfo') || '|' || coalesce((SELECT status || ' ' || sender_host FROM pg_stat_wal_receiver), '')");
        (r == format!("{want}|streaming {}", c.nodes[1].ip)).then_some(())
    })
    .await;
    wait_for(Duration::from_secs(30), "the new write on pg3", || async { (c.psql(2, "app", "SELECT count(*) FROM acks WHERE id = 1000001") == "1").then_some(()) }).await;
    let resolved = understudy::dns::client::resolve(dns, "db.example.test", Duration::from_secs(1)).await.unwrap().to_string();
    let out = pgbench(&resolved, c.port, &["-c", "2", "-T", "2", "-n"]);
    assert!(out.contains("number of failed transactions: 0"), "{out}");
    assert_eq!(c.in_recovery(1), Some(false));
    assert_eq!(c.in_recovery(2), Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_failover_loses_no_acknowledged_write_and_the_old_primary_comes_back_fenced_then_rejoins() {
    let c = Cluster::start(2, true);
    let (d, dns) = start(&c, &format!("synchronous = true\n{}", fence_line(&c)), &["pg2"]).await;
    // pg3 is only a potential synchronous standby: not eligible with synchronous = true.
    wait_for(Duration::from_secs(20), "pg3 failing as not synchronous", || async { reason(&d, "pg3").await.contains("not a synchronous standby").then_some(()) }).await;

    let stop = Arc::new(AtomicBool::new(false));
    let w = writers(dns, c.port, 4, stop.clone());
    wait_for(Duration::from_secs(20), "200 rows", || async { (c.psql(0, "app", "SELECT count(*) FROM acks").parse::<u64>().unwrap() >= 200).then_some(()) }).await;
    c.kill9(0);
    d.wait_active("db", "pg2", Duration::from_secs(30)).await;
    // Writes go on through the name once pg3 follows pg2 (and is its synchronous standby).
    wait_for(Duration::from_secs(60), "rows written on pg2", || async { (c.psql(1, "app", "SELECT count(*) FROM acks").parse::<u64>().unwrap() >= 400).then_some(()) }).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for h in w {
        acked.extend(h.await.unwrap());
    }
    let found = count_present(&c, 1, &acked);
    println!("sync failover: acknowledged {} writes in all, {found} found on the promoted pg2, lost {}", acked.len(), acked.len() - found);
    assert_eq!(found, acked.len(), "synchronous mode lost acknowledged writes");

    // The old primary comes back on its own (old timeline): it is fenced, not written to.
    c.pg_ctl(0, "start");
    let pg1 = c.nodes[0].ip;
    let login = understudy::pg::client::Login { user: "app".into(), password: Some(APP_PASSWORD.into()), dbname: "app".into() };
    // A client that still finds the old primary writes to it until the fence: its commit
    // (local only: no synchronous standby follows pg1) is what `pg rejoin` must rewind away.
    let diverged = std::sync::atomic::AtomicBool::new(false);
    let refused = wait_for(Duration::from_secs(30), "pg1 refusing writes", || async {
        let conn = understudy::pg::client::connect(pg1, c.port, &login, Duration::from_secs(1)).await.ok()?;
        let write = "BEGIN; SET LOCAL synchronous_commit = local; INSERT INTO acks VALUES (-1); COMMIT";
        match tokio::time::timeout(Duration::from_secs(2), understudy::pg::client::rows(&conn, write)).await {
            Ok(Err(e)) if e.contains("read-only") => Some(e),
            Ok(Ok(_)) => {
                diverged.store(true, Ordering::Relaxed);
                None
            }
            _ => None,
        }
    })
    .await;
    println!("old primary: {refused}; a write committed on it before the fence: {}", diverged.load(Ordering::Relaxed));
    assert_eq!(d.active("db").await.as_deref(), Some("pg2"));
    wait_for(Duration::from_secs(20), "pg1's check failing as fenced", || async { reason(&d, "pg1").await.contains("fenced").then_some(()) }).await;

    // pg rejoin: pg_rewind, standby of pg2, streaming.
    let bin = env!("CARGO_BIN_EXE_understudy");
    let cfg = c.tmp.path().join("understudy.toml");
    let out = as_postgres(&[bin, "pg", "rejoin", "db", "pg1", "-c", cfg.to_str().unwrap(), "-D", c.nodes[0].dir.to_str().unwrap(), "--bindir", BIN]);
    println!("pg rejoin:\n{out}");
    assert!(out.contains("streaming from pg2"), "{out}");
    assert_eq!(c.in_recovery(0), Some(true));
    let max = c.psql(1, "app", "SELECT max(id) FROM acks");
    wait_for(Duration::from_secs(30), "pg1 replicating pg2's rows", || async { (c.psql(0, "app", "SELECT max(id) FROM acks") == max).then_some(()) }).await;
    assert_eq!(c.psql(0, "app", "SELECT count(*) FROM acks WHERE id = -1"), "0");
    wait_for(Duration::from_secs(30), "pg1 passing its check as a standby", || async { reason(&d, "pg1").await.starts_with("standby").then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_beyond_max_lag_is_alerted_and_never_promoted() {
    let c = Cluster::start(2, false);
    let (d, dns) = start(&c, "max_lag = \"2s\"", &["pg2", "pg3"]).await;
    c.psql(1, "postgres", "SELECT pg_wal_replay_pause()");
    let stop = Arc::new(AtomicBool::new(false));
    let w = writers(dns, c.port, 1, stop.clone());
    let down = wait_for(Duration::from_secs(30), "a target_down event for pg2 naming the lag", || async {
        d.events().await.into_iter().find(|e| e["event"]["kind"] == "target_down" && e["event"]["target"] == "pg2")
    })
    .await;
    let why = down["event"]["reason"].as_str().unwrap_or("").to_string();
    println!("lag alert: {why}");
    assert!(why.contains("exceeds max_lag 2s") && why.contains("replay paused"), "{why}");
    c.kill9(0);
    d.wait_active("db", "pg3", Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    for h in w {
        h.await.unwrap();
    }
    // Nothing brings pg2 back while it lags: it is never promoted.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(d.active("db").await.as_deref(), Some("pg3"));
    assert_eq!(c.in_recovery(1), Some(true), "the lagging standby was promoted");
    assert!(reason(&d, "pg2").await.contains("exceeds max_lag"), "{}", reason(&d, "pg2").await);
}

/// A target's `last_check.lag` in the API.
async fn lag(d: &Daemon, target: &str) -> Option<serde_json::Value> {
    let s = d.service("db").await;
    s["targets"].as_array().unwrap().iter().find(|x| x["name"] == target).map(|x| x["last_check"]["lag"].clone()).filter(|l| !l.is_null())
}

/// `understudy_replication_lag_seconds` of `target` in `/metrics`.
async fn lag_metric(d: &Daemon, target: &str) -> Option<f64> {
    let text = crate::support::http().get(format!("{}/metrics", d.api)).send().await.ok()?.text().await.ok()?;
    let prefix = format!("understudy_replication_lag_seconds{{service=\"db\",target=\"{target}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_standby_raises_the_lag_alert_outside_any_incident_and_resolves_it_when_replay_resumes() {
    let c = Cluster::start(2, false);
    let mut rx = crate::notify::Receiver::new();
    rx.start().await;
    let hook = format!("\n[[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\ngroup_window = \"100ms\"\n", rx.url("/hook"));
    let dns: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1")).parse().unwrap();
    let api = api_addr();
    let d = Daemon::start(c.tmp.path(), &format!("{}{hook}", daemon_config(&c, api, dns, "max_lag = \"2s\"")), api).await;
    d.wait_active("db", "pg1", Duration::from_secs(30)).await;
    // The lag is data: in the API and the metrics for a standby, not for the primary.
    let caught_up = wait_for(Duration::from_secs(30), "pg2's lag in the API", || lag(&d, "pg2")).await;
    assert!(caught_up["bytes"].is_u64() && caught_up["seconds"].as_f64().is_some_and(|s| s < 2.0), "{caught_up}");
    assert_eq!(lag(&d, "pg1").await, None, "a primary has no lag");
    wait_for(Duration::from_secs(10), "pg2's lag gauge", || lag_metric(&d, "pg2")).await;

    c.psql(1, "postgres", "SELECT pg_wal_replay_pause()");
    let stop = Arc::new(AtomicBool::new(false));
    let w = writers(dns, c.port, 1, stop.clone());
    let alert = wait_for(Duration::from_secs(30), "a replication_lag event for pg2", || async {
        d.events().await.into_iter().map(|e| e["event"].clone()).find(|e| e["kind"] == "replication_lag" && e["target"] == "pg2" && e["resolved"].is_null())
    })
    .await;
    println!("lag alert: {alert}");
    assert!(alert["seconds"].as_f64().is_some_and(|s| s > 2.0) && alert["max_lag"] == "2s", "{alert}");
    let open = rx.wait("/hook", "the replication_lag webhook", |v| v["event"] == "replication_lag" && v["phase"] == "open").await.json();
    assert_eq!(open["target"], "pg2", "{open}");
    // No incident: the primary is fine, traffic never moved.
    let s = d.service("db").await;
    assert!(s["open_incident"].is_null() && s["active"] == "pg1", "{s}");
    let behind = lag(&d, "pg2").await.unwrap();
    assert!(behind["seconds"].as_f64().unwrap() > 2.0 && behind["bytes"].as_u64().unwrap() > 0, "{behind}");
    let gauge = lag_metric(&d, "pg2").await.unwrap();
    assert!(gauge > 2.0, "understudy_replication_lag_seconds for pg2: {gauge}");
    let status = String::from_utf8_lossy(&d.cli(&["status"]).stdout).to_string();
    let line = status.lines().find(|l| l.trim_start().trim_start_matches('*').trim_start().starts_with("pg2 ")).unwrap_or_default().to_string();
    assert!(status.contains("LAG") && line.contains(" s / "), "{status}");

    c.psql(1, "postgres", "SELECT pg_wal_replay_resume()");
    let resolved = wait_for(Duration::from_secs(30), "the replication_lag event resolved", || async {
        d.events().await.into_iter().map(|e| e["event"].clone()).find(|e| e["kind"] == "replication_lag" && e["target"] == "pg2" && e["resolved"] == true)
    })
    .await;
    println!("lag recovered: {resolved}");
    let close = rx.wait("/hook", "the replication_lag webhook resolving", |v| v["event"] == "replication_lag" && v["phase"] == "close").await.json();
    assert_eq!(close["target"], "pg2", "{close}");
    stop.store(true, Ordering::Relaxed);
    for h in w {
        h.await.unwrap();
    }
    // One alert and one recovery: no flapping while replay caught up.
    let lag_events = d.events().await.into_iter().filter(|e| e["event"]["kind"] == "replication_lag" && e["event"]["target"] == "pg2").count();
    assert_eq!(lag_events, 2, "{}", story(&d.events().await));
}
