//! The module dependency rules, checked on the source: a test reads every `crate::` path in
//! `src/` (outside tests and comments) and fails naming the file, line and rule that a change
//! broke. ARCHITECTURE.md explains why each rule exists.

use std::path::{Path, PathBuf};

/// Modules that do I/O or run tasks; pure modules must not reach them.
const IO: &[&str] = &["api", "cli", "daemon", "dns", "notify", "process", "drill", "crypto", "events::log", "actuator::runner", "actuator::registry", "probe::scheduler"];

/// One rule: files under `from` must not name any of `forbidden` (a module, or a module path).
struct Rule {
    from: &'static [&'static str],
    forbidden: &'static [&'static str],
    why: &'static str,
}

const RULES: &[Rule] = &[
    Rule { from: &["daemon"], forbidden: &["api", "cli"], why: "the runtime knows nothing of the API: cli::run starts the API in front of it" },
    Rule { from: &["decision", "health"], forbidden: &["config", "service", "coordinator", "actuator", "probe", "events", "metrics"], why: "the engine and health are pure and at the bottom" },
    Rule { from: &["decision", "health", "service", "coordinator", "retry", "clock"], forbidden: IO, why: "pure logic does no I/O (time and inputs are parameters)" },
    Rule { from: &["notify"], forbidden: &["api", "daemon", "cli"], why: "notifications render their own shapes (events::report), not the API's" },
    Rule { from: &["drill"], forbidden: &["daemon", "cli"], why: "drills talk to the daemon through its API" },
    Rule { from: &["dns", "actuator", "probe", "events", "metrics", "config"], forbidden: &["daemon", "api", "cli"], why: "lower layers never reach up into the runtime or its front ends" },
    Rule { from: &["config"], forbidden: &["events::log", "events::snapshot", "actuator::runner", "probe::scheduler"], why: "loading a config does no I/O beyond reading its files" },
];

/// Modules `config` may reach into beyond their `config` submodule: policy enums, the event
/// types (and the log's defaults), helpers.
const CONFIG_MAY_USE: &[&str] = &["decision", "health", "events", "crypto", "clock", "crclog"];

/// Every `.rs` file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src is readable").flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its comments and without its `#[cfg(test)] mod tests` block
/// (tests may use anything), as (line number, line).
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let cut = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..cut]
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split("//").next().unwrap_or("").to_string()))
        .collect()
}

/// The module paths a line names: `crate::a::b::C` gives `a::b`; `use crate::{a::x, b}` gives
/// `a::x` and `b`.
fn paths(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            out.extend(group[..end].split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()));
            continue;
        }
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
        out.push(rest[..end].trim_end_matches(':').to_string());
    }
    out
}

/// Does `path` (`a::b::C`) fall under `module` (`a` or `a::b`)?
fn under(path: &str, module: &str) -> bool {
    path == module || path.starts_with(&format!("{module}::"))
}

/// Every broken rule in the source tree under `src`, as `file:line: rule`.
fn violations(src: &Path) -> Vec<String> {
    let mut all = Vec::new();
    files(src, &mut all);
    all.sort();
    let mut found = Vec::new();
    for file in all {
        let rel = file.strip_prefix(src).expect("under src").to_string_lossy().replace('\\', "/");
        if rel.ends_with("tests.rs") || rel == "layers.rs" {
            continue;
        }
        let top = rel.split('/').next().unwrap_or("").trim_end_matches(".rs").to_string();
        let text = std::fs::read_to_string(&file).expect("source is readable");
        for (n, line) in code_lines(&text) {
            for p in paths(&line) {
                if under(&p, &top) {
                    continue;
                }
                for r in RULES.iter().filter(|r| r.from.contains(&top.as_str())) {
                    if let Some(f) = r.forbidden.iter().find(|f| under(&p, f)) {
                        found.push(format!("src/{rel}:{n}: {top} uses crate::{p}, but {top} must not use {f}: {}", r.why));
                    }
                }
                if top == "config" {
                    let feature = p.split("::").next().unwrap_or("");
                    let own_section = p.split("::").nth(1) == Some("config");
                    if !own_section && !CONFIG_MAY_USE.contains(&feature) {
                        found.push(format!("src/{rel}:{n}: config uses crate::{p}: config composes each feature's `config` section and must not reach into its internals"));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn module_dependencies_follow_the_layering_rules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let v = violations(&src);
    assert!(v.is_empty(), "module dependency rules broken:\n{}", v.join("\n"));
}

#[test]
fn the_checker_sees_grouped_imports_and_ignores_comments_and_tests() {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("daemon/core.rs", "use crate::{config::Config, api::wire};\n// crate::cli::run in a comment\n#[cfg(test)]\nmod tests {\n    use crate::cli;\n}\n");
    write("decision/mod.rs", "fn f() { crate::events::log::open(); }\n");
    write("config/raw.rs", "pub dns: crate::dns::config::RawDns,\npub x: crate::dns::table::Table,\n");
    write("api/mod.rs", "use crate::daemon::Shared;\n");
    let v = violations(dir.path());
    assert_eq!(v.len(), 4, "{v:#?}");
    // (decision's line breaks two rules: no events, and no I/O module such as events::log)
    assert!(v.iter().any(|l| l.starts_with("src/daemon/core.rs:1: daemon uses crate::api::wire")), "{v:#?}");
    assert!(v.iter().any(|l| l.starts_with("src/decision/mod.rs:1: decision uses crate::events::log")), "{v:#?}");
    assert!(v.iter().any(|l| l.starts_with("src/config/raw.rs:2: config uses crate::dns::table::Table")), "{v:#?}");
}
