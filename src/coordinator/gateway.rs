//! A small client for etcd's v3 API through its JSON gateway (`POST /v3/kv/range`, ...), which
//! every etcd since 3.3 serves on its client port. Only what the coordinator needs: auth,
//! leases, range, put, txn and a prefix watch.
//!
//! Why not the `etcd-client` crate: it speaks gRPC through tonic and prost and needs `protoc`
//! (Debian `protobuf-compiler`) at build time; the gateway is the same API, served by the same
//! etcd process, over the HTTP client the daemon already has (reqwest), with no new build step.
//! Measured here: `etcd-client` 0.21 brings 25 crates this tree does not have (tonic, prost,
//! prost-build, tonic-build, petgraph, regex, pulldown-cmark...) and its build script runs
//! `protoc`; a fresh debug build of it with tokio took 83 s of CPU. This file adds none (base64
//! was already in the tree). Keys and values are base64 in JSON and 64-bit numbers are strings.
//!
//! This module keeps no cluster state and makes no decisions: one request, one answer.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::quorum::Change;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("{endpoint}: {message}")]
    Transport { endpoint: String, message: String },
    #[error("{endpoint}: etcd answered {status}: {message}")]
    Refused { endpoint: String, status: u16, message: String },
    #[error("{endpoint}: unexpected answer: {message}")]
    Protocol { endpoint: String, message: String },
}

/// One key as etcd returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
}

/// A transaction's compare (`result` is always EQUAL here).
#[derive(Debug, Clone)]
pub enum Compare {
    CreateRevision { key: String, revision: i64 },
    ModRevision { key: String, revision: i64 },
}

/// What a transaction does when its compares hold.
#[derive(Debug, Clone)]
pub enum Op {
    Put { key: String, value: Vec<u8>, lease: Option<i64> },
    Delete { key: String },
}

/// A transaction's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    pub succeeded: bool,
    /// The store's revision after the transaction (the revision of its writes when it succeeded).
    pub revision: i64,
    /// With `read_on_failure`: the keys read when the compares failed.
    pub kvs: Vec<Kv>,
}

/// A connection to one etcd endpoint (the caller rotates endpoints).
#[derive(Clone)]
pub struct Gateway {
    http: reqwest::Client,
    base: reqwest::Url,
    token: Option<String>,
    timeout: Duration,
}

/// The HTTP client for etcd: TLS roots and client identity from the config.
pub fn http_client(ca_pem: Option<&[u8]>, identity_pem: Option<&[u8]>, connect_timeout: Duration) -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder().connect_timeout(connect_timeout).tcp_nodelay(true).pool_idle_timeout(Duration::from_secs(60));
    if let Some(pem) = ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| format!("ca_file: {e}"))? {
            b = b.add_root_certificate(cert);
        }
    }
    if let Some(pem) = identity_pem {
        b = b.identity(reqwest::Identity::from_pem(pem).map_err(|e| format!("cert_file/key_file: {e}"))?);
    }
    b.build().map_err(|e| format!("cannot build the etcd client: {e}"))
}

fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

