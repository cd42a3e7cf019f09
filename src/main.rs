//! The `understudy` binary: parse arguments, run the command, map the result to an exit code.
//! Everything else lives in the library (`understudy::cli`).

use std::process::ExitCode;

use clap::Parser;

/// jemalloc, with its memory on transparent huge pages. The daemon's per-target state (health,
/// recent samples, metric series, probe tasks) is touched once per check across a heap of tens of
/// MiB; on 4 KiB pages nearly every check missed the TLB, and on a virtual machine (nested page
/// tables) those misses were most of the core loop's time: 11-12 us per result with glibc's
/// malloc against 3 us on huge pages, 10,000 TCP targets (issue 17, bench/README-probes.md).
/// `thp:always` asks for huge pages with `madvise`, so it works with the kernel's default
/// `madvise` THP mode and does nothing where THP is off.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's compiled-in options (a C `const char *malloc_conf`; `MALLOC_CONF` in the
/// environment still overrides them).
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8; 31] = b"thp:always,metadata_thp:always\0";

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
