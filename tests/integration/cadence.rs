//! The fast cadence with the real binary: a dead primary is re-checked every `fast_interval`
//! after its first failed check, so it is marked down in about one interval; a down target is
//! checked every `down_interval`; a recovering one fast again. `understudy status` shows the
//! interval each target is on.

use std::time::Duration;

use crate::support::*;

/// Start times (µs) of the checks a `target_up`/`target_down` event carries, for its streak.
fn streak_starts(event: &serde_json::Value, ok: bool) -> Vec<u64> {
    let checks = event["checks"].as_array().cloned().unwrap_or_default();
    let streak: Vec<u64> = checks
        .iter()
        .rev()
        .take_while(|c| c["ok"] == ok)
        .map(|c| c["at_us"].as_u64().expect("check start"))
        .collect();
    streak.into_iter().rev().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_primary_is_rechecked_fast_marked_down_in_about_one_interval_and_then_checked_slowly() {
    let (dir, port, mut primary, _backup) = two_nginx().await;
    let api = api_addr();
    // 1 s interval, 600 ms timeout, default fast_interval (250 ms), down_interval 3 s.
    let cfg = two_target_config(&dir.path().join("data"), api, port, 1000, "1s", "")
        .replace("rise = 2\n", "rise = 2\ndown_interval = \"3s\"\n");
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    let svc = d.service("www").await;
    assert_eq!((svc["targets"][0]["cadence"].as_str(), svc["targets"][0]["check_interval_ms"].as_u64()), (Some("steady"), Some(1000)), "{svc}");
    assert_eq!((svc["check"]["fast_interval_ms"].as_u64(), svc["check"]["down_interval_ms"].as_u64()), (Some(250), Some(3000)));

    primary.kill();
    d.wait_active("www", "backup", Duration::from_secs(4)).await;
    let events = d.events().await;
    let down = events.iter().rev().find(|e| e["event"]["kind"] == "target_down" && e["event"]["target"] == "primary").expect("target_down");
    let fails = streak_starts(&down["event"], false);
    assert_eq!(fails.len(), 3, "fall = 3: {down}");
    for w in fails.windows(2) {
        let gap_ms = (w[1] - w[0]) / 1000;
        // 250 ms apart (refused at once), never the 1 s interval.
        assert!((200..600).contains(&gap_ms), "checks after the first failure {gap_ms} ms apart, not on the fast cadence: {down}");
    }

    // Down and still failing: the down interval, shown by status.
    let svc = wait_for(Duration::from_secs(5), "primary on the down cadence", || async {
        let s = d.service("www").await;
        (s["targets"][0]["cadence"] == "down").then_some(s)
    })
    .await;
    assert_eq!(svc["targets"][0]["check_interval_ms"].as_u64(), Some(3000), "{svc}");
    let text = d.cli(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("[checking every 3000 ms: down]"), "{text}");
    assert!(text.contains("check every 1000 ms (250 ms while health changes, 3000 ms while down)"), "{text}");

    // Back: the first pass comes on the down cadence, the second a fast step later.
    primary.start().await;
    wait_for(Duration::from_secs(6), "primary up again", || async {
        let s = d.service("www").await;
        (s["targets"][0]["health"] == "up").then_some(())
    })
    .await;
    let events = d.events().await;
    let up = events.iter().rev().find(|e| e["event"]["kind"] == "target_up" && e["event"]["target"] == "primary").expect("target_up");
    let passes = streak_starts(&up["event"], true);
    assert_eq!(passes.len(), 2, "rise = 2: {up}");
    let gap_ms = (passes[1] - passes[0]) / 1000;
    assert!((200..600).contains(&gap_ms), "a recovering target is checked fast, got {gap_ms} ms: {up}");
    let svc = d.service("www").await;
    assert_eq!(svc["targets"][0]["cadence"], "steady", "marked up after rise passes: steady again: {svc}");
}

/// Set the daemon's soft `RLIMIT_NOFILE`; returns the previous limits.
fn set_nofile(pid: u32, soft: Option<libc::rlim_t>, restore: Option<libc::rlimit>) -> libc::rlimit {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain system call on valid pointers.
    let got = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(got, 0, "prlimit get: {}", std::io::Error::last_os_error());
    let new = match (soft, restore) {
        (_, Some(r)) => r,
        (Some(s), None) => libc::rlimit { rlim_cur: s, rlim_max: old.rlim_max },
        (None, None) => return old,
    };
    // SAFETY: as above.
    let set = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(set, 0, "prlimit set: {}", std::io::Error::last_os_error());
    old
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_out_of_file_descriptors_reports_checker_errors_and_moves_no_traffic() {
    let (dir, port, _primary, _backup) = two_nginx().await;
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1s", "");
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;

    // No new file descriptor for the daemon: every check's socket() fails with EMFILE (as would
    // the API's accept, so nothing is asked until the limit is back).
    let old = set_nofile(d.pid(), Some(3), None);
    // 2 s at a 200 ms interval: ten checks per target, fall = 3 would have flipped both.
    tokio::time::sleep(Duration::from_secs(2)).await;
    set_nofile(d.pid(), None, Some(old));

    let resolved = wait_for(Duration::from_secs(5), "checker errors resolved for both targets", || async {
        let events = d.events().await;
        let resolved: Vec<serde_json::Value> =
            events.iter().filter(|e| e["event"]["kind"] == "checker_error" && e["event"]["resolved"] == true).cloned().collect();
        (resolved.len() == 2).then_some(events)
    })
    .await;
    let kinds: Vec<&str> = resolved.iter().map(|e| e["event"]["kind"].as_str().unwrap()).collect();
    assert!(!kinds.contains(&"target_down"), "a checker error counted against a target: {kinds:?}");
    let decisions: Vec<&str> = resolved.iter().filter(|e| e["event"]["kind"] == "decision").map(|e| e["event"]["reason"].as_str().unwrap()).collect();
    assert_eq!(decisions, ["initial"], "traffic moved");
    // Rate-limited: one report per target for the episode, one for its end.
    let reports: Vec<&serde_json::Value> = resolved.iter().filter(|e| e["event"]["kind"] == "checker_error" && e["event"]["resolved"] != true).collect();
    assert_eq!(reports.len(), 2, "{reports:?}");
    for r in &reports {
        assert!(r["event"]["reason"].as_str().unwrap().contains("EMFILE"), "{r}");
    }
    let metrics = http().get(format!("{}/metrics", d.api)).send().await.unwrap().text().await.unwrap();
    for target in ["primary", "backup"] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with("understudy_checker_errors_total") && l.contains(&format!("target=\"{target}\"")))
            .unwrap_or_else(|| panic!("no checker error counter for {target}:\n{metrics}"));
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 3.0, "{line}");
    }
    assert_eq!(d.active("www").await.as_deref(), Some("primary"));
}
