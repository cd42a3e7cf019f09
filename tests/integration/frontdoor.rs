//! The operator's front door besides the dashboard (issue 16): the Debian package built by
//! `scripts/build-deb.sh` (contents, lintian, an install and a purge in a throwaway root with
//! `dpkg --root`), and the CLI niceties: `--output json` on every read command, completions,
//! the man page, colours only on a terminal and never with `NO_COLOR`.
//!
//! The package is installed with `--force-script-chrootless`: its maintainer scripts run on
//! this system with `DPKG_ROOT` set, and they create the user in the throwaway root's
//! `/etc/passwd` (`useradd --prefix`), never in this system's.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}\nstdout: {}\nstderr: {}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn need(tool: &str, package: &str) {
    let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()));
    assert!(found, "{tool} is not installed: run scripts/install-test-deps.sh (apt-get install {package})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deb_builds_passes_lintian_installs_into_a_throwaway_root_and_purges() {
    need("dpkg-deb", "dpkg-dev");
    need("lintian", "lintian");
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-deb.sh");
    let out = run(Command::new(&script).args(["--binary", understudy_bin(), "--out"]).arg(dir.path()).env("DEB_COMPRESSION", "gzip"));
    let deb = text(&out).lines().last().expect("build-deb.sh prints the .deb").to_string();
    assert!(deb.ends_with("_amd64.deb") || deb.ends_with(".deb"), "{deb}");

    // What is in it.
    let contents = text(&run(Command::new("dpkg-deb").args(["--contents", &deb])));
    for path in [
        "./usr/bin/understudy",
        "./lib/systemd/system/understudy.service",
        "./etc/understudy/understudy.toml",
        "./usr/share/man/man1/understudy.1.gz",
        "./usr/share/man/man1/understudy-status.1.gz",
        "./usr/share/bash-completion/completions/understudy",
        "./usr/share/zsh/vendor-completions/_understudy",
        "./usr/share/fish/vendor_completions.d/understudy.fish",
        "./usr/share/doc/understudy/copyright",
    ] {
        assert!(contents.lines().any(|l| l.ends_with(path)), "{path} missing from the package:\n{contents}");
    }
    let control = dir.path().join("control");
    run(Command::new("dpkg-deb").args(["--control", &deb]).arg(&control));
    assert_eq!(std::fs::read_to_string(control.join("conffiles")).unwrap().trim(), "/etc/understudy/understudy.toml");
    let fields = std::fs::read_to_string(control.join("control")).unwrap();
    assert!(fields.contains("Depends: libc6"), "shared-library dependencies computed: {fields}");

    // lintian: no errors (warnings are printed for the record).
    let lint = Command::new("lintian").args(["--no-cfg", "--fail-on", "error", &deb]).output().unwrap();
    let report = String::from_utf8_lossy(&lint.stdout).into_owned();
    eprintln!("lintian:\n{report}{}", String::from_utf8_lossy(&lint.stderr));
    assert!(lint.status.success() && !report.lines().any(|l| l.starts_with("E:")), "lintian found errors:\n{report}");

    // Install into a throwaway root: dpkg's own database there, and the accounts files
    // useradd edits.
    let root = dir.path().join("root");
    for d in ["etc", "var/lib/dpkg/info", "var/lib/dpkg/updates", "usr/sbin"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(root.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    std::fs::write(root.join("etc/gshadow"), "root:*::\n").unwrap();
    let dpkg = |args: &[&str]| {
        let mut c = Command::new("dpkg");
        c.arg(format!("--root={}", root.display())).args(["--force-script-chrootless", "--force-depends", "--log=/dev/null"]).args(args);
        run(&mut c)
    };
    let passwd_before = std::fs::read_to_string("/etc/passwd").unwrap();
    dpkg(&["--install", &deb]);
    assert_eq!(std::fs::read_to_string("/etc/passwd").unwrap(), passwd_before, "this system's users are untouched");
    let status = text(&dpkg(&["--status", "understudy"]));
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert!(status.contains("Conffiles:") && status.contains("/etc/understudy/understudy.toml"), "{status}");

    // The system user, its data directory, and a config only root and the daemon can read.
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let user = passwd.lines().find(|l| l.starts_with("understudy:")).unwrap_or_else(|| panic!("no understudy user in {passwd}"));
    let f: Vec<&str> = user.split(':').collect();
    let (uid, gid): (u32, u32) = (f[2].parse().unwrap(), f[3].parse().unwrap());
    assert!(uid > 0 && uid < 1000, "a system user: {user}");
    assert_eq!((f[5], f[6]), ("/var/lib/understudy", "/usr/sbin/nologin"), "{user}");
    let data = std::fs::metadata(root.join("var/lib/understudy")).unwrap();
    assert!(data.is_dir());
    assert_eq!((data.uid(), data.gid(), data.permissions().mode() & 0o777), (uid, gid, 0o750));
    let conf = root.join("etc/understudy/understudy.toml");
    let meta = std::fs::metadata(&conf).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.permissions().mode() & 0o777), (0, gid, 0o640));
    let toml = std::fs::read_to_string(&conf).unwrap();
    assert!(toml.contains("data_dir = \"/var/lib/understudy\""), "{toml}");

    // The installed binary runs and accepts the installed config; the unit points at it.
    let bin = root.join("usr/bin/understudy");
    assert!(text(&run(Command::new(&bin).args(["check-config"]).arg(&conf))).contains("OK"));
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/understudy.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/understudy run -c /etc/understudy/understudy.toml"), "{unit}");
    assert!(unit.contains("User=understudy") && !unit.contains("DynamicUser"), "the package's static user: {unit}");
    need("systemd-analyze", "systemd");
    // Verified on this system (the throwaway root has no systemd), with the binary under test.
    let copy = dir.path().join("understudy.service");
    std::fs::write(&copy, unit.replace("/usr/bin/understudy", understudy_bin())).unwrap();
    let verify = Command::new("systemd-analyze").arg("verify").arg(&copy).output().unwrap();
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "systemd-analyze verify: {complaints}");
    let ours: Vec<&str> = complaints.lines().filter(|l| l.contains("understudy.service")).collect();
    assert!(ours.is_empty(), "systemd-analyze warnings: {ours:#?}");

    // The daemon as the unit runs it: as the package's user, with the installed config's
    // permissions (readable through its group), writing into its data directory.
    let (uid_s, gid_s) = (uid.to_string(), gid.to_string());
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let api = api_addr();
    let test_conf = root.join("etc/understudy/test.toml");
    let text_conf = toml
        .replace("data_dir = \"/var/lib/understudy\"", &format!("data_dir = \"{}\"", root.join("var/lib/understudy").display()))
        .replace("api = \"127.0.0.1:9190\"", &format!("api = \"{api}\""));
    std::fs::write(&test_conf, text_conf).unwrap();
    std::os::unix::fs::chown(&test_conf, Some(0), Some(gid)).unwrap();
    std::fs::set_permissions(&test_conf, std::fs::Permissions::from_mode(0o640)).unwrap();
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut child = Command::new("setpriv")
        .args(["--reuid", &uid_s, "--regid", &gid_s, "--clear-groups", "--"])
        .arg(&bin)
        .args(["run", "-c"])
        .arg(&test_conf)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start the installed daemon as its user");
    let healthy = {
        let url = format!("http://{api}/healthz");
        let c = http();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let mut ok = false;
        while std::time::Instant::now() < deadline && !ok {
            ok = c.get(&url).send().await.is_ok_and(|r| r.status().as_u16() == 200 || r.status().as_u16() == 503);
            if !ok {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        ok
    };
    let token = root.join("var/lib/understudy/api-token");
    let token_meta = std::fs::metadata(&token);
    // SAFETY: kill(2) on the child we started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap();
    assert!(healthy, "the installed daemon answered on {api}: {log}");
    let token_meta = token_meta.unwrap_or_else(|e| panic!("no api-token in the data directory: {e}\n{log}"));
    assert_eq!(token_meta.uid(), uid, "the daemon's files belong to its user");

    // Purge: files, config and data are gone; the user stays (Debian's rule for system users).
    dpkg(&["--purge", "understudy"]);
    for gone in ["usr/bin/understudy", "etc/understudy/understudy.toml", "var/lib/understudy", "lib/systemd/system/understudy.service"] {
        assert!(!root.join(gone).exists(), "{gone} left after purge");
    }
    assert!(std::fs::read_to_string(root.join("etc/passwd")).unwrap().contains("understudy:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_commands_speak_json_and_colour_only_a_terminal_without_no_color() {
    let (dir, port, mut primary, _backup) = two_nginx().await;
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1h", "");
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(15)).await;
    primary.kill();
    d.wait_active("www", "backup", Duration::from_secs(15)).await;

    // --output json (and its short form --json) on every read command: one JSON document.
    for args in [
        &["status", "--output", "json"][..],
        &["status", "www", "-o", "json"],
        &["status", "--json"],
        &["incidents", "--output", "json"],
        &["incidents", "--output", "json", "show", "1"],
        &["drills", "--output", "json"],
        &["notify", "--output", "json", "status"],
    ] {
        let out = d.cli(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {}", text(&out)));
        assert!(!v.is_null(), "{args:?}");
    }
    let events = d.cli(&["events", "--output", "json"]);
    let lines: Vec<Value> = text(&events).lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    assert!(lines.iter().any(|e| e["event"]["kind"] == "switched"), "{lines:?}");
    let good = run(Command::new(understudy_bin()).args(["check-config", "--output", "json"]).arg(&d.config));
    let v: Value = serde_json::from_slice(&good.stdout).unwrap();
    assert_eq!((v["ok"].as_bool(), v["services"].as_u64(), v["targets"].as_u64()), (Some(true), Some(1), Some(2)));
    let bad_file = dir.path().join("bad.toml");
    std::fs::write(&bad_file, "[daemon]\nnot_a_key = 1\n").unwrap();
    let bad = Command::new(understudy_bin()).args(["check-config", "--output", "json"]).arg(&bad_file).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["errors"][0].as_str().unwrap().contains("not_a_key"), "{v}");

    // The Grafana dashboard asks only for metrics this daemon exports.
    let exposition = reqwest::get(format!("{}/metrics", d.api)).await.unwrap().text().await.unwrap();
    let mut exported = std::collections::BTreeSet::new();
    for line in exposition.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let mut w = line.split_whitespace();
        let (name, kind) = (w.next().unwrap(), w.next().unwrap_or(""));
        match kind {
            "counter" => exported.extend([format!("{name}_total")]),
            "histogram" => exported.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}"))),
            _ => exported.extend([name.to_string()]),
        }
    }
    let grafana: Value = serde_json::from_str(&std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/grafana-understudy.json")).unwrap()).unwrap();
    let mut exprs: Vec<String> = grafana["panels"].as_array().unwrap().iter().flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string())).collect();
    exprs.push(grafana["templating"]["list"][1]["definition"].as_str().unwrap().to_string());
    // A family with no series yet (no notification channel here) is not in the exposition:
    // then it must at least be registered under that name.
    let registered = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics.rs")).unwrap();
    let mut asked = 0;
    for expr in &exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("understudy_")) {
            let base = ["_total", "_bucket", "_sum", "_count"].iter().find_map(|s| word.strip_suffix(s)).unwrap_or(word);
            let known = exported.contains(word) || (!exposition.contains(&format!("# TYPE {base} ")) && registered.contains(&format!("\"{base}\"")));
            assert!(known, "the Grafana dashboard asks for {word}, which /metrics does not export: {expr}");
            asked += 1;
        }
    }
    assert!(asked >= 15, "{asked} metric references checked");

    // Colours: a pipe gets plain text; a terminal (script(1) gives the command a pty) gets
    // colour, unless NO_COLOR is set.
    let piped = d.cli(&["status"]);
    assert!(!text(&piped).contains('\u{1b}') && text(&piped).contains("down"), "{}", text(&piped));
    need("script", "bsdutils");
    let on_tty = |no_color: Option<&str>| {
        let cmdline = format!("{} status --api {} -c {}", understudy_bin(), d.api, d.config.display());
        let mut c = Command::new("script");
        c.args(["-qec", &cmdline, "/dev/null"]).env_remove("NO_COLOR").env("TERM", "xterm");
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        text(&run(&mut c))
    };
    let coloured = on_tty(None);
    assert!(coloured.contains("\u{1b}[31mdown"), "the down target in red on a terminal: {coloured:?}");
    let plain = on_tty(Some("1"));
    assert!(!plain.contains('\u{1b}') && plain.contains("down"), "NO_COLOR=1: {plain:?}");

    // Completions and the man page come from the same definition.
    let bash = text(&run(Command::new(understudy_bin()).args(["completions", "bash"])));
    assert!(bash.contains("check-config") && bash.contains("--output"));
    let check = dir.path().join("understudy.bash");
    std::fs::write(&check, &bash).unwrap();
    run(Command::new("bash").arg("-n").arg(&check));
    for shell in ["zsh", "fish"] {
        assert!(text(&run(Command::new(understudy_bin()).args(["completions", shell]))).contains("switchover"), "{shell}");
    }
    let bad_shell = Command::new(understudy_bin()).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(bad_shell.status.code(), Some(2), "an unknown shell is a usage error");
    let man = text(&run(Command::new(understudy_bin()).arg("man")));
    assert!(man.contains(".TH understudy 1") && man.contains("NO_COLOR") && man.contains("EXIT STATUS"));
}