/// The end of a prefix range: the prefix with its last byte incremented.
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A 64-bit number, which the gateway writes as a string (and omits when zero).
fn num(v: &Value, field: &str) -> i64 {
    match v.get(field) {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn kv_of(v: &Value) -> Option<Kv> {
    let key = B64.decode(v.get("key")?.as_str()?).ok()?;
    let value = match v.get("value").and_then(Value::as_str) {
        Some(s) => B64.decode(s).ok()?,
        None => Vec::new(),
    };
    Some(Kv { key: String::from_utf8(key).ok()?, value, create_revision: num(v, "create_revision"), mod_revision: num(v, "mod_revision") })
}

impl Gateway {
    pub fn new(http: reqwest::Client, base: reqwest::Url, timeout: Duration) -> Gateway {
        Gateway { http, base, token: None, timeout }
    }

    pub fn endpoint(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    fn transport(&self, message: impl std::fmt::Display) -> EtcdError {
        EtcdError::Transport { endpoint: self.endpoint().to_string(), message: message.to_string() }
    }

    fn protocol(&self, message: impl std::fmt::Display) -> EtcdError {
        EtcdError::Protocol { endpoint: self.endpoint().to_string(), message: message.to_string() }
    }

    fn request(&self, path: &str, body: &Value) -> Result<reqwest::RequestBuilder, EtcdError> {
        let url = self.base.join(path).map_err(|e| self.transport(e))?;
        let mut r = self.http.post(url).json(body);
        if let Some(t) = &self.token {
            r = r.header("Authorization", t);
        }
        Ok(r)
    }

    async fn call(&self, path: &str, body: Value) -> Result<Value, EtcdError> {
        let resp = self.request(path, &body)?.timeout(self.timeout).send().await.map_err(|e| self.transport(error_chain(&e)))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.transport(error_chain(&e)))?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| self.protocol(format!("{path}: {e}")))?;
        if !status.is_success() {
            let message = v.get("message").or_else(|| v.get("error")).and_then(Value::as_str).unwrap_or("no message").to_string();
            return Err(EtcdError::Refused { endpoint: self.endpoint().to_string(), status: status.as_u16(), message });
        }
        Ok(v)
    }

    /// Log in with etcd's auth; later requests carry the token.
    pub async fn authenticate(&mut self, user: &str, password: &str) -> Result<(), EtcdError> {
        let v = self.call("v3/auth/authenticate", json!({ "name": user, "password": password })).await?;
        let token = v.get("token").and_then(Value::as_str).ok_or_else(|| self.protocol("no token in the authenticate answer"))?;
        self.token = Some(token.to_string());
        Ok(())
    }

    /// A new lease of `ttl` (whole seconds).
    pub async fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let v = self.call("v3/lease/grant", json!({ "TTL": ttl.as_secs().to_string() })).await?;
        match num(&v, "ID") {
            0 => Err(self.protocol(format!("lease grant without an ID: {}", v.get("error").unwrap_or(&Value::Null)))),
            id => Ok(id),
        }
    }

    /// Renew `lease`; the TTL etcd gives it now (0: the lease is gone).
    pub async fn keepalive(&self, lease: i64) -> Result<i64, EtcdError> {
        let v = self.call("v3/lease/keepalive", json!({ "ID": lease.to_string() })).await?;
        if let Some(e) = v.get("error") {
            return Err(self.protocol(format!("keepalive: {e}")));
        }
        Ok(num(v.get("result").unwrap_or(&Value::Null), "TTL"))
    }

    pub async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        self.call("v3/lease/revoke", json!({ "ID": lease.to_string() })).await.map(drop)
    }

    /// Every key under `prefix`, and the store revision they were read at.
    pub async fn range_prefix(&self, prefix: &str) -> Result<(i64, Vec<Kv>), EtcdError> {
        let v = self.call("v3/kv/range", json!({ "key": b64(prefix.as_bytes()), "range_end": b64(&range_end(prefix)) })).await?;
        let revision = num(v.get("header").unwrap_or(&Value::Null), "revision");
        let kvs = v.get("kvs").and_then(Value::as_array).map(|a| a.iter().filter_map(kv_of).collect()).unwrap_or_default();
        Ok((revision, kvs))
    }

    pub async fn put(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<i64, EtcdError> {
        let mut body = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
        if let Some(l) = lease {
            body["lease"] = json!(l.to_string());
        }
        let v = self.call("v3/kv/put", body).await?;
        Ok(num(v.get("header").unwrap_or(&Value::Null), "revision"))
    }

    /// If every compare holds, apply `then`; otherwise read `read_on_failure` (one key each).
    pub async fn txn(&self, compare: &[Compare], then: &[Op], read_on_failure: &[&str]) -> Result<TxnResult, EtcdError> {
        let compare: Vec<Value> = compare
            .iter()
            .map(|c| match c {
                Compare::CreateRevision { key, revision } => {
                    json!({ "key": b64(key.as_bytes()), "result": "EQUAL", "target": "CREATE", "create_revision": revision.to_string() })
                }
                Compare::ModRevision { key, revision } => {
                    json!({ "key": b64(key.as_bytes()), "result": "EQUAL", "target": "MOD", "mod_revision": revision.to_string() })
                }
            })
            .collect();
        let success: Vec<Value> = then
            .iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    let mut p = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
                    if let Some(l) = lease {
                        p["lease"] = json!(l.to_string());
                    }
                    json!({ "request_put": p })
                }
                Op::Delete { key } => json!({ "request_delete_range": { "key": b64(key.as_bytes()) } }),
            })
            .collect();
        let failure: Vec<Value> = read_on_failure.iter().map(|k| json!({ "request_range": { "key": b64(k.as_bytes()) } })).collect();
        let v = self.call("v3/kv/txn", json!({ "compare": compare, "success": success, "failure": failure })).await?;
        let succeeded = v.get("succeeded").and_then(Value::as_bool).unwrap_or(false);
        let revision = num(v.get("header").unwrap_or(&Value::Null), "revision");
        let mut kvs = Vec::new();
        if !succeeded {
            for r in v.get("responses").and_then(Value::as_array).into_iter().flatten() {
                for kv in r.pointer("/response_range/kvs").and_then(Value::as_array).into_iter().flatten() {
                    kvs.extend(kv_of(kv));
                }
            }
        }
        Ok(TxnResult { succeeded, revision, kvs })
    }

    /// Watch every key under `prefix` from `start_revision` on. The answer is a stream of JSON
    /// objects, one per line, for as long as the connection lasts.
    pub async fn watch(&self, prefix: &str, start_revision: i64) -> Result<Watch, EtcdError> {
        let body = json!({ "create_request": { "key": b64(prefix.as_bytes()), "range_end": b64(&range_end(prefix)), "start_revision": start_revision.to_string() } });
        // Bounded until the answer's headers; the stream itself lasts as long as etcd keeps it.
        let resp = match tokio::time::timeout(self.timeout, self.request("v3/watch", &body)?.send()).await {
            Ok(r) => r.map_err(|e| self.transport(error_chain(&e)))?,
            Err(_) => return Err(self.transport(format!("no answer to the watch within {:?}", self.timeout))),
        };
        if !resp.status().is_success() {
            return Err(EtcdError::Refused { endpoint: self.endpoint().to_string(), status: resp.status().as_u16(), message: "watch refused".into() });
        }
        Ok(Watch { resp, buf: Vec::new(), endpoint: self.endpoint().to_string(), prefix: prefix.to_string() })
    }
}

