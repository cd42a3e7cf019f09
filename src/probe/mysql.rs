//! MySQL / MariaDB probe (`kind = "mysql"`): log in, run `SHOW REPLICA STATUS` (or
//! `SHOW SLAVE STATUS` where the first is not understood), and pass or fail with a reason naming
//! the replication threads and the lag.
//!
//! - **No replica status** (an empty result): the server is a primary (or stands alone) and passes.
//! - A **replica** fails when its I/O thread (`Replica_IO_Running` / `Slave_IO_Running`) or its
//!   SQL thread (`Replica_SQL_Running` / `Slave_SQL_Running`) is not running, naming the thread
//!   and the server's last error for it; and when its lag is over `max_lag`. Seconds behind are
//!   the server's `Seconds_Behind_Source` / `Seconds_Behind_Master` (0 on an idle primary: the
//!   server compares event timestamps, not the clock); bytes behind are the distance
//!   between the source's end of binlog (`SHOW MASTER STATUS` on the source, reached at the
//!   replica's `Source_Host`:`Source_Port` with the same login) and what the replica has applied
//!   (`Exec_Source_Log_Pos`), in the same binlog file; when the source cannot be read (no
//!   privilege, unreachable, another file), what the replica received but has not applied
//!   (`Read_Source_Log_Pos - Exec_Source_Log_Pos`), a lower bound.
//!
//! The client is a small hand-written MySQL protocol client (handshake v10, `mysql_native_password`
//! and the fast path of `caching_sha2_password`, `COM_QUERY` with a text result set): one query
//! does not need a client library and its dependency tree. No TLS (loopback and private
//! networks, like the postgres check). Packets are bounded (1 MiB), so a wrong server cannot
//! make the monitor allocate without limit. It never writes and never decides health; the
//! scheduler owns the timeout.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::replica::{MaxLag, ReplicaCheck, describe_lag, over};
use super::{CheckFuture, Probe, Verdict};

/// Largest packet we accept.
const MAX_PACKET: usize = 1 << 20;

const CLIENT_LONG_PASSWORD: u32 = 0x1;
const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_TRANSACTIONS: u32 = 0x2000;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_PLUGIN_AUTH: u32 = 0x80000;

/// An open, logged-in connection.
pub struct MysqlConn {
    stream: TcpStream,
    seq: u8,
}

/// A server error: `ERROR 1045 (28000): Access denied for user ...`.
fn server_error(p: &[u8]) -> String {
    let code = p.get(1..3).map(|b| u16::from_le_bytes([b[0], b[1]])).unwrap_or(0);
    let rest = p.get(3..).unwrap_or_default();
    let (state, msg) = if rest.first() == Some(&b'#') && rest.len() >= 6 { (String::from_utf8_lossy(&rest[1..6]).into_owned(), &rest[6..]) } else { (String::new(), rest) };
    let msg = String::from_utf8_lossy(msg);
    if state.is_empty() { format!("ERROR {code}: {msg}") } else { format!("ERROR {code} ({state}): {msg}") }
}

/// `mysql_native_password`: SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password))).
pub fn native_password(password: &str, scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = Sha1::digest(password.as_bytes());
    let h2 = Sha1::digest(h1);
    let mut h = Sha1::new();
    h.update(scramble);
    h.update(h2);
    let h3 = h.finalize();
    h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect()
}

/// `caching_sha2_password` fast path: SHA256(password) XOR SHA256(SHA256(SHA256(password)) + scramble).
pub fn caching_sha2_password(password: &str, scramble: &[u8]) -> Vec<u8> {
    use sha2::Sha256;
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = Sha256::digest(password.as_bytes());
    let h2 = Sha256::digest(h1);
    let mut h = Sha256::new();
    h.update(h2);
    h.update(scramble);
    let h3 = h.finalize();
    h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect()
}

fn scramble_for(plugin: &str, password: &str, scramble: &[u8]) -> Result<Vec<u8>, String> {
    match plugin {
        "mysql_native_password" | "" => Ok(native_password(password, scramble)),
        "caching_sha2_password" => Ok(caching_sha2_password(password, scramble)),
        other => Err(format!("the server asks for authentication plugin {other:?}; the check supports mysql_native_password and caching_sha2_password")),
    }
}

