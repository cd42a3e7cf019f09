//! Redis probe (`kind = "redis"`): PING, then `INFO replication`, and a verdict that names the
//! role and, for a replica, its link and its lag.
//!
//! - A **primary** (`role:master`) passes with its offset and replica count.
//! - A **replica** (`role:slave`) is measured against its primary, which the probe reaches at
//!   the address the replica itself reports (`master_host`:`master_port`, same password): the
//!   primary's `master_repl_offset` is read *first*, then the replica's `slave_repl_offset`, so
//!   "replica offset >= primary offset" means the replica had everything the primary had when it
//!   was asked. Bytes behind = primary offset - replica offset. Seconds behind come from the
//!   probe's history of the primary's offsets ([`OffsetHistory`]): the time since the primary was
//!   last seen at an offset the replica has; an idle primary never makes a replica look late.
//!   When the primary cannot be reached, a replica whose link is down is as stale as the link has
//!   been down (`master_link_down_since_seconds`); with a link that is up, the lag is unknown and
//!   does not fail the check. A replica in its initial sync fails.
//! - Over `max_lag` (the service's key: "30s" or "16MB") fails with a reason naming the lag and
//!   the link; with a byte limit, a link that is down while the primary is unreachable fails too
//!   (the bytes cannot be known).
//!
//! The client is a small hand-written RESP2 client (PING, AUTH, INFO): three commands do not
//! need a client library. Replies are bounded (a bulk string of at most 1 MiB, arrays of at most
//! 1024 items), so a wrong server cannot make the monitor allocate without limit. It never
//! writes to the server and never decides health; the scheduler owns the timeout.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::replica::{MaxLag, OffsetHistory, ReplicaCheck, describe_lag, over};
use super::{CheckFuture, Probe, Verdict};

/// Longest reply line (simple string, error, length header) we read.
const MAX_LINE: u64 = 64 * 1024;
/// Largest bulk string we accept (`INFO replication` is a few hundred bytes).
const MAX_BULK: usize = 1 << 20;
/// Most items in an array reply.
const MAX_ARRAY: usize = 1024;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// An open connection to one Redis server.
pub struct RedisConn {
    stream: BufReader<TcpStream>,
}

/// Connect to `addr` within `timeout` and log in (`AUTH [user] password`) when a password is
/// given. Errors are reasons for a verdict: `connection refused`, `AUTH refused: WRONGPASS ...`.
pub async fn connect(addr: SocketAddr, user: Option<&str>, password: Option<&str>, timeout: Duration) -> Result<RedisConn, String> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(super::tcp::io_reason(&e)),
        Err(_) => return Err(format!("connect timed out after {}", humantime::format_duration(timeout))),
    };
    let _ = stream.set_nodelay(true);
    let mut conn = RedisConn { stream: BufReader::new(stream) };
    if let Some(p) = password {
        let reply = match user {
            Some(u) => conn.command(&["AUTH", u, p]).await?,
            None => conn.command(&["AUTH", p]).await?,
        };
        match reply {
            Reply::Simple(s) if s == "OK" => {}
            Reply::Error(e) => return Err(format!("AUTH refused: {e}")),
            other => return Err(format!("AUTH: unexpected reply {}", short(&other))),
        }
    }
    Ok(conn)
}

impl RedisConn {
    /// Send one command and read its reply.
    pub async fn command(&mut self, args: &[&str]) -> Result<Reply, String> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.stream.get_mut().write_all(&out).await.map_err(|e| super::tcp::io_reason(&e))?;
        read_reply(&mut self.stream, 0).await
    }

    /// `PING`, expecting `PONG`.
    pub async fn ping(&mut self) -> Result<(), String> {
        match self.command(&["PING"]).await? {
            Reply::Simple(s) if s == "PONG" => Ok(()),
            Reply::Error(e) => Err(format!("PING refused: {e}")),
            other => Err(format!("PING: unexpected reply {}", short(&other))),
        }
    }

    /// `INFO section`, parsed into its `key:value` lines.
    pub async fn info(&mut self, section: &str) -> Result<HashMap<String, String>, String> {
        match self.command(&["INFO", section]).await? {
            Reply::Bulk(Some(b)) => Ok(parse_info(&String::from_utf8_lossy(&b))),
            Reply::Error(e) => Err(format!("INFO {section} refused: {e}")),
            other => Err(format!("INFO {section}: unexpected reply {}", short(&other))),
        }
    }
}

