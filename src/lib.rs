//! understudy: automatic failover for web services.
//!
//! # Layout
//! Data flows one way (see ARCHITECTURE.md):
//! `probe` (I/O) -> `health` (pure) -> `decision` (pure) -> `actuator` (I/O), with every
//! transition recorded as an `events::Event` in a durable log before it is announced.
//! `daemon` wires these together; `api` serves the JSON API and metrics; `cli` is the command
//! line, which talks to a running daemon through the API.

pub mod actuator;
pub mod agent;
pub mod canary;
pub mod config;
pub mod coordinator;
pub mod clock;
pub mod crclog;
pub mod crypto;
pub mod decision;
pub mod pg;
pub mod dns;
pub mod probe;
pub mod health;
pub mod events;
pub mod process;
pub mod retry;
pub mod service;
pub mod api;
pub mod daemon;
pub mod metrics;
pub mod notify;
pub mod cli;
pub mod drill;
pub mod provider;
#[cfg(test)]
mod layers;
pub mod lb;
pub mod vrrp;

/// The allocator of every understudy executable (the binary, and the benchmarks so that they
/// measure what ships): jemalloc, with its memory on transparent huge pages. The daemon's
/// per-target state (health, recent samples, metric series, probe tasks) is touched once per
/// check across a heap of tens of MiB; on 4 KiB pages nearly every check missed the TLB, and on
/// a virtual machine (nested page tables) those misses were most of the core loop's time: 11-12
/// us per result with glibc's malloc against 2-3 us on huge pages at 10,000 TCP targets (issue
/// 17, bench/README-probes.md). `thp:always` asks for huge pages with `madvise`, so it works
/// with the kernel's default `madvise` THP mode and changes nothing where THP is off.
/// `_RJEM_MALLOC_CONF` in the environment still overrides it. Expand it once, at the root of an
/// executable crate: `understudy::global_allocator!();`.
#[macro_export]
macro_rules! global_allocator {
    () => {
        #[cfg(all(target_os = "linux", not(target_env = "musl")))]
        #[global_allocator]
        static ALLOCATOR: $crate::__jemalloc::Jemalloc = $crate::__jemalloc::Jemalloc;

        /// jemalloc's compiled-in options (C's `const char *malloc_conf`).
        #[cfg(all(target_os = "linux", not(target_env = "musl")))]
        #[allow(non_upper_case_globals)]
        #[unsafe(export_name = "_rjem_malloc_conf")]
        pub static malloc_conf: &[u8; 31] = b"thp:always,metadata_thp:always\0";
    };
}

#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[doc(hidden)]
pub use tikv_jemallocator as __jemalloc;
