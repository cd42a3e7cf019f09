//! The wall clock, read in one way everywhere: microseconds since the Unix epoch. Pure code
//! never calls this; it gets the time as a parameter (see `crate::service::Now`).

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}