fn short(r: &Reply) -> String {
    let s = format!("{r:?}");
    if s.chars().count() > 80 { format!("{}...", s.chars().take(80).collect::<String>()) } else { s }
}

async fn read_line<R: AsyncBufRead + Unpin + Send>(r: &mut R) -> Result<String, String> {
    let mut buf = Vec::new();
    let n = (&mut *r).take(MAX_LINE).read_until(b'\n', &mut buf).await.map_err(|e| super::tcp::io_reason(&e))?;
    if n == 0 {
        return Err("connection closed by the server".into());
    }
    if !buf.ends_with(b"\r\n") {
        return Err("malformed reply: line without CRLF or longer than 64 KiB".into());
    }
    buf.truncate(buf.len() - 2);
    String::from_utf8(buf).map_err(|_| "malformed reply: not UTF-8".to_string())
}

/// Read one reply (arrays nest at most 4 deep).
pub fn read_reply<'a, R: AsyncBufRead + Unpin + Send>(r: &'a mut R, depth: usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, String>> + Send + 'a>> {
    Box::pin(async move {
        let line = read_line(r).await?;
        let (tag, rest) = line.split_at_checked(1).ok_or("malformed reply: empty line")?;
        let len = |s: &str| s.parse::<i64>().map_err(|_| format!("malformed reply length {s:?}"));
        match tag {
            "+" => Ok(Reply::Simple(rest.to_string())),
            "-" => Ok(Reply::Error(rest.to_string())),
            ":" => Ok(Reply::Int(len(rest)?)),
            "$" => {
                let n = len(rest)?;
                if n < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let n = usize::try_from(n).ok().filter(|n| *n <= MAX_BULK).ok_or(format!("bulk reply of {n} bytes is over the 1 MiB limit"))?;
                let mut buf = vec![0; n + 2];
                r.read_exact(&mut buf).await.map_err(|e| super::tcp::io_reason(&e))?;
                if !buf.ends_with(b"\r\n") {
                    return Err("malformed reply: bulk string without CRLF".into());
                }
                buf.truncate(n);
                Ok(Reply::Bulk(Some(buf)))
            }
            "*" => {
                let n = len(rest)?;
                if n < 0 {
                    return Ok(Reply::Array(None));
                }
                if depth >= 4 {
                    return Err("malformed reply: arrays nested too deep".into());
                }
                let n = usize::try_from(n).ok().filter(|n| *n <= MAX_ARRAY).ok_or(format!("array reply of {n} items is over the limit"))?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(read_reply(r, depth + 1).await?);
                }
                Ok(Reply::Array(Some(items)))
            }
            other => Err(format!("malformed reply: unknown type {other:?} (is this a Redis server?)")),
        }
    })
}

/// `INFO` text into its `key:value` lines (section headers and blank lines skipped).
pub fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What a replica says about its link.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaView {
    /// `master_host:master_port`.
    pub master: String,
    pub link_up: bool,
    /// How long the link has been down (the server's `master_link_down_since_seconds`, or the
    /// probe's own observation when the server has none).
    pub link_down_s: Option<f64>,
    pub sync_in_progress: bool,
    /// `slave_repl_offset`.
    pub offset: u64,
    pub last_io_s: Option<i64>,
}

fn num<T: std::str::FromStr>(info: &HashMap<String, String>, key: &str) -> Option<T> {
    info.get(key).and_then(|v| v.trim().parse().ok())
}

