//! `[[haproxy]]`: steer a running HAProxy through its runtime API (the `stats socket`, over a
//! unix socket or TCP, at `level admin`).
//!
//! `apply` puts the active target's server in `ready` first, then every other mapped server in
//! the `inactive` state (`drain` by default, or `maint`), so there is never a moment when no
//! server may take new connections. When the decision is to serve nothing, every mapped server
//! is made inactive. HAProxy's own health checks may stay on: a `ready` server HAProxy finds
//! down still gets no traffic, and a `drain` server keeps being checked.
//!
//! `verify` reads `show servers state BACKEND` and checks each mapped server's administrative
//! state (the `SRV_ADMF_FMAINT` and `SRV_ADMF_FDRAIN` bits an operator or we set). A backend or
//! server HAProxy does not know is a fatal outcome (the config is wrong); a socket that does not
//! answer is retried. One command per connection (HAProxy's non-interactive mode).
//!
//! This module decides nothing and writes no events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::config::{Endpoint, HaproxyConfig, Inactive};
use crate::actuator::registry::{Kind, StartCtx, StartError};
use crate::actuator::{ActFuture, Actuator, Current, Desired, Outcome};
use crate::config::{Config, ServiceConfig};

/// The most we read from one answer (a `show servers state` of a large backend fits).
const MAX_ANSWER: u64 = 4 << 20;

/// `srv_admin_state` bits (HAProxy's `SRV_ADMF_*`): forced maintenance, forced drain.
const ADMF_FMAINT: u32 = 0x01;
const ADMF_FDRAIN: u32 = 0x08;

/// Why a runtime API command failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket is missing, refused, or did not answer in time: try again later.
    #[error("HAProxy runtime API at {0}: {1}")]
    Unreachable(String, String),
    /// HAProxy answered with an error (`No such backend.`): the config does not match HAProxy's.
    #[error("HAProxy refused `{0}`: {1}")]
    Refused(String, String),
}

/// Run one runtime API command and return HAProxy's answer.
pub async fn command(endpoint: &Endpoint, cmd: &str, timeout: Duration) -> Result<String, ApiError> {
    let unreachable = |e: String| ApiError::Unreachable(endpoint.to_string(), e);
    let run = async {
        let mut answer = Vec::new();
        let line = format!("{cmd}\n");
        match endpoint {
            Endpoint::Unix(p) => {
                let mut s = tokio::net::UnixStream::connect(p).await?;
                s.write_all(line.as_bytes()).await?;
                s.take(MAX_ANSWER).read_to_end(&mut answer).await?;
            }
            Endpoint::Tcp(a) => {
                let mut s = tokio::net::TcpStream::connect(a).await?;
                s.write_all(line.as_bytes()).await?;
                s.take(MAX_ANSWER).read_to_end(&mut answer).await?;
            }
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    match tokio::time::timeout(timeout, run).await {
        Err(_) => Err(unreachable(format!("no answer within {}", humantime::format_duration(timeout)))),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Ok(Ok(a)) => Ok(a),
    }
}

/// One server's line of `show servers state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub name: String,
    /// `srv_op_state`: 0 stopped, 1 starting, 2 running, 3 stopping (HAProxy's checks).
    pub op: u32,
    /// `srv_admin_state` bits.
    pub admin: u32,
}

impl ServerState {
    /// `ready`, `drain` or `maint`, as the administrative state reads.
    pub fn admin_state(&self) -> &'static str {
        if self.admin & ADMF_FMAINT != 0 {
            "maint"
        } else if self.admin & ADMF_FDRAIN != 0 {
            "drain"
        } else {
            "ready"
        }
    }

    fn checks(&self) -> &'static str {
        match self.op {
            0 => "down",
            1 => "starting",
            2 => "up",
            3 => "stopping",
            _ => "unknown",
        }
    }
}

