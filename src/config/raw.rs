//! The config file as written: serde structs that mirror the TOML exactly.
//!
//! Every struct denies unknown keys, so a typo (`intreval`) is an error rather than a silently
//! ignored setting. Defaults are named functions so they are documented in one place. Nothing
//! here checks relations between fields; that is `validate.rs`'s job.

use serde::Deserialize;
use std::time::Duration;

use super::duration::serde_duration;
use super::{AllDown, Failback};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub daemon: RawDaemon,
    #[serde(default, rename = "service")]
    pub services: Vec<RawService>,
    #[serde(default)]
    pub notify: Vec<crate::notify::config::RawNotify>,
    /// The authoritative DNS server; its structs live with the server in `dns/config.rs`.
    pub dns: Option<crate::dns::config::RawDns>,
    /// Drill targets and schedules; the structs live with drills in `drill/config.rs`.
    #[serde(default)]
    pub drill: crate::drill::config::RawDrill,
    pub heartbeat: Option<crate::drill::config::RawHeartbeat>,
    /// `[cluster]`: standalone or etcd; the structs live with the coordinator in `coordinator/config.rs`.
    pub cluster: Option<crate::coordinator::config::RawCluster>,
    /// Load-balancer level; the structs live in `lb/config.rs`.
    #[serde(default)]
    pub haproxy: Vec<crate::lb::config::RawHaproxy>,
    #[serde(default)]
    pub nginx: Vec<crate::lb::config::RawNginx>,
    #[serde(default)]
    pub proxy: Vec<crate::lb::config::RawProxy>,
    /// Virtual IPs (VRRPv3); the structs live with the speaker in `vrrp/config.rs`.
    #[serde(default)]
    pub vip: Vec<crate::vrrp::config::RawVip>,
    /// Client canaries; the structs live with the canary in `canary/config.rs`.
    #[serde(default)]
    pub canary: Vec<crate::canary::config::RawCanary>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    #[serde(default = "default_api")]
    pub api: String,
    pub api_token_file: Option<String>,
    /// Extra names the API answers to in `Host` (besides its own address), e.g. behind a proxy.
    #[serde(default)]
    pub api_hosts: Vec<String>,
    /// Serve the API over TLS with this certificate chain (PEM); needs `api_tls_key`.
    pub api_tls_cert: Option<String>,
    pub api_tls_key: Option<String>,
    #[serde(default = "default_log_format")]
    pub log_format: String,
    /// Event log segment size: bytes, or a string with a unit ("8MiB", "64 KiB").
    pub log_segment_size: Option<toml::Value>,
    /// How long finished event log segments are kept ("90d").
    pub log_retention: Option<String>,
}

impl Default for RawDaemon {
    fn default() -> Self {
        RawDaemon {
            data_dir: default_data_dir(),
            api: default_api(),
            api_token_file: None,
            api_hosts: Vec::new(),
            api_tls_cert: None,
            api_tls_key: None,
            log_format: default_log_format(),
            log_segment_size: None,
            log_retention: None,
        }
    }
}

pub fn default_data_dir() -> String {
    "./understudy-data".into()
}
pub fn default_api() -> String {
    "127.0.0.1:9190".into()
}
fn default_log_format() -> String {
    "human".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: String,
    /// `"postgres"`: targets are PostgreSQL servers and a failover promotes a standby (see
    /// `pg/`). Absent: a plain service.
    pub kind: Option<String>,
    /// Default `auto`; `manual` for `kind = "postgres"` (databases never fail back by themselves).
    pub failback: Option<Failback>,
    #[serde(default = "default_failback_hold", with = "serde_duration")]
    pub failback_hold: Duration,
    #[serde(default = "default_all_down")]
    pub all_down: AllDown,
    #[serde(default, with = "serde_duration::option")]
    pub rto_budget: Option<Duration>,
    pub check: RawCheck,
    #[serde(default, rename = "target")]
    pub targets: Vec<RawTarget>,
    #[serde(default, rename = "hook")]
    pub hooks: Vec<RawHook>,
    /// How often actuators that can verify (the DNS server) check that the current decision
    /// is still in effect, and repair it when not.
    #[serde(default = "default_verify_every", with = "serde_duration")]
    pub verify_every: Duration,
    // kind = "postgres" (validated in `pg/config.rs`)
    /// A standby further behind is not eligible: a duration ("30s") or a size ("16MB").
    pub max_lag: Option<String>,
    /// Only a synchronous standby may be promoted.
    pub synchronous: Option<bool>,
    /// Run before a promotion, for the old primary (`{target}`, `{address}`).
    pub fence: Option<RawCommand>,
    /// What a repointed standby's `primary_conninfo` says besides host and port.
    pub replication_conninfo: Option<String>,
    /// Drift checks (validated in `probe/compare.rs`).
    #[serde(default)]
    pub compare: Vec<RawCompare>,
}

