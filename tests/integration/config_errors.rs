use std::process::Command;

use crate::support::understudy_bin;

fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(understudy_bin()).arg("check-config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    (out.status.code().unwrap_or(-1), stderr)
}

const GOOD: &str = r#"[daemon]
data_dir = "./understudy-data"
api = "127.0.0.1:9190"

[[service]]
name = "www"

[service.check]
kind = "http"
port = 8080
interval = "1s"
timeout = "500ms"

[[service.target]]
name = "primary"
address = "127.0.0.2"
"#;

#[test]
fn every_example_config_is_valid() {
    let examples = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).unwrap();
    let mut n = 0;
    for e in examples {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            // agent.toml is the health agent's own file (`understudy agent --check-config`).
            let agent = path.file_name().is_some_and(|n| n == "agent.toml");
            let args: Vec<&std::ffi::OsStr> = if agent { vec!["agent".as_ref(), "--check-config".as_ref(), "-c".as_ref(), path.as_os_str()] } else { vec!["check-config".as_ref(), path.as_os_str()] };
            let out = Command::new(understudy_bin()).args(&args).output().unwrap();
            assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
            n += 1;
        }
    }
    assert!(n >= 2, "examples/ holds the quick-start and the full reference config");
}

#[test]
fn bad_files_name_the_line_key_and_expectation() {
    let cases: &[(&str, &str)] = &[
        // typo in a key
        (&GOOD.replace("interval =", "intreval ="), "FILE:11:1: service[0].check.intreval: unknown field `intreval`, expected one of"),
        // cross-field rule
        (&GOOD.replace("timeout = \"500ms\"", "timeout = \"2s\""), "FILE:12:1: service[0].check.timeout: must be less than interval (1s), got 2s"),
        // duration without a unit
        (&GOOD.replace("interval = \"1s\"", "interval = \"1\""), "FILE:11:12: service[0].check.interval: expected a duration with a unit such as \"1s\" or \"1ms\""),
        // not an address
        (&GOOD.replace("127.0.0.2", "primary.example"), "FILE:16:1: service[0].target[0].address: expected an IPv4 or IPv6 address"),
        // key for another kind
        (&GOOD.replace("kind = \"http\"", "kind = \"tcp\"\npath = \"/x\""), "service[0].check.path: `path` applies to http and https checks, not to tcp checks"),
        // bad status range
        (&GOOD.replace("port = 8080", "port = 8080\nexpect_status = [\"399-200\"]"), "service[0].check.expect_status[0]: expected a status such as 200 or a range such as \"200-399\", got \"399-200\""),
        // enum value
        (&GOOD.replace("name = \"www\"", "name = \"www\"\nfailback = \"sometimes\""), "service[0].failback: unknown variant `sometimes`, expected `auto` or `manual`"),
        // API off loopback without a token
        (&GOOD.replace("127.0.0.1:9190", "0.0.0.0:9190"), "daemon.api: the API may listen on 0.0.0.0:9190 (not loopback) only with a token"),
        // API names and TLS
        (&GOOD.replace("api = \"127.0.0.1:9190\"", "api = \"127.0.0.1:9190\"\napi_hosts = [\"evil example\"]"), "daemon.api_hosts[0]: expected a host name such as \"understudy.example.net\", got \"evil example\""),
        (&GOOD.replace("api = \"127.0.0.1:9190\"", "api = \"127.0.0.1:9190\"\napi_tls_cert = \"api.crt\""), "daemon.api_tls_key: api_tls_cert needs api_tls_key"),
        (&GOOD.replace("api = \"127.0.0.1:9190\"", "api = \"127.0.0.1:9190\"\napi_tls_cert = \"api.crt\"\napi_tls_key = \"api.key\""), "daemon.api_tls_cert: cannot read certificate"),
        // syntax
        (&GOOD.replace("[service.check]", "[service.check"), "FILE:8:"),
    ];
    for (text, expected) in cases {
        let (code, stderr) = check(text);
        assert_eq!(code, 2, "exit code for:\n{stderr}");
        assert!(stderr.contains(expected), "expected `{expected}` in:\n{stderr}");
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = format!(
        "{}\n[[service.target]]\nname = \"primary\"\naddress = \"127.0.0.3\"\n\n[[service]]\nname = \"empty\"\n[service.check]\nkind = \"tcp\"\n",
        GOOD.replace("timeout = \"500ms\"", "timeout = \"1s\"")
    );
    let (code, stderr) = check(&text);
    assert_eq!(code, 2);
    assert!(stderr.contains("service[0].check.timeout: must be less than interval"), "{stderr}");
    assert!(stderr.contains("service[0].target[1].name: duplicate target name \"primary\""), "{stderr}");
    assert!(stderr.contains("service[1]: service \"empty\" needs at least one [[service.target]]"), "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.starts_with("error: ")).count(), 3, "{stderr}");
}

#[test]
fn run_refuses_a_bad_file_before_touching_anything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let data = dir.path().join("data");
    std::fs::write(&path, GOOD.replace("./understudy-data", &data.display().to_string()).replace("fall", "x").replace("timeout = \"500ms\"", "timeout = \"5s\"")).unwrap();
    let out = Command::new(understudy_bin()).args(["run", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be less than interval"));
    assert!(!data.exists(), "a refused config creates no data directory");
}

#[test]
fn check_config_accepts_the_quick_start_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.toml");
    std::fs::write(&path, GOOD).unwrap();
    let out = Command::new(understudy_bin()).arg("check-config").arg(&path).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (1 services, 1 targets)"));
}
