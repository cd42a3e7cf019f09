//! Fuzz config loading: any bytes as the config file, through both layers (TOML + serde, then
//! validation). It must never panic: bad input gets located errors (`file:line:col: key:
//! message`) and a file that validates gets its derived values (detection budget, DNS answer
//! table) computed without panicking either. Run with the TOML dictionary
//! `fuzz/dict/config.dict` (scripts/fuzz.sh does). Secret files named in the input are looked
//! up relative to a directory that does not exist; absolute paths are read (capped at 64 KiB).
#![no_main]

use std::collections::HashMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use understudy::config::{self, ConfigErrors};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let file = Path::new("/nonexistent-understudy-fuzz/fuzz.toml");
    match config::from_str(text, file) {
        Ok((cfg, warnings)) => {
            for w in &warnings {
                let _ = format!("{}: {}", w.key, w.message);
            }
            for s in &cfg.services {
                assert!(s.check.interval <= config::MAX_DURATION);
                let _ = s.detection_budget();
            }
            if let Some(dns) = &cfg.dns {
                let served: HashMap<String, Vec<std::net::IpAddr>> =
                    cfg.services.iter().map(|s| (s.name.clone(), s.targets.iter().map(|t| t.address).take(1).collect())).collect();
                let _ = understudy::dns::table::compile(dns, &served, &[1]);
            }
        }
        Err(ConfigErrors(errors)) => {
            assert!(!errors.is_empty(), "a refused config names at least one problem");
            for e in &errors {
                let shown = e.to_string();
                assert!(shown.starts_with(&*file.to_string_lossy()), "{shown}");
                assert!(!e.message.is_empty(), "{shown}");
            }
        }
    }
});
