//! Hooks and actuators through the real binary: a chatty hook and a hook that leaves a
//! background child both succeed (issue 8's reproductions), a slow hook never delays the next
//! DNS change, `retry = true` runs a failed hook again, and hooks and exec checks never see the
//! daemon's secrets.

use std::time::{Duration, Instant};

use crate::support::*;

const DIG: &str = "/usr/bin/dig";

/// `extra` after the quick-start service: hooks, more services, `[dns]`...
async fn daemon_with(extra: &str, env: &[(&str, &str)]) -> (tempfile::TempDir, Daemon, Nginx, Nginx) {
    let (dir, port, primary, backup) = two_nginx().await;
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "30s", extra);
    let d = Daemon::start_with_env(dir.path(), &cfg, api, env).await;
    (dir, d, primary, backup)
}

/// The `actuated` events of `actuator`, as (epoch, ok, detail, time_us).
fn actuated(events: &[serde_json::Value], actuator: &str) -> Vec<(u64, bool, String, u64)> {
    events
        .iter()
        .filter(|e| e["event"]["kind"] == "actuated" && e["event"]["actuator"] == actuator)
        .map(|e| {
            let ev = &e["event"];
            (ev["epoch"].as_u64().unwrap(), ev["ok"].as_bool().unwrap(), ev["detail"].as_str().unwrap().to_string(), e["time_us"].as_u64().unwrap())
        })
        .collect()
}

/// The `switched` events, as (epoch, ok, time_us).
fn switched(events: &[serde_json::Value]) -> Vec<(u64, bool, u64)> {
    events
        .iter()
        .filter(|e| e["event"]["kind"] == "switched")
        .map(|e| (e["event"]["epoch"].as_u64().unwrap(), e["event"]["ok"].as_bool().unwrap(), e["time_us"].as_u64().unwrap()))
        .collect()
}

/// Stops, when dropped, the processes whose PIDs a hook wrote to a file (its background
/// children), one per line.
struct KillListed(std::path::PathBuf);

impl Drop for KillListed {
    fn drop(&mut self) {
        for pid in std::fs::read_to_string(&self.0).unwrap_or_default().lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) on a PID our hook wrote down.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Issue 8's reproductions: `seq 1 40000` (200 KB of output) and `sleep 30 & echo started`
/// (a background child holding the output pipe) with a 3 s timeout were both recorded
/// `FAILED ... timed out after 3s`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_hook_and_a_hook_that_leaves_a_child_behind_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let extra = format!(
        r#"
[[service.hook]]
name = "chatty"
command = "seq 1 40000"
timeout = "3s"

[[service.hook]]
name = "detach"
command = "sleep 30 & echo $! >> {pid}; echo started"
timeout = "3s"
"#,
        pid = pidfile.display()
    );
    let _children = KillListed(pidfile.clone());
    let (_dir, d, _primary, _backup) = daemon_with(&extra, &[]).await;
    let started = Instant::now();
    let events = wait_for(Duration::from_secs(10), "the first switch to complete", || async {
        let ev = d.events().await;
        (!switched(&ev).is_empty()).then_some(ev)
    })
    .await;
    // Every run of both hooks (a busy machine may make a second decision early) succeeded.
    let first = switched(&events)[0].0;
    let chatty = actuated(&events, "hook:chatty");
    let detach = actuated(&events, "hook:detach");
    let ran = |a: &[(u64, bool, String, u64)]| a.iter().any(|x| x.0 == first);
    assert!(ran(&chatty) && ran(&detach), "{chatty:?} {detach:?}");
    assert!(chatty.iter().all(|a| a.1 && a.2.starts_with("exit 0: 1")), "the chatty hook failed: {chatty:?}");
    assert!(detach.iter().all(|a| a.1 && a.2 == "exit 0: started"), "the detaching hook failed: {detach:?}");
    assert!(switched(&events)[0].1, "the switch is complete");
    assert!(started.elapsed() < Duration::from_secs(3), "neither hook waited for its timeout: {:?}", started.elapsed());
}

