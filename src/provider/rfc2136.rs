//! RFC 2136 dynamic updates, signed with TSIG: BIND, Knot, PowerDNS, Windows DNS and anything
//! else that takes UPDATE messages.
//!
//! [`Rfc2136::set`] sends one UPDATE per change that, for every record of the service, deletes
//! the A and AAAA RRsets and adds the new address: the server applies the whole message
//! atomically (RFC 2136 3.4), so no resolver ever sees the name without an address, and sending
//! it twice leaves the zone as it was. The answer is checked: its TSIG must verify against our
//! request, and an answer that reports a TSIG error (BADKEY, BADSIG, BADTIME) or NOTAUTH is
//! reported as "key rejected by SERVER", which retrying cannot fix.
//!
//! [`Rfc2136::check`] asks every authoritative server of the zone (the SOA MNAME and the NS
//! set, found by asking the primary, on port 53), or the `verify_servers` the user lists, until
//! all serve the new answer. It never writes.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::config::{ProviderConfig, ProviderKind};
use super::msg::{self, Change};
use super::tsig::{self, Checked};
use super::{Backend, BoxFuture, ProviderError, Want};
use crate::dns::name::Name;
use crate::dns::wire::{rcode, rtype};

/// RFC 2136 rcodes beyond the ones the server module sends.
const YXDOMAIN: u8 = 6;
const YXRRSET: u8 = 7;
const NXRRSET: u8 = 8;
const NOTZONE: u8 = 10;

pub struct Rfc2136 {
    server: SocketAddr,
    zone: Name,
    key: Option<tsig::Key>,
    timeout: Duration,
    verify_servers: Vec<SocketAddr>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn rcode_name(r: u8) -> String {
    match r {
        rcode::NOERROR => "NOERROR".into(),
        rcode::FORMERR => "FORMERR".into(),
        rcode::SERVFAIL => "SERVFAIL".into(),
        rcode::NXDOMAIN => "NXDOMAIN".into(),
        rcode::NOTIMP => "NOTIMP".into(),
        rcode::REFUSED => "REFUSED".into(),
        YXDOMAIN => "YXDOMAIN".into(),
        YXRRSET => "YXRRSET".into(),
        NXRRSET => "NXRRSET".into(),
        rcode::NOTAUTH => "NOTAUTH".into(),
        NOTZONE => "NOTZONE".into(),
        other => format!("rcode {other}"),
    }
}

impl Rfc2136 {
    pub fn new(cfg: &ProviderConfig) -> Rfc2136 {
        let ProviderKind::Rfc2136 { server, key } = &cfg.kind else { unreachable!("built for rfc2136 providers only") };
        Rfc2136 { server: *server, zone: cfg.zone.clone(), key: key.clone(), timeout: cfg.timeout, verify_servers: cfg.verify_servers.clone() }
    }

    /// The UPDATE that makes `want` true.
    pub fn changes(want: &[Want]) -> Vec<Change> {
        let mut changes = Vec::with_capacity(want.len() * 3);
        for w in want {
            changes.push(Change::DeleteRrset { name: w.name.clone(), rtype: rtype::A });
            changes.push(Change::DeleteRrset { name: w.name.clone(), rtype: rtype::AAAA });
            if let Some(address) = w.address {
                changes.push(Change::Add { name: w.name.clone(), ttl: w.ttl, address });
            }
        }
        changes
    }

    /// Send one UPDATE and judge the answer.
    pub async fn update(&self, want: &[Want]) -> Result<String, ProviderError> {
        let server = self.server;
        let id: u16 = rand::random();
        let unsigned = msg::update(id, &self.zone, &Self::changes(want));
        let (request, mac) = match &self.key {
            Some(k) => {
                let (signed, mac) = tsig::sign(&unsigned, k, now(), None);
                (signed, Some(mac))
            }
            None => (unsigned, None),
        };
        let answer = msg::exchange(server, &request, self.timeout).await.map_err(|e| ProviderError::retry(format!("UPDATE to {server}: {e}")))?;
        let parsed = msg::parse(&answer).ok_or_else(|| ProviderError::retry(format!("{server} sent a malformed answer to our UPDATE")))?;
        if !parsed.response || parsed.opcode != msg::OPCODE_UPDATE {
            return Err(ProviderError::retry(format!("{server} answered our UPDATE with something else (opcode {})", parsed.opcode)));
        }
        let key_name = self.key.as_ref().map(|k| k.name.to_string().trim_end_matches('.').to_string()).unwrap_or_default();
        if let (Some(k), Some(mac)) = (&self.key, &mac) {
            match tsig::verify(&answer, k, now(), Some(mac)) {
                Checked::Valid { .. } => {}
                Checked::PeerError(e) => {
                    return Err(ProviderError::fatal(format!(
                        "key rejected by {server}: {} for key {key_name} ({}), rcode {}",
                        tsig::error::describe(e),
                        k.algorithm.as_str(),
                        rcode_name(parsed.rcode)
                    )));
                }
                Checked::Unsigned if parsed.rcode == rcode::NOTAUTH => {
                    return Err(ProviderError::fatal(format!(
                        "key rejected by {server}: NOTAUTH without a signature (the server does not accept key {key_name} ({}) for zone {})",
                        k.algorithm.as_str(),
                        self.zone
                    )));
                }
                // An unsigned refusal is still a refusal (handled below); an unsigned success
                // to a signed request could be forged and proves nothing.
                Checked::Unsigned if parsed.rcode != rcode::NOERROR => {}
                Checked::Unsigned => return Err(ProviderError::retry(format!("{server} answered our signed UPDATE without a signature"))),
                Checked::BadSig => return Err(ProviderError::retry(format!("the signature of {server}'s answer does not verify with key {key_name}"))),
                Checked::BadTime(f) => {
                    return Err(ProviderError::retry(format!("{server}'s answer is signed at {} (our clock says {}): check both clocks", f.time, now())));
                }
                Checked::OtherKey(f) => return Err(ProviderError::retry(format!("{server} signed its answer with another key ({})", f.key_name))),
            }
        }
        match parsed.rcode {
            rcode::NOERROR => Ok(format!("{server} answered NOERROR to UPDATE id {id} ({} changes{})", Self::changes(want).len(), if self.key.is_some() { ", TSIG verified" } else { "" })),
            rcode::NOTAUTH => Err(ProviderError::fatal(match &self.key {
                Some(_) => format!("key rejected by {server}: NOTAUTH for key {key_name} in zone {}", self.zone),
                None => format!("{server} is not authoritative for zone {} or wants a TSIG key (NOTAUTH)", self.zone),
            })),
            rcode::REFUSED => Err(ProviderError::fatal(format!(
                "{server} refused the UPDATE (REFUSED): its update policy does not allow {} to change zone {}",
                if self.key.is_some() { format!("key {key_name}") } else { "unsigned updates from this address".to_string() },
                self.zone
            ))),
            NOTZONE => Err(ProviderError::fatal(format!("{server}: a record is not inside zone {} (NOTZONE)", self.zone))),
            rcode::NOTIMP => Err(ProviderError::fatal(format!("{server} does not implement UPDATE (NOTIMP)"))),
            rcode::SERVFAIL => Err(ProviderError::retry(format!("{server} failed to apply the UPDATE (SERVFAIL)"))),
            other => Err(ProviderError::fatal(format!("{server} answered the UPDATE with {}", rcode_name(other)))),
        }
    }

