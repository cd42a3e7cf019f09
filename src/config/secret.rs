//! Secrets in the config file: given inline, as `<key>_file` (read at load, relative to the
//! config's directory) or as `<key>_env`; kept out of logs and `Debug` output. Shared by every
//! feature section that takes a secret (notifications, DNS providers, TSIG keys).

use std::fmt;
use std::path::Path;

use super::locate::Seg;
use super::validate::{Ctx, k, resolve, with};

/// A value that must not show up in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// One secret given inline, as `<key>_file` or as `<key>_env`.
pub(crate) struct SecretSource<'a> {
    pub(crate) key: &'a str,
    pub(crate) inline: Option<String>,
    pub(crate) file: Option<String>,
    pub(crate) env: Option<String>,
}

pub(crate) fn read_secret(cx: &mut Ctx<'_>, path: &[Seg], base: &Path, s: SecretSource<'_>) -> Option<Secret> {
    let given = [s.inline.is_some(), s.file.is_some(), s.env.is_some()].iter().filter(|x| **x).count();
    let key = s.key;
    if given > 1 {
        cx.err(&with(path, &[k(key)]), format!("give only one of `{key}`, `{key}_file` and `{key}_env`"));
        return None;
    }
    if let Some(v) = s.inline {
        if v.trim().is_empty() {
            cx.err(&with(path, &[k(key)]), "expected a value, got an empty string");
            return None;
        }
        return Some(Secret(v));
    }
    if let Some(f) = s.file {
        let p = resolve(base, &f);
        let at = with(path, &[k(&format!("{key}_file"))]);
        return match crate::config::read_secret_file(&p) {
            Ok(t) => Some(Secret(t)),
            Err(e) => {
                cx.err(&at, e);
                None
            }
        };
    }
    if let Some(var) = s.env {
        let at = with(path, &[k(&format!("{key}_env"))]);
        return match std::env::var(&var) {
            Ok(v) if !v.trim().is_empty() => Some(Secret(v.trim().to_string())),
            Ok(_) => {
                cx.err(&at, format!("environment variable {var} is empty"));
                None
            }
            Err(_) => {
                cx.err(&at, format!("environment variable {var} is not set"));
                None
            }
        };
    }
    None
}
