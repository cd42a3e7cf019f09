#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what the tests need, then runs
# every unit, property and integration test. This is the command README.md and .ci/run use.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-test-deps.sh
# Many test processes open sockets and spawn peers at once.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
status=0
cargo test --locked --no-fail-fast "$@" || status=$?
# `cargo test` never compiles the benchmarks (benches/, harness = false): build them without
# running them, so a change that breaks one fails here. (`cargo test --benches` would run them.)
cargo build --benches --locked || status=$?
# The fuzz targets must keep compiling: build them on stable (no cargo-fuzz, no sanitizer;
# scripts/fuzz.sh runs them). Not --locked: fuzz/Cargo.lock is its own workspace's lock and
# follows the main crate's dependencies (cargo adds what a new dependency needs, and changes
# nothing else). It shares target/ with the main build, which already holds most dependencies.
cargo build --manifest-path fuzz/Cargo.toml --target-dir target || status=$?
exit "$status"
