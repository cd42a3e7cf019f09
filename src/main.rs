//! The `understudy` binary: parse arguments, run the command, map the result to an exit code.
//! Everything else lives in the library (`understudy::cli`).

use std::process::ExitCode;

use clap::Parser;

understudy::global_allocator!();

fn main() -> ExitCode {
    // A panic in any task ends the process (status 101) rather than leaving it half-alive.
    understudy::cli::install_panic_hook();
    let cli = understudy::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(understudy::cli::run(cli))
}
