//! Webhook body templates: text with `{{name}}` placeholders, nothing more (no loops, no
//! conditions, no code), so a template can open a ticket in Jira or Linear without being a
//! program.
//!
//! With a JSON content type each placeholder becomes a JSON value (a quoted, escaped string,
//! a number or `null`), so a template is written `{"title": {{summary}}}` without quotes and a
//! summary containing `"` or a newline can never break the document or inject fields. A JSON
//! template is checked at config time by rendering it with sample values and parsing the
//! result. With another content type values are inserted as plain text.

use serde_json::Value;

use super::notice::Notice;

/// Placeholders a template may use.
pub const NAMES: &[&str] = &[
    "summary",
    "title",
    "text",
    "details",
    "service",
    "target",
    "severity",
    "status",
    "event",
    "condition",
    "key",
    "incident_id",
    "time",
    "json",
];

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    Var(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
    json: bool,
}

impl Template {
    /// Parse `text`; `json` selects JSON-escaped values and a validity check.
    pub fn parse(text: &str, json: bool) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| format!("unclosed placeholder at \"{}\"", &rest[start..].chars().take(20).collect::<String>()))?;
            let name = after[..end].trim();
            if !NAMES.contains(&name) {
                return Err(format!("unknown placeholder {{{{{name}}}}}; expected one of {}", NAMES.join(", ")));
            }
            parts.push(Part::Var(name.to_string()));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        let t = Template { parts, json };
        if json {
            let sample = Notice::test(1_700_000_000_000_000);
            let body = t.render(&sample, &Value::Null);
            serde_json::from_str::<Value>(&body).map_err(|e| {
                format!("the template does not render valid JSON ({e}); write placeholders without quotes, e.g. {{\"title\": {{{{summary}}}}}}")
            })?;
        }
        Ok(t)
    }

    /// Render for `n`; `default_body` is what `{{json}}` stands for.
    pub fn render(&self, n: &Notice, default_body: &Value) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(s) => out.push_str(s),
                Part::Var(name) => {
                    let v = value(n, name, default_body);
                    if self.json {
                        out.push_str(&v.to_string());
                    } else {
                        match v {
                            Value::String(s) => out.push_str(&s),
                            Value::Null => {}
                            other => out.push_str(&other.to_string()),
                        }
                    }
                }
            }
        }
        out
    }
}

fn value(n: &Notice, name: &str, default_body: &Value) -> Value {
    let s = |x: &str| Value::String(x.to_string());
    let opt = |x: &Option<String>| x.as_deref().map(s).unwrap_or(Value::Null);
    match name {
        "summary" => s(&n.summary),
        "title" => s(&n.title()),
        "text" => s(&n.text_body()),
        "details" => s(&n.details.join("\n")),
        "service" => opt(&n.service),
        "target" => opt(&n.target),
        "severity" => s(n.severity.as_str()),
        "status" => s(if n.status == super::notice::Status::Firing { "firing" } else { "resolved" }),
        "event" => s(n.event.as_str()),
        "condition" => s(&n.condition),
        "key" => s(&n.key),
        "incident_id" => n.incident.as_ref().map(|i| Value::from(i.id)).unwrap_or(Value::Null),
        "time" => s(&crate::events::format_time_us(n.time_us)),
        "json" => default_body.clone(),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_are_escaped_and_cannot_inject() {
        let t = Template::parse(r#"{"fields": {"summary": {{summary}}, "id": {{incident_id}}, "sev": {{ severity }}}}"#, true).unwrap();
        let mut n = Notice::test(1);
        n.summary = "a \"quoted\"\nline\", \"evil\": \"x".into();
        let out: Value = serde_json::from_str(&t.render(&n, &Value::Null)).unwrap();
        assert_eq!(out["fields"]["summary"], n.summary);
        assert_eq!(out["fields"]["id"], Value::Null);
        assert_eq!(out["fields"]["sev"], "info");
        assert!(out["fields"].get("evil").is_none());
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        assert!(Template::parse("{{nope}}", false).unwrap_err().contains("unknown placeholder {{nope}}"));
        assert!(Template::parse("{{summary", false).unwrap_err().contains("unclosed"));
        assert!(Template::parse(r#"{"a": "{{summary}}"}"#, true).unwrap_err().contains("valid JSON"));
        let plain = Template::parse("Alert: {{summary}} ({{service}})", false).unwrap();
        assert_eq!(plain.render(&Notice::test(1), &Value::Null), "Alert: understudy test notification: this channel works ()");
    }
}
