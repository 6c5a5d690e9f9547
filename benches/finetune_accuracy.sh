#!/usr/bin/env bash
# What fine-tuning buys on the real yolov5n (issue 19's table): each pruning without recovery,
# with `--recover obs` (calibrated on coco_extra_train), and with OBS then `shears finetune` by
# distillation from the dense model on the training images (coco_extra_train and
# coco/unlabeled_pool, 292 images, none in coco128), all validated on coco128 in one `shears val`
# run (ONNX Runtime, --iou 0.65). Prints a Markdown table of COCO AP with each step's wall time,
# and keeps the models, the fine-tuning reports and val's JSON in target/bench/finetune.
#
# usage: benches/finetune_accuracy.sh [ROW...]   rows: global30 global50 2of4 macs90 macs80 macs60
#        (default all); FINETUNE_ARGS adds flags to every `shears finetune` (default schedule
#        otherwise). After cargo build --release and scripts/setup-venv.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SHEARS_BIN:-target/release/shears}
fixtures=${SHEARS_FIXTURES:-../shared/fixtures}
out=target/bench/finetune
mkdir -p "$out"
dense="$fixtures/models/yolov5n_op12.onnx"
calib=(--calib "$fixtures/coco/coco_extra_train.yaml" --calib-root "$fixtures/coco/coco_extra_train")
train=(--images "$fixtures/coco/coco_extra_train/images" --images "$fixtures/coco/unlabeled_pool/images")
read -ra extra <<< "${FINETUNE_ARGS:-}"
declare -A rows=(
  [global30]="unstructured 30%, global||--scope global --amount 0.3"
  [global50]="unstructured 50%, global|>= 0.33|--scope global --amount 0.5"
  [2of4]="2:4, every Conv but the stem|>= 0.30|--pattern 2:4 --exclude ^/model\.0/"
  [macs90]="channel, at most 0.9 of the MACs||--method channel --target-macs 0.9"
  [macs80]="channel, at most 0.8 of the MACs|>= 0.31|--method channel --target-macs 0.8"
  [macs60]="channel, at most 0.6 of the MACs|>= 0.25|--method channel --target-macs 0.6"
)
order=(global30 global50 2of4 macs90 macs80 macs60)
[ $# -gt 0 ] && order=("$@")
models=("$dense")
names=(dense)
times=()
timed() { # NAME COMMAND...: runs the command, records its wall seconds under NAME
  local name=$1 start
  shift
  start=$(date +%s.%N)
  "$@" > "$out/$name.log"
  times+=("$name=$(echo "$(date +%s.%N) - $start" | bc)")
}
for name in "${order[@]}"; do
  IFS='|' read -r _ _ args <<< "${rows[$name]}"
  read -ra args <<< "$args"
  if [[ ${args[*]} != *"--target-macs"* ]]; then
    timed "$name" "$bin" -q prune "$dense" "${args[@]}" --no-zstd -o "$out/$name.onnx"
    models+=("$out/$name.onnx")
    names+=("$name")
  fi
  timed "$name-obs" "$bin" -q prune "$dense" "${args[@]}" --recover obs "${calib[@]}" --no-zstd \
    -o "$out/$name-obs.onnx"
  timed "$name-obs-ft" "$bin" -q finetune "$out/$name-obs.onnx" --teacher "$dense" "${train[@]}" \
    "${extra[@]}" --json "$out/$name-obs-ft.json" -o "$out/$name-obs-ft.onnx"
  models+=("$out/$name-obs.onnx" "$out/$name-obs-ft.onnx")
  names+=("$name-obs" "$name-obs-ft")
done
"$bin" -q val "${models[@]}" --data "$fixtures/coco/coco128.yaml" --data-root "$fixtures/coco/coco128" \
  --backend ort --iou 0.65 --json "$out/report.json" > /dev/null
ROWS="$(for n in "${order[@]}"; do echo "$n|${rows[$n]}"; done)" NAMES="${names[*]}" \
  TIMES="${times[*]}" python3 - "$out/report.json" <<'PY'
import json, os, sys
report = json.load(open(sys.argv[1]))
ap = {name: m["coco"]["stats"][0] for name, m in zip(os.environ["NAMES"].split(), report["models"])}
seconds = dict(t.split("=") for t in os.environ["TIMES"].split())
def cell(name):
    if name not in ap:
        return "-"
    t = seconds.get(name)
    return f"{ap[name]:.3f}" + (f" ({float(t):.0f} s)" if t else "")
print(f"dense yolov5n: COCO AP {ap['dense']:.3f} (coco128, ORT, iou 0.65)\n")
print("| pruning | target | none | OBS | OBS + fine-tune |")
print("|---|---|---|---|---|")
for row in os.environ["ROWS"].splitlines():
    name, label, target, _ = row.split("|", 3)
    print(f"| {label} | {target} | {cell(name)} | {cell(name + '-obs')} | {cell(name + '-obs-ft')} |")
PY
