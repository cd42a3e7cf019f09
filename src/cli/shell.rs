//! `understudy completions SHELL` and `understudy man`: generated from the clap definition in
//! `cli/mod.rs` at run time, so they always match the binary they come with. The Debian
//! package (`scripts/build-deb.sh`) installs their output.
//!
//! It must not: talk to a daemon, read a config file, or print anything but the generated text
//! on standard output (it is redirected into files).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;

use super::Cli;

pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "understudy", &mut out);
    write_stdout(&out)
}

/// What the generated page lacks: where things are, the environment, exit codes.
const EXTRA: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
success
.TP
\fB1\fR
the command failed: daemon unreachable, request refused, a drill missed its targets, or the daemon failed to start
.TP
\fB2\fR
bad usage, or an invalid config file (\fBcheck\-config\fR, \fBrun\fR)
.TP
\fB101\fR
a panic in any thread: the daemon exits so that its supervisor starts a fresh one
.SH ENVIRONMENT
.TP
\fBUNDERSTUDY_API\fR
API base URL of the daemon (as \fB\-\-api\fR)
.TP
\fBUNDERSTUDY_CONFIG\fR
config file to read the API address, token and certificate from (as \fB\-\-config\fR)
.TP
\fBUNDERSTUDY_TOKEN\fR, \fBUNDERSTUDY_TOKEN_FILE\fR
the bearer token for mutating commands, or the file holding it
.TP
\fBUNDERSTUDY_LOG\fR
log filter of the daemon, e.g. \fBinfo\fR or \fBunderstudy=debug\fR
.TP
\fBNO_COLOR\fR
when set and not empty, no colours in any output; colours are only ever used on a terminal
.SH FILES
.TP
\fI/etc/understudy/understudy.toml\fR
the config file (found by the CLI when \fB./understudy.toml\fR does not exist)
.TP
\fI/var/lib/understudy/\fR
the data directory of the packaged service: event log, overrides, \fBapi\-token\fR, drill reports
.TP
\fI/lib/systemd/system/understudy.service\fR
the systemd unit
.SH "SEE ALSO"
The dashboard is served by the daemon at the API address, e.g. \fIhttp://127.0.0.1:9190/\fR.
"#;

pub fn man(dir: Option<&Path>) -> ExitCode {
    let cmd = Cli::command();
    if let Some(dir) = dir {
        let result = std::fs::create_dir_all(dir).and_then(|_| clap_mangen::generate_to(cmd.clone(), dir)).and_then(|_| {
            // The top page again, with the sections clap does not know about.
            let mut page = Vec::new();
            render_main(cmd, &mut page)?;
            std::fs::write(dir.join("understudy.1"), page)
        });
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: writing manual pages into {}: {e}", dir.display());
                ExitCode::from(1)
            }
        };
    }
    let mut page = Vec::new();
    match render_main(cmd, &mut page) {
        Ok(()) => write_stdout(&page),
        Err(e) => {
            eprintln!("error: rendering the manual page: {e}");
            ExitCode::from(1)
        }
    }
}

fn render_main(cmd: clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd);
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    man.render_subcommands_section(out)?;
    out.extend_from_slice(EXTRA.as_bytes());
    man.render_version_section(out)?;
    // Each render call repeats the same two-line preamble; once at the top is enough.
    const PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";
    let text = String::from_utf8_lossy(out).into_owned();
    if let Some(first) = text.find(PREAMBLE) {
        let (head, tail) = text.split_at(first + PREAMBLE.len());
        *out = format!("{head}{}", tail.replace(PREAMBLE, "")).into_bytes();
    }
    Ok(())
}

fn write_stdout(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|_| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`| head`) is not worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing to standard output: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_man_page_names_every_command_and_the_extra_sections() {
        let mut page = Vec::new();
        render_main(Cli::command(), &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.starts_with(".ie") || page.contains(".TH understudy 1"), "{}", &page[..200.min(page.len())]);
        for cmd in Cli::command().get_subcommands() {
            assert!(page.contains(&cmd.get_name().replace('-', "\\-")), "{} missing from the man page", cmd.get_name());
        }
        for section in ["EXIT STATUS", "ENVIRONMENT", "FILES", "NO_COLOR"] {
            assert!(page.contains(section), "{section}");
        }
    }

    #[test]
    fn completions_know_the_subcommands_and_output_flag() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "understudy", &mut out);
            let text = String::from_utf8(out).unwrap();
            for word in ["check-config", "switchover", "completions", "--output"] {
                assert!(text.contains(word), "{shell:?} completion lacks {word}");
            }
        }
    }
}
