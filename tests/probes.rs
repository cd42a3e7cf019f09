//! Integration tests for `probe/`: real peers (nginx, openssl, /bin/sh) on loopback for the
//! probes, tokio's paused clock for the scheduler.
//!
//! nginx and openssl are required: when they are missing the tests fail with a message saying
//! what to install (CI installs them); nothing is skipped. No test reaches the network beyond
//! 127.0.0.0/8 and no test times anything with real sleeps except readiness polling with a
//! deadline.
//!
//! Layout:
//! - `http`: status ranges, body matching, Host header, headers, HTTPS verification, refused
//!   connections, timeouts, `probe::build`.
//! - `tcp`: connect and refused.
//! - `exec`: exit status, output, environment, signals, process-group kill on timeout.
//! - `scheduler`: fixed rate, spread, no overlap, hung probes, timeouts, no bursts, shutdown.

#[path = "support/probe_nginx.rs"]
mod probe_nginx;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use understudy::config::{CheckConfig, CheckKind, ExecCheck, HttpCheck, StatusRange, TargetConfig, TcpCheck};
use understudy::probe::{self, Probe, Verdict};

fn http_check(path: &str) -> HttpCheck {
    HttpCheck {
        tls: false,
        port: 80,
        path: path.into(),
        method: "GET".into(),
        host: None,
        headers: vec![],
        expect_status: vec![StatusRange { lo: 200, hi: 399 }],
        body_contains: None,
        tls_verify: true,
        keep_alive: false,
    }
}

fn target(name: &str, ip: &str, check_port: Option<u16>) -> TargetConfig {
    TargetConfig { name: name.into(), address: ip.parse().expect("ip"), check_address: None, check_port }
}

async fn http(check: &HttpCheck, addr: SocketAddr) -> Verdict {
    let probe = probe::http::HttpProbe::new(check, addr).expect("build http probe");
    probe.check().await
}

mod http {
    use super::*;
    use probe_nginx::{HOST, Nginx};

    #[tokio::test]
    async fn passes_on_200() {
        let nginx = Nginx::start();
        assert_eq!(http(&http_check("/health"), nginx.plain).await, Verdict::pass("HTTP 200"));
    }

    #[tokio::test]
    async fn expect_status_ranges() {
        let nginx = Nginx::start();
        assert_eq!(http(&http_check("/bad"), nginx.plain).await, Verdict::fail("HTTP 503 (expected 200-399)"));
        let mut only_503 = http_check("/bad");
        only_503.expect_status = vec![StatusRange { lo: 503, hi: 503 }];
        assert_eq!(http(&only_503, nginx.plain).await, Verdict::pass("HTTP 503"));
        only_503.path = "/health".into();
        assert_eq!(http(&only_503, nginx.plain).await, Verdict::fail("HTTP 200 (expected 503)"));

        // Redirects are not followed: a 301 is a status like any other.
        assert_eq!(http(&http_check("/redirect"), nginx.plain).await, Verdict::pass("HTTP 301"));
        let mut only_200 = http_check("/redirect");
        only_200.expect_status = vec![StatusRange { lo: 200, hi: 200 }, StatusRange { lo: 204, hi: 204 }];
        assert_eq!(http(&only_200, nginx.plain).await, Verdict::fail("HTTP 301 (expected 200, 204)"));
    }

    #[tokio::test]
    async fn body_contains() {
        let nginx = Nginx::start();
        let mut check = http_check("/health");
        check.body_contains = Some("ok".into());
        assert_eq!(http(&check, nginx.plain).await, Verdict::pass("HTTP 200"));
        check.path = "/degraded".into();
        assert_eq!(http(&check, nginx.plain).await, Verdict::fail("body does not contain \"ok\""));
    }