/// Parse `show servers state BACKEND` (format version 1): the servers of `backend`.
pub fn parse_servers_state(text: &str, backend: &str) -> Result<Vec<ServerState>, String> {
    let mut lines = text.lines();
    match lines.next().map(str::trim) {
        Some("1") => {}
        other => return Err(format!("unexpected answer to `show servers state` (format {other:?}): {}", text.trim())),
    }
    let mut columns: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for line in lines {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('#') {
            columns = header.split_whitespace().collect();
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let col = |name: &str| columns.iter().position(|c| *c == name);
        let (Some(be), Some(sn), Some(op), Some(adm)) = (col("be_name"), col("srv_name"), col("srv_op_state"), col("srv_admin_state")) else {
            return Err(format!("`show servers state` has no column header: {line}"));
        };
        let f: Vec<&str> = line.split_whitespace().collect();
        let get = |i: usize| f.get(i).copied().ok_or_else(|| format!("short `show servers state` line: {line}"));
        if get(be)? != backend {
            continue;
        }
        let num = |i: usize| get(i).and_then(|v| v.parse::<u32>().map_err(|_| format!("bad number in `show servers state`: {line}")));
        out.push(ServerState { name: get(sn)?.to_string(), op: num(op)?, admin: num(adm)? });
    }
    Ok(out)
}

/// One `[[haproxy]]` section's actuator.
pub struct HaproxyActuator {
    name: String,
    cfg: HaproxyConfig,
}

impl HaproxyActuator {
    pub fn new(cfg: HaproxyConfig, name: String) -> HaproxyActuator {
        HaproxyActuator { name, cfg }
    }

    /// Each mapped server and the state it should be in: the active one first.
    fn plan(&self, desired: &Desired) -> Vec<(&str, &str)> {
        let active = desired.active.as_ref().map(|t| t.name.as_str());
        let mut plan: Vec<(&str, &str)> = Vec::new();
        if let Some((_, server)) = self.cfg.servers.iter().find(|(t, _)| Some(t.as_str()) == active) {
            plan.push((server, "ready"));
        }
        for (t, server) in &self.cfg.servers {
            if Some(t.as_str()) != active {
                plan.push((server, self.cfg.inactive.as_str()));
            }
        }
        plan
    }

    async fn run(&self, cmd: &str) -> Result<String, Outcome> {
        match command(&self.cfg.socket, cmd, self.cfg.timeout).await {
            Ok(a) if a.trim().is_empty() || cmd.starts_with("show ") => Ok(a),
            Ok(a) => Err(Outcome::fatal(ApiError::Refused(cmd.to_string(), a.trim().to_string()).to_string())),
            Err(e) => Err(Outcome::failed(e.to_string())),
        }
    }

    async fn states(&self) -> Result<Vec<ServerState>, Outcome> {
        let text = self.run(&format!("show servers state {}", self.cfg.backend)).await?;
        if text.trim_start().starts_with("Can't find backend") || text.contains("No such backend") {
            return Err(Outcome::fatal(format!("HAProxy has no backend \"{}\": {}", self.cfg.backend, text.trim())));
        }
        parse_servers_state(&text, &self.cfg.backend).map_err(Outcome::failed)
    }

    async fn check(&self, desired: &Desired) -> Outcome {
        let states = match self.states().await {
            Ok(s) => s,
            Err(o) => return o,
        };
        let mut seen = Vec::new();
        for (server, want) in self.plan(desired) {
            let Some(s) = states.iter().find(|s| s.name == server) else {
                return Outcome::fatal(format!("HAProxy backend \"{}\" has no server \"{server}\"", self.cfg.backend));
            };
            let is = s.admin_state();
            // `maint` covers `drain` too: a server in maintenance takes no new connections either.
            let ok = is == want || (want == Inactive::Drain.as_str() && is == "maint");
            if !ok {
                return Outcome::failed(format!("HAProxy server {}/{server} is {is}, expected {want}", self.cfg.backend));
            }
            seen.push(format!("{server} {is} (checks: {})", s.checks()));
        }
        if desired.active.as_ref().is_some_and(|a| !self.cfg.servers.iter().any(|(t, _)| *t == a.name)) {
            return Outcome::fatal(format!("target \"{}\" has no HAProxy server in `servers`", desired.active.as_ref().map(|a| a.name.as_str()).unwrap_or("")));
        }
        Outcome::ok(format!("{}: {}", self.cfg.backend, seen.join(", ")))
    }
}

impl Actuator for HaproxyActuator {
    fn name(&self) -> &str {
        &self.name
    }

    fn apply<'a>(&'a self, desired: &'a Desired) -> ActFuture<'a> {
        Box::pin(async move {
            if let Some(a) = &desired.active
                && !self.cfg.servers.iter().any(|(t, _)| *t == a.name)
            {
                return Outcome::fatal(format!("target \"{}\" has no HAProxy server in `servers`; add it there", a.name));
            }
            let mut done = Vec::new();
            for (server, state) in self.plan(desired) {
                let cmd = format!("set server {}/{server} state {state}", self.cfg.backend);
                if let Err(o) = self.run(&cmd).await {
                    let before = if done.is_empty() { String::new() } else { format!(" (after {})", done.join(", ")) };
                    return Outcome { detail: format!("{}{before}", o.detail), ..o };
                }
                done.push(format!("{server} {state}"));
            }
            Outcome::ok(format!("{} at {}: {}", self.cfg.backend, self.cfg.socket, done.join(", ")))
        })
    }

    fn verify<'a>(&'a self, desired: &'a Desired) -> Option<ActFuture<'a>> {
        Some(Box::pin(self.check(desired)))
    }
}

/// Every `[[haproxy]]` section; actuators are built from the config in force.
pub struct HaproxyKind {
    sections: Mutex<Arc<Vec<HaproxyConfig>>>,
}

/// [`crate::actuator::registry::KINDS`]' entry for `[[haproxy]]`.
pub fn start_kind(ctx: &StartCtx) -> Result<Box<dyn Kind>, StartError> {
    Ok(Box::new(HaproxyKind { sections: Mutex::new(Arc::new(ctx.config.lb.haproxy.clone())) }))
}

/// Actuator names: `haproxy`, or `haproxy:BACKEND` (and `haproxy:BACKEND@SOCKET`) when a
/// service has several sections.
fn names<'a>(sections: impl Iterator<Item = &'a HaproxyConfig> + Clone) -> Vec<String> {
    let all: Vec<&HaproxyConfig> = sections.collect();
    all.iter()
        .map(|c| {
            if all.len() == 1 {
                "haproxy".to_string()
            } else if all.iter().filter(|o| o.backend == c.backend).count() == 1 {
                format!("haproxy:{}", c.backend)
            } else {
                format!("haproxy:{}@{}", c.backend, c.socket)
            }
        })
        .collect()
}