fn cstr(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().position(|b| *b == 0) {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (p, &[]),
    }
}

/// Connect to `addr` within `timeout` and log in.
pub async fn connect(addr: SocketAddr, user: &str, password: &str, timeout: Duration) -> Result<MysqlConn, String> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(super::tcp::io_reason(&e)),
        Err(_) => return Err(format!("connect timed out after {}", humantime::format_duration(timeout))),
    };
    let _ = stream.set_nodelay(true);
    let mut c = MysqlConn { stream, seq: 0 };
    let hello = c.read_packet().await?;
    if hello.first() == Some(&0xff) {
        return Err(server_error(&hello));
    }
    if hello.first() != Some(&10) {
        return Err(format!("unsupported handshake protocol {:?} (is this a MySQL server?)", hello.first()));
    }
    let (_version, rest) = cstr(&hello[1..]);
    // thread id (4), scramble part 1 (8), filler (1), caps low (2), charset (1), status (2),
    // caps high (2), scramble length (1), reserved (10), scramble part 2, plugin name.
    if rest.len() < 31 {
        return Err("handshake too short".into());
    }
    let mut scramble = rest[4..12].to_vec();
    let caps = u32::from(u16::from_le_bytes([rest[13], rest[14]])) | (u32::from(u16::from_le_bytes([rest[18], rest[19]])) << 16);
    if caps & CLIENT_PROTOCOL_41 == 0 {
        return Err("the server does not speak protocol 4.1".into());
    }
    let total = usize::from(rest[20]).max(21);
    let part2 = &rest[31..];
    let n2 = (total - 8).min(part2.len()).saturating_sub(1).max(12).min(part2.len());
    scramble.extend_from_slice(&part2[..n2]);
    let after = part2.get(n2..).unwrap_or_default();
    let after = after.strip_prefix(&[0u8][..]).unwrap_or(after);
    let plugin = String::from_utf8_lossy(cstr(after).0).into_owned();
    let plugin = if plugin.is_empty() { "mysql_native_password".to_string() } else { plugin };
    let auth = scramble_for(&plugin, password, &scramble)?;

    let mut resp = Vec::with_capacity(64 + user.len());
    let flags = CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_TRANSACTIONS | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH;
    resp.extend_from_slice(&flags.to_le_bytes());
    resp.extend_from_slice(&(MAX_PACKET as u32).to_le_bytes());
    resp.push(45); // utf8mb4_general_ci
    resp.extend_from_slice(&[0; 23]);
    resp.extend_from_slice(user.as_bytes());
    resp.push(0);
    resp.push(auth.len() as u8);
    resp.extend_from_slice(&auth);
    resp.extend_from_slice(plugin.as_bytes());
    resp.push(0);
    c.write_packet(&resp).await?;
    loop {
        let p = c.read_packet().await?;
        match p.first() {
            Some(0x00) => return Ok(c),
            Some(0xff) => return Err(server_error(&p)),
            Some(0xfe) => {
                // Auth switch: another plugin with a new scramble.
                let (name, data) = cstr(&p[1..]);
                let name = String::from_utf8_lossy(name).into_owned();
                let data = data.strip_suffix(&[0u8][..]).unwrap_or(data);
                let auth = scramble_for(&name, password, data)?;
                c.write_packet(&auth).await?;
            }
            Some(0x01) if p.get(1) == Some(&0x03) => {} // caching_sha2 fast auth succeeded; OK follows
            Some(0x01) if p.get(1) == Some(&0x04) => {
                return Err("caching_sha2_password wants a full authentication (TLS or RSA), which the check does not do: log in once with the mysql client to fill the server's cache, or use mysql_native_password for the check user".into());
            }
            _ => return Err("unexpected packet during login".into()),
        }
    }
}

