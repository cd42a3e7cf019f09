//! The PowerDNS Authoritative HTTP API: one PATCH of the zone's RRsets per change.
//!
//! `PATCH /api/v1/servers/{server_id}/zones/{zone}` with `changetype: REPLACE` for the address
//! type the target has and `DELETE` for the other, in one request (PowerDNS applies a PATCH in
//! one transaction). `check` reads the zone back through `GET` on the same URL, unless
//! `verify_servers` asks for DNS queries. The API key travels in `X-API-Key` and never
//! appears in messages.

use serde::Deserialize;
use serde_json::json;

use super::config::{ProviderConfig, ProviderKind};
use super::{Backend, BoxFuture, ProviderError, Want, clip, http_error, send_http};
use crate::config::secret::Secret;

pub struct PowerDns {
    zone_url: String,
    api_key: Secret,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct Zone {
    #[serde(default)]
    rrsets: Vec<RrSet>,
}

#[derive(Deserialize)]
struct RrSet {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    #[serde(default)]
    records: Vec<Record>,
}

#[derive(Deserialize)]
struct Record {
    content: String,
    #[serde(default)]
    disabled: bool,
}

/// PowerDNS's `{"error": "..."}`, or the body itself.
fn message(body: &str) -> String {
    #[derive(Deserialize)]
    struct E {
        error: String,
    }
    serde_json::from_str::<E>(body).map(|e| e.error).unwrap_or_else(|_| clip(body, 300))
}

impl PowerDns {
    pub fn new(cfg: &ProviderConfig) -> Result<PowerDns, String> {
        let ProviderKind::PowerDns { url, api_key, server_id } = &cfg.kind else { unreachable!("built for powerdns providers only") };
        Ok(PowerDns {
            zone_url: format!("{url}/api/v1/servers/{server_id}/zones/{}", cfg.zone),
            api_key: api_key.clone(),
            client: crate::notify::http_client(cfg.timeout)?,
        })
    }

    /// The PATCH body that makes `want` true.
    pub fn patch_body(want: &[Want]) -> serde_json::Value {
        let mut rrsets = Vec::new();
        for w in want {
            let name = w.name.to_string();
            let (keep, drop) = match w.address {
                Some(std::net::IpAddr::V4(_)) => (Some("A"), vec!["AAAA"]),
                Some(std::net::IpAddr::V6(_)) => (Some("AAAA"), vec!["A"]),
                None => (None, vec!["A", "AAAA"]),
            };
            if let (Some(t), Some(a)) = (keep, w.address) {
                rrsets.push(json!({"name": name, "type": t, "ttl": w.ttl, "changetype": "REPLACE", "records": [{"content": a.to_string(), "disabled": false}]}));
            }
            for t in drop {
                rrsets.push(json!({"name": name, "type": t, "changetype": "DELETE"}));
            }
        }
        json!({ "rrsets": rrsets })
    }

    async fn patch(&self, want: &[Want]) -> Result<String, ProviderError> {
        let body = Self::patch_body(want);
        let a = send_http("PowerDNS PATCH", || self.client.patch(&self.zone_url).header("X-API-Key", self.api_key.expose()).json(&body)).await?;
        if (200..300).contains(&a.status) {
            Ok(format!("PowerDNS answered HTTP {}", a.status))
        } else {
            Err(http_error("PowerDNS PATCH", &a, &message(&a.body)))
        }
    }

    async fn read_back(&self, want: &[Want]) -> Result<String, ProviderError> {
        let a = send_http("PowerDNS GET", || self.client.get(&self.zone_url).header("X-API-Key", self.api_key.expose())).await?;
        if !(200..300).contains(&a.status) {
            return Err(http_error("PowerDNS GET", &a, &message(&a.body)));
        }
        let zone: Zone = serde_json::from_str(&a.body).map_err(|e| ProviderError::retry(format!("PowerDNS GET: unreadable zone: {e}")))?;
        for w in want {
            let name = w.name.to_string();
            let mut got: Vec<String> = Vec::new();
            for s in zone.rrsets.iter().filter(|s| s.name.eq_ignore_ascii_case(&name) && (s.rtype == "A" || s.rtype == "AAAA")) {
                got.extend(s.records.iter().filter(|r| !r.disabled).map(|r| r.content.clone()));
            }
            let ok = match w.address {
                Some(addr) => got.len() == 1 && got[0].parse::<std::net::IpAddr>().ok() == Some(addr),
                None => got.is_empty(),
            };
            if !ok {
                let wanted = w.address.map(|a| a.to_string()).unwrap_or_else(|| "nothing".into());
                return Err(ProviderError::retry(format!("PowerDNS holds {name} as {got:?}, not {wanted}")));
            }
        }
        let what = want.first().and_then(|w| w.address).map(|a| a.to_string()).unwrap_or_else(|| "nothing".into());
        Ok(format!("the PowerDNS API holds {what}"))
    }
}

impl Backend for PowerDns {
    fn set<'a>(&'a self, want: &'a [Want]) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(self.patch(want))
    }

    fn check<'a>(&'a self, want: &'a [Want]) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(self.read_back(want))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::name::Name;

    #[test]
    fn one_patch_replaces_one_type_and_deletes_the_other() {
        let w = Want { name: Name::parse_absolute("www.example.test").unwrap(), address: Some("2001:db8::3".parse().unwrap()), ttl: 30 };
        let b = PowerDns::patch_body(&[w]);
        assert_eq!(b["rrsets"][0]["type"], "AAAA");
        assert_eq!(b["rrsets"][0]["changetype"], "REPLACE");
        assert_eq!(b["rrsets"][0]["records"][0]["content"], "2001:db8::3");
        assert_eq!(b["rrsets"][1], json!({"name": "www.example.test.", "type": "A", "changetype": "DELETE"}));
        assert_eq!(message("{\"error\": \"Could not find domain\"}"), "Could not find domain");
    }
}