    #[tokio::test]
    async fn sends_the_configured_host_header_to_the_pinned_address() {
        let nginx = Nginx::start();
        let mut check = http_check("/");
        check.body_contains = Some("host ok".into());
        // health.example.test does not resolve anywhere: the probe must connect to the address.
        check.host = Some(HOST.into());
        assert_eq!(http(&check, nginx.vhost).await, Verdict::pass("HTTP 200"));
        // A port written in `host` does not redirect the connection.
        check.host = Some(format!("{HOST}:9"));
        assert_eq!(http(&check, nginx.vhost).await, Verdict::pass("HTTP 200"));
        check.host = None;
        assert_eq!(http(&check, nginx.vhost).await, Verdict::fail("HTTP 404 (expected 200-399)"));
        check.host = Some("192.0.2.1".into());
        assert_eq!(http(&check, nginx.vhost).await, Verdict::fail("HTTP 404 (expected 200-399)"));
    }

    #[tokio::test]
    async fn sends_configured_headers_and_method() {
        let nginx = Nginx::start();
        let mut check = http_check("/echo-header");
        check.headers = vec![("X-Check".into(), "understudy".into())];
        check.body_contains = Some("x-check=understudy".into());
        assert_eq!(http(&check, nginx.plain).await, Verdict::pass("HTTP 200"));
        check.method = "HEAD".into();
        check.body_contains = None;
        assert_eq!(http(&check, nginx.plain).await, Verdict::pass("HTTP 200"));
    }

    #[tokio::test]
    async fn https_self_signed_fails_with_verification_and_passes_without() {
        let nginx = Nginx::start();
        let mut check = http_check("/health");
        check.tls = true;
        check.host = Some(HOST.into());
        check.body_contains = Some("tls ok".into());
        let verdict = http(&check, nginx.tls).await;
        eprintln!("self-signed, verified: {verdict:?}");
        assert!(!verdict.ok, "self-signed certificate accepted: {verdict:?}");
        assert!(verdict.reason.contains("certificate"), "reason does not mention the certificate: {verdict:?}");
        assert!(verdict.reason.starts_with("TLS: "), "reason is not short: {verdict:?}");

        check.tls_verify = false;
        assert_eq!(http(&check, nginx.tls).await, Verdict::pass("HTTP 200"));
    }

    /// The connection each logged request came on (nginx's `$connection` serial number).
    fn connections(lines: &[String]) -> Vec<String> {
        lines.iter().map(|l| l.split(' ').next().unwrap_or_default().to_string()).collect()
    }

    #[tokio::test]
    async fn keep_alive_reuses_one_connection_and_the_default_opens_one_per_check() {
        let nginx = Nginx::start();
        let mut check = http_check("/health");
        let fresh = probe::http::HttpProbe::new(&check, nginx.plain).expect("probe");
        for _ in 0..3 {
            assert_eq!(fresh.check().await, Verdict::pass("HTTP 200"));
        }
        let conns = connections(&nginx.log("plain.log", 3));
        assert!(conns[0] != conns[1] && conns[1] != conns[2] && conns[0] != conns[2], "one connection per check by default: {conns:?}");

        check.keep_alive = true;
        let kept = probe::http::HttpProbe::new(&check, nginx.plain).expect("probe");
        for _ in 0..3 {
            assert_eq!(kept.check().await, Verdict::pass("HTTP 200"));
        }
        let conns = connections(&nginx.log("plain.log", 6));
        assert!(conns[3] == conns[4] && conns[4] == conns[5], "keep_alive: one connection for three checks: {conns:?}");
        assert!(!conns[..3].contains(&conns[3]), "{conns:?}");

        // A target that goes away is still noticed: the kept connection dies with it.
        let mut nginx = nginx;
        nginx.kill();
        let v = kept.check().await;
        assert!(!v.ok, "a check after the target died: {v:?}");
    }

