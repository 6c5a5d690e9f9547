#!/usr/bin/env bash
# Runs each fuzz target for a fixed time, one after the other, and prints libFuzzer's totals.
#
# usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]   (default: 60 s, every target)
# Needs cargo-fuzz (`cargo install cargo-fuzz`). libFuzzer needs nightly compiler flags; on a
# stable toolchain RUSTC_BOOTSTRAP=1 lets stable rustc accept them. Findings are written to
# fuzz/artifacts/TARGET/; keep each as a regression test.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(model_check jpeg_decode yolo_labels pipeline_yaml)
fi
export RUSTC_BOOTSTRAP=1
# No sanitizer: the crate is safe Rust apart from two small unsafe blocks; what libFuzzer finds
# here are panics (overflow checks and debug assertions are on), hangs and memory blow-ups.
flags=(--sanitizer none --debug-assertions)
cargo fuzz build "${flags[@]}"
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    seeds=()
    [[ -d "seeds/$target" ]] && seeds=("seeds/$target")
    echo "== $target: $seconds s"
    log=$(mktemp)
    status=0
    cargo fuzz run "${flags[@]}" "$target" "corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
        -artifact_prefix="artifacts/$target/" -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb|^Done|ERROR|panicked|deadly signal" "$log" || true
    echo "findings: $(find "artifacts/$target" -type f | wc -l) file(s) in fuzz/artifacts/$target (exit $status)"
    rm -f "$log"
done
