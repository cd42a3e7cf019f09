use std::time::Duration;

use understudy::events::log::EventLog;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_events_overrides_and_incidents_and_reconciles() {
    let (dir, port, mut primary, _backup) = two_nginx().await;
    let api = api_addr();
    let extra = "\n[[service.hook]]\ncommand = \"true\"\n";
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "2s", extra);
    let mut d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    primary.kill();
    d.wait_active("www", "backup", Duration::from_secs(3)).await;
    assert!(d.cli(&["drain", "www", "primary"]).status.success());
    let before = d.events().await;
    let epoch_before = d.service("www").await["epoch"].as_u64().unwrap();
    let incident_before = d.get("/api/v1/incidents").await[0].clone();

    d.kill9();
    primary.start().await; // the primary recovers while the daemon is dead
    d.restart().await;

    // Every acknowledged event is still there, unchanged.
    let after = wait_for(Duration::from_secs(5), "the reconcile decision", || async {
        let ev = d.events().await;
        ev.iter().any(|e| e["event"]["reason"] == "reconcile").then_some(ev)
    })
    .await;
    assert_eq!(&after[..before.len()], &before[..]);
    let seqs: Vec<u64> = after.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "sequence numbers have no gaps");
    assert_eq!(after.iter().filter(|e| e["event"]["kind"] == "daemon_started").count(), 2);

    // The drain survived, so the healthy primary does not get traffic back.
    let svc = d.service("www").await;
    assert_eq!(svc["targets"][0]["enabled"], false, "{svc}");
    assert_eq!(svc["active"], "backup");
    assert!(svc["epoch"].as_u64().unwrap() > epoch_before, "reconcile takes a fresh epoch");
    // The hook is re-run for the reconcile (actuators re-apply after a restart).
    wait_for(Duration::from_secs(5), "the reconcile to be applied", || async {
        let ev = d.events().await;
        ev.iter().any(|e| e["event"]["kind"] == "actuated" && e["event"]["epoch"] == svc["epoch"]).then_some(())
    })
    .await;
    // The open incident is the same incident.
    let incident_after = d.get(&format!("/api/v1/incidents/{}", incident_before["id"])).await;
    assert_eq!(incident_after["opened"], incident_before["opened"]);
    assert_eq!(incident_after["detection_ms"], incident_before["detection_ms"]);
    assert_eq!(incident_after["open"], true);

    // Enabling the primary closes the incident once traffic is back.
    assert!(d.cli(&["enable", "www", "primary"]).status.success());
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    let inc = d.get(&format!("/api/v1/incidents/{}", incident_before["id"])).await;
    assert_eq!(inc["open"], false);
}

/// Kill -9 at arbitrary moments while events are being written fast: the log always reopens
/// with nothing damaged but at most the one write in flight, and everything the API had
/// already shown is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_corrupts_nothing_earlier() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("up");
    let api = api_addr();
    let data = dir.path().join("data");
    let cfg = flappy_config(&data, api, &flag, "");
    let mut d = Daemon::start(dir.path(), &cfg, api).await;
    // Toggle the flag file so targets flip (and events are written) many times a second.
    let toggler = toggle_flag(&flag, 2000, Duration::from_millis(70));
    let delays_ms = [730u64, 1190, 410, 1530, 960];
    for (round, delay) in delays_ms.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(*delay)).await;
        let acknowledged = d.events().await;
        assert!(acknowledged.len() > round * 3, "events are being written");
        d.kill9();
        let (_, history, report) = EventLog::open(&data).expect("log reopens");
        let records = history.records;
        assert!(report.skipped_lines.is_empty(), "round {round}: damaged lines {:?}", report.skipped_lines);
        assert!(records.len() >= acknowledged.len(), "round {round}: lost events");
        for (r, a) in records.iter().zip(&acknowledged) {
            assert_eq!(r.seq, a["seq"].as_u64().unwrap());
            assert_eq!(serde_json::to_value(&r.event).unwrap(), a["event"], "round {round}: event {} changed", r.seq);
        }
        d.restart().await;
    }
    toggler.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_a_second_daemon_cannot_share_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let api = api_addr();
    let data = dir.path().join("data");
    let cfg = format!(
        "[daemon]\ndata_dir = \"{}\"\napi = \"{api}\"\n\n[[service]]\nname = \"s\"\n[service.check]\nkind = \"exec\"\ncommand = \"true\"\n\
         interval = \"100ms\"\ntimeout = \"50ms\"\n[[service.target]]\nname = \"a\"\naddress = \"127.0.0.2\"\n",
        data.display()
    );
    let mut d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("s", "a", Duration::from_secs(5)).await;

    // Same data directory, another API port: refused, exit 1, with the reason.
    let other = dir.path().join("other.toml");
    std::fs::write(&other, cfg.replace(&api.to_string(), &api_addr().to_string())).unwrap();
    let out = std::process::Command::new(understudy_bin()).args(["run", "-c"]).arg(&other).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is in use by another understudy"), "{}", String::from_utf8_lossy(&out.stderr));

    let status = d.terminate().await;
    assert!(status.success(), "exit status {status:?}\n{}", d.logs());
    let records = EventLog::open(&data).unwrap().1.records;
    assert_eq!(records.last().unwrap().event.kind(), "daemon_stopped");
}
