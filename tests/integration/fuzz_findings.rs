//! Regression tests for the inputs fuzzing found (issue 19), against the real binary: a huge
//! duration that panicked `check-config` and killed the daemon on SIGHUP, a webhook template
//! that validated but rendered invalid JSON for real notices, an unbounded secret file.
//! The fuzz targets themselves live in `fuzz/` (see `scripts/fuzz.sh`); these tests only pin
//! what they found. They must not depend on the fuzz crate or on a nightly toolchain.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// The file from issue 19, finding 1, byte for byte: `interval x fall + timeout` overflowed.
const HUGE_INTERVAL: &str = r#"[[service]]
name = "www"
rto_budget = "1s"
[service.check]
kind = "tcp"
port = 80
interval = "10000000000000000000s"
timeout = "1s"
[[service.target]]
name = "primary"
address = "192.0.2.2"
"#;

fn check_config(dir: &std::path::Path, text: &str) -> (Option<i32>, String) {
    let path = dir.join("fuzzed.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(understudy_bin()).arg("check-config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    (out.status.code(), stderr)
}

#[test]
fn check_config_refuses_a_huge_duration_with_a_located_error() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = check_config(dir.path(), HUGE_INTERVAL);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "error: FILE:7:12: service[0].check.interval: expected a duration of at most one year (\"1y\", \"365d\"), got \"10000000000000000000s\""
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The largest accepted values validate, with the budget warning computed without overflow.
    let largest = HUGE_INTERVAL.replace("10000000000000000000s", "1y").replace("timeout = \"1s\"", "timeout = \"364d\"\nfall = 1000");
    let (code, stderr) = check_config(dir.path(), &largest);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("warning: service[0].rto_budget: detection alone can take"), "{stderr}");
}

#[test]
fn check_config_refuses_webhook_templates_that_real_notices_would_break() {
    let dir = tempfile::tempdir().unwrap();
    let base = HUGE_INTERVAL.replace("10000000000000000000s", "2s");
    // The template from issue 19, finding 2.
    let quoted = format!(
        "{base}[[notify]]\nname = \"tickets\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nbody_template = '{{\"service\": \"{{{{service}}}}\", \"host\": \"{{{{target}}}}\", \"raw\": \"{{{{json}}}}\"}}'\n"
    );
    let (code, stderr) = check_config(dir.path(), &quoted);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("error: FILE:16:1: notify[0].body_template: the template does not render valid JSON for a notice whose service"), "{stderr}");
    assert!(stderr.contains("({{service}} is inside quotes)"), "{stderr}");

    let unquoted = quoted.replace("\"{{service}}\"", "{{service}}").replace("\"{{target}}\"", "{{target}}").replace("\"{{json}}\"", "{{json}}");
    let (code, stderr) = check_config(dir.path(), &unquoted);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn check_config_refuses_an_oversized_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hmac.key"), vec![b'k'; 1 << 20]).unwrap();
    let text = format!(
        "{}[[notify]]\nname = \"tickets\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nsecret_file = \"hmac.key\"\n",
        HUGE_INTERVAL.replace("10000000000000000000s", "2s")
    );
    let (code, stderr) = check_config(dir.path(), &text);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("notify[0].secret_file: ") && stderr.contains("hmac.key is larger than 64 KiB"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_huge_duration_keeps_the_daemon_on_its_old_config() {
    let (dir, port, _primary, _backup) = two_nginx().await;
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "3s", "");
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;

    // The running config with the issue's values: a budget to check against and a huge interval.
    let bad = cfg
        .replace("all_down = \"primary\"", "all_down = \"primary\"\nrto_budget = \"1s\"")
        .replace("interval = \"200ms\"", "interval = \"10000000000000000000s\"");
    assert_ne!(bad, cfg);
    std::fs::write(&d.config, &bad).unwrap();
    d.signal(libc::SIGHUP);
    let rejected = wait_for(Duration::from_secs(5), "config_rejected", || async {
        d.events().await.into_iter().find(|e| e["event"]["kind"] == "config_rejected")
    })
    .await;
    let errors = rejected["event"]["errors"].as_str().unwrap();
    assert!(errors.contains("service[0].check.interval"), "{errors}");

    // Still running, still on the old config, and still answering a later reload.
    assert_eq!(unsafe { libc::kill(d.pid() as i32, 0) }, 0, "the daemon is alive");
    let svc = d.service("www").await;
    assert_eq!(svc["check"]["interval_ms"], 200, "old config kept");
    assert_eq!(svc["active"], "primary");
    std::fs::write(&d.config, cfg.replace("failback_hold = \"3s\"", "failback_hold = \"2s\"")).unwrap();
    d.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(5), "the good reload", || async { (d.service("www").await["failback_hold_ms"] == 2000).then_some(()) }).await;
}
