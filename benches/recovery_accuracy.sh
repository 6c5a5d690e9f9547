#!/usr/bin/env bash
# What accuracy recovery buys on the real yolov5n (issue 10's table): each pruning without
# recovery, with `--recover stats`, and with `--recover obs` in independent and sequential order,
# calibrated on coco_extra_train and validated on coco128 (the two share no image) in one
# `shears val` run (ONNX Runtime, --iou 0.65). Prints a Markdown table of COCO AP (with each
# prune's wall time, calibration included) and keeps the models and val's JSON in target/bench.
#
# usage: benches/recovery_accuracy.sh [IMAGES]   (default 128 calibration images; after
#        cargo build --release and scripts/setup-venv.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SHEARS_BIN:-target/release/shears}
fixtures=${SHEARS_FIXTURES:-../shared/fixtures}
images=${1:-128}
out=target/bench/recovery-$images
mkdir -p "$out"
dense="$fixtures/models/yolov5n_op12.onnx"
calib=(--calib "$fixtures/coco/coco_extra_train.yaml" --calib-root "$fixtures/coco/coco_extra_train"
  --calib-images "$images")
models=("$dense")
names=(dense)
declare -A seconds
prune() { # NAME ARGS...: prunes the dense model into $out/NAME.onnx and queues it for validation
  local name=$1 start
  shift
  start=$(date +%s.%N)
  "$bin" -q prune "$dense" "$@" --no-zstd -o "$out/$name.onnx" > /dev/null
  seconds[$name]=$(echo "$(date +%s.%N) - $start" | bc)
  models+=("$out/$name.onnx")
  names+=("$name")
}
# row: NAME | label | target | prune arguments | the recoveries that apply (channel pruning
# recovers with obs only, in one order, and --target-macs needs it)
rows=(
  "global30|unstructured 30%, global|>= 0.33|--scope global --amount 0.3|none stats obs obs-sequential"
  "global50|unstructured 50%, global|>= 0.25|--scope global --amount 0.5|none stats obs obs-sequential"
  "2of4|2:4|>= 0.15|--pattern 2:4|none stats obs obs-sequential"
  "channel10|channel, 10% of each group (0.86 of the MACs)||--method channel --amount 0.1|none obs"
  "macs90|channel, at most 0.9 of the dense MACs|>= 0.30|--method channel --target-macs 0.9|obs"
  "macs80|channel, at most 0.8 of the dense MACs|>= 0.24|--method channel --target-macs 0.8|obs"
)
for row in "${rows[@]}"; do
  IFS='|' read -r name _ _ args recoveries <<< "$row"
  read -ra args <<< "$args"
  for recovery in $recoveries; do
    case $recovery in
      none) prune "$name" "${args[@]}" ;;
      stats) prune "$name-stats" "${args[@]}" --recover stats "${calib[@]}" ;;
      obs) prune "$name-obs" "${args[@]}" --recover obs "${calib[@]}" ;;
      obs-sequential) prune "$name-obs-sequential" "${args[@]}" --recover obs \
        --calib-order sequential "${calib[@]}" ;;
    esac
  done
done
"$bin" -q val "${models[@]}" --data "$fixtures/coco/coco128.yaml" --data-root "$fixtures/coco/coco128" \
  --backend ort --iou 0.65 --json "$out/report.json" > /dev/null
times=$(for name in "${!seconds[@]}"; do echo "$name=${seconds[$name]}"; done)
NAMES="${names[*]}" TIMES="$times" ROWS="$(printf '%s\n' "${rows[@]}")" IMAGES=$images \
  python3 - "$out/report.json" <<'PY'
import json, os, sys
report = json.load(open(sys.argv[1]))["models"]
ap = {n: m["coco"]["stats"][0] for n, m in zip(os.environ["NAMES"].split(), report)}
times = dict(line.split("=") for line in os.environ["TIMES"].split())
def cell(name):
    if name not in ap:
        return "-"
    t = f" ({float(times[name]):.0f} s)" if name in times else ""
    return f"{ap[name]:.3f}{t}"
print(f"COCO AP on coco128 (dense {ap['dense']:.3f}); calibration: {os.environ['IMAGES']} "
      "coco_extra_train images; in brackets the prune's wall time\n")
print("| pruning | target | none | stats | obs, independent | obs, sequential |")
print("|---|---|---|---|---|---|")
for row in os.environ["ROWS"].splitlines():
    name, label, target, _, _ = row.split("|")
    cells = [cell(name + suffix) for suffix in ("", "-stats", "-obs", "-obs-sequential")]
    print(f"| {label} | {target} | " + " | ".join(cells) + " |")
PY
