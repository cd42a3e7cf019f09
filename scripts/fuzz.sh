#!/usr/bin/env bash
# Run every fuzz target in fuzz/ for SECONDS each (default 300) and fail on any crash.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Not part of CI's test command (CI only builds the targets, from scripts/test.sh). Uses the
# nightly toolchain when one is installed (with AddressSanitizer); otherwise stable with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags) and no sanitizer. Installs cargo-fuzz when it
# is missing. Seeds come from fuzz/seeds/<target>/ (committed, taken from the test suite's
# inputs) plus examples/*.toml for the config target; new inputs go to fuzz/corpus/<target>/
# (ignored by git, kept between runs); crashes go to fuzz/artifacts/<target>/. Prints the
# executions per target at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-300}"
shift || true
case "$secs" in '' | *[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;; esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
if rustup run nightly rustc --version >/dev/null 2>&1; then
    toolchain=(+nightly)
    sanitizer=address
else
    echo "no nightly toolchain: using stable with RUSTC_BOOTSTRAP=1 and no sanitizer" >&2
    toolchain=()
    sanitizer=none
    export RUSTC_BOOTSTRAP=1
fi
export CARGO_TARGET_DIR="$PWD/fuzz/target"

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list --fuzz-dir fuzz)
fi

# The config target also starts from every example config.
mkdir -p fuzz/corpus/config
cp examples/*.toml fuzz/corpus/config/

cargo "${toolchain[@]}" fuzz build --fuzz-dir fuzz --sanitizer "$sanitizer" >&2

summary=()
failed=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t" "fuzz/artifacts/$t"
    args=(-max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048)
    [ -f "fuzz/dict/$t.dict" ] && args+=(-dict="fuzz/dict/$t.dict")
    log="fuzz/artifacts/$t/last-run.log"
    echo "== $t: ${secs}s" >&2
    if cargo "${toolchain[@]}" fuzz run --fuzz-dir fuzz --sanitizer "$sanitizer" "$t" \
        "fuzz/corpus/$t" "fuzz/seeds/$t" -- "${args[@]}" >"$log" 2>&1; then
        result=ok
    else
        result="CRASH (see $log and fuzz/artifacts/$t/)"
        failed=1
        tail -n 40 "$log" >&2
    fi
    execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -n 1 || true)
    summary+=("$(printf '%-22s %12s executions  %s' "$t" "${execs:-?}" "$result")")
done

printf '%s\n' "${summary[@]}"
exit "$failed"