/// Build the view of a `role:slave` INFO; `None` when a field we need is missing.
pub fn replica_view(info: &HashMap<String, String>) -> Option<ReplicaView> {
    let host = info.get("master_host")?;
    let port: u16 = num(info, "master_port")?;
    let master = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    Some(ReplicaView {
        master,
        link_up: info.get("master_link_status").map(String::as_str) == Some("up"),
        link_down_s: num::<i64>(info, "master_link_down_since_seconds").filter(|s| *s >= 0).map(|s| s as f64),
        sync_in_progress: info.get("master_sync_in_progress").map(String::as_str) == Some("1"),
        offset: num(info, "slave_repl_offset").unwrap_or(0),
        last_io_s: num(info, "master_last_io_seconds_ago"),
    })
}

/// The verdict for a replica (pure). `master` is the primary's offset, read just before the
/// replica's, or why it could not be read; `history_lag` is [`OffsetHistory::lag`].
pub fn judge_replica(v: &ReplicaView, master: &Result<u64, String>, history_lag: Option<Duration>, max_lag: MaxLag) -> Verdict {
    if v.sync_in_progress {
        return Verdict::fail(format!("replica of {}: initial sync in progress (its data is not a copy yet)", v.master));
    }
    let bytes = master.as_ref().ok().map(|m| m.saturating_sub(v.offset));
    let hist = history_lag.map(|d| d.as_secs_f64());
    let secs = match (master.is_ok(), v.link_up) {
        (true, true) => hist,
        (true, false) if bytes == Some(0) => Some(0.0),
        (true, false) => max_opt(hist, v.link_down_s),
        (false, false) => max_opt(v.link_down_s, hist),
        (false, true) => None,
    };
    let link = if v.link_up {
        match v.last_io_s {
            Some(s) => format!("link up to {}, last I/O {s} s ago", v.master),
            None => format!("link up to {}", v.master),
        }
    } else {
        match v.link_down_s {
            Some(s) => format!("link to {} down for {s:.0} s", v.master),
            None => format!("link to {} down", v.master),
        }
    };
    let reach = match master {
        Ok(_) => String::new(),
        Err(e) => format!("; primary unreachable from here: {e}"),
    };
    let lag = describe_lag(bytes, secs);
    // The lag as data too (API, metrics, the lag alert), when the bytes behind are known.
    let data = |v: Verdict| match bytes {
        Some(b) => v.with_lag(crate::probe::Lag { bytes: b, seconds: secs }),
        None => v,
    };
    if over(max_lag, bytes, secs) {
        return data(Verdict::fail(format!("replica lag {lag} exceeds max_lag {max_lag} ({link}{reach})")));
    }
    if !v.link_up && master.is_err() && matches!(max_lag, MaxLag::Bytes(_)) {
        return Verdict::fail(format!("replica lag unknown against max_lag {max_lag}: {link}{reach}"));
    }
    data(Verdict::pass(format!("replica, {lag} ({link}{reach})")))
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

/// One Redis server, checked as a primary or a replica.
pub struct RedisProbe {
    check: Arc<ReplicaCheck>,
    addr: SocketAddr,
    timeout: Duration,
    /// The primary's offsets, and which primary they belong to.
    history: Mutex<(String, OffsetHistory)>,
    /// Since when this probe has seen the replica's link down.
    down_since: Mutex<Option<Instant>>,
}

impl RedisProbe {
    pub fn new(check: Arc<ReplicaCheck>, ip: IpAddr, port: u16, timeout: Duration) -> Self {
        RedisProbe { check, addr: SocketAddr::new(ip, port), timeout, history: Default::default(), down_since: Default::default() }
    }

    async fn login(&self, addr: SocketAddr) -> Result<RedisConn, String> {
        connect(addr, self.check.user.as_deref(), self.check.password.as_deref(), self.timeout).await
    }

    async fn run(&self) -> Verdict {
        let mut conn = match self.login(self.addr).await {
            Ok(c) => c,
            Err(e) => return Verdict::fail(e),
        };
        if let Err(e) = conn.ping().await {
            return Verdict::fail(e);
        }
        let info = match conn.info("replication").await {
            Ok(i) => i,
            Err(e) => return Verdict::fail(e),
        };
        match info.get("role").map(String::as_str) {
            Some("master") => {
                let offset: u64 = num(&info, "master_repl_offset").unwrap_or(0);
                let replicas: u64 = num(&info, "connected_slaves").unwrap_or(0);
                return Verdict::pass(format!("primary at offset {offset}, {replicas} connected replica(s)"));
            }
            Some("slave") => {}
            Some(other) => return Verdict::fail(format!("unexpected role {other:?} in INFO replication")),
            None => return Verdict::fail("INFO replication has no role (is this a Redis server?)"),
        }
        let Some(first) = replica_view(&info) else {
            return Verdict::fail("INFO replication of a replica lacks master_host or master_port");
        };
        // The primary first, then the replica again: see the module doc.
        let master = match first.master.parse::<SocketAddr>() {
            Ok(a) => self.master_offset(a).await,
            Err(_) => Err(format!("master_host {} is not an IP address the probe can reach", first.master)),
        };
        let (now, read) = (Instant::now(), conn.info("replication").await);
        let view = match read.as_ref().ok().and_then(replica_view) {
            Some(v) => v,
            None => return Verdict::fail(read.err().unwrap_or_else(|| "INFO replication changed shape between two reads".into())),
        };
        let mut view = view;
        let seen_down = {
            let mut d = self.down_since.lock().unwrap_or_else(|e| e.into_inner());
            if view.link_up {
                *d = None;
            }
            (!view.link_up).then(|| now.saturating_duration_since(*d.get_or_insert(now)).as_secs_f64())
        };
        if view.link_down_s.is_none() {
            view.link_down_s = seen_down;
        }
        let history_lag = {
            let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
            if h.0 != view.master {
                *h = (view.master.clone(), OffsetHistory::default());
            }
            if let Ok((at, m)) = &master {
                h.1.record(*at, *m);
            }
            h.1.lag(view.offset, now)
        };
        judge_replica(&view, &master.map(|(_, m)| m), history_lag, self.check.max_lag)
    }

    /// The primary's `master_repl_offset`, and when it was read.
    async fn master_offset(&self, addr: SocketAddr) -> Result<(Instant, u64), String> {
        let mut conn = self.login(addr).await?;
        let info = conn.info("replication").await?;
        let at = Instant::now();
        num(&info, "master_repl_offset").map(|o| (at, o)).ok_or_else(|| "its INFO replication has no master_repl_offset".to_string())
    }
}

impl Probe for RedisProbe {
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(self.run())
    }

    fn describe(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn hedge(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLICA: &str = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.2\r\nmaster_port:6379\r\nmaster_link_status:up\r\nmaster_last_io_seconds_ago:1\r\nmaster_sync_in_progress:0\r\nslave_repl_offset:1000\r\n";

    fn view(text: &str) -> ReplicaView {
        replica_view(&parse_info(text)).expect("a replica view")
    }

    #[test]
    fn info_parses_and_a_caught_up_replica_passes() {
        let v = view(REPLICA);
        assert_eq!((v.master.as_str(), v.link_up, v.offset, v.last_io_s), ("127.0.0.2:6379", true, 1000, Some(1)));
        let verdict = judge_replica(&v, &Ok(1000), Some(Duration::ZERO), MaxLag::Time(Duration::from_secs(30)));
        assert_eq!((verdict.ok, verdict.reason.as_ref()), (true, "replica, 0 bytes / 0.0 s behind (link up to 127.0.0.2:6379, last I/O 1 s ago)"));
    }

    #[test]
    fn a_replica_beyond_max_lag_fails_naming_its_lag() {
        let v = view(REPLICA);
        let verdict = judge_replica(&v, &Ok(5000), Some(Duration::from_secs(7)), MaxLag::Time(Duration::from_secs(5)));
        assert_eq!((verdict.ok, verdict.reason.as_ref()), (false, "replica lag 4000 bytes / 7.0 s behind exceeds max_lag 5s (link up to 127.0.0.2:6379, last I/O 1 s ago)"));
        assert!(!judge_replica(&v, &Ok(5000), Some(Duration::ZERO), MaxLag::Bytes(1024)).ok);
        assert!(judge_replica(&v, &Ok(1500), Some(Duration::ZERO), MaxLag::Bytes(1024)).ok);
    }

    #[test]
    fn a_dead_primary_makes_the_replica_stale_by_the_link_downtime() {
        let text = REPLICA.replace("master_link_status:up", "master_link_status:down\r\nmaster_link_down_since_seconds:12");
        let v = view(&text);
        let dead: Result<u64, String> = Err("connection refused".into());
        let verdict = judge_replica(&v, &dead, None, MaxLag::Time(Duration::from_secs(10)));
        assert_eq!(
            (verdict.ok, verdict.reason.as_ref()),
            (false, "replica lag 12.0 s behind exceeds max_lag 10s (link to 127.0.0.2:6379 down for 12 s; primary unreachable from here: connection refused)")
        );
        assert!(judge_replica(&v, &dead, None, MaxLag::Time(Duration::from_secs(30))).ok);
        assert!(!judge_replica(&v, &dead, None, MaxLag::Bytes(1 << 20)).ok, "bytes cannot be known");
        // The link is down but the idle primary has nothing the replica lacks.
        assert!(judge_replica(&v, &Ok(1000), Some(Duration::ZERO), MaxLag::Time(Duration::from_secs(10))).ok);
    }

    #[test]
    fn an_initial_sync_fails() {
        let v = view(&REPLICA.replace("master_sync_in_progress:0", "master_sync_in_progress:1"));
        assert!(!judge_replica(&v, &Ok(1000), None, MaxLag::Time(Duration::from_secs(30))).ok);
    }

    fn parse(bytes: &[u8]) -> Result<Reply, String> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut r = bytes;
            read_reply(&mut r, 0).await
        })
    }

    #[test]
    fn replies_parse_and_bad_ones_are_errors() {
        assert_eq!(parse(b"+PONG\r\n"), Ok(Reply::Simple("PONG".into())));
        assert_eq!(parse(b"-WRONGPASS invalid\r\n"), Ok(Reply::Error("WRONGPASS invalid".into())));
        assert_eq!(parse(b"$4\r\nrole\r\n"), Ok(Reply::Bulk(Some(b"role".to_vec()))));
        assert_eq!(parse(b"*2\r\n:1\r\n$-1\r\n"), Ok(Reply::Array(Some(vec![Reply::Int(1), Reply::Bulk(None)]))));
        assert!(parse(b"$999999999\r\n").unwrap_err().contains("over the 1 MiB limit"));
        assert!(parse(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n").unwrap_err().contains("nested too deep"));
        assert!(parse(b"HTTP/1.1 400 Bad Request\r\n").unwrap_err().contains("is this a Redis server?"));
        assert!(parse(b"+PONG").is_err(), "no CRLF");
        assert!(parse(b"$4\r\nro").is_err(), "cut short");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_give_a_reply_or_an_error_never_a_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn any_info_text_gives_a_view_or_none(text in "[a-z_:0-9\\r\\n#-]{0,200}") {
            if let Some(v) = replica_view(&parse_info(&text)) {
                let _ = judge_replica(&v, &Ok(0), None, MaxLag::Bytes(1));
            }
        }
    }

    #[test]
    fn info_without_a_master_is_no_view() {
        assert_eq!(replica_view(&parse_info("role:slave\r\n")), None);
        assert_eq!(replica_view(&parse_info("role:slave\r\nmaster_host:h\r\nmaster_port:x\r\n")), None);
    }
}
