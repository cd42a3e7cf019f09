use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_refuses_a_bad_file_and_keeps_health_across_a_good_one() {
    let (dir, port, _primary, _backup) = two_nginx().await;
    let api = api_addr();
    let data = dir.path().join("data");
    let cfg = two_target_config(&data, api, port, 200, "3s", "");
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    let count = |events: &[serde_json::Value], kind: &str| events.iter().filter(|e| e["event"]["kind"] == kind).count();

    // A bad file: refused, recorded, old config still running.
    std::fs::write(&d.config, cfg.replace("interval = \"200ms\"", "interval = \"100ms\"\nbogus = 1")).unwrap();
    d.signal(libc::SIGHUP);
    let rejected = wait_for(Duration::from_secs(5), "config_rejected", || async {
        d.events().await.into_iter().find(|e| e["event"]["kind"] == "config_rejected")
    })
    .await;
    let errors = rejected["event"]["errors"].as_str().unwrap();
    assert!(errors.contains("understudy.toml:17"), "errors name the line: {errors}");
    assert!(errors.contains("unknown field `bogus`"), "{errors}");
    let svc = d.service("www").await;
    assert_eq!(svc["check"]["interval_ms"], 200, "old config kept");
    assert_eq!(svc["active"], "primary");

    // A good file: a third target, a shorter hold. Unchanged checks keep their health: no
    // target flips, and traffic does not move.
    let before = d.events().await;
    let third = "\n[[service.target]]\nname = \"backup2\"\naddress = \"127.0.0.4\"\n";
    std::fs::write(&d.config, format!("{}{third}", cfg.replace("failback_hold = \"3s\"", "failback_hold = \"2s\""))).unwrap();
    d.signal(libc::SIGHUP);
    let svc = wait_for(Duration::from_secs(5), "the reload", || async {
        let s = d.service("www").await;
        (s["targets"].as_array().unwrap().len() == 3).then_some(s)
    })
    .await;
    assert_eq!(svc["failback_hold_ms"], 2000);
    assert_eq!(svc["active"], "primary");
    assert_eq!(svc["targets"][0]["healthy"], true);
    assert_eq!(svc["targets"][1]["healthy"], true);
    // Give the new target time to be checked, then look at what happened since the reload.
    wait_for(Duration::from_secs(3), "backup2 checked", || async {
        (d.service("www").await["targets"][2]["last_check"].is_object()).then_some(())
    })
    .await;
    let after = d.events().await;
    let new = &after[before.len()..];
    assert_eq!(count(new, "config_reloaded"), 1);
    let flips: Vec<_> = new
        .iter()
        .filter(|e| matches!(e["event"]["kind"].as_str(), Some("target_up" | "target_down")) && e["event"]["target"] != "backup2")
        .collect();
    assert!(flips.is_empty(), "unchanged checks kept their health: {flips:?}");
    assert!(new.iter().all(|e| e["event"]["reason"] != "failover"), "no failover on reload");
    assert!(d.logs().contains("reload refused"), "the refusal is logged");
}
