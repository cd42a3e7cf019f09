//! Probe capacity: how many TCP targets one core can check at a 1 s interval, and how late the
//! checks start (schedule lag) while it does.
//!
//! For each N in `--targets` (default `1000,10000`) the benchmark re-runs its own binary as a
//! listener subprocess (`UNDERSTUDY_BENCH_LISTENER=N`) that binds N TCP listeners on 127.0.0.4
//! (ephemeral ports, printed one per line) and accepts and drops connections on a multi-threaded
//! runtime. This process then runs N scheduler tasks with real `TcpProbe`s (1 s interval, 500 ms
//! timeout) on a **current-thread** tokio runtime, i.e. one core, consumes the reports, warms up
//! for one interval and measures for `--seconds` (default 20). It prints checks/s, failures, CPU
//! time of this process per wall second, RSS and schedule lag p50/p99/max.
//!
//! Run: `cargo bench --bench probe_capacity -- [--targets 1000,10000] [--seconds 20]`.
//! It stops by itself and kills its listener by PID. It must not be used as a test (nothing is
//! asserted, numbers depend on the machine), and it measures only the probing side: the
//! listener's CPU is not counted.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use understudy::probe::Probe;

// The allocator the binary ships with, so the probe layer is measured as it runs there.
understudy::global_allocator!();
use understudy::probe::lag::LagHistogram;
use understudy::probe::scheduler::{self, Scheduled};
use understudy::probe::tcp::TcpProbe;

const LISTENER_ENV: &str = "UNDERSTUDY_BENCH_LISTENER";
/// Where the listener subprocess listens (see `bind_reusable` for why not 127.0.0.1).
const LISTEN_IP: [u8; 4] = [127, 0, 0, 4];
const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_millis(500);
/// The goal from DESIGN.md: 10,000 TCP targets at 1 s on one core, p99 lag under 20 ms.
const GOAL_TARGETS: usize = 10_000;
const GOAL_P99: Duration = Duration::from_millis(20);

fn main() -> ExitCode {
    if let Ok(n) = std::env::var(LISTENER_ENV) {
        return listener_main(&n);
    }
    let opts = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "probe_capacity: {e}\nusage: cargo bench --bench probe_capacity -- [--targets 1000,10000] [--seconds 20]"
            );
            return ExitCode::from(2);
        }
    };
    let nofile = raise_nofile();
    println!(
        "probe capacity: TCP probes, interval {INTERVAL:?}, timeout {TIMEOUT:?}, one current-thread runtime, {}s per run, \
         {} CPUs, RLIMIT_NOFILE {nofile}",
        opts.seconds,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    );
    println!();
    println!(
        "{:>7} {:>10} {:>8} {:>14} {:>9} {:>9} {:>9} {:>9}",
        "targets", "checks/s", "failed", "CPU s/s", "RSS MiB", "lag p50", "lag p99", "lag max"
    );
    let mut rows = Vec::new();
    for &n in &opts.targets {
        match run_one(n, opts.seconds) {
            Ok(row) => {
                row.print();
                rows.push(row);
            }
            Err(e) => {
                eprintln!("N = {n}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!();
    for row in &rows {
        if !row.failures.is_empty() {
            println!("failures at N = {}: {:?}", row.targets, row.failures);
        }
    }
    match rows.iter().find(|r| r.targets == GOAL_TARGETS) {
        Some(r) => {
            let met = r.lag_p99 < GOAL_P99 && r.failed == 0 && r.checks_per_s >= 0.99 * r.targets as f64;
            println!(
                "goal (10,000 targets, p99 lag < 20 ms, no failures): {} (p99 {}, {:.0} checks/s, {} failed, {:.0}% of a core)",
                if met { "MET" } else { "NOT MET" },
                ms(r.lag_p99),
                r.checks_per_s,
                r.failed,
                r.cpu_per_s * 100.0
            );
        }
        None => println!("goal (10,000 targets): not measured in this run (add 10000 to --targets)"),
    }
    ExitCode::SUCCESS
}

struct Options {
    targets: Vec<usize>,
    seconds: u64,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
        let mut opts = Options { targets: vec![1_000, 10_000], seconds: 20 };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--targets" => {
                    let v = args.next().ok_or("--targets needs a value")?;
                    opts.targets = v
                        .split(',')
                        .map(|s| s.trim().parse::<usize>().map_err(|e| format!("--targets {v:?}: {e}")))
                        .collect::<Result<_, _>>()?;
                    if opts.targets.contains(&0) {
                        return Err("--targets must be above zero".into());
                    }
                }
                "--seconds" => {
                    let v = args.next().ok_or("--seconds needs a value")?;
                    opts.seconds = v.parse().map_err(|e| format!("--seconds {v:?}: {e}"))?;
                    if opts.seconds == 0 {
                        return Err("--seconds must be above zero".into());
                    }
                }
                // cargo bench passes --bench; ignore it and other harness flags.
                _ => {}
            }
        }
        Ok(opts)
    }
}

struct Row {
    targets: usize,
    checks_per_s: f64,
    failed: u64,
    cpu_per_s: f64,
    rss_kib: u64,
    lag_p50: Duration,
    lag_p99: Duration,
    lag_max: Duration,
    failures: BTreeMap<String, u64>,
}

impl Row {
    fn print(&self) {
        println!(
            "{:>7} {:>10.0} {:>8} {:>14} {:>9.1} {:>9} {:>9} {:>9}",
            self.targets,
            self.checks_per_s,
            self.failed,
            format!("{:.3} ({:.0}%)", self.cpu_per_s, self.cpu_per_s * 100.0),
            self.rss_kib as f64 / 1024.0,
            ms(self.lag_p50),
            ms(self.lag_p99),
            ms(self.lag_max),
        );
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1000.0)
}