    #[tokio::test]
    async fn https_checks_resume_the_tls_session() {
        let nginx = Nginx::start();
        let mut check = http_check("/health");
        check.tls = true;
        check.host = Some(HOST.into());
        check.tls_verify = false;
        let p = probe::http::HttpProbe::new(&check, nginx.tls).expect("probe");
        for _ in 0..3 {
            assert_eq!(p.check().await, Verdict::pass("HTTP 200"));
        }
        let lines = nginx.log("tls.log", 3);
        let reused: Vec<&str> = lines.iter().map(|l| l.split(' ').nth(1).unwrap_or_default()).collect();
        assert_eq!(reused, [".", "r", "r"], "a full handshake, then resumed sessions: {lines:?}");
        let conns = connections(&lines);
        assert!(conns[0] != conns[1] && conns[1] != conns[2], "still a fresh connection per check: {conns:?}");
    }

    #[tokio::test]
    async fn https_against_a_plain_listener_fails_cleanly() {
        let nginx = Nginx::start();
        let mut check = http_check("/health");
        check.tls = true;
        check.tls_verify = false;
        let verdict = http(&check, nginx.plain).await;
        eprintln!("https to a plain listener: {verdict:?}");
        assert!(!verdict.ok, "{verdict:?}");
        assert!(verdict.reason.starts_with("TLS: "), "{verdict:?}");
    }

    #[tokio::test]
    async fn killed_nginx_fails_http_and_tcp_with_connection_refused() {
        let mut nginx = Nginx::start();
        let http_probe =
            probe::http::HttpProbe::new(&http_check("/health"), nginx.plain).expect("probe");
        let tcp_probe = probe::tcp::TcpProbe::new(nginx.plain);
        assert_eq!(http_probe.check().await, Verdict::pass("HTTP 200"));
        assert_eq!(tcp_probe.check().await, Verdict::pass("connected"));

        nginx.kill();
        // The same probe objects notice at once: no pooled connection hides the dead listener.
        assert_eq!(http_probe.check().await, Verdict::fail("connection refused"));
        assert_eq!(tcp_probe.check().await, Verdict::fail("connection refused"));
    }

    #[tokio::test]
    async fn a_silent_server_times_out_with_the_check_timeout() {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        // The timeout is the scheduler's: it drops the check (and its hedge) when it expires.
        let probe = probe::http::HttpProbe::new(&http_check("/health"), addr).expect("probe");
        let job = probe::scheduler::Scheduled { id: 7, probe: Arc::new(probe), interval: Duration::from_secs(1), timeout: Duration::from_millis(300) };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (tracker, cancel) = (tokio_util::task::TaskTracker::new(), tokio_util::sync::CancellationToken::new());
        probe::scheduler::spawn(&tracker, job, tx, cancel.clone(), Arc::new(probe::lag::LagHistogram::new()));
        // The first check starts within the interval's random offset.
        let report = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("a report in time").expect("a report");
        assert_eq!((report.result.ok, report.result.reason.as_ref()), (false, "timed out after 300ms"));
        assert_eq!(report.result.latency, Duration::from_millis(300));
        cancel.cancel();
        holder.abort();
    }

    #[tokio::test]
    async fn build_uses_the_check_port_and_check_address() {
        let nginx = Nginx::start();
        let mut check = http_check("/health");
        check.port = 1; // overridden by the target's check_port
        let config = CheckConfig {
            postgres: None,
            replica: None,
            kind: CheckKind::Http(check),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            fall: 3,
            rise: 2,
            fast_interval: Duration::from_millis(250),
            down_interval: Duration::from_secs(1),
        };
        let mut t = target("primary", "198.18.0.10", Some(nginx.plain.port()));
        t.check_address = Some(nginx.plain.ip());
        let probe = probe::build(&config, &t).expect("build");
        assert_eq!(probe.describe(), format!("http://{}/health", nginx.plain));
        assert_eq!(probe.check().await, Verdict::pass("HTTP 200"));
    }
}

mod tcp {
    use super::*;
    use probe_nginx::Nginx;

