//! Configuration: one TOML file, read in two layers.
//!
//! 1. [`raw`] holds serde structs that mirror the file exactly (`deny_unknown_fields`, named
//!    defaults). Syntax and type errors come from the `toml` crate with a byte span.
//! 2. [`validate`] turns the raw structs into [`Config`], checking rules that span fields
//!    (timeout < interval, unique names, at least one target, secrets readable...).
//!
//! Every error is a [`ConfigError`] that names the file, the line and column, the dotted key
//! (`service[0].check.timeout`) and what was expected. Line numbers for validation errors are
//! found by walking a span-preserving parse of the same source ([`locate`]), so the raw structs
//! need no span wrappers.
//!
//! This module does no I/O beyond reading the config file and the secret files it names, and it
//! never touches the data directory or the network.

pub(crate) mod duration;
pub(crate) mod locate;
pub mod raw;
pub mod secret;
pub(crate) mod validate;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use duration::{MAX_DURATION, parse_duration};

/// A fully validated configuration. Construct it with [`load`] or [`from_str`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this came from (for messages and reloads).
    pub source: PathBuf,
    pub daemon: DaemonConfig,
    pub services: Vec<ServiceConfig>,
    /// `[[notify]]` channels.
    pub notify: Vec<crate::notify::config::NotifyConfig>,
    /// The authoritative DNS server (`[dns]`), when configured.
    pub dns: Option<crate::dns::config::DnsConfig>,
    /// `[[dns.provider]]`: DNS servers and services understudy updates (RFC 2136, PowerDNS,
    /// Route 53, Cloudflare).
    pub dns_providers: Vec<crate::provider::config::ProviderConfig>,
    /// `[drill]`: targets drills must meet, scheduled drills.
    pub drill: crate::drill::config::DrillConfig,
    /// `[heartbeat]`: the dead man's switch.
    pub heartbeat: Option<crate::drill::config::HeartbeatConfig>,
    /// `[cluster]`: which coordinator commits decisions (standalone unless configured).
    pub cluster: crate::coordinator::config::ClusterConfig,
    /// `[[haproxy]]`, `[[nginx]]`, `[[proxy]]`: the load-balancer level.
    pub lb: crate::lb::config::LbConfig,
    /// `[[vip]]`: virtual IPs this node speaks VRRPv3 for.
    pub vip: Vec<crate::vrrp::config::VipConfig>,
    /// `[[canary]]`: client canaries (see `canary/`).
    pub canaries: Vec<crate::canary::config::CanaryConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// Where the event log lives. Relative paths are relative to the working directory of the
    /// process, like every other tool that takes `./data`.
    pub data_dir: PathBuf,
    /// Listen address of the JSON API, `/metrics` and `/healthz`.
    pub api: SocketAddr,
    /// Bearer token required by mutating API calls (read from `api_token_file`). Without one
    /// the daemon uses (and on first start creates) `data_dir/api-token`.
    pub api_token: Option<String>,
    pub api_token_file: Option<PathBuf>,
    /// Names (lowercase, without port) accepted in `Host` besides the API's own address.
    pub api_hosts: Vec<String>,
    /// TLS for the API: certificate chain and private key (PEM files).
    pub api_tls: Option<ApiTls>,
    pub log_format: LogFormat,
    /// Start a new event log segment (with a snapshot) past this many bytes (0: never).
    pub log_segment_size: u64,
    /// Keep finished event log segments (for `events?since=`) this long after their last write.
    pub log_retention: std::time::Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub name: String,
    pub failback: Failback,
    /// How long a better target must stay eligible before traffic returns to it.
    pub failback_hold: Duration,
    pub all_down: AllDown,
    pub check: CheckConfig,
    /// In priority order: the first is the primary.
    pub targets: Vec<TargetConfig>,
    pub hooks: Vec<HookConfig>,
    /// How often actuators that can verify re-check the current decision and repair drift.
    pub verify_every: Duration,
    /// Optional recovery-time budget, used for warnings (e.g. DNS TTL + detection too long).
    pub rto_budget: Option<Duration>,
    /// `kind = "postgres"`: promotion settings (`max_lag`, `synchronous`, `fence`...).
    pub postgres: Option<crate::pg::config::PgService>,
    /// Drift checks (`[[service.compare]]`, see `probe::compare`).
    pub compare: Vec<crate::probe::config::CompareConfig>,
}

