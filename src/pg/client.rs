//! A PostgreSQL connection for checks, promotion and rejoin, and the one status query they
//! share.
//!
//! Plain TCP (no TLS): checks and promotion run on a private network or loopback. The
//! connection task is aborted when the [`Conn`] is dropped (a check that times out is dropped
//! by the scheduler mid-query). Everything here reads or changes one server; nothing decides.

use std::net::IpAddr;
use std::time::Duration;

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// An open connection; dropping it closes the socket.
pub struct Conn {
    pub client: Client,
    task: tokio::task::AbortHandle,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Who to log in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
}

/// Connect to `ip`:`port`, giving up after `timeout`.
pub async fn connect(ip: IpAddr, port: u16, login: &Login, timeout: Duration) -> Result<Conn, String> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(ip.to_string()).port(port).user(&login.user).dbname(&login.dbname).connect_timeout(timeout).application_name("understudy");
    if let Some(p) = &login.password {
        cfg.password(p);
    }
    let (client, connection) = match tokio::time::timeout(timeout, cfg.connect(NoTls)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(error_text(&e)),
        Err(_) => return Err(format!("connect timed out after {}", humantime::format_duration(timeout))),
    };
    let task = tokio::spawn(async move {
        let _ = connection.await;
    })
    .abort_handle();
    Ok(Conn { client, task })
}

/// The server's words for an error (`FATAL: password authentication failed...`), or the
/// connection's (`connection refused`).
pub fn error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    if let Some(io) = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>()) {
        return crate::probe::tcp::io_reason(io);
    }
    e.to_string()
}

/// Run `sql` (simple protocol, text results) and return its rows; NULL is `None`.
pub async fn rows(conn: &Conn, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let msgs = conn.client.simple_query(sql).await.map_err(|e| error_text(&e))?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect()),
            _ => None,
        })
        .collect())
}

/// What one server says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub in_recovery: bool,
    /// Primary: `pg_current_wal_lsn()`.
    pub wal_lsn: Option<u64>,
    /// Standby: `pg_last_wal_receive_lsn()` (flushed to its disk) and `pg_last_wal_replay_lsn()`.
    pub receive_lsn: Option<u64>,
    pub replay_lsn: Option<u64>,
    /// Seconds since the last replayed transaction's commit time (grows on an idle primary too:
    /// only meaningful when replay is behind).
    pub since_replay_s: Option<f64>,
    /// The WAL receiver's status (`streaming`...) and the upstream's end of WAL as last reported.
    pub receiver: Option<String>,
    pub upstream_lsn: Option<u64>,
    pub upstream_host: Option<String>,
    pub replay_paused: bool,
    /// `default_transaction_read_only` is on: fenced by understudy (or by someone).
    pub read_only: bool,
}

const STATUS_SQL: &str = "SELECT pg_is_in_recovery(), \
 CASE WHEN pg_is_in_recovery() THEN NULL ELSE (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8 END, \
 (pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::int8, (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8, \
 extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8, \
 (SELECT status FROM pg_stat_wal_receiver LIMIT 1), \
 (SELECT (latest_end_lsn - '0/0'::pg_lsn)::int8 FROM pg_stat_wal_receiver LIMIT 1), \
 (SELECT sender_host FROM pg_stat_wal_receiver LIMIT 1), \
 CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END, \
 current_setting('default_transaction_read_only')";

/// Ask `conn` for its [`Status`].
pub async fn status(conn: &Conn) -> Result<Status, String> {
    let r = rows(conn, STATUS_SQL).await?;
    let row = r.first().ok_or("the status query returned no row")?;
    let s = |i: usize| row.get(i).cloned().flatten();
    let n = |i: usize| s(i).and_then(|v| v.parse::<i64>().ok()).map(|v| v.max(0) as u64);
    Ok(Status {
        in_recovery: s(0).as_deref() == Some("t"),
        wal_lsn: n(1),
        receive_lsn: n(2),
        replay_lsn: n(3),
        since_replay_s: s(4).and_then(|v| v.parse().ok()),
        receiver: s(5),
        upstream_lsn: n(6),
        upstream_host: s(7),
        replay_paused: s(8).as_deref() == Some("t"),
        read_only: s(9).as_deref() == Some("on"),
    })
}

/// The primary's view of its standbys (`pg_stat_replication`; needs `pg_monitor`).
pub async fn followers(conn: &Conn) -> Result<Vec<crate::pg::board::Follower>, String> {
    let r = rows(conn, "SELECT application_name, sync_state, (flush_lsn - '0/0'::pg_lsn)::int8 FROM pg_stat_replication").await?;
    Ok(r
        .into_iter()
        .map(|row| crate::pg::board::Follower {
            application_name: row.first().cloned().flatten().unwrap_or_default(),
            sync_state: row.get(1).cloned().flatten().unwrap_or_default(),
            flush_lsn: row.get(2).cloned().flatten().and_then(|v| v.parse::<i64>().ok()).map(|v| v.max(0) as u64),
        })
        .collect())
}

/// `0/3000060`, as PostgreSQL writes an LSN.
pub fn lsn(v: u64) -> String {
    format!("{:X}/{:X}", v >> 32, v & 0xffff_ffff)
}

/// Quote a string literal for SQL (standard_conforming_strings is on since 9.1).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_and_literals_read_like_postgres() {
        assert_eq!(lsn(0x3000060), "0/3000060");
        assert_eq!(lsn((1 << 32) | 0xA8), "1/A8");
        assert_eq!(literal("host=a user='x'"), "'host=a user=''x'''");
    }
}