/// The addresses `dig` gets for www.example.test A.
async fn dig_www(server: &str, port: u16) -> Vec<String> {
    let out = tokio::process::Command::new(DIG)
        .args([&format!("@{server}"), "-p", &port.to_string(), "+norec", "+time=1", "+tries=1", "+short", "www.example.test", "A"])
        .output()
        .await
        .expect("run dig (bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// A hook that takes 4 s runs for decision N (drain: primary -> backup); decision N+1
/// (switchover back to the primary) must reach DNS at once, not after the hook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_hook_does_not_delay_the_next_dns_change() {
    assert!(std::path::Path::new(DIG).exists(), "{DIG} is missing: apt-get install bind9-dnsutils");
    let dns_ip = "127.0.0.26";
    let dns_port = free_port(dns_ip);
    let extra = format!(
        r#"
[[service.hook]]
name = "slow"
command = "sleep 4"
timeout = "10s"
on = ["drain", "switchover"]
{}"#,
        dns_block(&format!("{dns_ip}:{dns_port}"))
    );
    let (_dir, d, _primary, _backup) = daemon_with(&extra, &[]).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    wait_for(Duration::from_secs(5), "dig to answer the primary", || async { (dig_www(dns_ip, dns_port).await == ["127.0.0.2"]).then_some(()) })
        .await;

    // Decision N: the hook starts its 3 s.
    assert!(d.cli(&["drain", "www", "primary"]).status.success());
    let n = Instant::now();
    wait_for(Duration::from_secs(2), "dig to answer the backup", || async { (dig_www(dns_ip, dns_port).await == ["127.0.0.3"]).then_some(()) }).await;
    // Decision N+1, while the hook is still busy with N.
    assert!(d.cli(&["enable", "www", "primary"]).status.success());
    assert!(d.cli(&["switchover", "www", "primary"]).status.success());
    let n1 = Instant::now();
    wait_for(Duration::from_secs(2), "dig to answer the primary again", || async {
        (dig_www(dns_ip, dns_port).await == ["127.0.0.2"]).then_some(())
    })
    .await;
    eprintln!("DNS served decision N+1 {:?} after it was made, {:?} after decision N", n1.elapsed(), n.elapsed());
    let events = d.events().await;
    let decision = |reason: &str| {
        let e = events.iter().find(|e| e["event"]["kind"] == "decision" && e["event"]["reason"] == reason);
        let e = e.unwrap_or_else(|| panic!("no {reason} decision"));
        (e["event"]["epoch"].as_u64().unwrap(), e["time_us"].as_u64().unwrap())
    };
    let ((e0, _), (e1, decided_n1_us)) = (decision("drain"), decision("switchover"));
    assert!(actuated(&events, "hook:slow").is_empty(), "DNS served N+1 while the hook was still running N");

    // `switched` still waits for every actuator: N after the hook's first run, N+1 after its
    // second.
    let events = wait_for(Duration::from_secs(15), "the switch to N+1 to complete", || async {
        let ev = d.events().await;
        switched(&ev).iter().any(|s| s.0 == e1).then_some(ev)
    })
    .await;
    let dns = actuated(&events, "dns");
    let hook = actuated(&events, "hook:slow");
    let dns_n1 = dns.iter().find(|a| a.0 == e1 && a.1).expect("dns applied N+1");
    let hook_n = hook.iter().find(|a| a.0 == e0).expect("the hook ran for N");
    assert!(dns_n1.3 < hook_n.3, "DNS applied N+1 before the hook finished N: {dns:?} {hook:?}");
    eprintln!(
        "dns applied decision N+1 {} us after it was recorded; the hook finished N {} ms later",
        dns_n1.3 - decided_n1_us,
        (hook_n.3 - dns_n1.3) / 1000
    );
    assert!(hook.iter().all(|a| a.1), "{hook:?}");
    let sw = switched(&events);
    let sw_n = sw.iter().find(|s| s.0 == e0).expect("switched N");
    let sw_n1 = sw.iter().find(|s| s.0 == e1).expect("switched N+1");
    assert!(sw_n.1 && sw_n1.1, "{sw:?}");
    assert!(sw_n.2 >= hook_n.3, "switched N only after the hook finished N: {sw:?} {hook:?}");
    let hook_n1 = hook.iter().find(|a| a.0 == e1).expect("the hook ran for N+1");
    assert!(sw_n1.2 >= hook_n1.3, "switched N+1 only after the hook finished N+1: {sw:?} {hook:?}");
}

/// `retry = true`: a hook that fails once is run again (with backoff) and the switch completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_hook_with_retry_is_run_again_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("second-time");
    let extra = format!(
        r#"
[[service.hook]]
name = "flaky"
command = "test -e {flag} || {{ touch {flag}; echo not yet; exit 1; }}"
timeout = "3s"
retry = true
"#,
        flag = flag.display()
    );
    let (_dir, d, _primary, _backup) = daemon_with(&extra, &[]).await;
    let events = wait_for(Duration::from_secs(10), "the retried hook to succeed", || async {
        let ev = d.events().await;
        let sw = switched(&ev);
        sw.iter().any(|s| s.0 == sw[0].0 && s.1).then_some(ev)
    })
    .await;
    // The first decision's runs (a busy machine may make a second decision early).
    let first = switched(&events)[0].0;
    let flaky: Vec<_> = actuated(&events, "hook:flaky").into_iter().filter(|a| a.0 == first).collect();
    assert_eq!(flaky.len(), 2, "{flaky:?}");
    assert!(!flaky[0].1 && flaky[0].2 == "exit status 1: not yet", "{flaky:?}");
    assert!(flaky[1].1 && flaky[1].0 == flaky[0].0, "{flaky:?}");
    let wait_ms = (flaky[1].3 - flaky[0].3) / 1000;
    assert!((450..3000).contains(&wait_ms), "retried after {wait_ms} ms (backoff 0.5-1 s)");
    // The first `switched` says the switch failed; the second that it is now complete.
    let sw: Vec<bool> = switched(&events).iter().filter(|s| s.0 == first).map(|s| s.1).collect();
    assert_eq!(sw, [false, true]);
}

