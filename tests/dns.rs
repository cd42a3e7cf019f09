//! Integration tests of the authoritative DNS server (`src/dns/`).
//!
//! These need Debian's `dig` (bind9-dnsutils), `kdig` (knot-dnsutils), `knotd` (knot) and, for
//! the end-to-end test, `nginx`. A missing binary fails the test with the package to install;
//! nothing is skipped silently. Servers are started on 127.0.0.x high ports and stopped by PID.

// Shared helpers: the test zone (as understudy config and as a Knot zone file), starting the
// server in-process, running dig/kdig, hickory-based queries.
#[path = "dns/support.rs"]
mod support;
// dig and kdig over UDP and TCP against the in-process server, and a failover through the
// DnsActuator.
#[path = "dns/clients.rs"]
mod clients;
// The same zone served by Knot DNS and by understudy: the same queries, compared.
#[path = "dns/conformance.rs"]
mod conformance;
// proptest: arbitrary and mutated requests never panic and every reply parses.
#[path = "dns/props.rs"]
mod props;
// The real `understudy` binary with `[dns]` against real nginx: failover and failback seen
// through dig, the API and `understudy status`; a DNS bind error is fatal at start-up.
#[path = "dns/e2e.rs"]
mod e2e;
// Abuse: a TCP client that never reads against dig +tcp from elsewhere; a UDP flood against
// response rate limiting.
#[path = "dns/abuse.rs"]
mod abuse;
// The real binary restarted: the SOA serial never goes backwards.
#[path = "dns/serial.rs"]
mod serial;
// The real binary: a restart after a failover and a record added by SIGHUP serve the current
// decision from their first answer, never the dead primary.
#[path = "dns/restart.rs"]
mod restart;
// The integration suite's helpers (nginx, the daemon binary, deadlines), shared.
#[path = "support/mod.rs"]
mod common;
