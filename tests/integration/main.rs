//! Integration tests: the real `understudy` binary against real nginx on 127.0.0.x.
//!
//! Policy: these tests need nginx (Debian `nginx-light`), installed by
//! `scripts/install-test-deps.sh`, which the README's test command runs. A missing peer is a
//! failure with a clear message, never a silent skip. Every process a test starts is stopped
//! by PID when the test ends; every wait has a deadline.

#[path = "../support/mod.rs"]
mod support;

mod actuators; // hooks: chatty, detaching, slow (DNS not delayed), retried; clean environment for hooks and exec checks
mod agent; // `understudy agent`: GET /health composed of real PostgreSQL, Redis, nginx, an exec check and a filled tmpfs (root); --check-config errors
mod api; // the router through `oneshot`: status codes, auth, error bodies, metrics names
mod api_security; // Host/Origin/Content-Type guard, generated token, TLS, caps, sd_notify, the systemd unit
mod canary; // the client canary through real unbound: client RTO of a real incident in its timeline, a stale resolver raises clients_stale and a webhook (root for the namespace test)
mod cadence; // the fast cadence with the real binary: fast re-checks, down interval, status
mod cluster; // cluster mode on a real 3-member etcd: vantage quorum, one leader, failover, fencing, member loss
mod cluster_nodes; // three real `understudy run` nodes on etcd: one failover for all, every node's DNS, leader killed, etcd gone
mod config_errors; // check-config and run with bad files: file, line, key, expectation; exit 2
mod crash; // kill -9 and restart: events, overrides, incidents intact; decision reconciled
mod dashboard; // headless Chromium on the dashboard: live failover, token-gated drain, phone width; SSE order and Last-Event-ID resume
mod demo; // README's first command: `understudy demo` end to end
mod disk; // the data disk stuck (fsfreeze), full or read-only (tmpfs), damaged and forged log lines (root)
mod drift; // drift checks ([[service.compare]]) against real nginx serving versions: drift event, webhook, API, status, the gate keeps traffic off a drifted backup
mod drill; // drills from the CLI: force-down measured and restored, baseline refusal, missed targets
mod drill_lease; // a drill killed with SIGKILL: the daemon undoes its fault within the lease
mod failover; // kill the primary: failover within budget; failback only after the hold; hooks
mod frontdoor; // the .deb (contents, lintian, dpkg --root install, the daemon as its user, purge); --output json, colours, completions, man
mod fuzz_findings; // inputs fuzzing found (issue 19): huge durations, quoted template placeholders, big secret files
mod lb; // the load-balancer level: real HAProxy (admin socket) and nginx (upstream file) steered, the built-in proxy losing no request
mod netbed; // namespaces: DNS-mode drill through unbound, 5% / 100% loss, a flapping primary (root)
mod notify; // real Alertmanager, aiosmtpd and a stand-in HTTP receiver: alerts, formats, kill -9 with the receiver down
mod operator; // drain / enable / switchover / clear through the CLI
mod replication; // the redis and mysql replication checks against a real Redis primary + replica and a real MariaDB primary + replica: link, threads, lag
mod providers; // DNS providers against real BIND, Knot, PowerDNS, moto (Route 53) and a Cloudflare-shaped receiver: failover, rejected keys, drift, restart
mod postgres; // real PostgreSQL 15: async failover with fast-forward and repoint, sync zero loss, fence and `pg rejoin`, lag gate
mod reload; // SIGHUP: a bad file keeps the old config; a good one keeps unchanged health
mod segments; // the segmented event log: kill -9 at random moments with a tiny segment size, rotations included
mod suspect; // the suspicion TTL with dig: TTL 1 from the first failed check, before the switch; a blip; rise brings TTL 5 back
mod vip; // VRRPv3 between two namespaced nodes: crash, preempt_delay, tracked resign, clean stop, partition heal, keepalived both ways, tshark, malformed packets (root)
