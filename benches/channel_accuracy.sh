#!/usr/bin/env bash
# Accuracy baseline of channel pruning on the real yolov5n: coco128 COCO AP and val.py
# mAP@.5:.95 after channel pruning at 0.1, 0.2 and 0.3, next to the pruning guide's unstructured
# 30%, all validated in one `shears val` run (ONNX Runtime, --iou 0.65 as the guide).
#
# usage: benches/channel_accuracy.sh   (after cargo build --release and scripts/setup-venv.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SHEARS_BIN:-target/release/shears}
fixtures=${SHEARS_FIXTURES:-../shared/fixtures}
out=target/bench/accuracy
mkdir -p "$out"
dense="$fixtures/models/yolov5n_op12.onnx"
"$bin" -q prune "$dense" --amount 0.3 --no-zstd -o "$out/guide-l1-0.3.onnx"
models=("$dense" "$out/guide-l1-0.3.onnx")
for amount in 0.1 0.2 0.3; do
  "$bin" -q prune "$dense" --method channel --amount "$amount" --no-zstd -o "$out/channel-$amount.onnx"
  models+=("$out/channel-$amount.onnx")
done
"$bin" -q val "${models[@]}" --data "$fixtures/coco/coco128.yaml" --data-root "$fixtures/coco/coco128" \
  --backend ort --iou 0.65 --json "$out/report.json" | sed -n '/^ *yolov5n_op12 *guide/,$p'