fn lenenc(p: &[u8]) -> Option<(Option<u64>, &[u8])> {
    let (first, rest) = p.split_first()?;
    match *first {
        0xfb => Some((None, rest)),
        0xfc => Some((Some(u64::from(u16::from_le_bytes(rest.get(..2)?.try_into().ok()?))), &rest[2..])),
        0xfd => {
            let b = rest.get(..3)?;
            Some((Some(u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16), &rest[3..]))
        }
        0xfe => Some((Some(u64::from_le_bytes(rest.get(..8)?.try_into().ok()?)), &rest[8..])),
        n => Some((Some(u64::from(n)), rest)),
    }
}

fn lenenc_str(p: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
    let (n, rest) = lenenc(p)?;
    match n {
        None => Some((None, rest)),
        Some(n) => {
            let n = usize::try_from(n).ok()?;
            Some((Some(rest.get(..n)?), &rest[n..]))
        }
    }
}

/// A text result set: column names and rows (NULL is `None`).
pub type Rows = (Vec<String>, Vec<Vec<Option<String>>>);

impl MysqlConn {
    async fn read_packet(&mut self) -> Result<Vec<u8>, String> {
        let mut head = [0u8; 4];
        self.stream.read_exact(&mut head).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "connection closed by the server".to_string(),
            _ => super::tcp::io_reason(&e),
        })?;
        let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
        if len > MAX_PACKET {
            return Err(format!("packet of {len} bytes is over the 1 MiB limit"));
        }
        self.seq = head[3].wrapping_add(1);
        let mut buf = vec![0; len];
        self.stream.read_exact(&mut buf).await.map_err(|e| super::tcp::io_reason(&e))?;
        Ok(buf)
    }

    async fn write_packet(&mut self, payload: &[u8]) -> Result<(), String> {
        let len = payload.len();
        let mut out = Vec::with_capacity(len + 4);
        out.extend_from_slice(&[len as u8, (len >> 8) as u8, (len >> 16) as u8, self.seq]);
        out.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        self.stream.write_all(&out).await.map_err(|e| super::tcp::io_reason(&e))
    }

    /// Run `sql` and read its text result set (an OK without rows gives no columns).
    pub async fn query(&mut self, sql: &str) -> Result<Rows, String> {
        self.seq = 0;
        let mut cmd = vec![0x03];
        cmd.extend_from_slice(sql.as_bytes());
        self.write_packet(&cmd).await?;
        let first = self.read_packet().await?;
        match first.first() {
            Some(0xff) => return Err(server_error(&first)),
            Some(0x00) => return Ok((Vec::new(), Vec::new())),
            _ => {}
        }
        let ncols = lenenc(&first).and_then(|(n, _)| n).ok_or("malformed column count")?;
        if ncols > 4096 {
            return Err(format!("result with {ncols} columns is over the limit"));
        }
        let mut names = Vec::new();
        for _ in 0..ncols {
            let p = self.read_packet().await?;
            // catalog, schema, table, org_table, name
            let mut rest: &[u8] = &p;
            let mut name = None;
            for _ in 0..5 {
                let (s, r) = lenenc_str(rest).ok_or("malformed column definition")?;
                name = s;
                rest = r;
            }
            names.push(String::from_utf8_lossy(name.unwrap_or_default()).into_owned());
        }
        let mut rows = Vec::new();
        let mut seen_eof = false;
        loop {
            let p = self.read_packet().await?;
            match p.first() {
                Some(0xff) => return Err(server_error(&p)),
                Some(0xfe) if p.len() < 9 => {
                    if seen_eof || !rows.is_empty() {
                        break;
                    }
                    // The EOF after the column definitions.
                    seen_eof = true;
                    continue;
                }
                _ => {}
            }
            seen_eof = true;
            if rows.len() >= 1024 {
                return Err("result with more than 1024 rows is over the limit".into());
            }
            let mut rest: &[u8] = &p;
            let mut row = Vec::with_capacity(names.len());
            for _ in 0..names.len() {
                let (s, r) = lenenc_str(rest).ok_or("malformed row")?;
                row.push(s.map(|b| String::from_utf8_lossy(b).into_owned()));
                rest = r;
            }
            rows.push(row);
        }
        Ok((names, rows))
    }

    /// The replica status, by the newer statement and then the older one; `None` for a server
    /// that is no replica.
    pub async fn replica_status(&mut self) -> Result<Option<HashMap<String, Option<String>>>, String> {
        let (names, rows) = match self.query("SHOW REPLICA STATUS").await {
            Ok(r) => r,
            // 1064: a syntax error (MariaDB before 10.5.1, MySQL before 8.0.22).
            Err(e) if e.starts_with("ERROR 1064") => self.query("SHOW SLAVE STATUS").await?,
            Err(e) => return Err(e),
        };
        Ok(rows.into_iter().next().map(|row| names.into_iter().zip(row).collect()))
    }
}

