//! The `[cluster]` section: raw serde structs (as written) and their validation (as used).
//!
//! ```toml
//! [cluster]
//! kind = "etcd"                      # "standalone" (the default: one node, nothing changes)
//! node = "mon-a"                     # unique per node
//! endpoints = ["http://127.0.0.1:2379", "http://127.0.0.2:2379", "http://127.0.0.3:2379"]
//! prefix = "/understudy"             # several clusters may share one etcd
//! lease_ttl = "5s"
//! quorum = "majority"                # or how many nodes must see a target down
//! # ca_file / cert_file / key_file: TLS to etcd (https endpoints); user + password_file: etcd auth
//! ```
//!
//! Files are relative to the config file and read here, so a missing or wrong file is a config
//! error with its line, not a failure at the first connection. This module opens no connection.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::quorum::Quorum;
use crate::config::locate::Seg;
use crate::config::secret::Secret;
use crate::config::validate::{Ctx, k, with};

/// The largest PEM file read (a CA bundle is a few hundred KiB at most).
const MAX_PEM_FILE: u64 = 4 * 1024 * 1024;
/// Shorter leases make a brief etcd hiccup look like a dead node.
const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
/// etcd's own limit on lease TTLs is far higher, but a leader that may act for an hour after
/// it lost etcd is no fencing at all.
const MAX_LEASE_TTL: Duration = Duration::from_secs(600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    #[serde(default = "default_kind")]
    pub kind: String,
    pub node: Option<String>,
    #[serde(default)]
    pub endpoints: Vec<String>,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    pub lease_ttl: Option<String>,
    pub quorum: Option<RawQuorum>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub user: Option<String>,
    pub password_file: Option<String>,
}

fn default_kind() -> String {
    "standalone".into()
}
fn default_prefix() -> String {
    "/understudy".into()
}
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// `quorum = "majority"` or `quorum = 2`.
#[derive(Debug)]
pub enum RawQuorum {
    Word(String),
    Count(i64),
}