/// One `[[service.compare]]`: a value read from every target and compared with the active one's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompare {
    pub name: String,
    /// `"compare"` (the one readiness kind so far).
    pub kind: String,
    /// GET this URL template (`{address}`, `{target}`); the value is the body.
    pub url: Option<String>,
    /// Or run this argv (`{address}`, `{target}`); the value is stdout.
    pub command: Option<RawCommand>,
    #[serde(default, with = "serde_duration::option")]
    pub interval: Option<Duration>,
    #[serde(default, with = "serde_duration::option")]
    pub timeout: Option<Duration>,
    /// A drifted target is not eligible for failover.
    pub gate: Option<bool>,
}

fn default_verify_every() -> Duration {
    Duration::from_secs(30)
}

pub(crate) fn default_failback() -> Failback {
    Failback::Auto
}
/// Long enough that a primary flapping on a seconds scale does not drag traffic back and forth.
fn default_failback_hold() -> Duration {
    Duration::from_secs(30)
}
fn default_all_down() -> AllDown {
    AllDown::Primary
}

/// One struct for every check kind, so that a key given for the wrong kind gets a precise
/// message ("`path` applies to http and https checks") instead of a generic serde error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub kind: RawCheckKind,
    #[serde(default = "default_interval", with = "serde_duration")]
    pub interval: Duration,
    #[serde(default = "default_timeout", with = "serde_duration")]
    pub timeout: Duration,
    #[serde(default = "default_fall")]
    pub fall: u32,
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Cadence while a flip is in the balance; default a quarter of `interval`.
    #[serde(default, with = "serde_duration::option")]
    pub fast_interval: Option<Duration>,
    /// Cadence of a down target that keeps failing; default `interval`.
    #[serde(default, with = "serde_duration::option")]
    pub down_interval: Option<Duration>,
    // http, https, tcp
    pub port: Option<u16>,
    // http, https
    pub path: Option<String>,
    pub method: Option<String>,
    pub host: Option<String>,
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    pub expect_status: Option<Vec<RawStatus>>,
    pub body_contains: Option<String>,
    pub tls_verify: Option<bool>,
    pub keep_alive: Option<bool>,
    // tcp
    pub close: Option<super::TcpClose>,
    // exec
    pub command: Option<RawCommand>,
    // postgres, mysql, redis (redis: an ACL user; `dbname` is postgres only)
    pub user: Option<String>,
    pub password_file: Option<String>,
    pub dbname: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawCheckKind {
    Http,
    Https,
    Tcp,
    Exec,
    Postgres,
    Redis,
    Mysql,
}

/// Defaults match the documented "1 s interval, fall 3" profile: about 1 s to detect with the
/// fast cadence (see `CheckConfig::fast_interval`).
fn default_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_timeout() -> Duration {
    Duration::from_millis(500)
}
fn default_fall() -> u32 {
    3
}
fn default_rise() -> u32 {
    2
}

/// `200` or `"200-399"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawStatus {
    Code(i64),
    Text(String),
}

/// A shell string (`"systemctl is-active nginx"`) or an argv list (`["/bin/check", "-q"]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawCommand {
    Shell(String),
    Argv(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub name: String,
    pub address: String,
    pub check_address: Option<String>,
    pub check_port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHook {
    pub name: Option<String>,
    pub command: RawCommand,
    #[serde(default = "default_hook_timeout", with = "serde_duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub on: Vec<String>,
    /// Retry a failed run with backoff until it succeeds or a newer decision supersedes it.
    #[serde(default)]
    pub retry: bool,
}

fn default_hook_timeout() -> Duration {
    Duration::from_secs(30)
}