/// The verdict for one server's replica status (pure); `None` is a primary.
pub fn judge(status: Option<&HashMap<String, Option<String>>>, max_lag: MaxLag) -> Verdict {
    judge_with_source(status, None, max_lag)
}

/// [`judge`], with the source's own binlog position (file, position) when the probe could read
/// it: bytes behind are then counted from the source's end of binlog, so a stalled I/O thread
/// (which leaves `Seconds_Behind_Master` at 0) still shows its lag.
pub fn judge_with_source(status: Option<&HashMap<String, Option<String>>>, source_pos: Option<&(String, u64)>, max_lag: MaxLag) -> Verdict {
    let Some(st) = status else {
        return Verdict::pass("primary (no replica status)");
    };
    let get = |names: &[&str]| names.iter().find_map(|n| st.get(*n).cloned().flatten());
    let source = match (get(&["Source_Host", "Master_Host"]), get(&["Source_Port", "Master_Port"])) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h,
        _ => "?".into(),
    };
    let io = get(&["Replica_IO_Running", "Slave_IO_Running"]).unwrap_or_default();
    let sql = get(&["Replica_SQL_Running", "Slave_SQL_Running"]).unwrap_or_default();
    let error = |names: &[&str]| get(names).filter(|e| !e.is_empty()).map(|e| format!(": {e}")).unwrap_or_default();
    if io != "Yes" {
        let (col, err) = if st.contains_key("Replica_IO_Running") { ("Replica_IO_Running", error(&["Last_IO_Error"])) } else { ("Slave_IO_Running", error(&["Last_IO_Error"])) };
        return Verdict::fail(format!("replica I/O thread not running ({col}: {io}) from {source}{err}"));
    }
    if sql != "Yes" {
        let col = if st.contains_key("Replica_SQL_Running") { "Replica_SQL_Running" } else { "Slave_SQL_Running" };
        return Verdict::fail(format!("replica SQL thread not running ({col}: {sql}) from {source}{}", error(&["Last_SQL_Error"])));
    }
    let secs = get(&["Seconds_Behind_Source", "Seconds_Behind_Master"]).and_then(|s| s.parse::<f64>().ok());
    let num = |names: &[&str]| get(names).and_then(|s| s.parse::<u64>().ok());
    let same_file = get(&["Source_Log_File", "Master_Log_File"]).is_some() && get(&["Source_Log_File", "Master_Log_File"]) == get(&["Relay_Source_Log_File", "Relay_Master_Log_File"]);
    let exec_file = get(&["Relay_Source_Log_File", "Relay_Master_Log_File"]);
    let exec = num(&["Exec_Source_Log_Pos", "Exec_Master_Log_Pos"]);
    let bytes = match (source_pos, exec_file.as_deref(), exec) {
        (Some((file, pos)), Some(ef), Some(e)) if file == ef => Some(pos.saturating_sub(e)),
        _ => match (same_file, num(&["Read_Source_Log_Pos", "Read_Master_Log_Pos"]), exec) {
            (true, Some(read), Some(e)) => Some(read.saturating_sub(e)),
            _ => None,
        },
    };
    let lag = describe_lag(bytes, secs);
    let at = source_pos.map(|(f, p)| format!(", source at {f}:{p}")).unwrap_or_default();
    // The lag as data too (API, metrics, the lag alert), when the bytes behind are known.
    let data = |v: Verdict| match bytes {
        Some(b) => v.with_lag(crate::probe::Lag { bytes: b, seconds: secs }),
        None => v,
    };
    if over(max_lag, bytes, secs) {
        return data(Verdict::fail(format!("replica lag {lag} exceeds max_lag {max_lag} (from {source}{at})")));
    }
    data(Verdict::pass(format!("replica, {lag} (I/O and SQL threads running, from {source}{at})")))
}