/// Kills the listener subprocess by PID when dropped.
struct Listener {
    child: Child,
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_listener(n: usize) -> Result<(Listener, Vec<SocketAddr>), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let child = Command::new(exe)
        .env(LISTENER_ENV, n.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start listener subprocess: {e}"))?;
    let mut listener = Listener { child };
    let stdout = listener.child.stdout.take().ok_or("listener has no stdout")?;
    let mut addrs = Vec::with_capacity(n);
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("reading listener ports: {e}"))?;
        if line == "ready" {
            break;
        }
        let port: u16 = line.trim().parse().map_err(|e| format!("listener printed {line:?}: {e}"))?;
        addrs.push(SocketAddr::from((LISTEN_IP, port)));
    }
    if addrs.len() != n {
        return Err(format!("listener bound {} of {n} ports", addrs.len()));
    }
    Ok((listener, addrs))
}

fn run_one(n: usize, seconds: u64) -> Result<Row, String> {
    let began = Instant::now();
    let (listener, addrs) = start_listener(n)?;
    let listening = began.elapsed();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build runtime: {e}"))?;
    let (row, wall, stopped) = runtime.block_on(async move {
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let lag = Arc::new(LagHistogram::new());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (id, addr) in addrs.iter().enumerate() {
            let probe: Arc<dyn Probe> = Arc::new(TcpProbe::new(*addr));
            let job = Scheduled { id: id as u64, probe, interval: INTERVAL, timeout: TIMEOUT };
            scheduler::spawn(&tracker, job, tx.clone(), cancel.clone(), lag.clone());
        }
        drop(tx);

        let passed = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let failures = Arc::new(std::sync::Mutex::new(BTreeMap::<String, u64>::new()));
        let consumer = {
            let (passed, failed, measuring, failures) =
                (passed.clone(), failed.clone(), measuring.clone(), failures.clone());
            tokio::spawn(async move {
                while let Some(report) = rx.recv().await {
                    if report.result.ok {
                        passed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        if measuring.load(Ordering::Relaxed)
                            && let Ok(mut f) = failures.lock()
                        {
                            *f.entry(report.result.reason.into_owned()).or_default() += 1;
                        }
                    }
                }
            })
        };

        // Warm up: every target has had its first (randomly offset) check.
        tokio::time::sleep(INTERVAL + Duration::from_millis(100)).await;
        lag.reset();
        measuring.store(true, Ordering::Relaxed);
        let (p0, f0, cpu0, t0) =
            (passed.load(Ordering::Relaxed), failed.load(Ordering::Relaxed), cpu_time(), Instant::now());
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (p1, f1, cpu1, wall) =
            (passed.load(Ordering::Relaxed), failed.load(Ordering::Relaxed), cpu_time(), t0.elapsed());
        let rss_kib = rss_kib();
        let row = Row {
            targets: n,
            checks_per_s: ((p1 - p0) + (f1 - f0)) as f64 / wall.as_secs_f64(),
            failed: f1 - f0,
            cpu_per_s: (cpu1.saturating_sub(cpu0)).as_secs_f64() / wall.as_secs_f64(),
            rss_kib,
            lag_p50: lag.quantile(0.5),
            lag_p99: lag.quantile(0.99),
            lag_max: lag.max(),
            failures: failures.lock().map(|f| f.clone()).unwrap_or_default(),
        };
        let stopping = Instant::now();
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
        let _ = consumer.await;
        (row, wall, stopping.elapsed())
    });
    drop(runtime);
    drop(listener);
    eprintln!(
        "  (N = {n}: listener ready in {:.2}s, measured {:.2}s of wall time, tasks stopped in {:.3}s, {:.1}s in all)",
        listening.as_secs_f64(),
        wall.as_secs_f64(),
        stopped.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    Ok(row)
}

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we pass; zeroed is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// VmRSS of this process in KiB (0 when unknown).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns the resulting soft limit.
fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur as u64
    }
}

/// The listener subprocess: bind N listeners, print their ports, accept and drop connections
/// until stdin closes (the benchmark exits or kills us).
fn listener_main(n: &str) -> ExitCode {
    let Ok(n) = n.parse::<usize>() else {
        eprintln!("{LISTENER_ENV}={n:?} is not a number");
        return ExitCode::from(2);
    };
    raise_nofile();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("listener: cannot build runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let mut out = std::io::stdout().lock();
        for _ in 0..n {
            let listener = match bind_reusable() {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("listener: bind {}:0: {e}", std::net::Ipv4Addr::from(LISTEN_IP));
                    return ExitCode::FAILURE;
                }
            };
            let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
            if writeln!(out, "{port}").is_err() {
                return ExitCode::FAILURE;
            }
            tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => drop(stream),
                        // Out of file descriptors or similar: back off instead of spinning.
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            });
        }
        if writeln!(out, "ready").and_then(|_| out.flush()).is_err() {
            return ExitCode::FAILURE;
        }
        drop(out);
        // Run until the parent closes our stdin (or kills us).
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await;
        ExitCode::SUCCESS
    })
}

/// Bind `LISTEN_IP:0` with SO_REUSEADDR.
///
/// A run leaves tens of thousands of TIME_WAIT sockets on loopback. The probes' own ones sit on
/// ephemeral ports of 127.0.0.1 (the source address for any loopback destination) without
/// SO_REUSEADDR, so listeners on 127.0.0.1 would soon find no free ephemeral port; listeners on
/// another loopback address do not conflict with them, and SO_REUSEADDR lets them reuse ports
/// whose previous run's accepted sockets are still in TIME_WAIT.
fn bind_reusable() -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((LISTEN_IP, 0)))?;
    socket.listen(1024)
}
