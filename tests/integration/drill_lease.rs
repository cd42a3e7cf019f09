//! Drill faults survive the drill's death: the daemon owns every fault under a lease. A drill
//! killed with SIGKILL (or a closed SSH session) cannot undo its own fault; the daemon does,
//! within the lease, and records the drill as failed with the reason.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

/// Two targets with exec checks on flag files (`up-primary`, `up-backup`): a drill's exec fault
/// removes the primary's flag, its restore command puts it back.
fn flag_config(dir: &Path, api: std::net::SocketAddr) -> String {
    format!(
        r#"[daemon]
data_dir = "{data}"
api = "{api}"

[[service]]
name = "www"
failback_hold = "500ms"
[service.check]
kind = "exec"
command = "test -e {dir}/up-$UNDERSTUDY_TARGET_NAME"
interval = "100ms"
timeout = "80ms"
fall = 2
rise = 2
[[service.target]]
name = "primary"
address = "127.0.0.2"
[[service.target]]
name = "backup"
address = "127.0.0.3"
"#,
        data = dir.join("data").display(),
        dir = dir.display()
    )
}

fn kill9(child: &mut std::process::Child) {
    // SAFETY: kill(2) on a child we started and have not reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

async fn drill_finished(d: &Daemon, within: Duration) -> serde_json::Value {
    wait_for(within, "the daemon to end the abandoned drill", || async {
        d.events().await.into_iter().find(|e| e["event"]["kind"] == "drill_finished")
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_exec_drill_is_restored_by_the_daemon_within_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let (up_primary, up_backup) = (dir.path().join("up-primary"), dir.path().join("up-backup"));
    std::fs::write(&up_primary, b"").unwrap();
    std::fs::write(&up_backup, b"").unwrap();
    let api = api_addr();
    let d = Daemon::start(dir.path(), &flag_config(dir.path(), api), api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;

    let mut drill = std::process::Command::new(understudy_bin())
        .args(["drill", "www", "--no-client", "--fault", "exec", "--lease", "2s", "--timeout", "120s", "--api", &d.api, "-c"]).arg(&d.config)
        .arg("--cmd")
        .arg(format!("rm {}", up_primary.display()))
        .arg("--restore-cmd")
        .arg(format!("touch {}", up_primary.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The drill dies as soon as its fault is in, before it can restore anything.
    wait_for(Duration::from_secs(10), "the drill's fault command to run", || async { (!up_primary.exists()).then_some(()) }).await;
    kill9(&mut drill);
    let killed = Instant::now();
    let fault = d.events().await.into_iter().find(|e| e["event"]["kind"] == "drill_fault").expect("the drill registered its fault first");
    assert_eq!(fault["event"]["undo"]["kind"], "command", "{fault}");
    d.wait_active("www", "backup", Duration::from_secs(10)).await;

    let finished = drill_finished(&d, Duration::from_secs(10)).await;
    let took = killed.elapsed();
    assert!(up_primary.exists(), "the daemon ran the restore command");
    assert_eq!(finished["event"]["ok"], false);
    let error = finished["event"]["error"].as_str().unwrap();
    assert!(error.contains("stopped renewing its lease") && error.contains("touch"), "{error}");
    // Within the 2 s lease plus the daemon's 1 s sweep (and a margin for a loaded machine).
    assert!(took < Duration::from_secs(6), "undone {took:?} after the kill");
    // The primary is healthy again and traffic returns after the hold.
    d.wait_active("www", "primary", Duration::from_secs(10)).await;
    let list = d.get("/api/v1/drills").await;
    assert_eq!(list[0]["fault"], "exec", "{list}");
    assert!(list[0]["error"].as_str().unwrap().contains("stopped renewing its lease"), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_force_down_drill_is_lifted_long_before_the_force_down_lapses() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("up-primary"), b"").unwrap();
    std::fs::write(dir.path().join("up-backup"), b"").unwrap();
    let api = api_addr();
    let d = Daemon::start(dir.path(), &flag_config(dir.path(), api), api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    let mut drill = std::process::Command::new(understudy_bin())
        .args(["drill", "www", "--no-client", "--lease", "2s", "--timeout", "300s", "--api", &d.api, "-c"]).arg(&d.config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(10), "the drill's force-down", || async {
        let svc = d.service("www").await;
        (!svc["targets"][0]["forced_down_until"].is_null()).then_some(())
    })
    .await;
    kill9(&mut drill);
    d.wait_active("www", "backup", Duration::from_secs(10)).await;
    // The force-down itself would last the drill's timeout + 60 s; the lease lifts it now.
    let finished = drill_finished(&d, Duration::from_secs(10)).await;
    assert!(finished["event"]["error"].as_str().unwrap().contains("lifted the force-down of primary"), "{finished}");
    let svc = d.service("www").await;
    assert!(svc["targets"][0]["forced_down_until"].is_null(), "{svc}");
    let events = d.events().await;
    let unforce = events.iter().find(|e| e["event"]["action"] == "unforce").expect("an unforce override");
    assert!(unforce["event"]["by"].as_str().unwrap().contains("lease expiry"), "{unforce}");
    d.wait_active("www", "primary", Duration::from_secs(10)).await;
}

/// A drill that lives renews its lease: a drill longer than its lease is not cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_drill_keeps_its_fault_past_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("up-primary"), b"").unwrap();
    std::fs::write(dir.path().join("up-backup"), b"").unwrap();
    let api = api_addr();
    // A 3 s hold: the drill runs well past its 1 s lease waiting for the failback.
    let cfg = flag_config(dir.path(), api).replace("failback_hold = \"500ms\"", "failback_hold = \"3s\"");
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    let out = tokio::process::Command::new(understudy_bin())
        .args(["drill", "www", "--no-client", "--lease", "1s", "--timeout", "60s", "--json", "--api", &d.api, "-c"]).arg(&d.config)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{}", String::from_utf8_lossy(&out.stderr)));
    assert!(r["error"].is_null(), "{r:#}");
    // Measured between event times (see drill::a_force_down_drill_measures_and_restores).
    assert!(r["failback_hold_ms"].as_f64().unwrap() >= 2990.0, "{r:#}");
    let events = d.events().await;
    assert!(!events.iter().any(|e| e["event"]["by"].as_str().is_some_and(|b| b.contains("lease expiry"))), "the daemon never stepped in");
}