    #[tokio::test]
    async fn connects_to_nginx_and_build_picks_the_port() {
        let nginx = Nginx::start();
        let config = CheckConfig {
            postgres: None,
            replica: None,
            kind: CheckKind::Tcp(TcpCheck { port: nginx.tls.port(), close: Default::default() }),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            fall: 3,
            rise: 2,
            fast_interval: Duration::from_millis(250),
            down_interval: Duration::from_secs(1),
        };
        let probe = probe::build(&config, &target("primary", probe_nginx::IP, None)).expect("build");
        assert_eq!(probe.describe(), format!("tcp://{}", nginx.tls));
        assert_eq!(probe.check().await, Verdict::pass("connected"));
    }

    #[tokio::test]
    async fn refused_on_a_closed_port() {
        let (_held, addr) = probe_nginx::closed_port();
        assert_eq!(probe::tcp::TcpProbe::new(addr).check().await, Verdict::fail("connection refused"));
    }
}

mod exec {
    use super::*;
    use std::time::Instant;

    fn sh(script: &str) -> probe::exec::ExecProbe {
        let mut t = target("primary", "198.18.0.10", Some(8080));
        t.check_address = Some("127.0.0.2".parse().expect("ip"));
        sh_for(script, &t)
    }

    fn sh_for(script: &str, t: &TargetConfig) -> probe::exec::ExecProbe {
        let check = ExecCheck { command: vec!["/bin/sh".into(), "-c".into(), script.into()] };
        probe::exec::ExecProbe::new(&check, t)
    }

    #[tokio::test]
    async fn exit_zero_passes_with_the_first_line_of_stdout() {
        let v = sh("echo healthy; echo more; echo noise >&2").check().await;
        assert_eq!(v, Verdict::pass("exit 0: healthy"));
    }

    #[tokio::test]
    async fn nonzero_exit_fails_with_status_and_output() {
        assert_eq!(sh("echo broken; exit 3").check().await, Verdict::fail("exit status 3: broken"));
        assert_eq!(sh("echo 'no db' >&2; exit 1").check().await, Verdict::fail("exit status 1: no db"));
    }

