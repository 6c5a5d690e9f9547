#!/usr/bin/env bash
# What pruning costs in accuracy on the real yolov5n: coco128 COCO AP and val.py mAP@.5:.95 of
# the dense model, the pruning guide's per-layer unstructured 30%, shears' other unstructured
# methods (per-layer 10%, global magnitude 30% and 50%, 2:4 with the stem conv left dense) and
# channel pruning at 0.1, 0.2 and 0.3, all validated in one `shears val` run (ONNX Runtime,
# --iou 0.65 as the guide).
#
# usage: benches/pruning_accuracy.sh   (after cargo build --release and scripts/setup-venv.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SHEARS_BIN:-target/release/shears}
fixtures=${SHEARS_FIXTURES:-../shared/fixtures}
out=target/bench/accuracy
mkdir -p "$out"
dense="$fixtures/models/yolov5n_op12.onnx"
models=("$dense")
prune() { # NAME ARGS...: prunes the dense model into $out/NAME.onnx and queues it for validation
  local name=$1
  shift
  "$bin" -q prune "$dense" "$@" --no-zstd -o "$out/$name.onnx"
  models+=("$out/$name.onnx")
}
prune guide-layer-0.3 --amount 0.3
prune layer-0.1 --amount 0.1
prune global-0.3 --scope global --amount 0.3
prune global-0.5 --scope global --amount 0.5
prune 2of4 --pattern 2:4 --exclude '^/model\.0/'
for amount in 0.1 0.2 0.3; do
  prune "channel-$amount" --method channel --amount "$amount"
done
"$bin" -q val "${models[@]}" --data "$fixtures/coco/coco128.yaml" --data-root "$fixtures/coco/coco128" \
  --backend ort --iou 0.65 --json "$out/report.json" | sed -n '/^ *yolov5n_op12 *guide/,$p'
