//! Domain names as the DNS server keeps them: lowercase wire format.
//!
//! A [`Name`] is the uncompressed wire encoding (length-prefixed labels ending in the root
//! label), lowercased once when it is built, so that lookups are one byte comparison and
//! matching is case-insensitive by construction. Parsing accepts the names an operator writes
//! in the config (letters, digits, `-` and `_`); it does not read names off the wire (the
//! request parser in `handler.rs` does that) and it knows nothing about zones or records.

use std::fmt;

/// Longest name in wire format (RFC 1035 2.3.4).
pub const MAX_NAME: usize = 255;
/// Longest label (RFC 1035 2.3.4).
pub const MAX_LABEL: usize = 63;

/// A domain name in lowercase wire format, always absolute.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Box<[u8]>);

impl Name {
    /// The root name (`.`).
    pub fn root() -> Name {
        Name(Box::new([0]))
    }

    /// Build from wire bytes that are already validated and lowercase (used by the request
    /// parser and tests). Returns `None` when `wire` is not a well-formed uncompressed name.
    pub fn from_wire(wire: &[u8]) -> Option<Name> {
        let mut i = 0;
        loop {
            let len = *wire.get(i)? as usize;
            if len == 0 {
                break;
            }
            if len > MAX_LABEL {
                return None;
            }
            i += 1 + len;
        }
        if i + 1 != wire.len() || wire.len() > MAX_NAME {
            return None;
        }
        Some(Name(wire.to_ascii_lowercase().into_boxed_slice()))
    }

    /// Parse an absolute name written in dotted form. A trailing dot is optional here: the
    /// caller decides whether a name is relative (see [`Name::parse_in`]).
    pub fn parse_absolute(s: &str) -> Result<Name, String> {
        let body = s.strip_suffix('.').unwrap_or(s);
        if body.is_empty() {
            return Ok(Name::root());
        }
        let mut wire = Vec::with_capacity(body.len() + 2);
        for label in body.split('.') {
            if label.is_empty() {
                return Err(format!("\"{s}\" has an empty label (two dots in a row, or a leading dot)"));
            }
            if label.len() > MAX_LABEL {
                return Err(format!("label \"{label}\" in \"{s}\" is longer than {MAX_LABEL} characters"));
            }
            if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
                return Err(format!("\"{s}\" contains '{c}'; names may use letters, digits, '-' and '_'"));
            }
            wire.push(label.len() as u8);
            wire.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
        wire.push(0);
        if wire.len() > MAX_NAME {
            return Err(format!("\"{s}\" is longer than {MAX_NAME} bytes in wire format"));
        }
        Ok(Name(wire.into_boxed_slice()))
    }

    /// Parse a name as written inside a zone: `@` is the origin, a name ending in `.` is
    /// absolute, anything else is relative to `origin` (zone-file convention).
    pub fn parse_in(s: &str, origin: &Name) -> Result<Name, String> {
        let s = s.trim();
        if s == "@" {
            return Ok(origin.clone());
        }
        if s.ends_with('.') {
            return Name::parse_absolute(s);
        }
        let rel = Name::parse_absolute(s)?;
        rel.append(origin).ok_or_else(|| format!("\"{s}\" in zone {origin} is longer than {MAX_NAME} bytes"))
    }

    /// `self` followed by `suffix` (`self` is treated as relative: its root label is dropped).
    pub fn append(&self, suffix: &Name) -> Option<Name> {
        let mut wire = Vec::with_capacity(self.0.len() + suffix.0.len());
        wire.extend_from_slice(&self.0[..self.0.len() - 1]);
        wire.extend_from_slice(&suffix.0);
        (wire.len() <= MAX_NAME).then(|| Name(wire.into_boxed_slice()))
    }

    /// The wire encoding (lowercase, uncompressed).
    pub fn wire(&self) -> &[u8] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.len() == 1
    }

    /// Number of labels, not counting the root.
    pub fn label_count(&self) -> usize {
        self.label_offsets().count()
    }

    /// Offsets of the start of each label (each suffix of the name starts at one).
    pub fn label_offsets(&self) -> impl Iterator<Item = usize> + '_ {
        let mut i = 0;
        std::iter::from_fn(move || {
            let len = *self.0.get(i)? as usize;
            if len == 0 {
                return None;
            }
            let at = i;
            i += 1 + len;
            Some(at)
        })
    }

    /// True when `self` is `other` or below it.
    pub fn is_within(&self, other: &Name) -> bool {
        is_wire_suffix(&self.0, &other.0)
    }

    /// The name one label up (`None` for the root).
    pub fn parent(&self) -> Option<Name> {
        if self.is_root() {
            return None;
        }
        let skip = 1 + self.0[0] as usize;
        Some(Name(self.0[skip..].to_vec().into_boxed_slice()))
    }
}

/// True when the lowercase wire name `name` equals `suffix` or ends with it at a label
/// boundary.
pub fn is_wire_suffix(name: &[u8], suffix: &[u8]) -> bool {
    if suffix.len() > name.len() {
        return false;
    }
    let start = name.len() - suffix.len();
    if name[start..] != *suffix {
        return false;
    }
    // The suffix must begin where a label begins.
    let mut i = 0;
    while i < start {
        i += 1 + name[i] as usize;
    }
    i == start
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            return f.write_str(".");
        }
        for at in self.label_offsets() {
            let len = self.0[at] as usize;
            for &b in &self.0[at + 1..at + 1 + len] {
                if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                    write!(f, "{}", b as char)?;
                } else {
                    write!(f, "\\{b:03}")?;
                }
            }
            f.write_str(".")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_absolute_and_apex() {
        let origin = Name::parse_absolute("Example.Test").unwrap();
        assert_eq!(origin.to_string(), "example.test.");
        assert_eq!(Name::parse_in("www", &origin).unwrap().to_string(), "www.example.test.");
        assert_eq!(Name::parse_in("WWW.example.test.", &origin).unwrap().to_string(), "www.example.test.");
        assert_eq!(Name::parse_in("@", &origin).unwrap(), origin);
        assert_eq!(Name::parse_in("_sip._tcp", &origin).unwrap().label_count(), 4);
        assert!(Name::parse_in("a..b", &origin).is_err());
        assert!(Name::parse_in("a b", &origin).is_err());
        assert!(Name::parse_in(&"x".repeat(64), &origin).is_err());
    }

    #[test]
    fn suffixes_respect_label_boundaries() {
        let a = Name::parse_absolute("www.example.test").unwrap();
        let z = Name::parse_absolute("example.test").unwrap();
        let other = Name::parse_absolute("ample.test").unwrap();
        assert!(a.is_within(&z));
        assert!(z.is_within(&z));
        assert!(!z.is_within(&a));
        assert!(!a.is_within(&other));
        assert!(a.is_within(&Name::root()));
        assert_eq!(a.parent().unwrap(), z);
    }

    #[test]
    fn from_wire_checks_structure() {
        assert_eq!(Name::from_wire(b"\x03WWW\x00").unwrap().wire(), b"\x03www\x00");
        assert!(Name::from_wire(b"\x03ww\x00").is_none());
        assert!(Name::from_wire(b"\x00\x00").is_none());
        assert!(Name::from_wire(b"").is_none());
    }
}