    #[tokio::test]
    async fn the_target_is_in_the_environment() {
        let v = sh(r#"echo "$UNDERSTUDY_TARGET_NAME $UNDERSTUDY_TARGET_ADDRESS port=$UNDERSTUDY_CHECK_PORT""#)
            .check()
            .await;
        assert_eq!(v, Verdict::pass("exit 0: primary 127.0.0.2 port=8080"));
        let no_port = target("backup", "198.18.0.11", None);
        let v = sh_for(r#"echo "$UNDERSTUDY_TARGET_ADDRESS port=$UNDERSTUDY_CHECK_PORT.""#, &no_port).check().await;
        assert_eq!(v, Verdict::pass("exit 0: 198.18.0.11 port=."));
    }

    #[tokio::test]
    async fn stdin_is_empty() {
        assert_eq!(
            sh("if read line; then echo got input; exit 1; fi; echo eof").check().await,
            Verdict::pass("exit 0: eof")
        );
    }

    #[tokio::test]
    async fn a_signal_is_reported() {
        assert_eq!(sh("kill -9 $$").check().await, Verdict::fail("killed by signal 9"));
    }

    #[tokio::test]
    async fn a_missing_program_cannot_run() {
        let check = ExecCheck { command: vec!["/nonexistent/check-db".into()] };
        let v = probe::exec::ExecProbe::new(&check, &target("primary", "127.0.0.2", None)).check().await;
        assert!(!v.ok);
        assert!(v.reason.starts_with("cannot run /nonexistent/check-db: "), "{v:?}");
        let empty = ExecCheck { command: vec![] };
        assert!(!probe::exec::ExecProbe::new(&empty, &target("p", "127.0.0.2", None)).check().await.ok);
    }

    #[tokio::test]
    async fn large_output_does_not_block_the_child() {
        // 1 MiB on each stream, far more than a pipe holds and than we keep.
        let v = tokio::time::timeout(
            Duration::from_secs(20),
            sh("head -c 1048576 /dev/zero | tr '\\0' x; head -c 1048576 /dev/zero >&2; echo; exit 4").check(),
        )
        .await
        .expect("exec check hung on a full pipe");
        assert!(!v.ok);
        assert!(v.reason.starts_with("exit status 4: xxxx"), "{:?}", &v.reason[..v.reason.len().min(40)]);
        assert!(v.reason.len() < 400, "reason not shortened: {} bytes", v.reason.len());
    }

    #[tokio::test]
    async fn a_background_grandchild_holding_stdout_does_not_hold_the_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("bg.pid");
        let script = format!("sleep 30 & echo $! > {}; echo started", pidfile.display());
        let v = tokio::time::timeout(Duration::from_secs(10), sh(&script).check())
            .await
            .expect("check waited for the grandchild");
        assert_eq!(v, Verdict::pass("exit 0: started"));
        // Not ours to kill after a normal exit; clean up.
        if let Some(pid) = read_pid(&pidfile) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("grandchild.pid");
        let script = format!("sleep 100 & echo $! > {}; wait", pidfile.display());
        let probe: Arc<dyn Probe> = Arc::new(sh(&script));

        // Through the scheduler, as the daemon runs it.
        let tracker = tokio_util::task::TaskTracker::new();
        let cancel = tokio_util::sync::CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let lag = Arc::new(probe::lag::LagHistogram::new());
        let job = probe::scheduler::Scheduled {
            id: 7,
            probe,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
        };
        probe::scheduler::spawn(&tracker, job, tx, cancel.clone(), lag);
        let report =
            tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("no report").expect("channel");
        cancel.cancel();
        tracker.close();
        tracker.wait().await;

        assert_eq!(report.id, 7);
        assert!(!report.result.ok);
        assert_eq!(report.result.reason, "timed out after 500ms");
        assert_eq!(report.result.latency, Duration::from_millis(500));

        let pid = read_pid(&pidfile).expect("the script wrote the grandchild's pid before the timeout");
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_alive(pid) {
            assert!(Instant::now() < deadline, "grandchild sleep {pid} survived the timeout");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn read_pid(path: &std::path::Path) -> Option<i32> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// Alive = exists and is not a zombie (a killed orphan may wait for init to reap it).
    fn process_alive(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => false,
            Ok(stat) => {
                let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
                !matches!(state, Some('Z') | Some('X'))
            }
        }
    }
}

mod scheduler {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;
    use understudy::probe::CheckFuture;
    use understudy::probe::lag::LagHistogram;
    use understudy::probe::scheduler::{Report, Scheduled, spawn};

    /// Counts checks; each takes `work` of (virtual) time, or never finishes when `None`.
    struct Fake {
        work: Option<Duration>,
        starts: Mutex<Vec<Instant>>,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
    }

    impl Fake {
        fn new(work: Option<Duration>) -> Arc<Fake> {
            Arc::new(Fake {
                work,
                starts: Mutex::new(Vec::new()),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
            })
        }
        fn starts(&self) -> Vec<Instant> {
            self.starts.lock().expect("lock").clone()
        }
    }

    struct InFlight<'a>(&'a AtomicUsize);
    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Probe for Fake {
        fn check(&self) -> CheckFuture<'_> {
            Box::pin(async move {
                self.starts.lock().expect("lock").push(Instant::now());
                let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_in_flight.fetch_max(now, Ordering::SeqCst);
                let _guard = InFlight(&self.in_flight);
                match self.work {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending::<()>().await,
                }
                Verdict::pass("fake ok")
            })
        }
        fn describe(&self) -> String {
            "fake".into()
        }
    }

    struct Harness {
        tracker: TaskTracker,
        cancel: CancellationToken,
        rx: UnboundedReceiver<Report>,
        lag: Arc<LagHistogram>,
        start: Instant,
    }

    fn start(probes: &[(u64, Arc<Fake>)], interval: Duration, timeout: Duration) -> Harness {
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let (tx, rx) = unbounded_channel();
        let lag = Arc::new(LagHistogram::new());
        for (id, fake) in probes {
            let job = Scheduled { id: *id, probe: fake.clone(), interval, timeout };
            spawn(&tracker, job, tx.clone(), cancel.clone(), lag.clone());
        }
        Harness { tracker, cancel, rx, lag, start: Instant::now() }
    }

