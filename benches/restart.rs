//! Restart to first DNS answer with 1,000,000 recorded events: how long after `understudy run`
//! is spawned does a failover record answer, when the data directory holds a million events?
//!
//! Two layouts, built in the same run from the same events:
//! - `segmented`: written through the real `EventLog` (default `log_segment_size`), so start-up
//!   reads the newest segment's snapshot and the records after it;
//! - `single file`: one `events.log` with every record and no snapshot, as versions before
//!   segments wrote it (what the first start after an upgrade reads).
//!
//! The events are a service's life: health flips, decisions, actuator steps, checker errors;
//! the last decision puts `www` on its backup, so the first answer must be the backup's address
//! (the bench reports a run that answers anything else as failed rather than timing it).
//!
//! Each run spawns the release binary with a `[dns]` failover record on loopback and sends a UDP
//! query for `www.example.test A` every millisecond until one is answered; the time from spawn
//! to that answer is the figure. Median of `--runs` (default 5) runs per layout, printed with
//! min-max. Run: `cargo bench --bench restart -- [--runs 5] [--events 1000000]`.
//!
//! Bounded: every run gives up after 30 s; the daemon is killed by its PID after each run.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use understudy::decision::Reason;
use understudy::events::log::{EventLog, LogOptions};
use understudy::events::{Event, Record, Step};
use understudy::health::Health;

const PRIMARY: &str = "127.0.0.2";
const BACKUP: [u8; 4] = [127, 0, 0, 3];

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The `i`-th event of the history. Every 1,000th starts a failover to the backup that fails
/// back 5 events later (the incident opens and closes), the rest is a healthy service's noise;
/// the history ends with a failover, so the backup is active.
fn event(i: u64, n: u64) -> Event {
    let service = "www".to_string();
    let t = 1_700_000_000_000_000 + i * 1000;
    let phase = if i == n { 0 } else { i % 1000 };
    if phase == 0 || phase == 5 {
        let to_backup = phase == 0;
        let (from, to) = if to_backup { ("primary", "backup") } else { ("backup", "primary") };
        return Event::Decision {
            service,
            epoch: i,
            from: Some(from.into()),
            to: Some(to.into()),
            from_rank: Some(usize::from(!to_backup)),
            to_rank: Some(usize::from(to_backup)),
            address: None,
            reason: if to_backup { Reason::Failover } else { Reason::Failback },
            all_down: false,
        };
    }
    match phase {
        1 => Event::Actuated { service, epoch: i - 1, actuator: "dns".into(), step: Step::Applied, ok: true, detail: "www.example.test A 127.0.0.3".into(), duration_us: 40 },
        2 => Event::Switched { service, epoch: i - 2, ok: true, steps: 1, duration_us: 60 },
        3 => Event::TargetUp { service, target: "primary".into(), from: Health::Down, streak: 2, first_ok_us: t - 2000, reason: "HTTP 200 in 1.2 ms".into(), checks: Vec::new() },
        _ if i.is_multiple_of(2) => Event::TargetDown {
            service,
            target: "backup".into(),
            from: Health::Up,
            streak: 3,
            first_failure_us: t - 3000,
            last_ok_us: Some(t - 4000),
            reason: "connect 127.0.0.3:80: connection refused".into(),
            checks: Vec::new(),
        },
        _ => Event::TargetUp { service, target: "backup".into(), from: Health::Down, streak: 2, first_ok_us: t - 2000, reason: "HTTP 200 in 0.9 ms".into(), checks: Vec::new() },
    }
}

/// The records of `n` events and the incident events the daemon records after them.
fn history(n: u64, mut each: impl FnMut(Record)) {
    let mut book = understudy::events::incident::IncidentBook::default();
    let mut seq = 0;
    for i in 1..=n {
        let mut queue = vec![event(i, n)];
        while let Some(e) = queue.pop() {
            seq += 1;
            let r = Record { seq, time_us: 1_700_000_000_000_000 + seq * 1000, event: e };
            queue.extend(book.react(&r));
            book.apply(&r);
            each(r);
        }
    }
}

fn write_segmented(dir: &Path, n: u64) -> u64 {
    let (mut log, _, _) = EventLog::open_with(dir, LogOptions::default()).expect("open the event log");
    log.set_fsync(false);
    let mut count = 0;
    history(n, |r| {
        assert_eq!(log.append(r.event, r.time_us).seq, r.seq);
        count += 1;
        if count % 50_000 == 0 {
            // Keep the queue short: the writer folds every record into the next snapshot.
            assert!(log.flush(Duration::from_secs(120)), "the writer keeps up");
        }
    });
    assert!(log.flush(Duration::from_secs(120)));
    count
}

fn write_single(dir: &Path, n: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("events.log")).unwrap());
    history(n, |r| f.write_all(understudy::crclog::encode(&r).as_bytes()).unwrap());
    f.into_inner().unwrap().sync_all().unwrap();
}

