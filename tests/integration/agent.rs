//! `understudy agent` (the application health agent) as a process, against real peers on
//! loopback: a PostgreSQL 15 primary (`support::pg`), a `redis-server`, nginx standing in for
//! the application, an exec check, and a 2 MiB tmpfs for the disk check (root: `mount`).
//! All parts pass: 200; the tmpfs filled: 503 naming `disk`; Redis stopped: 503 naming `redis`.
//! Also `--check-config` on a bad file: exit 2 with file, line and key.
//!
//! Every process is stopped by PID when its guard drops; the tmpfs is unmounted on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::replication::{REDIS_PASSWORD, Redis, addresses};
use crate::support::pg::{Cluster, MON_PASSWORD};
use crate::support::{Nginx, free_port, free_port_on, http, understudy_bin, wait_for};

/// A tmpfs mounted on a directory of the test's, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).output().expect("mount");
        assert!(out.status.success(), "mount -t tmpfs (needs root): {}", String::from_utf8_lossy(&out.stderr));
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The agent process, killed by PID on drop.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn health(url: &str) -> Option<(u16, serde_json::Value)> {
    let resp = http().get(url).send().await.ok()?;
    let code = resp.status().as_u16();
    Some((code, resp.json().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_composes_postgres_redis_disk_exec_and_http() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = Cluster::start(0, false);
    let ips = addresses(2);
    let port = free_port_on(&[&ips[0]]);
    let mut redis = Redis::start(tmp.path(), &ips[0], port, None).await;
    let app_port = free_port(&ips[1]);
    let mut app = Nginx::new(tmp.path(), "app", &ips[1], app_port);
    app.start().await;
    let disk = Tmpfs::mount(&tmp.path().join("disk"), "2m");
    std::fs::write(tmp.path().join("pg.pass"), format!("{MON_PASSWORD}\n")).unwrap();
    std::fs::write(tmp.path().join("redis.pass"), format!("{REDIS_PASSWORD}\n")).unwrap();
    let flag = tmp.path().join("ready");
    std::fs::write(&flag, "").unwrap();
    let listen = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let config = format!(
        "listen = \"{listen}\"\ncache = \"0s\"\ntimeout = \"3s\"\n\
         [[check]]\nname = \"db\"\nkind = \"postgres\"\naddress = \"{}\"\nport = {}\nuser = \"understudy\"\npassword_file = \"pg.pass\"\nexpect = \"primary\"\n\
         [[check]]\nname = \"redis\"\nkind = \"redis\"\naddress = \"{}\"\nport = {port}\npassword_file = \"redis.pass\"\n\
         [[check]]\nname = \"disk\"\nkind = \"disk\"\npath = \"{}\"\nmin_free = \"1MiB\"\n\
         [[check]]\nname = \"ready\"\nkind = \"exec\"\ncommand = [\"test\", \"-e\", \"{}\"]\n\
         [[check]]\nname = \"app\"\nkind = \"http\"\nurl = \"http://{}/health\"\nbody_contains = \"app ok\"\n",
        pg.nodes[0].ip,
        pg.port,
        ips[0],
        disk.0.display(),
        flag.display(),
        app.addr,
    );
    let file = tmp.path().join("agent.toml");
    std::fs::write(&file, &config).unwrap();
    let check = Command::new(understudy_bin()).args(["agent", "--check-config", "-c"]).arg(&file).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    let log = std::fs::File::create(tmp.path().join("agent.log")).unwrap();
    let _agent = Agent(Command::new(understudy_bin()).args(["agent", "-c"]).arg(&file).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().unwrap());
    let url = format!("http://{listen}/health");

    let (code, body) = wait_for(Duration::from_secs(20), "the agent to answer 200", || async { health(&url).await.filter(|(c, _)| *c == 200) }).await;
    println!("all ok: {body}");
    assert_eq!((code, body["status"].as_str(), body["failed"].as_array().map(Vec::len)), (200, Some("ok"), Some(0)));
    let names: Vec<&str> = body["parts"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["db", "redis", "disk", "ready", "app"]);
    assert_eq!(body["parts"][0]["message"], "primary, writable");
    assert_eq!(body["parts"][1]["message"], "PONG");
    assert!(body["parts"].as_array().unwrap().iter().all(|p| p["latency_ms"].as_f64().is_some()));
    // What one answer costs with cache = "0s" (all five parts run for every request).
    let mut ms = Vec::new();
    for _ in 0..20 {
        let t = std::time::Instant::now();
        assert_eq!(health(&url).await.expect("an answer").0, 200);
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    println!("GET /health with five parts, no cache, median of 20: {:.1} ms", ms[10]);

    // The disk filled past min_free: 503 naming only `disk`.
    std::fs::write(disk.0.join("filler"), vec![0u8; 3 << 19]).unwrap();
    let (code, body) = health(&url).await.expect("an answer");
    println!("disk filled: {body}");
    assert_eq!((code, body["failed"].clone()), (503, serde_json::json!(["disk"])));
    assert!(body["parts"][2]["message"].as_str().unwrap().contains("min_free 1.0 MiB"), "{body}");
    std::fs::remove_file(disk.0.join("filler")).unwrap();
    assert_eq!(health(&url).await.expect("an answer").0, 200);

    // Redis stopped: 503 naming only `redis`.
    redis.kill();
    let (code, body) = health(&url).await.expect("an answer");
    println!("redis stopped: {body}");
    assert_eq!((code, body["failed"].clone()), (503, serde_json::json!(["redis"])));
    assert_eq!(body["parts"][1]["message"], "connection refused");

    // The application down and the flag gone: both named.
    app.kill();
    std::fs::remove_file(&flag).unwrap();
    let (code, body) = health(&url).await.expect("an answer");
    assert_eq!((code, body["failed"].clone()), (503, serde_json::json!(["redis", "ready", "app"])));

    // The database read-only: `db` fails with a reason.
    pg.psql(0, "postgres", "ALTER SYSTEM SET default_transaction_read_only = on");
    pg.psql(0, "postgres", "SELECT pg_reload_conf()");
    let body = wait_for(Duration::from_secs(10), "db to fail as read-only", || async {
        health(&url).await.filter(|(_, b)| b["failed"].as_array().is_some_and(|f| f.iter().any(|n| n == "db"))).map(|(_, b)| b)
    })
    .await;
    assert!(body["parts"][0]["message"].as_str().unwrap().contains("read-only"), "{body}");
}

#[test]
fn check_config_locates_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("agent.toml");
    std::fs::write(&file, "[[check]]\nname = \"disk\"\nkind = \"disk\"\npath = \"/\"\nmin_free = \"plenty\"\n").unwrap();
    let out = Command::new(understudy_bin()).args(["agent", "--check-config", "-c"]).arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("agent.toml:5:1: check[0].min_free: expected a size"), "{err}");
}