    impl Harness {
        fn drain(&mut self) -> Vec<Report> {
            let mut out = Vec::new();
            while let Ok(r) = self.rx.try_recv() {
                out.push(r);
            }
            out
        }
        async fn stop(self) {
            self.cancel.cancel();
            self.tracker.close();
            tokio::time::timeout(Duration::from_millis(10), self.tracker.wait())
                .await
                .expect("scheduler tasks did not stop promptly after cancel");
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    fn assert_fixed_rate(starts: &[Instant], interval: Duration) {
        for pair in starts.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= interval - Duration::from_millis(1) && gap <= interval + Duration::from_millis(1),
                "checks {gap:?} apart, expected {interval:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_target_is_checked_once_per_interval_and_never_overlaps() {
        let fakes: Vec<(u64, Arc<Fake>)> = (0..20).map(|i| (i, Fake::new(Some(Duration::from_millis(400))))).collect();
        let mut h = start(&fakes, SECOND, Duration::from_millis(900));
        tokio::time::sleep(Duration::from_millis(10_500)).await;
        for (id, fake) in &fakes {
            let starts = fake.starts();
            // First check within the first interval, then one per second: 10 or 11 by 10.5 s.
            assert!((10..=11).contains(&starts.len()), "target {id}: {} checks", starts.len());
            assert!(starts[0] - h.start < SECOND + Duration::from_millis(1), "target {id} started late");
            assert_fixed_rate(&starts, SECOND);
            assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 1, "target {id} overlapped");
        }
        let reports = h.drain();
        let finished: usize = fakes.iter().map(|(_, f)| f.starts().len() - f.in_flight.load(Ordering::SeqCst)).sum();
        assert_eq!(reports.len(), finished);
        assert!(reports.iter().all(|r| r.result.ok && r.result.reason == "fake ok"));
        assert!(reports.iter().all(|r| r.result.latency >= Duration::from_millis(400)));
        assert_eq!(h.lag.count() as usize, fakes.iter().map(|(_, f)| f.starts().len()).sum::<usize>());
        assert!(h.lag.quantile(1.0) <= Duration::from_millis(2), "lag under a paused clock: {:?}", h.lag);
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn first_checks_are_spread_over_the_interval() {
        let fakes: Vec<(u64, Arc<Fake>)> = (0..200).map(|i| (i, Fake::new(Some(Duration::ZERO)))).collect();
        let h = start(&fakes, SECOND, Duration::from_millis(500));
        tokio::time::sleep(Duration::from_millis(1_001)).await;
        let mut firsts: Vec<u128> = fakes
            .iter()
            .map(|(_, f)| {
                let starts = f.starts();
                assert_eq!(starts.len(), 1, "exactly one check in the first interval");
                (starts[0] - h.start).as_millis()
            })
            .collect();
        firsts.sort_unstable();
        firsts.dedup();
        // 200 uniform draws over 1000 ms: about 180 distinct milliseconds. All at once would be 1.
        assert!(firsts.len() > 100, "first checks bunched: {} distinct ms", firsts.len());
        // Both halves of the interval are used.
        assert!(firsts.iter().any(|&ms| ms < 500) && firsts.iter().any(|&ms| ms >= 500));
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_probe_times_out_and_does_not_delay_another() {
        let hung = Fake::new(None);
        let fast = Fake::new(Some(Duration::from_millis(5)));
        let mut h = start(&[(1, hung.clone()), (2, fast.clone())], SECOND, Duration::from_millis(500));
        tokio::time::sleep(Duration::from_millis(5_999)).await;
        assert_fixed_rate(&fast.starts(), SECOND);
        assert_fixed_rate(&hung.starts(), SECOND);
        assert!(fast.starts().len() >= 5, "fast probe starved: {}", fast.starts().len());
        assert_eq!(hung.max_in_flight.load(Ordering::SeqCst), 1, "hung checks overlapped");

        let reports = h.drain();
        let hung_reports: Vec<&Report> = reports.iter().filter(|r| r.id == 1).collect();
        assert!(hung_reports.len() >= 4, "{} timeouts reported", hung_reports.len());
        for r in &hung_reports {
            assert!(!r.result.ok);
            assert_eq!(r.result.reason, "timed out after 500ms");
            assert_eq!(r.result.latency, Duration::from_millis(500));
        }
        assert!(reports.iter().filter(|r| r.id == 2).all(|r| r.result.ok));
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_wakeup_skips_missed_slots_instead_of_bursting() {
        let fake = Fake::new(Some(Duration::ZERO));
        let h = start(&[(1, fake.clone())], SECOND, Duration::from_millis(500));
        while fake.starts().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let first = fake.starts()[0];
        // Jump 3.5 s in one step, as if the runtime had been stalled: slots at +1, +2 and +3 s
        // are missed. One check runs late, then the next one is on the grid at +4 s.
        tokio::time::advance(Duration::from_millis(3_500)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let starts = fake.starts();
        assert_eq!(starts.len(), 2, "burst after a stall: {starts:?}");
        assert!(h.lag.max() >= Duration::from_millis(2_400), "late wake-up not recorded: {:?}", h.lag);
        tokio::time::sleep_until(first + Duration::from_millis(4_001)).await;
        let starts = fake.starts();
        assert_eq!(starts.len(), 3);
        let third = starts[2] - first;
        assert!(third >= Duration::from_millis(3_999) && third <= Duration::from_millis(4_001), "{third:?}");
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_stops_the_tasks_even_during_a_check() {
        let hung = Fake::new(None);
        let idle = Fake::new(Some(Duration::ZERO));
        let h = start(&[(1, hung.clone()), (2, idle.clone())], Duration::from_secs(10), Duration::from_secs(9));
        while hung.starts().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(hung.in_flight.load(Ordering::SeqCst), 1);
        h.stop().await;
        assert_eq!(hung.in_flight.load(Ordering::SeqCst), 0, "the check in progress was not dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_receiver_stops_the_tasks() {
        let fake = Fake::new(Some(Duration::ZERO));
        let h = start(&[(1, fake.clone()), (2, Fake::new(None))], SECOND, Duration::from_millis(500));
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let Harness { tracker, rx, .. } = h;
        drop(rx);
        tracker.close();
        tokio::time::timeout(Duration::from_millis(10), tracker.wait())
            .await
            .expect("scheduler tasks kept running without a receiver");
    }

    #[tokio::test]
    async fn real_tcp_probes_through_the_scheduler() {
        // A smoke test on the real clock: a listener passes, a closed port fails.
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.expect("bind");
        let open = listener.local_addr().expect("addr");
        let (_held, closed) = probe_nginx::closed_port();
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let (tx, mut rx) = unbounded_channel();
        let lag = Arc::new(LagHistogram::new());
        for (id, addr) in [(1u64, open), (2, closed)] {
            let probe: Arc<dyn Probe> = Arc::new(probe::tcp::TcpProbe::new(addr));
            let job =
                Scheduled { id, probe, interval: Duration::from_millis(200), timeout: Duration::from_millis(100) };
            spawn(&tracker, job, tx.clone(), cancel.clone(), lag.clone());
        }
        drop(tx);
        let mut seen = [None, None];
        while seen.iter().any(Option::is_none) {
            let r = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("no report").expect("open");
            seen[(r.id - 1) as usize] = Some(r.result);
        }
        let [Some(up), Some(down)] = seen else { unreachable!() };
        assert!(up.ok && up.reason == "connected", "{up:?}");
        assert!(!down.ok && down.reason == "connection refused", "{down:?}");
        assert!(up.started_us > 1_600_000_000_000_000, "started_us is wall-clock microseconds");
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
        drop(listener);
    }
}