/// Hooks and exec checks start from a clean environment: a secret given to the daemon through
/// a `*_env` variable (here a webhook URL) never reaches them; the `UNDERSTUDY_*` variables do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_and_exec_checks_never_see_the_daemons_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "https://127.0.0.1:9/hooks/T0KEN-s3cr3t";
    let hook_env = dir.path().join("hook.env");
    let check_env = dir.path().join("check.env");
    let extra = format!(
        r#"
[[service.hook]]
name = "dump"
command = "env > {hook_env}"
timeout = "3s"

[[service]]
name = "envcheck"

[service.check]
kind = "exec"
command = "env > {check_env}"
interval = "200ms"
timeout = "150ms"

[[service.target]]
name = "only"
address = "127.0.0.4"

[[notify]]
name = "hooked"
kind = "webhook"
url_env = "UNDERSTUDY_TEST_SECRET_URL"
"#,
        hook_env = hook_env.display(),
        check_env = check_env.display()
    );
    let (_dir, _d, _primary, _backup) = daemon_with(&extra, &[("UNDERSTUDY_TEST_SECRET_URL", secret), ("PGPASSWORD", "hunter2")]).await;
    for (file, what, must) in [(&hook_env, "the hook", "UNDERSTUDY_SERVICE=www"), (&check_env, "the exec check", "UNDERSTUDY_TARGET_NAME=only")] {
        let env = wait_for(Duration::from_secs(10), &format!("{what} to write its environment"), || async {
            std::fs::read_to_string(file).ok().filter(|s| s.contains(must))
        })
        .await;
        assert!(!env.contains("T0KEN-s3cr3t") && !env.contains("UNDERSTUDY_TEST_SECRET_URL"), "{what} saw the secret:\n{env}");
        assert!(!env.contains("hunter2"), "{what} saw the daemon's environment:\n{env}");
        assert!(!env.contains("UNDERSTUDY_LOG"), "{what} saw the daemon's own settings:\n{env}");
        assert!(env.lines().any(|l| l.starts_with("PATH=")), "{what} has a PATH:\n{env}");
    }
}