impl ServiceConfig {
    /// Worst-case time from a failure to the target being marked down, at these settings:
    /// the failure can start just after a good check, so the first failed check starts up to
    /// one `interval` later; the other `fall - 1` follow on the fast cadence, each starting
    /// `fast_interval` after the previous one or when it ends (at worst its timeout), and the
    /// last one fails only after its timeout. Saturates instead of overflowing.
    pub fn detection_budget(&self) -> Duration {
        let c = &self.check;
        let step = c.fast_interval.max(c.timeout);
        c.interval.saturating_add(step.saturating_mul(c.fall.saturating_sub(1))).saturating_add(c.timeout)
    }

    pub fn target(&self, name: &str) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| t.name == name)
    }
}

// The policy enums belong to the decision engine (which must not depend on config); the config
// names them as its own.
pub use crate::decision::{AllDown, Failback};

#[derive(Debug, Clone, PartialEq)]
pub struct CheckConfig {
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures that mark an up target down.
    pub fall: u32,
    /// Consecutive successes that mark a down target up.
    pub rise: u32,
    /// Cadence while a flip is in the balance (after a failed check until the target is marked
    /// down or passes `rise` checks again; while a down target recovers). At most `interval`.
    pub fast_interval: Duration,
    /// Cadence of a down target that is not recovering.
    pub down_interval: Duration,
    /// `kind = "postgres"` checks: `kind` is then `Tcp` with the server's port (what the
    /// connection-level code needs) and this says how to log in and what lag is acceptable.
    pub postgres: Option<std::sync::Arc<crate::pg::config::PgCheck>>,
    /// `kind = "redis"` and `kind = "mysql"` checks: `kind` is then `Tcp` with the server's port
    /// (like postgres) and this says which server, how to log in and what lag is acceptable.
    pub replica: Option<std::sync::Arc<crate::probe::config::ReplicaCheck>>,
}

impl CheckConfig {
    /// The default `fast_interval`: a quarter of `interval`, never below 50 ms. It may be
    /// shorter than the timeout: the scheduler never starts a check before the previous one of
    /// the same target has ended, so a hung target is re-checked as soon as its check times out.
    pub fn default_fast_interval(interval: Duration) -> Duration {
        (interval / 4).max(Duration::from_millis(50)).min(interval)
    }

