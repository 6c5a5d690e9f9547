#!/usr/bin/env bash
# One distillation training step (teacher forward, student forward + loss, backward, Adam update)
# of yolov5n, PyTorch on the CPU against the Rust autodiff candidates (candle, burn on its ndarray
# and flex CPU backends), run in turns in one invocation so that the ratios share the machine's
# load. Prints a table (benches/train_step/summarize.py, which also re-reads a saved results file):
# median seconds per step and the median of the per-round ratios to PyTorch, the fastest step and
# its ratio, the phases, and peak RSS (from /usr/bin/time -v).
#
# usage: benches/train_step_peers.sh [ROUNDS] [IMGSZ] [BATCH] [STEPS] [WARMUP]
#        defaults 3 640 1 3 1; PEERS="pytorch candle burn-ndarray burn-flex" picks the peers
#        (also pytorch-passive: PyTorch with OMP_WAIT_POLICY=PASSIVE, see docs/autodiff-choice.md),
#        THREADS=2 the thread count, STEP_TIMEOUT_S=1200 the limit on one peer's run,
#        FEATURES=x86-v4 builds the bench crate with gemm's AVX-512 kernels (binary kept apart).
# Needs scripts/setup-venv.sh's .venv (onnxruntime, for the graph export and forward check);
# makes target/bench-venv (torch) with benches/setup-bench-venv.sh and builds the standalone
# bench crate benches/train_step (its own workspace and target dir; heavy the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
imgsz=${2:-640}
batch=${3:-1}
steps=${4:-3}
warmup=${5:-1}
threads=${THREADS:-2}
peers=${PEERS:-pytorch candle burn-ndarray burn-flex}
limit=${STEP_TIMEOUT_S:-1200}
data=target/train-step
teacher=${TEACHER:-/work/shared/fixtures/models/yolov5n_op12.onnx}
student=${STUDENT:-/work/shared/fixtures/models/yolov5n_pruned30_op12.onnx}

scripts/setup-venv.sh
benches/setup-bench-venv.sh
if [ ! -f "$data/graph.json" ] || [ "$teacher" -nt "$data/graph.json" ] || [ "$student" -nt "$data/graph.json" ]; then
  .venv/bin/python benches/train_step/export_graph.py --teacher "$teacher" --student "$student" --out "$data"
fi
features=${FEATURES:-}
nice -n 5 cargo build --release --quiet --manifest-path benches/train_step/Cargo.toml ${features:+--features "$features"}
bin=benches/train_step/target/release/train_step_bench
if [ -n "$features" ]; then
  cp "$bin" "$bin-${features//[^a-z0-9]/_}"
  bin=$bin-${features//[^a-z0-9]/_}
fi

export RAYON_NUM_THREADS=$threads MATMUL_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
results=$data/results-$(date -u +%Y%m%dT%H%M%SZ).jsonl
: > "$results"
echo "results: $results ($rounds rounds of: $peers; ${imgsz}px batch $batch, $warmup warm-up + $steps timed steps each; crate features: ${features:-none})" >&2
for r in $(seq 1 "$rounds"); do
  for p in $peers; do
    check=()
    [ "$r" = 1 ] || check=(--no-check)
    if [ "$p" = pytorch ] || [ "$p" = pytorch-passive ]; then
      [ "$r" = 1 ] && check=(--ref "$data") || check=()
      policy=()
      [ "$p" = pytorch-passive ] && policy=(env OMP_WAIT_POLICY=PASSIVE)
      cmd=("${policy[@]}" target/bench-venv/bin/python benches/peer_train_step.py --teacher "$teacher" --student "$student"
           --threads "$threads" "${check[@]}")
    else
      cmd=("$bin" "$p" --data "$data" "${check[@]}")
    fi
    load=$(cut -d' ' -f1 /proc/loadavg)
    tv=$(mktemp)
    t0=$(date +%s.%N)
    if json=$(timeout "$limit" /usr/bin/time -v -o "$tv" "${cmd[@]}" --imgsz "$imgsz" --batch "$batch" \
                --steps "$steps" --warmup "$warmup" 2>/dev/null | tail -1); then :; else json=""; fi
    wall=$(echo "$(date +%s.%N) - $t0" | bc)
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tv" 2>/dev/null || true)
    rm -f "$tv"
    [ -n "$json" ] || json='{"failed": true}'
    echo "{\"round\": $r, \"peer\": \"$p\", \"load1_before\": $load, \"wall_s\": $wall, \"time_v_max_rss_kb\": ${rss:-null}, \"result\": $json}" >> "$results"
    echo "round $r $p: load $load, $(echo "$json" | cut -c1-160)" >&2
  done
done

target/bench-venv/bin/python benches/train_step/summarize.py "$results"
