//! Durations are written as strings with a unit: `"500ms"`, `"30s"`, `"1m 30s"`, `"2h"`.
//! A bare number is refused: `interval = 1` is ambiguous (seconds? milliseconds?).

use std::time::Duration;

/// Parse a human duration such as `"500ms"` or `"1m30s"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err("expected a duration such as \"500ms\" or \"30s\", got an empty string".into());
    }
    if trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!("expected a duration with a unit such as \"{trimmed}s\" or \"{trimmed}ms\", got \"{s}\""));
    }
    humantime::parse_duration(trimmed).map_err(|e| format!("expected a duration such as \"500ms\" or \"30s\", got \"{s}\" ({e})"))
}

/// serde helper: a duration string.
pub(crate) mod serde_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use super::*;
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            let s = String::deserialize(d)?;
            super::super::parse_duration(&s).map(Some).map_err(serde::de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_required() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("1").unwrap_err().contains("\"1s\""));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
