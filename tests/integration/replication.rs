//! The `redis` and `mysql` replication checks against real servers with real replication, on
//! random 127.a.b.x addresses: a Redis primary and replica (two `redis-server`s), a MariaDB
//! primary and replica (`mariadb-install-db` into a temporary directory, two `mariadbd`s with
//! GTID replication). Each check is built from a config file the way the daemon builds it
//! (`config::from_str` then `probe::build`) and run directly.
//!
//! Every server is started by the test and stopped by PID when its guard drops.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use understudy::probe::{Probe, Verdict};

use crate::support::{Daemon, api_addr, free_port_on, wait_for};

pub const REDIS_PASSWORD: &str = "redis-secret";
const MYSQL_PASSWORD: &str = "mon-secret";

/// `n` random addresses 127.a.b.{11,12,..}, so parallel tests never share one.
pub fn addresses(n: usize) -> Vec<String> {
    let a = 30 + (rand::random::<u8>() % 200);
    let b = rand::random::<u8>();
    (0..n).map(|i| format!("127.{a}.{b}.{}", 11 + i)).collect()
}

fn binary(path: &str, package: &str) -> &'static str {
    assert!(Path::new(path).exists(), "{path} is missing: install Debian's {package} (scripts/install-test-deps.sh)");
    Box::leak(path.to_string().into_boxed_str())
}