/// The source's address from a replica status, when its host is an IP address.
fn source_addr(st: &HashMap<String, Option<String>>) -> Option<SocketAddr> {
    let get = |names: &[&str]| names.iter().find_map(|n| st.get(*n).cloned().flatten());
    let ip: IpAddr = get(&["Source_Host", "Master_Host"])?.parse().ok()?;
    let port: u16 = get(&["Source_Port", "Master_Port"])?.parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

/// One MySQL or MariaDB server.
pub struct MysqlProbe {
    check: Arc<ReplicaCheck>,
    addr: SocketAddr,
    timeout: Duration,
}

impl MysqlProbe {
    pub fn new(check: Arc<ReplicaCheck>, ip: IpAddr, port: u16, timeout: Duration) -> Self {
        MysqlProbe { check, addr: SocketAddr::new(ip, port), timeout }
    }

    fn user(&self) -> &str {
        self.check.user.as_deref().unwrap_or("understudy")
    }

    async fn run(&self) -> Verdict {
        let mut conn = match connect(self.addr, self.user(), self.check.password.as_deref().unwrap_or(""), self.timeout).await {
            Ok(c) => c,
            Err(e) => return Verdict::fail(e),
        };
        let st = match conn.replica_status().await {
            Ok(st) => st,
            Err(e) => return Verdict::fail(format!("replica status query failed: {e}")),
        };
        let source = match st.as_ref().and_then(source_addr) {
            Some(addr) => self.source_position(addr).await.ok(),
            None => None,
        };
        judge_with_source(st.as_ref(), source.as_ref(), self.check.max_lag)
    }

    /// The source's end of binlog, read with the same login (needs `BINLOG MONITOR` on MariaDB,
    /// `REPLICATION CLIENT` on MySQL; without it the relay log's measure stands).
    async fn source_position(&self, addr: SocketAddr) -> Result<(String, u64), String> {
        let mut conn = connect(addr, self.user(), self.check.password.as_deref().unwrap_or(""), self.timeout).await?;
        let (names, rows) = match conn.query("SHOW MASTER STATUS").await {
            Ok(r) => r,
            // MySQL 8.4 knows only the new name.
            Err(e) if e.starts_with("ERROR 1064") => conn.query("SHOW BINARY LOG STATUS").await?,
            Err(e) => return Err(e),
        };
        let row = rows.into_iter().next().ok_or("the source has no binary log")?;
        let col = |n: &str| names.iter().position(|c| c == n).and_then(|i| row.get(i).cloned().flatten());
        match (col("File"), col("Position").and_then(|p| p.parse().ok())) {
            (Some(f), Some(p)) => Ok((f, p)),
            _ => Err("SHOW MASTER STATUS lacks File or Position".into()),
        }
    }
}

impl Probe for MysqlProbe {
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(self.run())
    }

    fn describe(&self) -> String {
        format!("mysql://{}@{}", self.user(), self.addr)
    }

    fn hedge(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(pairs: &[(&str, Option<&str>)]) -> HashMap<String, Option<String>> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.map(str::to_string))).collect()
    }

    fn mariadb(io: &str, sql: &str, behind: Option<&str>) -> HashMap<String, Option<String>> {
        status(&[
            ("Master_Host", Some("127.0.0.2")),
            ("Master_Port", Some("3306")),
            ("Slave_IO_Running", Some(io)),
            ("Slave_SQL_Running", Some(sql)),
            ("Seconds_Behind_Master", behind),
            ("Master_Log_File", Some("bin.000001")),
            ("Relay_Master_Log_File", Some("bin.000001")),
            ("Read_Master_Log_Pos", Some("5000")),
            ("Exec_Master_Log_Pos", Some("4000")),
            ("Last_SQL_Error", Some("Error 'Duplicate entry' on query")),
            ("Last_IO_Error", Some("")),
        ])
    }

    #[test]
    fn a_primary_passes_and_a_running_replica_reports_its_lag() {
        assert_eq!(judge(None, MaxLag::Time(Duration::from_secs(30))).reason, "primary (no replica status)");
        let v = judge(Some(&mariadb("Yes", "Yes", Some("3"))), MaxLag::Time(Duration::from_secs(30)));
        assert_eq!((v.ok, v.reason.as_ref()), (true, "replica, 1000 bytes / 3.0 s behind (I/O and SQL threads running, from 127.0.0.2:3306)"));
    }

    #[test]
    fn a_stopped_thread_fails_naming_it() {
        let v = judge(Some(&mariadb("Yes", "No", None)), MaxLag::Time(Duration::from_secs(30)));
        assert_eq!((v.ok, v.reason.as_ref()), (false, "replica SQL thread not running (Slave_SQL_Running: No) from 127.0.0.2:3306: Error 'Duplicate entry' on query"));
        let v = judge(Some(&mariadb("Connecting", "Yes", None)), MaxLag::Time(Duration::from_secs(30)));
        assert_eq!((v.ok, v.reason.as_ref()), (false, "replica I/O thread not running (Slave_IO_Running: Connecting) from 127.0.0.2:3306"));
        // MySQL 8 names.
        let st = status(&[("Source_Host", Some("db1")), ("Replica_IO_Running", Some("Yes")), ("Replica_SQL_Running", Some("No"))]);
        assert!(judge(Some(&st), MaxLag::Time(Duration::from_secs(30))).reason.starts_with("replica SQL thread not running (Replica_SQL_Running: No) from db1"));
    }

    #[test]
    fn the_sources_position_counts_when_known() {
        // The I/O thread stalled: Seconds_Behind_Master says 0, the source is 9000 bytes ahead.
        let st = mariadb("Yes", "Yes", Some("0"));
        let v = judge_with_source(Some(&st), Some(&("bin.000001".into(), 13_000)), MaxLag::Bytes(4096));
        assert_eq!((v.ok, v.reason.as_ref()), (false, "replica lag 9000 bytes / 0.0 s behind exceeds max_lag 4096 bytes (from 127.0.0.2:3306, source at bin.000001:13000)"));
        // The source moved to a newer binlog: the relay log's measure stands.
        assert!(judge_with_source(Some(&st), Some(&("bin.000002".into(), 10)), MaxLag::Bytes(4096)).ok);
        assert_eq!(source_addr(&st), Some("127.0.0.2:3306".parse().unwrap()));
        assert_eq!(source_addr(&status(&[("Master_Host", Some("db1")), ("Master_Port", Some("3306"))])), None);
    }

    #[test]
    fn lag_over_max_lag_fails() {
        let v = judge(Some(&mariadb("Yes", "Yes", Some("45"))), MaxLag::Time(Duration::from_secs(30)));
        assert_eq!((v.ok, v.reason.as_ref()), (false, "replica lag 1000 bytes / 45.0 s behind exceeds max_lag 30s (from 127.0.0.2:3306)"));
        assert!(!judge(Some(&mariadb("Yes", "Yes", Some("0"))), MaxLag::Bytes(512)).ok);
        assert!(judge(Some(&mariadb("Yes", "Yes", Some("0"))), MaxLag::Bytes(4096)).ok);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_or_fail_without_a_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = lenenc(&bytes);
            let _ = lenenc_str(&bytes);
            let _ = server_error(&bytes);
            let _ = cstr(&bytes);
        }
    }

    #[test]
    fn wire_helpers() {
        // A known mysql_native_password answer: 20 bytes, empty for an empty password.
        assert_eq!(native_password("secret", &[7; 20]).len(), 20);
        assert!(native_password("", &[7; 20]).is_empty());
        assert_eq!(lenenc(&[0xfc, 0x10, 0x01, 9]), Some((Some(0x110), &[9u8][..])));
        assert_eq!(lenenc_str(&[0xfb, 1]), Some((None, &[1u8][..])));
        assert_eq!(lenenc_str(&[3, b'a']), None, "a string longer than the packet");
        assert!(server_error(b"\xff\x15\x04#28000Access denied").starts_with("ERROR 1045 (28000): Access denied"));
    }
}
