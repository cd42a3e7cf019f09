//! README's first command must keep working: `understudy demo` runs a failover and a failback
//! on this machine and prints the incident.

use crate::support::understudy_bin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_fails_over_fails_back_and_prints_the_incident() {
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new(understudy_bin()).arg("demo").kill_on_drop(true).output(),
    )
    .await
    .expect("the demo finishes within a minute")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for expected in [
        "www: initial: (none) -> primary (127.0.0.2)",
        "*** stopping the primary web server",
        "www: failover: primary -> backup (127.0.0.3)",
        "incident #1 opened",
        "www: failback: backup -> primary (127.0.0.2)",
        "Incident #1 — www — closed by auto",
        "detection     :",
        "demo finished",
    ] {
        assert!(stdout.contains(expected), "missing `{expected}` in:\n{stdout}");
    }
}
