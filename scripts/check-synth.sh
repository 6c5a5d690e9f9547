#!/usr/bin/env bash
# `shears synth` against the official exporter, node for node: each model yaml given (default
# yolov5n and yolov5n6) is built with random weights by yolov5 7.0.14 and exported in the four
# forms shears reproduces (opset 12 and opset 17 simplified by onnxsim, computed Resize sizes and
# constant scales; scripts/export_yolov5.py) at its default size; `shears synth` of the same
# model and form must equal it in everything but the weight values (scripts/compare_layout.py).
# Stops at the first that differs.
#
# usage: scripts/check-synth.sh [MODEL...]   (after cargo build --release; EXPORT_PYTHON: a
#        Python with torch, yolov5==7.0.14 and onnxsim==0.8.1, see export_yolov5.py)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SHEARS_BIN:-target/release/shears}
export_python=${EXPORT_PYTHON:-target/bench-venv/bin/python}
out=target/synth-check
mkdir -p "$out"
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(yolov5n yolov5n6)
for model in "${models[@]}"; do
  case $model in *6) imgsz=1280 ;; *) imgsz=640 ;; esac
  for opset in 12 17; do
    simplify=$([ "$opset" = 17 ] && echo 1 || echo 0)
    for upsample in sizes scales; do
      name="$out/${model}_op${opset}_$upsample"
      "$export_python" scripts/export_yolov5.py "$model.yaml" "$opset" "$simplify" \
        "$name-export.onnx" "$imgsz" "$upsample" >"$name.export.log" 2>&1
      "$bin" -q synth "$model" --opset "$opset" --upsample "$upsample" -o "$name-synth.onnx"
      "$export_python" scripts/compare_layout.py "$name-synth.onnx" "$name-export.onnx"
    done
  done
done
