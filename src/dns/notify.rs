//! NOTIFY (RFC 1996): tell a zone's secondaries that its serial changed, so they transfer the
//! new data at once instead of at their next refresh (the hidden-primary setup).
//!
//! [`send`] is called after a new table with a new serial is in place; it spawns one task per
//! secondary that sends a NOTIFY (signed with the zone's `transfer_key` when it has one) and
//! waits for the matching answer, trying again after 1, 2, 4 and 8 s when none comes. It never
//! blocks the caller and never touches the answer table; a secondary that never answers is
//! logged, and its refresh timer remains the fallback.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::name::Name;
use super::wire::{CLASS_IN, rtype};
use crate::provider::{msg, tsig};

/// The NOTIFY opcode.
pub const OPCODE_NOTIFY: u8 = 4;
const TRIES: u32 = 5;
const TIMEOUT: Duration = Duration::from_secs(2);

/// A NOTIFY for `zone` with `id`: AA set, the zone's SOA as the question.
pub fn message(id: u16, zone: &Name) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + zone.wire().len());
    m.extend_from_slice(&id.to_be_bytes());
    m.push((OPCODE_NOTIFY << 3) | 0x04);
    m.push(0);
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(zone.wire());
    m.extend_from_slice(&rtype::SOA.to_be_bytes());
    m.extend_from_slice(&CLASS_IN.to_be_bytes());
    m
}

/// NOTIFY every secondary in `targets` that `zone` is now at `serial` (for the log).
pub fn send(zone: &Name, serial: u32, targets: &[SocketAddr], key: Option<&tsig::Key>) {
    if targets.is_empty() {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(%zone, serial, "dns: no runtime to send NOTIFY from; secondaries will catch up at their refresh");
        return;
    };
    for &t in targets {
        let (zone, key) = (zone.clone(), key.cloned());
        rt.spawn(async move { notify_one(&zone, serial, t, key.as_ref()).await });
    }
}

async fn notify_one(zone: &Name, serial: u32, target: SocketAddr, key: Option<&tsig::Key>) {
    let mut last = String::new();
    for attempt in 0..TRIES {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
        }
        let id: u16 = rand::random();
        let unsigned = message(id, zone);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let (m, mac) = match key {
            Some(k) => {
                let (s, mac) = tsig::sign(&unsigned, k, now, None);
                (s, Some(mac))
            }
            None => (unsigned, None),
        };
        match msg::exchange(target, &m, TIMEOUT).await {
            Ok(answer) => match msg::parse(&answer) {
                Some(p) if p.opcode == OPCODE_NOTIFY && p.rcode == 0 => {
                    if let (Some(k), Some(mac)) = (key, &mac)
                        && !matches!(tsig::verify(&answer, k, now, Some(mac)), tsig::Checked::Valid { .. } | tsig::Checked::Unsigned)
                    {
                        last = format!("{target} answered with a bad signature");
                        continue;
                    }
                    tracing::debug!(%zone, serial, %target, "dns: NOTIFY acknowledged");
                    return;
                }
                Some(p) => last = format!("{target} answered NOTIFY with rcode {}", p.rcode),
                None => last = format!("{target} sent a malformed answer"),
            },
            Err(e) => last = format!("{target}: {e}"),
        }
    }
    tracing::warn!(%zone, serial, %target, "dns: NOTIFY not acknowledged after {TRIES} tries ({last}); the secondary will catch up at its refresh");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notify_is_an_authoritative_soa_question() {
        use hickory_proto::op::{Message, OpCode};
        let m = Message::from_vec(&message(9, &Name::parse_absolute("example.test").unwrap())).unwrap();
        assert_eq!(m.metadata.op_code, OpCode::Notify);
        assert!(m.metadata.authoritative);
        assert_eq!(m.queries[0].name().to_string(), "example.test.");
    }
}