/// A `redis-server` (password `REDIS_PASSWORD`), killed by PID on drop.
pub struct Redis {
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Redis {
    /// Start on `ip`:`port`, as a replica of `primary` when given; wait until it answers PING.
    pub async fn start(dir: &Path, ip: &str, port: u16, primary: Option<SocketAddr>) -> Redis {
        let addr = SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port);
        let data = dir.join(format!("redis-{ip}-{port}"));
        std::fs::create_dir_all(&data).unwrap();
        let mut cmd = Command::new(binary("/usr/bin/redis-server", "redis-server"));
        cmd.args(["--bind", ip, "--port", &port.to_string(), "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no"])
            .args(["--requirepass", REDIS_PASSWORD, "--masterauth", REDIS_PASSWORD, "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&data)
            .arg("--logfile")
            .arg(data.join("redis.log"));
        if let Some(p) = primary {
            cmd.args(["--replicaof", &p.ip().to_string(), &p.port().to_string()]);
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start redis-server");
        let r = Redis { addr, child: Some(child) };
        wait_for(Duration::from_secs(10), &format!("redis-server on {addr} (see {})", data.display()), || async move {
            let mut c = understudy::probe::redis::connect(addr, None, Some(REDIS_PASSWORD), Duration::from_secs(1)).await.ok()?;
            c.ping().await.ok()
        })
        .await;
        r
    }

    /// Run one command on it.
    pub async fn command(&self, args: &[&str]) -> understudy::probe::redis::Reply {
        let mut c = understudy::probe::redis::connect(self.addr, None, Some(REDIS_PASSWORD), Duration::from_secs(2)).await.expect("connect to redis");
        c.command(args).await.expect("redis command")
    }

    /// Kill -9 and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL to this child's PID
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The probes of `service`'s check for each of its targets, built as the daemon builds them.
fn probes(config: &str, dir: &Path) -> Vec<Arc<dyn Probe>> {
    let file = dir.join("understudy.toml");
    std::fs::write(&file, config).unwrap();
    let (cfg, _) = understudy::config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let svc = &cfg.services[0];
    svc.targets.iter().map(|t| understudy::probe::build(&svc.check, t).expect("build probe")).collect()
}

async fn check(p: &Arc<dyn Probe>) -> Verdict {
    tokio::time::timeout(Duration::from_secs(5), p.check()).await.unwrap_or_else(|_| Verdict::fail("test: check timed out"))
}

fn service(kind: &str, ips: &[String], port: u16, max_lag: &str, extra: &str, api: SocketAddr, dir: &Path) -> String {
    format!(
        "[daemon]\ndata_dir = \"{}\"\napi = \"{}\"\n[[service]]\nname = \"replicas\"\nmax_lag = \"{max_lag}\"\n[service.check]\nkind = \"{kind}\"\nport = {port}\npassword_file = \"pw\"\ninterval = \"1s\"\ntimeout = \"900ms\"\n{extra}\
         [[service.target]]\nname = \"one\"\naddress = \"{}\"\n[[service.target]]\nname = \"two\"\naddress = \"{}\"\n",
        dir.join("data").display(),
        api,
        ips[0],
        ips[1]
    )
}

/// Median of `n` checks' wall time, in milliseconds.
async fn median_check_ms(p: &Arc<dyn Probe>, n: usize) -> f64 {
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = std::time::Instant::now();
        assert!(check(p).await.ok);
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    ms[n / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_replica_passes_then_fails_when_it_stops_applying_and_when_its_primary_dies() {
    let tmp = tempfile::tempdir().unwrap();
    let ips = addresses(2);
    let port = free_port_on(&[&ips[0], &ips[1]]);
    let mut primary = Redis::start(tmp.path(), &ips[0], port, None).await;
    let replica = Redis::start(tmp.path(), &ips[1], port, Some(primary.addr)).await;
    std::fs::write(tmp.path().join("pw"), format!("{REDIS_PASSWORD}\n")).unwrap();
    let p = probes(&service("redis", &ips, port, "2s", "", api_addr(), tmp.path()), tmp.path());
    for i in 0..50 {
        primary.command(&["SET", &format!("key{i}"), "value"]).await;
    }

    let v = check(&p[0]).await;
    assert!(v.ok && v.reason.starts_with("primary at offset "), "{v:?}");
    let v = wait_for(Duration::from_secs(15), "the replica to pass, caught up", || async {
        let v = check(&p[1]).await;
        (v.ok && v.reason.starts_with("replica, 0 bytes / 0.0 s behind (link up to")).then_some(v)
    })
    .await;
    println!("replica: {}", v.reason);
    println!("redis replica check (2 connections, 6 round trips with AUTH), median of 20: {:.2} ms", median_check_ms(&p[1], 20).await);

    // The replica stops applying its replication stream (CLIENT PAUSE WRITE pauses it, and
    // INFO is still served) while the primary takes writes: its lag grows with the clock, the
    // link stays up, and past max_lag it fails.
    replica.command(&["CLIENT", "PAUSE", "20000", "WRITE"]).await;
    for i in 0..50 {
        primary.command(&["SET", &format!("late{i}"), "value"]).await;
    }
    let v = wait_for(Duration::from_secs(15), "the paused replica to fail past max_lag", || async {
        let v = check(&p[1]).await;
        (!v.ok).then_some(v)
    })
    .await;
    println!("paused replica: {}", v.reason);
    assert!(v.reason.starts_with("replica lag ") && v.reason.contains("exceeds max_lag 2s (link up to"), "{v:?}");
    let bytes: u64 = v.reason["replica lag ".len()..].split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(bytes > 50 * 10, "the 50 writes are behind: {v:?}");
    replica.command(&["CLIENT", "UNPAUSE"]).await;
    wait_for(Duration::from_secs(15), "the replica to catch up and pass", || async {
        let v = check(&p[1]).await;
        (v.ok && v.reason.starts_with("replica, 0 bytes")).then_some(())
    })
    .await;

    // The primary dies: the replica's link goes down and its data ages; past max_lag it fails.
    primary.kill();
    let v = wait_for(Duration::from_secs(15), "the replica to fail past max_lag", || async {
        let v = check(&p[1]).await;
        (!v.ok).then_some(v)
    })
    .await;
    println!("replica after the primary's death: {}", v.reason);
    assert!(v.reason.starts_with("replica lag ") && v.reason.contains("exceeds max_lag 2s"), "{v:?}");
    assert!(v.reason.contains("down for") && v.reason.contains("primary unreachable from here"), "{v:?}");
}

/// A MariaDB server in a temporary directory, run as root (`--user=root`), killed on drop.
struct Maria {
    dir: PathBuf,
    child: Option<Child>,
}

const MARIADB_COMMON: &[&str] = &["--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M", "--skip-name-resolve", "--user=root"];

impl Maria {
    async fn start(dir: PathBuf, ip: &str, port: u16, server_id: u32, binlog: bool) -> Maria {
        let addr = SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port);
        let mut cmd = Command::new(binary("/usr/sbin/mariadbd", "mariadb-server"));
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--log-error={}", dir.join("error.log").display()))
            .arg(format!("--bind-address={ip}"))
            .arg(format!("--port={port}"))
            .arg(format!("--server-id={server_id}"))
            .args(MARIADB_COMMON);
        if binlog {
            cmd.arg(format!("--log-bin={}", dir.join("data/bin").display())).arg("--binlog-format=ROW");
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start mariadbd");
        let m = Maria { dir, child: Some(child) };
        let what = format!("mariadbd on {addr} (see {})", m.dir.join("error.log").display());
        wait_for(Duration::from_secs(30), &what, || async { m.try_sql("SELECT 1").ok() }).await;
        m
    }

    fn try_sql(&self, q: &str) -> Result<String, String> {
        let out = Command::new("/usr/bin/mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .args(["-u", "root", "-N", "-B", "-e", q])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() { Ok(String::from_utf8_lossy(&out.stdout).into_owned()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
    }

    fn sql(&self, q: &str) -> String {
        self.try_sql(q).unwrap_or_else(|e| panic!("{q}: {e}"))
    }
}

impl Drop for Maria {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL to this child's PID
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_replica_passes_fails_on_a_stopped_sql_thread_and_past_max_lag() {
    let tmp = tempfile::tempdir().unwrap();
    let ips = addresses(2);
    let port = free_port_on(&[&ips[0], &ips[1]]);
    // One install, copied before either server starts: the replica begins from the same data.
    let (d1, d2) = (tmp.path().join("m1"), tmp.path().join("m2"));
    std::fs::create_dir_all(&d1).unwrap();
    let out = Command::new(binary("/usr/bin/mariadb-install-db", "mariadb-server"))
        .arg("--no-defaults")
        .arg(format!("--datadir={}", d1.join("data").display()))
        .args(["--auth-root-authentication-method=socket", "--skip-test-db", "--innodb-log-file-size=8M", "--user=root"])
        .output()
        .expect("mariadb-install-db");
    assert!(out.status.success(), "mariadb-install-db: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let cp = Command::new("cp").arg("-a").arg(&d1).arg(&d2).status().unwrap();
    assert!(cp.success());
    let primary = Maria::start(d1, &ips[0], port, 1, true).await;
    let replica = Maria::start(d2, &ips[1], port, 2, false).await;
    // Least privileges of the check: SLAVE MONITOR (SHOW SLAVE STATUS) and BINLOG MONITOR (the
    // source's SHOW MASTER STATUS, for bytes behind counted from the source).
    primary.sql(&format!(
        "CREATE USER 'repl'@'%' IDENTIFIED BY 'repl-secret'; GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';
         CREATE USER 'understudy'@'%' IDENTIFIED BY '{MYSQL_PASSWORD}'; GRANT SLAVE MONITOR, BINLOG MONITOR ON *.* TO 'understudy'@'%';"
    ));
    replica.sql(&format!(
        "CHANGE MASTER TO MASTER_HOST='{}', MASTER_PORT={port}, MASTER_USER='repl', MASTER_PASSWORD='repl-secret', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE;",
        ips[0]
    ));
    std::fs::write(tmp.path().join("pw"), format!("{MYSQL_PASSWORD}\n")).unwrap();
    let api = api_addr();
    let config = service("mysql", &ips, port, "2s", "user = \"understudy\"\n", api, tmp.path());
    let p = probes(&config, tmp.path());

    let v = check(&p[0]).await;
    assert_eq!((v.ok, v.reason.as_ref()), (true, "primary (no replica status)"), "{v:?}");
    // The replica passes once the user it logs in as has been replicated to it.
    let v = wait_for(Duration::from_secs(20), "the replica to pass", || async {
        let v = check(&p[1]).await;
        v.ok.then_some(v)
    })
    .await;
    println!("replica: {}", v.reason);
    assert!(v.reason.starts_with("replica, ") && v.reason.contains("I/O and SQL threads running"), "{v:?}");
    assert!(v.reason.contains(", source at bin.0"), "the source's binlog position is read: {v:?}");
    println!("mysql replica check (replica: login + SHOW REPLICA STATUS; source: login + SHOW MASTER STATUS), median of 20: {:.2} ms", median_check_ms(&p[1], 20).await);
    // The daemon runs the same check: the API shows its kind and the replica eligible.
    let daemon = Daemon::start(tmp.path(), &config, api).await;
    let target = |svc: &serde_json::Value, name: &str| svc["targets"].as_array().unwrap().iter().find(|t| t["name"] == name).cloned().unwrap();
    wait_for(Duration::from_secs(10), "the daemon to see the replica up", || async {
        let svc = daemon.service("replicas").await;
        (svc["check"]["kind"] == "mysql" && target(&svc, "two")["eligible"] == true).then_some(())
    })
    .await;
    // Its lag is data too: the caught-up replica is 0 bytes behind in the API.
    let svc = daemon.service("replicas").await;
    assert_eq!(target(&svc, "two")["last_check"]["lag"]["bytes"], 0, "{}", target(&svc, "two"));

    // The SQL thread stopped: the check names it.
    replica.sql("STOP REPLICA SQL_THREAD");
    let v = check(&p[1]).await;
    println!("SQL thread stopped: {}", v.reason);
    assert!(!v.ok && v.reason.starts_with("replica SQL thread not running (Slave_SQL_Running: No)"), "{v:?}");
    replica.sql("START REPLICA SQL_THREAD");
    wait_for(Duration::from_secs(10), "the replica to pass again", || async { check(&p[1]).await.ok.then_some(()) }).await;

    // The replica applies events 60 s late (MASTER_DELAY): after a write it is past max_lag.
    replica.sql("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY=60; START SLAVE;");
    primary.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1), (2), (3);");
    let v = wait_for(Duration::from_secs(20), "the delayed replica to fail past max_lag", || async {
        let v = check(&p[1]).await;
        (!v.ok).then_some(v)
    })
    .await;
    println!("delayed replica: {}", v.reason);
    assert!(v.reason.starts_with("replica lag ") && v.reason.contains("exceeds max_lag 2s"), "{v:?}");
    // The engine: the lagging replica is down and not eligible, with its lag in the API.
    let t = wait_for(Duration::from_secs(15), "the daemon to mark the delayed replica down", || async {
        let t = target(&daemon.service("replicas").await, "two");
        (t["healthy"] == false && t["eligible"] == false).then_some(t)
    })
    .await;
    let reason = t["last_check"]["reason"].as_str().unwrap_or_default().to_string();
    println!("API: two = {reason}");
    assert!(reason.contains("exceeds max_lag 2s"), "{t}");
}