    /// The interval the scheduler uses for `cadence`.
    pub fn interval_for(&self, cadence: crate::health::Cadence) -> Duration {
        match cadence {
            crate::health::Cadence::Steady => self.interval,
            crate::health::Cadence::Fast => self.fast_interval,
            crate::health::Cadence::Down => self.down_interval,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    Http(HttpCheck),
    Tcp(TcpCheck),
    Exec(ExecCheck),
}

impl CheckKind {
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Http(h) if h.tls => "https",
            CheckKind::Http(_) => "http",
            CheckKind::Tcp(_) => "tcp",
            CheckKind::Exec(_) => "exec",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpCheck {
    /// `https` when true.
    pub tls: bool,
    pub port: u16,
    pub path: String,
    pub method: String,
    /// Host header (and TLS server name); defaults to the target's address.
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
    pub expect_status: Vec<StatusRange>,
    pub body_contains: Option<String>,
    /// Verify the server certificate (on by default; `tls_verify = false` opts out).
    pub tls_verify: bool,
    /// Reuse one kept-alive connection between checks when the target allows it (off by
    /// default: every check opens a fresh connection, so a dead listener is seen at once).
    pub keep_alive: bool,
}

/// An inclusive range of HTTP status codes, written `200` or `"200-399"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    pub lo: u16,
    pub hi: u16,
}

impl StatusRange {
    pub fn contains(&self, status: u16) -> bool {
        (self.lo..=self.hi).contains(&status)
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi { write!(f, "{}", self.lo) } else { write!(f, "{}-{}", self.lo, self.hi) }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TcpCheck {
    pub port: u16,
    /// How the check's connection is closed once it is established (`close` in the config).
    pub close: TcpClose,
}

/// How a TCP check closes its connection: `reset` (the default, `SO_LINGER` 0 like HAProxy: one
/// packet and no TIME_WAIT socket on the monitor) or `fin` (a normal close).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpClose {
    #[default]
    Reset,
    Fin,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExecCheck {
    /// argv; a string in the file becomes `["/bin/sh", "-c", string]`.
    pub command: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TargetConfig {
    pub name: String,
    /// The address traffic is sent to (what DNS answers with, what hooks receive).
    pub address: IpAddr,
    /// Where checks go, when not `address` (a health port on a management network...).
    pub check_address: Option<IpAddr>,
    pub check_port: Option<u16>,
}

impl TargetConfig {
    pub fn check_ip(&self) -> IpAddr {
        self.check_address.unwrap_or(self.address)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HookConfig {
    pub name: String,
    pub command: Vec<String>,
    pub timeout: Duration,
    /// Decision reasons this hook runs for; empty means all.
    pub on: Vec<String>,
    /// Retry a failed run with backoff until it succeeds or a newer decision supersedes it.
    pub retry: bool,
}

/// One problem with a config file, located as precisely as we can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when the problem has a place in the file.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted path of the key, e.g. `service[0].check.timeout`; empty for file-level problems.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

/// All the problems found in one file (we report every one, not just the first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Non-fatal findings from validation (shown by `check-config` and at start-up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub key: String,
    pub message: String,
}

/// Read and validate a config file.
pub fn load(path: &Path) -> Result<(Config, Vec<Warning>), ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            line: None,
            column: None,
            key: String::new(),
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    from_str(&text, path)
}

/// [`load`] for the places that must survive a bug in validation: `check-config`, `run` and a
/// reload on SIGHUP. A panic while validating (which is always a bug: bad input gets an error)
/// is caught and reported as a rejected config, so a running daemon keeps its old config
/// instead of dying. The panic message still goes to stderr through the panic hook.
pub fn load_guarded(path: &Path) -> Result<(Config, Vec<Warning>), ConfigErrors> {
    guarded(path, || load(path))
}

fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, ConfigErrors> + std::panic::UnwindSafe) -> Result<T, ConfigErrors> {
    match std::panic::catch_unwind(f) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(ConfigErrors(vec![ConfigError {
                file: path.to_owned(),
                line: None,
                column: None,
                key: String::new(),
                message: format!(
                    "the config was refused because validating it failed with an internal error (a bug in understudy, please report it): {what}"
                ),
            }]))
        }
    }
}

/// The largest secret or token file read (`api_token_file`, `*_file` secrets): a key or token
/// is a few hundred bytes, so a larger file is the wrong file (a log, a disk image, `/dev/zero`)
/// and reading it whole could exhaust memory.
pub const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Read a small file, refusing more than `max` bytes. Errors name the file.
pub fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut buf = Vec::new();
    file.take(max + 1).read_to_end(&mut buf).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if buf.len() as u64 > max {
        return Err(format!("{} is larger than {} KiB, too large for what it should hold (is it the right file?)", path.display(), max / 1024));
    }
    Ok(buf)
}

/// Read a secret or token file: at most [`MAX_SECRET_FILE`] bytes of UTF-8, surrounding
/// whitespace trimmed. An empty file is an error.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    let bytes = read_capped(path, MAX_SECRET_FILE)?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("file {} is empty", path.display()));
    }
    Ok(trimmed.to_string())
}

/// Validate config text; `path` is used for messages and to resolve relative secret files.
pub fn from_str(text: &str, path: &Path) -> Result<(Config, Vec<Warning>), ConfigErrors> {
    let raw: raw::RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => return Err(ConfigErrors(vec![locate::from_toml_error(text, path, &e)])),
    };
    validate::validate(raw, text, path)
}

