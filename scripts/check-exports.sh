#!/usr/bin/env bash
# shears on the official YOLOv5 exports of the fixture yolov5n at every opset from 12 to 17,
# plain and simplified (scripts/export_yolov5.py): each must round-trip byte for byte, give the
# same channel groups as the first, prune by channels with --verify, pass onnx's full checker and
# run in ONNX Runtime like the fixture export and like its masked model; the script stops at the
# first that does not. Last, one `shears val` of all of them on coco128 prints their accuracy
# side by side (official: mAP@.5:.95 0.3483, COCO AP 0.3496 with --iou 0.65).
#
# usage: scripts/check-exports.sh   (after cargo build --release and scripts/setup-venv.sh;
#        EXPORT_PYTHON: a Python with torch, yolov5==7.0.14 and onnxsim, see export_yolov5.py)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SHEARS_BIN:-target/release/shears}
fixtures=${SHEARS_FIXTURES:-../shared/fixtures}
export_python=${EXPORT_PYTHON:-target/bench-venv/bin/python}
out=target/exports
mkdir -p "$out"
models=()
first_groups=
for opset in 12 13 14 15 16 17; do
  for simplify in 0 1; do
    name="$out/yolov5n_op${opset}_sim${simplify}"
    "$export_python" scripts/export_yolov5.py "$fixtures/models/yolov5n.pt" "$opset" "$simplify" \
      "$name.onnx" >"$name.export.log" 2>&1
    "$bin" -q check "$name.onnx" >/dev/null # exit code 1 unless byte-identical
    groups=$("$bin" inspect "$name.onnx" --groups | grep "channel groups:")
    first_groups=${first_groups:-$groups}
    [ "$groups" = "$first_groups" ] || { echo "$name: $groups, not $first_groups" >&2; exit 1; }
    "$bin" prune "$name.onnx" --method channel --amount 0.3 --no-zstd \
      -o "$name-ch0.3.onnx" --emit-masked "$name-masked.onnx" >"$name.prune.log" 2>&1
    echo "$(basename "$name"): round trip byte-identical; $groups; channel 0.3 verified"
    models+=("$name.onnx")
  done
done
# tests' onnxruntime oracle: onnx's full checker on every model, then each dense export against
# the fixture export and each pruned model against its masked model
pairs=()
for dense in "${models[@]}"; do
  pairs+=("$fixtures/models/yolov5n_op12.onnx" "$dense")
  pairs+=("${dense%.onnx}-masked.onnx" "${dense%.onnx}-ch0.3.onnx")
done
.venv/bin/python tests/oracles/compare_pairs.py "${pairs[@]}" > "$out/compare.json"
.venv/bin/python - "$out/compare.json" "${models[@]}" <<'PY'
import json
import sys

report = json.load(open(sys.argv[1]))
for dense, vs_fixture, vs_masked in zip(sys.argv[2:], report[0::2], report[1::2]):
    absolute = vs_fixture["max_abs_diff"]
    relative = vs_masked["max_abs_diff"] / vs_masked["max_abs"]
    assert absolute < 1e-2 and relative < 1e-4, (dense, absolute, relative)
    print(f"{dense}: ORT max |diff| {absolute:.1e} against the fixture export; pruned against "
          f"masked {relative:.1e} relative; all pass onnx full_check")
PY
"$bin" -q val "${models[@]}" --data "$fixtures/coco/coco128.yaml" --data-root "$fixtures/coco/coco128" \
  --backend ort --iou 0.65 --json "$out/val.json" | sed -n '/^  *yolov5n_op12_sim0  /,$p'
