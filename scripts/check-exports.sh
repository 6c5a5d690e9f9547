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
.venv/bin/python - "$fixtures/models/yolov5n_op12.onnx" "${models[@]}" <<'PY'
import sys
import numpy as np
import onnx
import onnxruntime as ort

def outputs(path, inputs):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [session.run(None, {name: x})[0] for x in inputs]

rng = np.random.default_rng(0)
inputs = [rng.random((1, 3, 640, 640), dtype=np.float32) for _ in range(2)]
reference = outputs(sys.argv[1], inputs)
for dense in sys.argv[2:]:
    pruned, masked = dense.replace(".onnx", "-ch0.3.onnx"), dense.replace(".onnx", "-masked.onnx")
    onnx.checker.check_model(onnx.load(pruned), full_check=True)
    vs_fixture = max(np.abs(a - b).max() for a, b in zip(outputs(dense, inputs), reference))
    masked_out = outputs(masked, inputs)
    vs_masked = max(np.abs(a - b).max() / np.abs(b).max()
                    for a, b in zip(outputs(pruned, inputs), masked_out))
    assert vs_fixture < 1e-2 and vs_masked < 1e-4, (dense, vs_fixture, vs_masked)
    print(f"{dense}: ORT max |diff| {vs_fixture:.1e} against the fixture export; pruned against "
          f"masked {vs_masked:.1e} relative; pruned passes onnx full_check")
PY
"$bin" -q val "${models[@]}" --data "$fixtures/coco/coco128.yaml" --data-root "$fixtures/coco/coco128" \
  --backend ort --iou 0.65 --json "$out/val.json" | sed -n '/^  *yolov5n_op12_sim0  /,$p'
