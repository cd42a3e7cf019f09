//! Drills on loopback: the real CLI drives a real daemon (with its DNS server) and real nginx;
//! the observing client resolves the name through understudy's DNS server.

use std::time::Duration;

use crate::support::*;

fn dns_block(listen: &str, ttl: u32) -> String {
    format!(
        "\n[dns]\nlisten = [\"{listen}\"]\n\n[[dns.zone]]\nname = \"example.test\"\nnameservers = {{ \"ns1.example.test\" = \"127.0.0.1\" }}\n\n\
         [[dns.zone.record]]\nname = \"www\"\nservice = \"www\"\nttl = {ttl}\n\n[drill.targets]\ndetection = \"3s\"\nswitch = \"1s\"\nrto = \"5s\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_down_drill_measures_and_restores() {
    let (dir, port, _primary, _backup) = two_nginx().await;
    let dns = format!("127.0.0.25:{}", free_port("127.0.0.25"));
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1s", &dns_block(&dns, 1));
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;

    // The plan touches nothing.
    let plan = d.cli(&["drill", "www", "--dry-run", "--resolver", &dns]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(plan.status.success(), "{text}{}", String::from_utf8_lossy(&plan.stderr));
    assert!(text.contains("observing client: GET http://www.example.test:"), "{text}");
    assert!(text.contains("(dry run: nothing was changed)"));
    assert_eq!(d.events().await.iter().filter(|e| e["event"]["kind"] == "override").count(), 0);

    let out = tokio::process::Command::new(understudy_bin())
        .args(["drill", "www", "--json", "--resolver", &dns, "--timeout", "60s", "--api", &d.api, "-c"]).arg(&d.config)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "drill failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(r["to"], "backup");
    let detection = r["detection_ms"].as_f64().unwrap();
    // Force-down takes effect on the next check (0-1 interval of 200 ms), then `fall - 1` more
    // on the fast cadence (50 ms apart): 100-300 ms plus scheduling.
    assert!((90.0..800.0).contains(&detection), "detection {detection} ms");
    assert!(r["switch_ms"].as_f64().unwrap() < 500.0, "{r:#}");
    // Force-down is no real outage: the primary keeps answering until the name moves, so the
    // client's gap is about one sample interval and no request fails.
    let rto = r["client_rto_ms"].as_f64().unwrap();
    assert!(rto < 300.0, "client RTO {rto} ms");
    assert_eq!(r["client_failed_requests"], 0, "force-down is not a real outage");
    // The client resolves through understudy's DNS (no cache in between): it reaches the
    // backup right after the switch, not a TTL later.
    let on_backup = r["client_switch_ms"].as_f64().unwrap();
    assert!(on_backup >= detection && on_backup < detection + 500.0, "client on backup after {on_backup} ms, detection {detection} ms");
    assert_eq!(r["backup_verified"], true);
    assert_eq!(r["traffic_returned"], true);
    match r["failback_reason"].as_str() {
        // The hold runs from the check result that passed the primary; the report measures
        // between the times its events were written, which can come a fraction of a millisecond
        // after that result (more on a loaded machine): 10 ms of slack, far from a skipped hold.
        Some("failback") => assert!(r["failback_hold_ms"].as_f64().unwrap() >= 990.0, "failback waited for the 1 s hold: {r:#}"),
        // A loaded machine can fail the backup's checks during the hold: traffic then returns
        // at once, and the report says so instead of passing it off as the hold.
        Some("failover") => {
            assert!(r["failback_hold_ms"].is_null(), "{r:#}");
            let events = d.events().await;
            assert!(events.iter().any(|e| e["event"]["kind"] == "target_down" && e["event"]["target"] == "backup"), "a failover back to the primary needs the backup down");
            eprintln!("the backup failed during the hold; the hold was not measured");
        }
        other => panic!("traffic returned by {other:?}: {r:#}"),
    }

    // Nothing left behind; the report is stored and listed.
    let svc = d.service("www").await;
    assert_eq!(svc["active"], "primary");
    assert!(svc["targets"][0]["forced_down_until"].is_null(), "{svc}");
    let id = r["id"].as_u64().unwrap();
    let md = std::fs::read_to_string(dir.path().join(format!("data/drills/drill-{id}.md"))).unwrap();
    assert!(md.contains(&format!("# Drill #{id}: www (PASSED)")), "{md}");
    let list = d.cli(&["drills"]);
    assert!(String::from_utf8_lossy(&list.stdout).lines().any(|l| l.starts_with(&id.to_string()) && l.contains("passed")));
    let events = d.events().await;
    assert!(events.iter().any(|e| e["event"]["kind"] == "drill_finished" && e["event"]["ok"] == true));
    // The DNS actuator says when the new answer was first served, counted from the decision.
    // (Under load the start-up grace can end before the first results: an all-down decision,
    // then a recovered one, come first. Look for the failover's own epoch.)
    let failover = events.iter().find(|e| e["event"]["kind"] == "decision" && e["event"]["reason"] == "failover").expect("the failover decision");
    let verified = events
        .iter()
        .find(|e| e["event"]["kind"] == "actuated" && e["event"]["actuator"] == "dns" && e["event"]["step"] == "verified" && e["event"]["epoch"] == failover["event"]["epoch"])
        .expect("dns verified the failover");
    let detail = verified["event"]["detail"].as_str().unwrap();
    assert!(detail.contains("after the decision"), "{detail}");
    eprintln!("dns verify: {detail}");
}

/// The backup dies during the failback hold: traffic returns to the primary at once, and the
/// report says it came back by a failover, not after the hold (no hold is reported).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_that_dies_during_the_hold_is_reported_as_the_way_back() {
    let (dir, port, _primary, mut backup) = two_nginx().await;
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "30s", "");
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    let drill = tokio::process::Command::new(understudy_bin())
        .args(["drill", "www", "--json", "--no-client", "--timeout", "60s", "--api", &d.api, "-c"])
        .arg(&d.config)
        .kill_on_drop(true)
        .output();
    let drill = tokio::spawn(drill);
    // The drill restored the primary and it passed its rise checks: the 30 s hold runs.
    wait_for(Duration::from_secs(20), "the primary marked up again after the drill's fault", || async {
        let events = d.events().await;
        let down = events.iter().position(|e| e["event"]["kind"] == "target_down" && e["event"]["target"] == "primary")?;
        events[down..].iter().any(|e| e["event"]["kind"] == "target_up" && e["event"]["target"] == "primary").then_some(())
    })
    .await;
    backup.kill();
    let out = tokio::time::timeout(Duration::from_secs(20), drill).await.expect("the drill ends long before the hold would").unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{}", String::from_utf8_lossy(&out.stderr)));
    assert!(r["error"].is_null(), "{r:#}");
    assert_eq!(r["failback_reason"], "failover", "{r:#}");
    assert!(r["failback_hold_ms"].is_null(), "no hold was measured: {r:#}");
    assert!(r["failback_switch_ms"].as_f64().is_some(), "{r:#}");
    let steps: Vec<&str> = r["steps"].as_array().unwrap().iter().map(|s| s["what"].as_str().unwrap()).collect();
    assert!(steps.iter().any(|s| s.contains("by a failover decision") && s.contains("before the hold ended")), "{steps:#?}");
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    let id = r["id"].as_u64().unwrap();
    let md = std::fs::read_to_string(dir.path().join(format!("data/drills/drill-{id}.md"))).unwrap();
    assert!(md.lines().any(|l| l.contains("traffic returned by (decision reason)") && l.contains("failover")), "{md}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_refuses_to_start_without_a_healthy_baseline_and_misses_are_exit_1() {
    let (dir, port, _primary, mut backup) = two_nginx().await;
    let api = api_addr();
    // Impossible targets: a 1 ms detection cannot be met with 200 ms checks.
    let extra = "\n[drill.targets]\ndetection = \"1ms\"\n";
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1s", extra);
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;

    backup.kill();
    wait_for(Duration::from_secs(3), "backup marked down", || async { (d.service("www").await["targets"][1]["healthy"] == false).then_some(()) }).await;
    let out = d.cli(&["drill", "www", "--no-client"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("baseline not met, nothing was changed: backup is not healthy"), "{err}");
    assert_eq!(d.events().await.iter().filter(|e| e["event"]["kind"] == "drill_started").count(), 0);

    backup.start().await;
    wait_for(Duration::from_secs(3), "backup up", || async { (d.service("www").await["targets"][1]["healthy"] == true).then_some(()) }).await;
    let out = d.cli(&["drill", "www", "--no-client", "--timeout", "30s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("MISSED TARGETS: detection"), "{stdout}");
    assert!(stdout.contains("RTO (monitor: fault -> switch complete)"), "{stdout}");
    // Missed or not, the fault was undone and traffic is back.
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
}

/// A schedule runs force-down drills by itself through the daemon's own API, and the
/// heartbeat pings its URL while the daemon is healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_drills_run_by_themselves_and_the_heartbeat_pings() {
    let (dir, port, _primary, _backup) = two_nginx().await;
    // A stand-in for a healthchecks-style receiver: counts pings.
    let pings = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hb_addr = listener.local_addr().unwrap();
    let counter = pings.clone();
    let app = axum::Router::new().route(
        "/ping",
        axum::routing::get(move || {
            let c = counter.clone();
            async move {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let api = api_addr();
    let extra = format!(
        "\n[[drill.schedule]]\nservice = \"www\"\nevery = \"10s\"\ntimeout = \"30s\"\n\n[heartbeat]\nurl = \"http://{hb_addr}/ping\"\nevery = \"1s\"\ntimeout = \"500ms\"\n"
    );
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1s", &extra);
    let d = Daemon::start(dir.path(), &cfg, api).await;
    wait_for(Duration::from_secs(5), "two heartbeats", || async { (pings.load(std::sync::atomic::Ordering::SeqCst) >= 2).then_some(()) }).await;

    let finished = wait_for(Duration::from_secs(30), "a scheduled drill to finish", || async {
        d.events().await.into_iter().find(|e| e["event"]["kind"] == "drill_finished")
    })
    .await;
    assert_eq!(finished["event"]["ok"], true, "{finished}");
    let started = d.events().await.into_iter().find(|e| e["event"]["kind"] == "drill_started").unwrap();
    assert_eq!(started["event"]["by"], "schedule");
    assert_eq!(started["event"]["fault"], "force-down");
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    server.abort();
}

/// Ctrl-C in the middle of a drill undoes the fault first, then reports the drill as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_mid_drill_restores_before_reporting() {
    let (dir, port, _primary, _backup) = two_nginx().await;
    let api = api_addr();
    // A long hold keeps the drill waiting for the failback, so there is time to interrupt it.
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "60s", "");
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    let child = tokio::process::Command::new(understudy_bin())
        .args(["drill", "www", "--no-client", "--timeout", "120s", "--api", &d.api, "-c"]).arg(&d.config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the failover happened (the drill is now waiting for the way back).
    d.wait_active("www", "backup", Duration::from_secs(10)).await;
    // SAFETY: kill(2) on the child we started.
    unsafe {
        libc::kill(child.id().unwrap() as i32, libc::SIGINT);
    }
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await.expect("drill exits after Ctrl-C").unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAILED: interrupted"), "{stdout}");
    let svc = d.service("www").await;
    assert!(svc["targets"][0]["forced_down_until"].is_null(), "the force-down was lifted: {svc}");
    let events = d.events().await;
    let unforce = events.iter().find(|e| e["event"]["action"] == "unforce").expect("unforce event");
    assert_ne!(unforce["event"]["by"], "expiry", "undone by the drill, not by expiry");
    let finished = events.iter().find(|e| e["event"]["kind"] == "drill_finished").expect("the report was recorded");
    assert_eq!(finished["event"]["ok"], false);
}
