//! The API token the daemon uses when the config names none: `data_dir/api-token`.
//!
//! On first start the daemon creates it (32 random bytes, hex; mode 0600; written to a
//! temporary file in the same directory, synced, then linked into place so no reader ever sees
//! a partial token and a concurrent creator never overwrites it). Later starts read it. The CLI
//! reads the same file through the config's `data_dir`, so the operator never handles it.
//!
//! The token's value is never logged; only the file's path is.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The file name inside the data directory.
pub const FILE_NAME: &str = "api-token";

/// Where the daemon keeps its generated token.
pub fn default_path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

#[derive(Debug, thiserror::Error)]
#[error("API token file {path}: {what}")]
pub struct TokenError {
    pub path: PathBuf,
    pub what: String,
}

/// Read `data_dir/api-token`, creating it first if it does not exist.
pub fn ensure(data_dir: &Path) -> Result<String, TokenError> {
    let path = default_path(data_dir);
    let err = |what: String| TokenError {
        path: path.clone(),
        what,
    };
    match read(&path) {
        Ok(Some(t)) => return Ok(t),
        Ok(None) => {}
        Err(e) => return Err(err(e)),
    }
    let token = generate();
    let mut tmp = tempfile::Builder::new()
        .prefix(".api-token.")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(data_dir)
        .map_err(|e| err(format!("cannot create a temporary file: {e}")))?;
    tmp.write_all(format!("{token}\n").as_bytes())
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| err(format!("cannot write: {e}")))?;
    match tmp.persist_noclobber(&path) {
        Ok(_) => {
            if let Ok(dir) = std::fs::File::open(data_dir) {
                let _ = dir.sync_all();
            }
            tracing::info!(path = %path.display(), "created the API token (mode 0600); the CLI reads it through the config's data_dir");
            Ok(token)
        }
        // Someone else created it between our read and our link: theirs wins.
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => read(&path)
            .map_err(err)?
            .ok_or_else(|| err("is empty".into())),
        Err(e) => Err(err(format!("cannot put it in place: {}", e.error))),
    }
}

/// `Ok(None)` when the file does not exist. A file others may read is tightened to 0600.
fn read(path: &Path) -> Result<Option<String>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    let token = text.trim();
    if token.is_empty() {
        return Err("is empty (delete it and the daemon creates a new one)".into());
    }
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {
                tracing::warn!(path = %path.display(), "the API token file was readable by others; set its mode to 0600")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "the API token file is readable by others and cannot be fixed: {e}")
            }
        }
    }
    Ok(Some(token.to_string()))
}

/// A fresh random token (32 bytes, hex).
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path()).unwrap();
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        let mode = std::fs::metadata(default_path(dir.path()))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            ensure(dir.path()).unwrap(),
            first,
            "a restart keeps the token"
        );
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            ensure(other.path()).unwrap(),
            first,
            "random per data directory"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers,
            vec![std::ffi::OsString::from(FILE_NAME)],
            "no temporary file left behind"
        );
    }

    #[test]
    fn a_readable_token_is_tightened_and_an_empty_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = default_path(dir.path());
        std::fs::write(&path, "abc\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(ensure(dir.path()).unwrap(), "abc");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&path, "  \n").unwrap();
        assert!(
            ensure(dir.path())
                .unwrap_err()
                .to_string()
                .contains("is empty")
        );
    }
}
