#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 30) each, one after the other,
# over its working corpus (fuzz/corpus/<target>, created) and the committed
# seeds (fuzz/seeds/<target>). Needs a nightly toolchain and cargo-fuzz.
# No sanitizer: every crate is #![forbid(unsafe_code)], so the fuzzers look
# for panics, arithmetic overflow (debug assertions on), hangs and memory
# blow-ups, which need no ASan; without it builds and runs are several
# times faster. A crash leaves its input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-30}"
targets=(frame_decoder envelope roster roster_log secret_key commit_log archive_record audit_export)
cargo +nightly fuzz build -O -a -s none
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== fuzz $t for ${secs}s"
    log="$(mktemp)"
    status=0
    cargo +nightly fuzz run -O -a -s none "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$log"
        rm -f "$log"
        echo "fuzz target $t failed (exit $status); the input is in fuzz/artifacts/$t/"
        exit 1
    fi
    rm -f "$log"
done
