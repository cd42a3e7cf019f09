//! Durations are written as strings with a unit: `"500ms"`, `"30s"`, `"1m 30s"`, `"2h"`.
//! A bare number is refused: `interval = 1` is ambiguous (seconds? milliseconds?).
//!
//! Every duration is at most [`MAX_DURATION`] (one year). Nothing in a failover tool needs
//! longer, and the bound keeps the arithmetic done with durations (`interval x fall + timeout`,
//! deadlines on the monotonic clock, timer wheels) far from overflow. Code that combines
//! durations still uses saturating operations: this bound is not a license to overflow.

use std::time::Duration;

/// The longest duration a config value (or a command-line flag) may give: one year as
/// humantime counts it (`"1y"` = 365.25 days).
pub const MAX_DURATION: Duration = Duration::from_secs(31_557_600);

/// Parse a human duration such as `"500ms"` or `"1m30s"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err("expected a duration such as \"500ms\" or \"30s\", got an empty string".into());
    }
    if trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!("expected a duration with a unit such as \"{trimmed}s\" or \"{trimmed}ms\", got \"{s}\""));
    }
    let d = humantime::parse_duration(trimmed).map_err(|e| format!("expected a duration such as \"500ms\" or \"30s\", got \"{s}\" ({e})"))?;
    if d > MAX_DURATION {
        return Err(format!("expected a duration of at most one year (\"1y\", \"365d\"), got \"{s}\""));
    }
    Ok(d)
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

    #[test]
    fn durations_are_bounded_at_one_year() {
        assert_eq!(parse_duration("1y").unwrap(), MAX_DURATION);
        assert_eq!(parse_duration("365d").unwrap(), Duration::from_secs(365 * 86400));
        for huge in ["1y 1s", "2y", "10000000000000000000s", "18446744073709551615s", "99999999999999999999999s"] {
            let e = parse_duration(huge).unwrap_err();
            assert!(e.contains(huge), "{e}");
        }
        assert!(parse_duration("1y 1s").unwrap_err().contains("at most one year"));
    }
}
