//! Fuzz webhook body templates (`notify/template.rs`): any template text, as JSON and as plain
//! text, and any notice. Parsing never panics; a JSON template that `Template::parse` accepts
//! must render valid JSON for every notice, whatever its names and texts contain (quotes,
//! backslashes, newlines, non-ASCII) and whichever optional values it lacks. That is the
//! promise `check-config` makes (issue 19, finding 2). Run with `fuzz/dict/notify_template.dict`.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use understudy::notify::notice::Notice;
use understudy::notify::template::Template;

#[derive(Debug, Arbitrary)]
struct Input {
    template: String,
    summary: String,
    details: Vec<String>,
    service: Option<String>,
    target: Option<String>,
    condition: String,
    key: String,
    time_us: u64,
    resolved: bool,
}

/// The last microsecond of year 9999: times are formatted as RFC 3339, which has four-digit
/// years. (Times beyond it come only from a forged log line; rejecting those at recovery is
/// another fix, outside templates.)
const MAX_TIME_US: u64 = 253_402_300_799_999_999;

fuzz_target!(|input: Input| {
    let _ = Template::parse(&input.template, false);
    let Ok(t) = Template::parse(&input.template, true) else { return };

    let mut n = Notice::test(input.time_us % (MAX_TIME_US + 1));
    n.summary = input.summary;
    n.details = input.details;
    n.service = input.service;
    n.target = input.target;
    n.condition = input.condition;
    n.key = input.key;
    if input.resolved {
        n.status = understudy::notify::notice::Status::Resolved;
    }
    let body = serde_json::to_value(&n).expect("notices serialize");
    let out = t.render(&n, &body);
    if let Err(e) = serde_json::from_str::<Value>(&out) {
        panic!("accepted template {:?} rendered invalid JSON ({e}): {out}", input.template);
    }
});
