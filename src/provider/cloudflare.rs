//! Cloudflare's v4 DNS records API: find the record, then PATCH its content.
//!
//! `GET /zones/{zone_id}/dns_records?name=FQDN` lists what the name holds. The record of the
//! target's address type is PATCHed (`content`, and `ttl` unless the record is proxied, whose
//! TTL Cloudflare manages), so everything else about it stays as the user set it, `proxied`
//! included; a missing one is created (POST, proxied like the record it replaces); records of
//! the other address type, and extra ones of the same type, are deleted. A record already
//! holding the address is left alone. Cloudflare has no multi-record transaction: the PATCH
//! of the live record comes first, so the name is never without an address.
//!
//! The token travels as `Authorization: Bearer` and never appears in messages.

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::json;

use super::config::{ProviderConfig, ProviderKind};
use super::{Backend, BoxFuture, ProviderError, Want, clip, dotless, http_error, send_http};
use crate::config::secret::Secret;

pub struct Cloudflare {
    records_url: String,
    token: Secret,
    client: reqwest::Client,
}

#[derive(Debug, Deserialize)]
struct Envelope<T> {
    success: bool,
    #[serde(default)]
    errors: Vec<CfError>,
    result: Option<T>,
}

#[derive(Debug, Deserialize)]
struct CfError {
    code: Option<i64>,
    message: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CfRecord {
    pub id: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub name: String,
    pub content: String,
    #[serde(default)]
    pub proxied: bool,
    #[serde(default)]
    pub ttl: u32,
}

fn errors(body: &str) -> String {
    match serde_json::from_str::<Envelope<serde_json::Value>>(body) {
        Ok(e) if !e.errors.is_empty() => e.errors.iter().map(|e| format!("{} ({})", e.message, e.code.unwrap_or(0))).collect::<Vec<_>>().join("; "),
        _ => clip(body, 300),
    }
}

impl Cloudflare {
    pub fn new(cfg: &ProviderConfig) -> Result<Cloudflare, String> {
        let ProviderKind::Cloudflare { zone_id, api_token, endpoint } = &cfg.kind else { unreachable!("built for cloudflare providers only") };
        Ok(Cloudflare { records_url: format!("{endpoint}/zones/{zone_id}/dns_records"), token: api_token.clone(), client: crate::notify::http_client(cfg.timeout)? })
    }

    /// Send and unwrap Cloudflare's envelope.
    async fn call<T: for<'de> Deserialize<'de>>(&self, what: &str, build: impl Fn() -> reqwest::RequestBuilder) -> Result<Option<T>, ProviderError> {
        let a = send_http(what, || build().bearer_auth(self.token.expose())).await?;
        if !(200..300).contains(&a.status) {
            return Err(http_error(what, &a, &errors(&a.body)));
        }
        let env: Envelope<T> = serde_json::from_str(&a.body).map_err(|e| ProviderError::retry(format!("{what}: unreadable answer: {e}")))?;
        if !env.success {
            return Err(ProviderError::fatal(format!("{what}: {}", errors(&a.body))));
        }
        Ok(env.result)
    }

    /// The A and AAAA records of `name`.
    async fn list(&self, name: &str) -> Result<Vec<CfRecord>, ProviderError> {
        let mut url = reqwest::Url::parse(&self.records_url).map_err(|e| ProviderError::fatal(format!("Cloudflare list: bad URL: {e}")))?;
        url.query_pairs_mut().append_pair("name", name).append_pair("per_page", "100");
        let all: Vec<CfRecord> = self.call("Cloudflare list", || self.client.get(url.clone())).await?.unwrap_or_default();
        Ok(all.into_iter().filter(|r| r.name.eq_ignore_ascii_case(name) && (r.rtype == "A" || r.rtype == "AAAA")).collect())
    }

    async fn set_one(&self, w: &Want) -> Result<String, ProviderError> {
        let name = dotless(&w.name);
        let existing = self.list(&name).await?;
        let mut done = Vec::new();
        let want_type = match w.address {
            Some(IpAddr::V4(_)) => Some("A"),
            Some(IpAddr::V6(_)) => Some("AAAA"),
            None => None,
        };
        let (same, other): (Vec<&CfRecord>, Vec<&CfRecord>) = existing.iter().partition(|r| Some(r.rtype.as_str()) == want_type);
        let mut stale: Vec<&CfRecord> = other;
        if let (Some(t), Some(addr)) = (want_type, w.address) {
            match same.first() {
                Some(r) if r.content.parse::<IpAddr>().ok() == Some(addr) && (r.proxied || r.ttl == w.ttl) => done.push(format!("{name} {t} already {addr}")),
                Some(r) => {
                    let body = if r.proxied { json!({"content": addr.to_string()}) } else { json!({"content": addr.to_string(), "ttl": w.ttl}) };
                    let url = format!("{}/{}", self.records_url, r.id);
                    let _: Option<CfRecord> = self.call("Cloudflare patch", || self.client.patch(&url).json(&body)).await?;
                    done.push(format!("patched {name} {t} {} -> {addr}", r.content));
                }
                None => {
                    let proxied = stale.iter().any(|r| r.proxied);
                    let body = json!({"type": t, "name": name, "content": addr.to_string(), "ttl": if proxied { 1 } else { w.ttl }, "proxied": proxied});
                    let url = self.records_url.clone();
                    let _: Option<CfRecord> = self.call("Cloudflare create", || self.client.post(&url).json(&body)).await?;
                    done.push(format!("created {name} {t} {addr}"));
                }
            }
            stale.extend(same.iter().skip(1));
        } else {
            stale.extend(same);
        }
        for r in stale {
            let url = format!("{}/{}", self.records_url, r.id);
            let _: Option<serde_json::Value> = self.call("Cloudflare delete", || self.client.delete(&url)).await?;
            done.push(format!("deleted {name} {} {}", r.rtype, r.content));
        }
        Ok(done.join(", "))
    }

    async fn set_all(&self, want: &[Want]) -> Result<String, ProviderError> {
        let mut out = Vec::new();
        for w in want {
            out.push(self.set_one(w).await?);
        }
        Ok(format!("Cloudflare: {}", out.join("; ")))
    }

    async fn read_back(&self, want: &[Want]) -> Result<String, ProviderError> {
        for w in want {
            let name = dotless(&w.name);
            let got: Vec<IpAddr> = self.list(&name).await?.iter().filter_map(|r| r.content.parse().ok()).collect();
            let ok = match w.address {
                Some(a) => got == [a],
                None => got.is_empty(),
            };
            if !ok {
                let wanted = w.address.map(|a| a.to_string()).unwrap_or_else(|| "nothing".into());
                return Err(ProviderError::retry(format!("Cloudflare holds {name} as {got:?}, not {wanted}")));
            }
        }
        let what = want.first().and_then(|w| w.address).map(|a| a.to_string()).unwrap_or_else(|| "nothing".into());
        Ok(format!("the Cloudflare API holds {what}"))
    }
}

impl Backend for Cloudflare {
    fn set<'a>(&'a self, want: &'a [Want]) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(self.set_all(want))
    }

    fn check<'a>(&'a self, want: &'a [Want]) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(self.read_back(want))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloudflare_error_envelopes_are_quoted() {
        let body = r#"{"success":false,"errors":[{"code":9109,"message":"Invalid access token"}],"messages":[],"result":null}"#;
        assert_eq!(errors(body), "Invalid access token (9109)");
        assert_eq!(errors("oops"), "oops");
    }
}
