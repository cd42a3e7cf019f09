use std::time::Duration;

use crate::support::*;

fn ok(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "CLI failed: {}\n{}", String::from_utf8_lossy(&out.stderr), stdout);
    stdout
}

fn refused(out: &std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(1), "expected exit 1: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_enable_switchover_and_clear_through_the_cli() {
    let (dir, port, _primary, mut backup) = two_nginx().await;
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1s", "");
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;

    // Drain moves traffic at once and shows in status.
    let out = ok(&d.cli(&["drain", "www", "primary"]));
    assert!(out.contains("www/primary drained; active is backup"), "{out}");
    let status = ok(&d.cli(&["status"]));
    assert!(status.contains("www: active backup (127.0.0.3)"), "{status}");
    assert!(status.lines().any(|l| l.contains("primary") && l.contains("drained")), "{status}");
    let json: serde_json::Value = serde_json::from_str(&ok(&d.cli(&["status", "--json"]))).unwrap();
    assert_eq!(json[0]["targets"][0]["enabled"], false);

    // Enable: traffic returns after the 1 s hold, not before. Watched through the whole window
    // from the outside, and measured on the daemon's own clock: the failback decision is
    // recorded at least the hold after the enable.
    let asked = std::time::Instant::now();
    ok(&d.cli(&["enable", "www", "primary"]));
    let mut seen = Vec::new();
    loop {
        let active = d.active("www").await;
        seen.push((asked.elapsed(), active.clone()));
        if active.as_deref() == Some("primary") {
            break;
        }
        assert!(asked.elapsed() < Duration::from_secs(4), "no failback 4 s after the enable: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let early: Vec<_> = seen.iter().filter(|(at, a)| *at < Duration::from_secs(1) && a.as_deref() != Some("backup")).collect();
    assert!(early.is_empty(), "failback must wait for the 1 s hold; seen {early:?}");
    assert!(seen.len() > 5, "polled through the hold window: {seen:?}");
    let events = d.events().await;
    let enabled = events.iter().find(|e| e["event"]["kind"] == "override" && e["event"]["action"] == "enable").expect("the enable event");
    let failback = events.iter().find(|e| e["event"]["kind"] == "decision" && e["event"]["reason"] == "failback").expect("a failback decision");
    let held_us = failback["time_us"].as_u64().unwrap() - enabled["time_us"].as_u64().unwrap();
    assert!(held_us >= 1_000_000, "failback {held_us} us after the enable, before the 1 s hold: {failback}");
    assert!(held_us < 2_000_000, "failback {held_us} us after the enable: the hold is 1 s with 200 ms checks");

    // Switchover pins the backup; auto failback does not undo it.
    let out = ok(&d.cli(&["switchover", "www", "backup"]));
    assert!(out.contains("active is now backup"), "{out}");
    let svc = d.service("www").await;
    assert_eq!(svc["pinned"], "backup");
    tokio::time::sleep(Duration::from_millis(1500)).await; // longer than the hold: nothing may move
    assert_eq!(d.active("www").await.as_deref(), Some("backup"));

    // Clear: the primary has been healthy far longer than the hold, so traffic returns at once.
    ok(&d.cli(&["clear", "www"]));
    d.wait_active("www", "primary", Duration::from_secs(2)).await;

    // Refusals are clear and change nothing.
    let err = refused(&d.cli(&["switchover", "www", "nosuch"]));
    assert!(err.contains("service \"www\" has no target named \"nosuch\""), "{err}");
    let err = refused(&d.cli(&["drain", "nosuch", "primary"]));
    assert!(err.contains("no service named \"nosuch\""), "{err}");
    backup.kill();
    wait_for(Duration::from_secs(3), "backup marked down", || async {
        (d.service("www").await["targets"][1]["healthy"] == false).then_some(())
    })
    .await;
    let err = refused(&d.cli(&["switchover", "www", "backup"]));
    assert!(err.contains("cannot switch www over to backup: its checks say it is down"), "{err}");
    assert_eq!(d.active("www").await.as_deref(), Some("primary"));

    // Every operator action is an event, with who did it.
    let overrides: Vec<String> = d
        .events()
        .await
        .iter()
        .filter(|e| e["event"]["kind"] == "override")
        .map(|e| format!("{} {}", e["event"]["action"].as_str().unwrap(), e["event"]["target"].as_str().unwrap_or("-")))
        .collect();
    assert_eq!(overrides, ["drain primary", "enable primary", "switchover backup", "clear -"]);
    let events = ok(&d.cli(&["events"]));
    assert!(events.contains("www: drain: primary -> backup"), "{events}");
}

/// A drill's force-down goes through the checks (so detection is measured like a real failure)
/// and lapses by itself, so a drill that dies cannot leave a target down for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_down_fails_checks_and_lapses_by_itself() {
    let (dir, port, _primary, _backup) = two_nginx().await;
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1s", "");
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;

    let path = "/api/v1/services/www/targets/primary/force-down";
    let r = d.post(path, serde_json::json!({"for": "2s", "by": "test drill"})).await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    d.wait_active("www", "backup", Duration::from_secs(2)).await;
    let svc = d.service("www").await;
    assert!(svc["targets"][0]["forced_down_until"].is_string(), "{svc}");
    let reason = svc["targets"][0]["last_check"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("forced down (drill); the real check said: HTTP 200"), "{reason}");
    let events = d.events().await;
    let down = events.iter().find(|e| e["event"]["kind"] == "target_down").unwrap();
    assert_eq!(down["event"]["streak"], 3, "force-down needs `fall` failed checks like a real fault");

    // After 2 s the force lapses; after the 1 s hold traffic returns.
    d.wait_active("www", "primary", Duration::from_secs(6)).await;
    let events = d.events().await;
    let lapsed = events.iter().find(|e| e["event"]["action"] == "unforce").expect("an unforce event");
    assert_eq!(lapsed["event"]["by"], "expiry");
    let bad = d.post(path, serde_json::json!({"for": "48h"})).await;
    assert_eq!(bad.status(), 400);
}