    /// The zone's authoritative servers: the SOA MNAME and every NS, on port 53, with the
    /// addresses the primary gives for them (glue or in-zone records), or the system resolver's.
    pub async fn authoritative_servers(&self) -> Result<Vec<SocketAddr>, ProviderError> {
        let primary = self.server;
        let mut names: Vec<Name> = Vec::new();
        let (soa_b, soa) = msg::ask(primary, &self.zone, rtype::SOA, self.timeout).await.map_err(ProviderError::retry)?;
        if let Some(m) = soa.answers.iter().find(|rr| rr.rtype == rtype::SOA).and_then(|rr| msg::rdata_name(&soa_b, rr)) {
            names.push(m);
        }
        let (ns_b, ns) = msg::ask(primary, &self.zone, rtype::NS, self.timeout).await.map_err(ProviderError::retry)?;
        for rr in ns.answers.iter().filter(|rr| rr.rtype == rtype::NS) {
            if let Some(n) = msg::rdata_name(&ns_b, rr)
                && !names.contains(&n)
            {
                names.push(n);
            }
        }
        if names.is_empty() {
            return Err(ProviderError::retry(format!("{primary} gave neither SOA nor NS for zone {}; set verify_servers", self.zone)));
        }
        let mut servers = Vec::new();
        for n in &names {
            let mut addrs: Vec<IpAddr> = ns.additional.iter().filter(|rr| rr.name == *n).filter_map(|rr| msg::address(&ns_b, rr)).collect();
            if addrs.is_empty() && n.is_within(&self.zone) {
                for t in [rtype::A, rtype::AAAA] {
                    if let Ok((b, p)) = msg::ask(primary, n, t, self.timeout).await {
                        addrs.extend(p.answers.iter().filter(|rr| rr.name == *n).filter_map(|rr| msg::address(&b, rr)));
                    }
                }
            }
            if addrs.is_empty() {
                let host = n.to_string();
                if let Ok(found) = tokio::time::timeout(self.timeout, tokio::net::lookup_host((host.trim_end_matches('.'), 53))).await.map_err(|_| ()).and_then(|r| r.map_err(|_| ())) {
                    addrs.extend(found.map(|a| a.ip()));
                }
            }
            if addrs.is_empty() {
                return Err(ProviderError::retry(format!("cannot find an address for {n}, a nameserver of {}; set verify_servers", self.zone)));
            }
            for a in addrs {
                let s = SocketAddr::new(a, 53);
                if !servers.contains(&s) {
                    servers.push(s);
                }
            }
        }
        Ok(servers)
    }
}

impl Backend for Rfc2136 {
    fn set<'a>(&'a self, want: &'a [Want]) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(self.update(want))
    }

    fn check<'a>(&'a self, want: &'a [Want]) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            let servers = if self.verify_servers.is_empty() { self.authoritative_servers().await? } else { self.verify_servers.clone() };
            super::check_servers(&servers, want, self.timeout).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_update_replaces_both_address_types() {
        let n = Name::parse_absolute("www.example.test").unwrap();
        let c = Rfc2136::changes(&[Want { name: n.clone(), address: Some("198.18.0.3".parse().unwrap()), ttl: 30 }]);
        assert_eq!(
            c,
            [
                Change::DeleteRrset { name: n.clone(), rtype: rtype::A },
                Change::DeleteRrset { name: n.clone(), rtype: rtype::AAAA },
                Change::Add { name: n.clone(), ttl: 30, address: "198.18.0.3".parse().unwrap() }
            ]
        );
        assert_eq!(Rfc2136::changes(&[Want { name: n, address: None, ttl: 30 }]).len(), 2, "failing closed removes both");
    }
}