/// An open watch. Not cancel-safe across `next` calls that are dropped mid-way only in the sense
/// that a partly read line stays in `buf` for the next call, which is what we want.
pub struct Watch {
    resp: reqwest::Response,
    buf: Vec<u8>,
    endpoint: String,
    prefix: String,
}

impl Watch {
    /// The next batch of changes (keys relative to the prefix, in revision order), with the
    /// store revision of the batch. An empty batch is a created or progress message.
    pub async fn next(&mut self) -> Result<(i64, Vec<Change>), EtcdError> {
        loop {
            if let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return self.parse(&line);
            }
            match self.resp.chunk().await {
                Ok(Some(c)) => self.buf.extend_from_slice(&c),
                Ok(None) => {
                    // The gateway may end the last message without a newline.
                    if !self.buf.iter().all(u8::is_ascii_whitespace) {
                        let line = std::mem::take(&mut self.buf);
                        return self.parse(&line);
                    }
                    return Err(EtcdError::Transport { endpoint: self.endpoint.clone(), message: "the watch stream ended".into() });
                }
                Err(e) => return Err(EtcdError::Transport { endpoint: self.endpoint.clone(), message: format!("watch: {}", error_chain(&e)) }),
            }
        }
    }

    fn parse(&self, line: &[u8]) -> Result<(i64, Vec<Change>), EtcdError> {
        let proto = |m: String| EtcdError::Protocol { endpoint: self.endpoint.clone(), message: m };
        let v: Value = serde_json::from_slice(line).map_err(|e| proto(format!("watch: {e}")))?;
        if let Some(e) = v.get("error") {
            return Err(proto(format!("watch: {e}")));
        }
        let r = v.get("result").ok_or_else(|| proto("watch: a message without a result".into()))?;
        if r.get("canceled").and_then(Value::as_bool) == Some(true) {
            let why = r.get("cancel_reason").and_then(Value::as_str).unwrap_or("no reason given");
            return Err(proto(format!("watch canceled: {why} (compact revision {})", num(r, "compact_revision"))));
        }
        let revision = num(r.get("header").unwrap_or(&Value::Null), "revision");
        let mut changes = Vec::new();
        for ev in r.get("events").and_then(Value::as_array).into_iter().flatten() {
            let Some(kv) = ev.get("kv").and_then(kv_of) else { return Err(proto("watch: an event without a readable key".into())) };
            let Some(rel) = kv.key.strip_prefix(&self.prefix) else { continue };
            let key = rel.to_string();
            match ev.get("type").and_then(Value::as_str) {
                Some("DELETE") => changes.push(Change::Delete { key, revision: kv.mod_revision }),
                _ => changes.push(Change::Put { key, value: kv.value, create_revision: kv.create_revision, mod_revision: kv.mod_revision }),
            }
        }
        Ok((revision, changes))
    }
}

/// reqwest's error with its sources ("error sending request: connection refused").
fn error_chain(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_range_end_and_numbers_as_the_gateway_writes_them() {
        assert_eq!(range_end("/u/"), b"/u0".to_vec());
        assert_eq!(range_end("a\u{7f}"), b"a\x80".to_vec());
        let v = json!({ "revision": "42", "n": 7 });
        assert_eq!((num(&v, "revision"), num(&v, "n"), num(&v, "absent")), (42, 7, 0));
        let kv = kv_of(&json!({ "key": b64(b"/u/leader"), "create_revision": "5", "mod_revision": "6" })).unwrap();
        assert_eq!(kv, Kv { key: "/u/leader".into(), value: vec![], create_revision: 5, mod_revision: 6 });
    }
}