fn free_port() -> u16 {
    for _ in 0..100 {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1");
}

fn config(data: &Path, api: u16, dns: u16) -> String {
    format!(
        r#"[daemon]
data_dir = "{data}"
api = "127.0.0.1:{api}"

[[service]]
name = "www"
failback = "manual"

[service.check]
kind = "tcp"
port = 9
interval = "1s"
timeout = "500ms"

[[service.target]]
name = "primary"
address = "{PRIMARY}"

[[service.target]]
name = "backup"
address = "127.0.0.3"

[dns]
listen = ["127.0.0.1:{dns}"]

[[dns.zone]]
name = "example.test"
nameservers = {{ "ns1.example.test" = "127.0.0.1" }}

[[dns.zone.record]]
name = "www"
service = "www"
ttl = 5
"#,
        data = data.display()
    )
}

/// A query for www.example.test A with id `id`.
fn query(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in ["www", "example", "test"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The A address in an answer to `query(id)` (the last 4 bytes of a one-answer response).
fn answer(id: u16, resp: &[u8]) -> Option<[u8; 4]> {
    let ancount = u16::from_be_bytes([*resp.get(6)?, *resp.get(7)?]);
    (resp.len() >= 16 && resp[..2] == id.to_be_bytes() && ancount >= 1).then(|| resp[resp.len() - 4..].try_into().unwrap())
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawn the daemon on `data` and time it to the first answer.
fn one_run(dir: &Path, data: &Path) -> Result<Duration, String> {
    let (api, dns) = (free_port(), free_port());
    let cfg = dir.join("understudy.toml");
    std::fs::write(&cfg, config(data, api, dns)).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let server: SocketAddr = ([127, 0, 0, 1], dns).into();
    let mut buf = [0u8; 512];
    let t0 = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["run", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let mut child = Killed(child);
    let mut id: u16 = 1;
    while t0.elapsed() < Duration::from_secs(30) {
        id = id.wrapping_add(1);
        let _ = sock.send_to(&query(id), server);
        let deadline = Instant::now() + Duration::from_millis(1);
        while Instant::now() < deadline {
            match sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    if let Some(a) = answer(id, &buf[..n]) {
                        let took = t0.elapsed();
                        return if a == BACKUP { Ok(took) } else { Err(format!("first answer was {a:?}, not the restored backup")) };
                    }
                }
                Err(_) => break,
            }
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            return Err(format!("the daemon exited: {status}"));
        }
    }
    Err("no answer within 30 s".into())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn main() {
    let runs = arg("--runs", 5);
    let n = arg("--events", 1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let layouts = [("segmented", dir.path().join("segmented")), ("single file", dir.path().join("single"))];
    let t = Instant::now();
    let records = write_segmented(&layouts[0].1, n);
    let segs: Vec<u64> = std::fs::read_dir(&layouts[0].1).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("events")).map(|e| e.metadata().unwrap().len()).collect();
    println!(
        "wrote {records} records ({n} events and their incident events) through EventLog: {} segments, {:.0} MiB in all ({:.1} s)",
        segs.len(),
        segs.iter().sum::<u64>() as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    // `events.log` is the first segment, then `events-<seq>.log` in order.
    let mut names: Vec<_> = std::fs::read_dir(&layouts[0].1).unwrap().flatten().map(|e| e.path()).filter(|p| p.to_string_lossy().ends_with(".log")).collect();
    names.sort_by_key(|p| (!p.ends_with("events.log"), p.clone()));
    if let Some(newest) = names.last() {
        let text = std::fs::read(newest).unwrap();
        let head = text.iter().position(|&b| b == b'\n').map_or(0, |p| p + 1);
        println!("newest segment: {} KiB, of which the snapshot line {} KiB", text.len() / 1024, head / 1024);
    }
    let t = Instant::now();
    write_single(&layouts[1].1, n);
    println!("wrote the same records as one events.log ({:.1} s)", t.elapsed().as_secs_f64());
    println!("restart to first DNS answer, {runs} runs each:");
    for (name, data) in &layouts {
        let mut ms = Vec::new();
        for run in 0..runs {
            match one_run(dir.path(), data) {
                Ok(d) => ms.push(d.as_secs_f64() * 1000.0),
                Err(e) => println!("  {name}: run {run} failed: {e}"),
            }
        }
        if ms.is_empty() {
            println!("  {name:<12} no successful run");
            continue;
        }
        let (lo, hi) = (ms.iter().copied().fold(f64::INFINITY, f64::min), ms.iter().copied().fold(0.0, f64::max));
        println!("  {name:<12} median {:7.1} ms  (min {lo:.1}, max {hi:.1}, {} runs)", median(&mut ms), ms.len());
    }
}