impl Kind for HaproxyKind {
    fn name(&self) -> &'static str {
        "haproxy"
    }

    fn actuators(&self, service: &ServiceConfig) -> Vec<Arc<dyn Actuator>> {
        let sections = self.sections.lock().expect("haproxy sections").clone();
        let mine = sections.iter().filter(|c| c.service == service.name);
        names(mine.clone()).into_iter().zip(mine).map(|(n, c)| Arc::new(HaproxyActuator::new(c.clone(), n)) as Arc<dyn Actuator>).collect()
    }

    fn reload(&self, config: &Config, _current: &HashMap<String, Current>) -> Vec<String> {
        *self.sections.lock().expect("haproxy sections") = Arc::new(config.lb.haproxy.clone());
        Vec::new()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded from HAProxy 2.6 after `set server www/web1 state maint` and `... web2 state drain`.
    const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n\
        2 www 1 web1 127.0.0.1 0 1 1 1 2 8 2 0 14 0 0 0 - 1 - 0 0 - - 0\n\
        2 www 2 web2 127.0.0.1 2 8 1 1 1 8 2 0 6 0 0 0 - 2 - 0 0 - - 0\n\
        3 other 1 web3 127.0.0.1 2 0 1 1 1 8 2 0 6 0 0 0 - 2 - 0 0 - - 0\n\n";

    #[test]
    fn servers_state_is_read_by_column_name() {
        let s = parse_servers_state(STATE, "www").unwrap();
        assert_eq!(s.iter().map(|s| (s.name.as_str(), s.admin_state(), s.checks())).collect::<Vec<_>>(), [("web1", "maint", "down"), ("web2", "drain", "up")]);
        assert!(parse_servers_state("Unknown command.\n", "www").unwrap_err().contains("unexpected answer"));
        assert!(parse_servers_state("1\n2 www 1 web1\n", "www").unwrap_err().contains("no column header"));
        assert!(parse_servers_state("1\n# be_name srv_name srv_op_state srv_admin_state\nwww web1 x 0\n", "www").unwrap_err().contains("bad number"));
    }

    #[test]
    fn the_active_server_is_made_ready_before_the_others_go_inactive() {
        let cfg = HaproxyConfig {
            service: "www".into(),
            socket: Endpoint::Unix("/nonexistent".into()),
            backend: "www".into(),
            servers: vec![("primary".into(), "web1".into()), ("backup".into(), "web2".into())],
            inactive: Inactive::Maint,
            timeout: Duration::from_secs(1),
        };
        let a = HaproxyActuator::new(cfg, "haproxy".into());
        let mut d = Desired {
            service: "www".into(),
            epoch: 2,
            active: Some(crate::actuator::TargetRef { name: "backup".into(), address: "127.0.0.3".parse().unwrap() }),
            previous: None,
            reason: crate::decision::Reason::Failover,
            all_down: false,
            decided_at: std::time::Instant::now(),
        };
        assert_eq!(a.plan(&d), [("web2", "ready"), ("web1", "maint")]);
        d.active = None;
        assert_eq!(a.plan(&d), [("web1", "maint"), ("web2", "maint")]);
    }

    #[tokio::test]
    async fn a_missing_socket_is_retryable_and_named() {
        let e = command(&Endpoint::Unix("/nonexistent/haproxy.sock".into()), "show info", Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(e, ApiError::Unreachable(..)), "{e}");
        assert!(e.to_string().contains("/nonexistent/haproxy.sock"), "{e}");
    }
}
