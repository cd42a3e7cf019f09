//! Webhook body templates: text with `{{name}}` placeholders, nothing more (no loops, no
//! conditions, no code), so a template can open a ticket in Jira or Linear without being a
//! program.
//!
//! With a JSON content type each placeholder becomes a JSON value (a quoted, escaped string,
//! a number or `null`), so a template is written `{"title": {{summary}}}` without quotes and a
//! summary containing `"` or a newline can never break the document or inject fields. A JSON
//! template is checked at config time by rendering it with realistic sample notices (names
//! and text with quotes, backslashes, newlines and non-ASCII letters; every optional value
//! present, then every one absent) and parsing each result: a template that quotes a
//! placeholder (`"{{service}}"`), or puts one where only some values fit (`{{target}}` as an
//! object key, when a notice may have no target), is refused, because a real notice would
//! render invalid JSON and the receiver would reject it for good. A template accepted this way
//! renders valid JSON for every notice (the `notify_template` fuzz target checks this). With
//! another content type values are inserted as plain text and nothing is checked.

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
            for (sample, described) in samples().into_iter().zip(SAMPLES) {
                let body = t.render(&sample, &serde_json::to_value(&sample).expect("notices serialize"));
                if let Err(e) = serde_json::from_str::<Value>(&body) {
                    return Err(format!(
                        "the template does not render valid JSON for a notice {described}: {e}{}; \
                         placeholders are inserted as JSON values (strings with their quotes and escapes, \
                         numbers, null), so write them without quotes, e.g. {{\"title\": {{{{summary}}}}}}",
                        t.quoted_placeholder().map(|n| format!(" ({{{{{n}}}}} is inside quotes)")).unwrap_or_default()
                    ));
                }
            }
        }
        Ok(t)
    }

    /// The first placeholder written between quotes (`"{{service}}"`), for the error message.
    fn quoted_placeholder(&self) -> Option<&str> {
        self.parts.iter().enumerate().find_map(|(i, p)| match p {
            Part::Var(name) => {
                let before = i.checked_sub(1).and_then(|j| self.parts.get(j));
                let opens = matches!(before, Some(Part::Literal(l)) if l.ends_with('"'));
                let closes = matches!(self.parts.get(i + 1), Some(Part::Literal(l)) if l.starts_with('"'));
                (opens || closes).then_some(name.as_str())
            }
            Part::Literal(_) => None,
        })
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

/// What each of [`samples`] is, for error messages.
const SAMPLES: [&str; 2] = [
    "whose service, target and texts contain quotes, backslashes, newlines and non-ASCII letters",
    "without service, target or incident",
];

/// Notices a JSON template must render valid JSON for: one with every optional value present
/// and text that needs escaping everywhere, one with every optional value absent.
fn samples() -> [Notice; 2] {
    let awkward = |what: &str| format!("{what} \"quoted\" back\\slash\nnew line\ttab Zürich Łódź 東京 ☃ </script>");
    let mut full = Notice::test(1_700_000_000_000_000);
    full.summary = awkward("www failed over from \"primary\" to backup");
    full.details = vec![awkward("detail one"), awkward("detail two")];
    full.condition = awkward("condition");
    full.key = awkward("key");
    full.service = Some(awkward("service"));
    full.target = Some(awkward("target"));
    full.ended_us = Some(1_700_000_001_000_000);
    full.incident = Some(crate::events::report::Incident {
        id: 42,
        service: awkward("service"),
        open: false,
        opened: "2023-11-14T22:13:20.000000Z".into(),
        closed: Some("2023-11-14T22:13:21.000000Z".into()),
        closed_by: Some(awkward("operator")),
        failed: Some(awkward("failed")),
        to: Some(awkward("to")),
        epoch: 7,
        detection_ms: Some(2999.5),
        switch_ms: Some(0.25),
        rto_ms: None,
        actuator_failures: 1,
        recovered: None,
        failed_back: None,
        timeline: vec![crate::events::report::TimelineEntry { time: "2023-11-14T22:13:20.000000Z".into(), time_us: 1, what: awkward("what") }],
        checks: Vec::new(),
        client_rto_ms: None,
        client: Vec::new(),
    });
    let mut empty = Notice::test(0);
    empty.details.clear();
    [full, empty]
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
        assert!(Template::parse(r#"{"a": "{{summary}}"}"#, true).unwrap_err().contains("({{summary}} is inside quotes)"));
        let plain = Template::parse("Alert: {{summary}} ({{service}})", false).unwrap();
        assert_eq!(plain.render(&Notice::test(1), &Value::Null), "Alert: understudy test notification: this channel works ()");
    }

    /// Issue 19, finding 2: these passed validation (the test notice has no service, target or
    /// incident, so the quoted placeholders rendered `"null"`) and then rendered invalid JSON
    /// for every real notice.
    #[test]
    fn templates_that_break_on_real_values_are_refused() {
        let refused = [
            r#"{"service": "{{service}}", "host": "{{target}}", "raw": "{{json}}"}"#,
            r#"{"service": "{{service}}"}"#,
            r#"{"raw": "{{json}}"}"#,
            r#"{"text": "{{severity}}"}"#,
            r#"{ {{target}}: 1 }"#,
            r#"{"n": 1{{incident_id}}}"#,
            r#"{"n": -{{incident_id}}}"#,
        ];
        for t in refused {
            let e = Template::parse(t, true).expect_err(t);
            assert!(e.contains("does not render valid JSON"), "{t}: {e}");
        }
        let quoted = Template::parse(refused[0], true).unwrap_err();
        assert!(quoted.contains("({{service}} is inside quotes)") && quoted.contains("write them without quotes"), "{quoted}");
    }

    #[test]
    fn accepted_templates_render_valid_json_for_awkward_notices() {
        let t = Template::parse(
            r#"{"service": {{service}}, "host": {{target}}, "raw": {{json}}, "id": {{incident_id}}, {{summary}}: [{{details}}, {{text}}, {{time}}]}"#,
            true,
        )
        .unwrap();
        for n in samples() {
            let body = serde_json::to_value(&n).unwrap();
            let out: Value = serde_json::from_str(&t.render(&n, &body)).unwrap();
            assert_eq!(out["service"], n.service.as_deref().map(Value::from).unwrap_or(Value::Null));
            assert_eq!(out["host"], n.target.as_deref().map(Value::from).unwrap_or(Value::Null));
            assert_eq!(out["raw"], body);
            assert_eq!(out[n.summary.as_str()][0], n.details.join("\n"));
        }
    }
}
