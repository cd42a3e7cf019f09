//! What the probes of one PostgreSQL service last learnt from its primary: its WAL position and
//! which standbys it streams to, with their `sync_state`.
//!
//! A standby cannot tell by itself whether it is synchronous or how far the primary has gone;
//! the primary's probe can. It posts here; a standby's probe reads it (`synchronous = true`
//! gates on it) and so does the promotion actuator. The board is keyed by service name and
//! lives as long as the process, so a reload keeps what was learnt before the primary died
//! (that last word is exactly what a failover needs). It holds observations, never decisions.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

/// One standby as the primary reported it in `pg_stat_replication`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follower {
    pub application_name: String,
    /// `sync`, `quorum`, `potential` or `async`.
    pub sync_state: String,
    pub flush_lsn: Option<u64>,
}

impl Follower {
    /// Whether the primary waited for this standby before acknowledging a commit.
    pub fn synchronous(&self) -> bool {
        self.sync_state == "sync" || self.sync_state == "quorum"
    }
}

/// The last report of a service's primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryReport {
    /// The target name of the primary that reported.
    pub target: String,
    pub at: Instant,
    pub wal_lsn: u64,
    pub followers: Vec<Follower>,
}

static BOARD: LazyLock<Mutex<HashMap<String, PrimaryReport>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Post what the primary of `service` said.
pub fn post(service: &str, report: PrimaryReport) {
    BOARD.lock().unwrap_or_else(|e| e.into_inner()).insert(service.to_string(), report);
}

/// The last report of `service`'s primary, if one was ever seen.
pub fn last(service: &str) -> Option<PrimaryReport> {
    BOARD.lock().unwrap_or_else(|e| e.into_inner()).get(service).cloned()
}