// By hand rather than `untagged`, so the error says what is expected.
impl<'de> Deserialize<'de> for RawQuorum {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawQuorum;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"majority\" or a number of nodes such as 2")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RawQuorum, E> {
                Ok(RawQuorum::Word(s.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<RawQuorum, E> {
                Ok(RawQuorum::Count(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<RawQuorum, E> {
                Ok(RawQuorum::Count(i64::try_from(n).unwrap_or(i64::MAX)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Which coordinator the daemon runs.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ClusterConfig {
    #[default]
    Standalone,
    Etcd(EtcdConfig),
}

#[derive(Debug, Clone, PartialEq)]
pub struct EtcdConfig {
    pub node: String,
    /// Base URLs of etcd's client endpoints (`http://127.0.0.1:2379`), tried in turn.
    pub endpoints: Vec<reqwest::Url>,
    /// Starts with `/`, no trailing `/`.
    pub prefix: String,
    pub lease_ttl: Duration,
    pub quorum: Quorum,
    /// PEM of the CA that signed etcd's certificates (`ca_file`).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM of the client certificate followed by its key (`cert_file` + `key_file`).
    pub identity_pem: Option<Vec<u8>>,
    /// etcd user and password (`user` + `password_file`).
    pub auth: Option<(String, Secret)>,
}

impl EtcdConfig {
    /// How long before the lease could expire this node stops acting: a quarter of the TTL
    /// (at least 500 ms), measured from when the last successful renewal was *sent* (etcd
    /// extended the lease at or after that moment, so our deadline is never later than etcd's).
    pub fn safety_margin(&self) -> Duration {
        (self.lease_ttl / 4).max(Duration::from_millis(500))
    }

    /// Renew the lease this often: three times per safe window.
    pub fn renew_every(&self) -> Duration {
        (self.lease_ttl - self.safety_margin()) / 3
    }

    /// The longest one request to etcd may take.
    pub fn request_timeout(&self) -> Duration {
        self.renew_every().min(Duration::from_secs(2))
    }
}

/// The same rule as service and target names: they end up in etcd keys.
fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

fn resolve(base: &Path, f: &str) -> std::path::PathBuf {
    let p = Path::new(f);
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

pub(crate) fn validate(cx: &mut Ctx<'_>, raw: RawCluster, base: &Path) -> Option<ClusterConfig> {
    let p = [k("cluster")];
    let errors_before = cx.errors_len();
    let at = |key: &str| with(&p, &[k(key)]);
    match raw.kind.as_str() {
        "standalone" => {
            let given: Vec<&str> = [
                ("node", raw.node.is_some()),
                ("endpoints", !raw.endpoints.is_empty()),
                ("lease_ttl", raw.lease_ttl.is_some()),
                ("quorum", raw.quorum.is_some()),
                ("ca_file", raw.ca_file.is_some()),
                ("cert_file", raw.cert_file.is_some()),
                ("key_file", raw.key_file.is_some()),
                ("user", raw.user.is_some()),
                ("password_file", raw.password_file.is_some()),
            ]
            .into_iter()
            .filter(|(_, g)| *g)
            .map(|(key, _)| key)
            .collect();
            for key in given {
                cx.err(&at(key), format!("`{key}` only applies to kind = \"etcd\""));
            }
            return (cx.errors_len() == errors_before).then_some(ClusterConfig::Standalone);
        }
        "etcd" => {}
        other => {
            cx.err(&at("kind"), format!("expected \"standalone\" or \"etcd\", got \"{other}\""));
            return None;
        }
    }
    let node = match raw.node {
        Some(n) if is_name(&n) => Some(n),
        Some(n) => {
            cx.err(&at("node"), format!("expected a name of letters, digits, '-', '_' or '.' (at most 63), got \"{n}\""));
            None
        }
        None => {
            cx.err(&p, "kind = \"etcd\" needs `node`, this node's name (unique in the cluster)");
            None
        }
    };
    if raw.endpoints.is_empty() {
        cx.err(&at("endpoints"), "kind = \"etcd\" needs at least one endpoint such as \"http://127.0.0.1:2379\"");
    }
    let mut endpoints = Vec::new();
    for (i, e) in raw.endpoints.iter().enumerate() {
        let ep = with(&p, &[k("endpoints"), Seg::Index(i)]);
        match reqwest::Url::parse(e) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() && (u.path() == "/" || u.path().is_empty()) && u.query().is_none() => {
                if endpoints.contains(&u) {
                    cx.err(&ep, format!("{e} is listed twice"));
                }
                endpoints.push(u);
            }
            _ => cx.err(&ep, format!("expected an etcd client URL such as \"http://127.0.0.1:2379\" (no path), got \"{e}\"")),
        }
    }
    let prefix = raw.prefix.trim_end_matches('/').to_string();
    if !raw.prefix.starts_with('/') || prefix.is_empty() || prefix.contains("//") || prefix.chars().any(|c| c.is_control() || c.is_whitespace()) {
        cx.err(&at("prefix"), format!("expected a key prefix such as \"/understudy\" (starting with '/', not '/' alone), got \"{}\"", raw.prefix));
    }
    let lease_ttl = match raw.lease_ttl.as_deref().map(crate::config::parse_duration) {
        None => Some(DEFAULT_LEASE_TTL),
        Some(Ok(d)) if (MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&d) && d.subsec_nanos() == 0 => Some(d),
        Some(Ok(d)) => {
            cx.err(&at("lease_ttl"), format!("expected whole seconds from 2s to 10m (etcd leases count seconds), got {d:?}"));
            None
        }
        Some(Err(e)) => {
            cx.err(&at("lease_ttl"), e);
            None
        }
    };
    let quorum = match raw.quorum {
        None => Some(Quorum::Majority),
        Some(RawQuorum::Word(w)) if w == "majority" => Some(Quorum::Majority),
        Some(RawQuorum::Count(n)) if (1..=64).contains(&n) => Some(Quorum::Nodes(n as u32)),
        Some(RawQuorum::Word(w)) => {
            cx.err(&at("quorum"), format!("expected \"majority\" or a number of nodes such as 2, got \"{w}\""));
            None
        }
        Some(RawQuorum::Count(n)) => {
            cx.err(&at("quorum"), format!("expected a number of nodes from 1 to 64, got {n}"));
            None
        }
    };
    let https = endpoints.iter().any(|u| u.scheme() == "https");
    let read_pem = |cx: &mut Ctx<'_>, key: &str, file: &Option<String>| -> Option<Vec<u8>> {
        let f = file.as_ref()?;
        let path = resolve(base, f);
        match crate::config::read_capped(&path, MAX_PEM_FILE) {
            Ok(pem) if String::from_utf8_lossy(&pem).contains("-----BEGIN ") => Some(pem),
            Ok(_) => {
                cx.err(&at(key), format!("{} holds no PEM block (-----BEGIN ...)", path.display()));
                None
            }
            Err(e) => {
                cx.err(&at(key), e);
                None
            }
        }
    };
    let ca_pem = read_pem(cx, "ca_file", &raw.ca_file);
    let cert = read_pem(cx, "cert_file", &raw.cert_file);
    let key = read_pem(cx, "key_file", &raw.key_file);
    if (raw.ca_file.is_some() || raw.cert_file.is_some()) && !https {
        cx.err(&at(if raw.ca_file.is_some() { "ca_file" } else { "cert_file" }), "TLS files need https:// endpoints");
    }
    if raw.cert_file.is_some() != raw.key_file.is_some() {
        cx.err(&at(if raw.cert_file.is_some() { "cert_file" } else { "key_file" }), "give both `cert_file` and `key_file` (client certificate and its key)");
    }
    if let Some(pem) = &ca_pem
        && reqwest::Certificate::from_pem(pem).is_err()
    {
        cx.err(&at("ca_file"), "not a PEM certificate");
    }
    let identity_pem = match (cert, key) {
        (Some(mut c), Some(key)) => {
            c.push(b'\n');
            c.extend_from_slice(&key);
            if reqwest::Identity::from_pem(&c).is_err() {
                cx.err(&at("cert_file"), "the certificate and key files do not make a client identity (PEM certificate, then a PKCS#8, RSA or EC key)");
            }
            Some(c)
        }
        _ => None,
    };
    let auth = match (raw.user, raw.password_file) {
        (None, None) => None,
        (Some(u), Some(f)) => {
            let path = resolve(base, &f);
            match crate::config::read_secret_file(&path) {
                Ok(pw) if !u.is_empty() => Some((u, Secret(pw))),
                Ok(_) => {
                    cx.err(&at("user"), "expected a user name, got an empty string");
                    None
                }
                Err(e) => {
                    cx.err(&at("password_file"), e);
                    None
                }
            }
        }
        (Some(_), None) => {
            cx.err(&at("user"), "`user` needs `password_file`");
            None
        }
        (None, Some(_)) => {
            cx.err(&at("password_file"), "`password_file` needs `user`");
            None
        }
    };
    if cx.errors_len() != errors_before {
        return None;
    }
    Some(ClusterConfig::Etcd(EtcdConfig { node: node?, endpoints, prefix, lease_ttl: lease_ttl?, quorum: quorum?, ca_pem, identity_pem, auth }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(cluster: &str) -> Result<ClusterConfig, String> {
        let text = format!("{cluster}\n");
        match crate::config::from_str(&text, Path::new("/tmp/understudy-cluster-test.toml")) {
            Ok((c, _)) => Ok(c.cluster),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn standalone_is_the_default_and_etcd_reads_every_key() {
        assert_eq!(load("").unwrap(), ClusterConfig::Standalone);
        let c = load("[cluster]\nkind = \"etcd\"\nnode = \"mon-a\"\nendpoints = [\"http://127.0.0.1:2379\", \"http://127.0.0.2:2379/\"]\nprefix = \"/u/\"\nlease_ttl = \"3s\"\nquorum = 2\n").unwrap();
        let ClusterConfig::Etcd(e) = c else { panic!("{c:?}") };
        assert_eq!(e.node, "mon-a");
        assert_eq!(e.endpoints.len(), 2);
        assert_eq!(e.prefix, "/u");
        assert_eq!(e.lease_ttl, Duration::from_secs(3));
        assert_eq!(e.quorum, Quorum::Nodes(2));
        assert!(e.renew_every() < e.lease_ttl - e.safety_margin());
        let ClusterConfig::Etcd(e) = load("[cluster]\nkind = \"etcd\"\nnode = \"b\"\nendpoints = [\"http://[::1]:2379\"]\nquorum = \"majority\"\n").unwrap() else { panic!() };
        assert_eq!((e.quorum, e.lease_ttl, e.prefix.as_str()), (Quorum::Majority, DEFAULT_LEASE_TTL, "/understudy"));
    }

    #[test]
    fn mistakes_name_the_line_and_key() {
        let cases = [
            ("[cluster]\nkind = \"zookeeper\"\n", "cluster.kind", "expected \"standalone\" or \"etcd\""),
            ("[cluster]\nkind = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\n", "cluster", "needs `node`"),
            ("[cluster]\nkind = \"etcd\"\nnode = \"a b\"\nendpoints = [\"http://127.0.0.1:2379\"]\n", "cluster.node", "expected a name"),
            ("[cluster]\nkind = \"etcd\"\nnode = \"a\"\nendpoints = [\"127.0.0.1:2379\"]\n", "cluster.endpoints[0]", "etcd client URL"),
            ("[cluster]\nkind = \"etcd\"\nnode = \"a\"\nendpoints = [\"http://h:1/v3\"]\n", "cluster.endpoints[0]", "no path"),
            ("[cluster]\nkind = \"etcd\"\nnode = \"a\"\nendpoints = []\n", "cluster.endpoints", "at least one endpoint"),
            ("[cluster]\nkind = \"etcd\"\nnode = \"a\"\nendpoints = [\"http://h:1\"]\nlease_ttl = \"1s\"\n", "cluster.lease_ttl", "from 2s to 10m"),
            ("[cluster]\nkind = \"etcd\"\nnode = \"a\"\nendpoints = [\"http://h:1\"]\nlease_ttl = \"2500ms\"\n", "cluster.lease_ttl", "whole seconds"),
            ("[cluster]\nkind = \"etcd\"\nnode = \"a\"\nendpoints = [\"http://h:1\"]\nquorum = \"most\"\n", "cluster.quorum", "\"majority\" or a number"),
            ("[cluster]\nkind = \"etcd\"\nnode = \"a\"\nendpoints = [\"http://h:1\"]\nquorum = 0\n", "cluster.quorum", "from 1 to 64"),
            ("[cluster]\nkind = \"etcd\"\nnode = \"a\"\nendpoints = [\"http://h:1\"]\nprefix = \"u\"\n", "cluster.prefix", "starting with '/'"),
            ("[cluster]\nkind = \"etcd\"\nnode = \"a\"\nendpoints = [\"http://h:1\"]\nuser = \"u\"\n", "cluster.user", "needs `password_file`"),
            ("[cluster]\nkind = \"etcd\"\nnode = \"a\"\nendpoints = [\"http://h:1\"]\nuser = \"u\"\npassword_file = \"/nonexistent/pw\"\n", "cluster.password_file", "cannot read"),
            ("[cluster]\nkind = \"etcd\"\nnode = \"a\"\nendpoints = [\"http://h:1\"]\nca_file = \"/nonexistent/ca.pem\"\n", "cluster.ca_file", "cannot read"),
            ("[cluster]\nnode = \"a\"\n", "cluster.node", "only applies to kind = \"etcd\""),
            ("[cluster]\nkind = \"etcd\"\nnode = \"a\"\nendpoints = [\"http://h:1\"]\nleader = true\n", "cluster", "unknown field `leader`"),
        ];
        for (text, key, msg) in cases {
            let err = load(text).expect_err(text);
            assert!(err.contains(key) && err.contains(msg), "{text:?}: {err}");
            assert!(err.contains("/tmp/understudy-cluster-test.toml:"), "{text:?}: no file and line in {err}");
        }
    }
}
