//! Finding places in the config source: byte span -> line/column, dotted key -> span, and
//! byte span -> dotted key (for the `toml` crate's errors, which carry a span but no key).

use std::path::Path;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::ConfigError;

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Render `[Key(service), Index(0), Key(check)]` as `service[0].check`.
pub fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// 1-based (line, column) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

/// A parsed view of the source that keeps spans, for locating validation errors.
pub struct Locator<'a> {
    text: &'a str,
    root: Option<Spanned<DeTable<'a>>>,
}

impl<'a> Locator<'a> {
    pub fn new(text: &'a str) -> Self {
        Locator { text, root: DeTable::parse(text).ok() }
    }

    /// Span of the value at `path`, or of the nearest ancestor that exists.
    pub fn span(&self, path: &[Seg]) -> Option<std::ops::Range<usize>> {
        let root = self.root.as_ref()?;
        let mut best: Option<std::ops::Range<usize>> = None;
        let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
        let mut value: Option<&Spanned<DeValue<'_>>> = None;
        for seg in path {
            let next = match (seg, table, value) {
                (Seg::Key(k), Some(t), _) => t.iter().find(|(key, _)| key.get_ref() == k).map(|(key, v)| {
                    // Point at the key itself: that's where a reader looks.
                    best = Some(key.span());
                    v
                }),
                (Seg::Index(i), _, Some(v)) => v.get_ref().as_array().and_then(|a| a.get(*i)).inspect(|v| {
                    best = Some(v.span());
                }),
                _ => None,
            };
            match next {
                Some(v) => {
                    value = Some(v);
                    table = v.get_ref().as_table();
                }
                None => break,
            }
        }
        best
    }

    pub fn error(&self, file: &Path, path: &[Seg], message: impl Into<String>) -> ConfigError {
        let (line, column) = match self.span(path) {
            Some(span) => {
                let (l, c) = line_col(self.text, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        ConfigError { file: file.to_owned(), line, column, key: render(path), message: message.into() }
    }

    /// The deepest key whose span contains `span`: what a syntax or type error is about.
    fn key_at(&self, span: &std::ops::Range<usize>) -> Vec<Seg> {
        let mut path = Vec::new();
        if let Some(root) = &self.root {
            descend_table(root.get_ref(), span, &mut path);
        }
        path
    }
}

fn contains(outer: &std::ops::Range<usize>, inner: &std::ops::Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end.max(outer.start + 1)
}

fn descend_table(t: &DeTable<'_>, span: &std::ops::Range<usize>, path: &mut Vec<Seg>) -> bool {
    for (k, v) in t.iter() {
        let key_hit = contains(&k.span(), span);
        if key_hit || contains(&v.span(), span) {
            path.push(Seg::Key(k.get_ref().to_string()));
            if !key_hit {
                descend_value(v.get_ref(), span, path);
            }
            return true;
        }
    }
    // Tables written as `[[service]]` headers have spans covering only the header; look inside
    // every nested value as well.
    for (k, v) in t.iter() {
        let mut sub = vec![Seg::Key(k.get_ref().to_string())];
        if descend_value(v.get_ref(), span, &mut sub) {
            path.extend(sub);
            return true;
        }
    }
    false
}

fn descend_value(v: &DeValue<'_>, span: &std::ops::Range<usize>, path: &mut Vec<Seg>) -> bool {
    match v {
        DeValue::Table(t) => descend_table(t, span, path),
        DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                let mut sub = vec![Seg::Index(i)];
                if contains(&item.span(), span) {
                    descend_value(item.get_ref(), span, &mut sub);
                    path.extend(sub);
                    return true;
                }
                if descend_value(item.get_ref(), span, &mut sub) {
                    path.extend(sub);
                    return true;
                }
            }
            false
        }
        _ => false,
    }
}

/// Turn a `toml` parse/deserialize error into a located [`ConfigError`].
pub fn from_toml_error(text: &str, file: &Path, err: &toml::de::Error) -> ConfigError {
    let message = err.message().trim().to_string();
    let Some(span) = err.span() else {
        return ConfigError { file: file.to_owned(), line: None, column: None, key: String::new(), message };
    };
    let (line, col) = line_col(text, span.start);
    let key = render(&Locator::new(text).key_at(&span));
    ConfigError { file: file.to_owned(), line: Some(line), column: Some(col), key, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_of_nested_array_tables() {
        let text = "[daemon]\napi = \"x\"\n\n[[service]]\nname = \"a\"\n\n[[service]]\nname = \"b\"\n[service.check]\ntimeout = \"2s\"\n";
        let loc = Locator::new(text);
        let path = [Seg::Key("service".into()), Seg::Index(1), Seg::Key("check".into()), Seg::Key("timeout".into())];
        let span = loc.span(&path).unwrap();
        assert_eq!(line_col(text, span.start), (10, 1));
        assert_eq!(render(&path), "service[1].check.timeout");
    }
}
