#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30) and prints how many inputs each ran.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH="${1:-30}"
cargo +nightly fuzz build
for target in $(cargo +nightly fuzz list); do
    mkdir -p "corpus/$target"
    log="$(mktemp)"
    echo "==> $target (${SECONDS_EACH}s)"
    if ! cargo +nightly fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "FAILED: $target (crash input under fuzz/artifacts/$target/)"
        exit 1
    fi
    execs="$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')"
    rate="$(grep -E '^stat::average_exec_per_sec' "$log" | awk '{print $2}')"
    echo "$target: $execs executions ($rate/s)"
    rm -f "$log"
done
