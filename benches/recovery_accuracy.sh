#!/usr/bin/env bash
# What accuracy recovery buys on the real yolov5n: each pruning without recovery, with `stats`
# and with `obs` (independent layers and sequential stages), calibrated on coco_extra_train and
# validated on coco128 (which share no image) in one `shears val` run (ONNX Runtime, --iou 0.65).
# Prints each prune's wall time (calibration included) and the validation table.
#
# usage: benches/recovery_accuracy.sh [IMAGES]   (default 128 calibration images; after
#        cargo build --release and scripts/setup-venv.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SHEARS_BIN:-target/release/shears}
fixtures=${SHEARS_FIXTURES:-../shared/fixtures}
images=${1:-128}
out=target/bench/recovery
mkdir -p "$out"
dense="$fixtures/models/yolov5n_op12.onnx"
calib=(--calib "$fixtures/coco/coco_extra_train.yaml" --calib-root "$fixtures/coco/coco_extra_train"
  --calib-images "$images")
models=("$dense")
prune() { # NAME ARGS...: prunes the dense model into $out/NAME.onnx and queues it for validation
  local name=$1 start
  shift
  start=$(date +%s.%N)
  "$bin" -q prune "$dense" "$@" --no-zstd -o "$out/$name.onnx" > /dev/null
  printf '%-28s %6.1f s\n' "$name" "$(echo "$(date +%s.%N) - $start" | bc)"
  models+=("$out/$name.onnx")
}
prune global-0.3 --scope global --amount 0.3
prune global-0.3-stats --scope global --amount 0.3 --recover stats "${calib[@]}"
prune layer-0.3-obs --amount 0.3 --recover obs "${calib[@]}"
prune layer-0.3-obs-sequential --amount 0.3 --recover obs --calib-order sequential "${calib[@]}"
prune global-0.3-obs --scope global --amount 0.3 --recover obs "${calib[@]}"
prune global-0.5 --scope global --amount 0.5
prune global-0.5-obs --scope global --amount 0.5 --recover obs "${calib[@]}"
prune 2of4 --pattern 2:4
prune 2of4-obs --pattern 2:4 --recover obs "${calib[@]}"
prune channel-0.1 --method channel --amount 0.1
prune channel-macs-0.9-obs --method channel --target-macs 0.9 --recover obs "${calib[@]}"
prune channel-macs-0.8-obs --method channel --target-macs 0.8 --recover obs "${calib[@]}"
"$bin" -q val "${models[@]}" --data "$fixtures/coco/coco128.yaml" --data-root "$fixtures/coco/coco128" \
  --backend ort --iou 0.65 --json "$out/report.json" | sed -n '/^ *yolov5n_op12 *global/,$p'