/// `name:port` → `name`, `[::1]:port` → `[::1]`, a bare IPv6 address stays whole.
pub fn host_part(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map(|i| &authority[..=i])
            .unwrap_or(authority);
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 19, finding 1: this file made `check-config` panic (and a SIGHUP kill the daemon).
    const HUGE_INTERVAL: &str = r#"[[service]]
name = "www"
rto_budget = "1s"
[service.check]
kind = "tcp"
port = 80
interval = "10000000000000000000s"
timeout = "1s"
[[service.target]]
name = "primary"
address = "192.0.2.2"
"#;

    fn errors(text: &str) -> Vec<String> {
        from_str(text, Path::new("u.toml")).expect_err("must be refused").0.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn log_segment_size_and_retention_parse_with_units_and_refuse_nonsense() {
        let (c, _) = from_str("[daemon]\nlog_segment_size = \"512KiB\"\nlog_retention = \"7d\"\n", Path::new("u.toml")).unwrap();
        assert_eq!((c.daemon.log_segment_size, c.daemon.log_retention), (512 << 10, std::time::Duration::from_secs(7 * 86_400)));
        let (c, _) = from_str("[daemon]\nlog_segment_size = 4096\n", Path::new("u.toml")).unwrap();
        assert_eq!(c.daemon.log_segment_size, 4096);
        let (c, _) = from_str("[daemon]\n", Path::new("u.toml")).unwrap();
        assert_eq!((c.daemon.log_segment_size, c.daemon.log_retention), (8 << 20, std::time::Duration::from_secs(90 * 86_400)));
        let e = errors("[daemon]\nlog_segment_size = \"8 parsecs\"\nlog_retention = \"forever\"\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("daemon.log_segment_size: expected a size such as \"8MiB\""), "{}", e[0]);
        assert!(e[1].contains("daemon.log_retention: expected a duration such as \"90d\""), "{}", e[1]);
        assert_eq!(errors("[daemon]\nlog_segment_size = -1\n").len(), 1);
    }

    #[test]
    fn a_huge_duration_is_a_located_error_not_a_panic() {
        let e = errors(HUGE_INTERVAL);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("u.toml:7:12: service[0].check.interval: "), "{}", e[0]);
        assert!(e[0].contains("at most one year") && e[0].contains("10000000000000000000s"), "{}", e[0]);
    }

    #[test]
    fn the_largest_values_validate_and_their_budgets_saturate_instead_of_overflowing() {
        let text = HUGE_INTERVAL
            .replace("10000000000000000000s", "1y")
            .replace("timeout = \"1s\"", "timeout = \"364d\"\nfall = 1000\nrise = 1000")
            + "[dns]\nlisten = [\"127.0.0.1:0\"]\n[[dns.zone]]\nname = \"example.test\"\nnameservers = { \"ns1.example.test\" = \"192.0.2.53\" }\n[[dns.zone.record]]\nname = \"www\"\nservice = \"www\"\nttl = 2147483647\n";
        let (cfg, warnings) = from_str(&text, Path::new("u.toml")).unwrap();
        assert_eq!(cfg.services[0].detection_budget(), Duration::from_secs(31_557_600 + 364 * 86400 * 1000));
        assert!(warnings.iter().any(|w| w.key == "service[0].rto_budget"), "{warnings:?}");
        assert!(warnings.iter().any(|w| w.key.ends_with("record[0].ttl")), "{warnings:?}");

        let mut svc = cfg.services[0].clone();
        svc.check.interval = Duration::MAX;
        assert_eq!(svc.detection_budget(), Duration::MAX);
    }

    #[test]
    fn fall_and_rise_are_bounded() {
        let e = errors(&HUGE_INTERVAL.replace("10000000000000000000s", "2s").replace("port = 80", "port = 80\nfall = 1001\nrise = 0"));
        assert!(e.iter().any(|e| e.contains("service[0].check.fall: expected 1 to 1000") && e.contains("got 1001")), "{e:?}");
        assert!(e.iter().any(|e| e.contains("service[0].check.rise: expected 1 to 1000")), "{e:?}");
    }

    #[test]
    fn a_panic_while_validating_becomes_a_rejected_config() {
        let path = Path::new("/etc/understudy/u.toml");
        let r: Result<(), ConfigErrors> = guarded(path, || panic!("attempt to add with overflow"));
        let e = r.unwrap_err().to_string();
        assert!(e.starts_with("/etc/understudy/u.toml: the config was refused"), "{e}");
        assert!(e.contains("attempt to add with overflow"), "{e}");
    }

    #[test]
    fn secret_files_are_capped_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("token");
        std::fs::write(&ok, "  s3cret\n").unwrap();
        assert_eq!(read_secret_file(&ok).unwrap(), "s3cret");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_SECRET_FILE as usize + 1]).unwrap();
        let e = read_secret_file(&big).unwrap_err();
        assert!(e.contains("larger than 64 KiB"), "{e}");
        assert!(read_secret_file(Path::new("/dev/zero")).unwrap_err().contains("larger than 64 KiB"));
        std::fs::write(&big, b"\n \n").unwrap();
        assert!(read_secret_file(&big).unwrap_err().contains("is empty"));
        std::fs::write(&big, b"\xff\xfe").unwrap();
        assert!(read_secret_file(&big).unwrap_err().contains("not UTF-8"));

        // Through the config: the error names the key.
        let token = dir.path().join("api-token");
        std::fs::write(&token, vec![b'x'; 100_000]).unwrap();
        let e = errors(&format!("[daemon]\napi_token_file = \"{}\"\n", token.display()));
        assert!(e[0].contains("daemon.api_token_file: token file:") && e[0].contains("larger than 64 KiB"), "{e:?}");
    }

    fn service(check_extra: &str, service_extra: &str) -> Result<(Config, Vec<Warning>), ConfigErrors> {
        let text = format!(
            "[daemon]\ndata_dir = \"./d\"\n\n[[service]]\nname = \"www\"\n{service_extra}\n\n[service.check]\nkind = \"tcp\"\nport = 80\n{check_extra}\n\n\
             [[service.target]]\nname = \"primary\"\naddress = \"127.0.0.2\"\n\n[[service.target]]\nname = \"backup\"\naddress = \"127.0.0.3\"\n"
        );
        from_str(&text, Path::new("t.toml"))
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn fast_and_down_intervals_default_to_a_quarter_and_the_interval() {
        let (cfg, _) = service("", "").expect("valid");
        let c = &cfg.services[0].check;
        assert_eq!((c.interval, c.fast_interval, c.down_interval), (1000 * MS, 250 * MS, 1000 * MS));
        let (cfg, _) = service("interval = \"100ms\"\ntimeout = \"50ms\"", "").expect("valid");
        assert_eq!(cfg.services[0].check.fast_interval, 50 * MS, "never below 50 ms");
        let (cfg, _) = service("fast_interval = \"400ms\"\ndown_interval = \"5s\"", "").expect("valid");
        let c = &cfg.services[0].check;
        assert_eq!((c.fast_interval, c.down_interval), (400 * MS, 5000 * MS));
    }

    #[test]
    fn bad_fast_and_down_intervals_are_refused_with_their_key() {
        let e = service("fast_interval = \"2s\"", "").unwrap_err().to_string();
        assert!(e.contains("service[0].check.fast_interval: must be at most interval (1s), got 2s"), "{e}");
        let e = service("fast_interval = \"10ms\"\ndown_interval = \"1ms\"", "").unwrap_err().to_string();
        assert!(e.contains("check.fast_interval: expected at least 50ms, got 10ms"), "{e}");
        assert!(e.contains("check.down_interval: expected at least 50ms, got 1ms"), "{e}");
    }

    #[test]
    fn the_detection_budget_is_one_interval_then_fall_minus_one_fast_steps() {
        // Defaults: 1 s + 2 x max(250 ms, 500 ms) + 500 ms (was 1 s x 3 + 500 ms).
        let (cfg, _) = service("", "").expect("valid");
        assert_eq!(cfg.services[0].detection_budget(), 2500 * MS);
        let (cfg, _) = service("fast_interval = \"1s\"", "").expect("valid");
        assert_eq!(cfg.services[0].detection_budget(), 3500 * MS, "no fast cadence: the old worst case");
        let (cfg, _) = service("timeout = \"100ms\"\nfall = 1", "").expect("valid");
        assert_eq!(cfg.services[0].detection_budget(), 1100 * MS);
        // rto_budget warns on the new worst case, not the old one.
        let (_, w) = service("", "rto_budget = \"3s\"").expect("valid");
        assert!(w.is_empty(), "{w:?}");
        let (_, w) = service("fast_interval = \"1s\"", "rto_budget = \"3s\"").expect("valid");
        assert!(w.iter().any(|w| w.key.ends_with("rto_budget") && w.message.contains("3s 500ms")), "{w:?}");
        // Saturates instead of overflowing.
        let (mut cfg, _) = service("", "").expect("valid");
        cfg.services[0].check.fall = u32::MAX;
        cfg.services[0].check.fast_interval = Duration::MAX;
        assert_eq!(cfg.services[0].detection_budget(), Duration::MAX);
    }
}
