//! Drift checks (`[[service.compare]]`, issue 14) against real nginx: the primary and the backup
//! each serve `/version` from a file the test writes. A backup serving another version drifts
//! (a `drift` event, a webhook, the API's `drift` field, `understudy status`); with
//! `gate = true` it is not eligible, so killing the primary does not move traffic to it. Once
//! its version matches, the drift resolves (event and webhook) and a failover reaches it.
//!
//! It must not sleep and hope: the one fixed wait asserts that no failover happens meanwhile.

use std::path::Path;
use std::time::Duration;

use crate::notify::Receiver;
use crate::support::*;

/// An nginx serving `/health` and `/version` (the content of `<dir>/nginx-<name>/version`).
fn version_nginx(dir: &Path, name: &str, ip: &str, port: u16, version: &str) -> Nginx {
    let n = Nginx::new(dir, name, ip, port);
    let d = dir.join(format!("nginx-{name}"));
    std::fs::write(d.join("version"), format!("{version}\n")).unwrap();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
           server {{\n    listen {ip}:{port};\n    location = /health {{ default_type text/plain; return 200 \"{name} ok\\n\"; }}\n    location = /version {{ default_type text/plain; alias {p}/version; }}\n  }}\n}}\n",
        p = d.display()
    );
    std::fs::write(d.join("nginx.conf"), conf).unwrap();
    n
}

fn set_version(dir: &Path, name: &str, version: &str) {
    std::fs::write(dir.join(format!("nginx-{name}")).join("version"), format!("{version}\n")).unwrap();
}

fn drift_events(events: &[serde_json::Value], resolved: bool) -> Vec<serde_json::Value> {
    events.iter().map(|e| e["event"].clone()).filter(|e| e["kind"] == "drift" && (e["resolved"] == true) == resolved).collect()
}

async fn backup_view(d: &Daemon) -> serde_json::Value {
    d.service("www").await["targets"].as_array().unwrap().iter().find(|t| t["name"] == "backup").cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_out_of_step_is_reported_and_not_eligible_until_it_matches() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_on(&["127.0.0.2", "127.0.0.3"]);
    let mut primary = version_nginx(dir.path(), "primary", "127.0.0.2", port, "1.4.2");
    let mut backup = version_nginx(dir.path(), "backup", "127.0.0.3", port, "1.4.1");
    primary.start().await;
    backup.start().await;
    let mut rx = Receiver::new();
    rx.start().await;
    let api = api_addr();
    let extra = format!(
        "\n[[service.compare]]\nname = \"app-version\"\nkind = \"compare\"\nurl = \"http://{{address}}:{port}/version\"\ninterval = \"300ms\"\ntimeout = \"200ms\"\ngate = true\n\n\
         [[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\ngroup_window = \"100ms\"\n",
        rx.url("/hook")
    );
    let d = Daemon::start(dir.path(), &two_target_config(&dir.path().join("data"), api, port, 500, "1s", &extra), api).await;
    d.wait_active("www", "primary", Duration::from_secs(20)).await;

    // The backup serves 1.4.1 where the primary serves 1.4.2: it drifts.
    let drift = wait_for(Duration::from_secs(20), "a drift event for the backup", || async { drift_events(&d.events().await, false).into_iter().next() }).await;
    println!("drift: {drift}");
    assert_eq!((drift["target"].as_str(), drift["check"].as_str()), (Some("backup"), Some("app-version")), "{drift}");
    assert_eq!((drift["expected"].as_str(), drift["found"].as_str(), drift["primary"].as_str()), (Some("1.4.2"), Some("1.4.1"), Some("primary")), "{drift}");
    let hook = rx.wait("/hook", "the drift webhook", |v| v["event"] == "drift" && v["phase"] == "open").await.json();
    assert_eq!(hook["target"], "backup", "{hook}");
    let b = wait_for(Duration::from_secs(20), "the backup not eligible, with its drift in the API", || async {
        let b = backup_view(&d).await;
        (b["eligible"] == false && b["drift"][0]["found"] == "1.4.1").then_some(b)
    })
    .await;
    assert!(b["last_check"]["reason"].as_str().unwrap().contains("drifted"), "{b}");
    let status = String::from_utf8_lossy(&d.cli(&["status"]).stdout).to_string();
    assert!(status.contains("[drifted: app-version \"1.4.1\" where primary has \"1.4.2\", not eligible]"), "{status}");

    // The primary dies: the drifted backup is not eligible, traffic does not move to it.
    primary.kill();
    wait_for(Duration::from_secs(20), "the primary marked down", || async {
        d.events().await.iter().any(|e| e["event"]["kind"] == "target_down" && e["event"]["target"] == "primary").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let to_backup = d.events().await.iter().filter(|e| e["event"]["kind"] == "decision" && e["event"]["to"] == "backup").count();
    assert_eq!(to_backup, 0, "traffic moved to a drifted backup with gate = true");
    primary.start().await;
    wait_for(Duration::from_secs(20), "the primary up again", || async {
        d.service("www").await["targets"].as_array().unwrap().iter().any(|t| t["name"] == "primary" && t["healthy"] == true && t["eligible"] == true).then_some(())
    })
    .await;

    // Deployed: the backup matches again, the drift resolves and it is eligible.
    set_version(dir.path(), "backup", "1.4.2");
    let resolved = wait_for(Duration::from_secs(20), "the drift resolved", || async { drift_events(&d.events().await, true).into_iter().next() }).await;
    println!("resolved: {resolved}");
    let hook = rx.wait("/hook", "the drift webhook resolving", |v| v["event"] == "drift" && v["phase"] == "close").await.json();
    assert_eq!(hook["target"], "backup", "{hook}");
    wait_for(Duration::from_secs(20), "the backup eligible without drift", || async {
        let b = backup_view(&d).await;
        (b["eligible"] == true && b["drift"].is_null()).then_some(())
    })
    .await;
    // Now a failover reaches it.
    primary.kill();
    d.wait_active("www", "backup", Duration::from_secs(20)).await;
    assert_eq!(drift_events(&d.events().await, false).len(), 1, "one drift, reported once");
}
