#!/usr/bin/env bash
# Validates the fixture yolov5n on coco128 with ONNX Runtime on CUDA and on the CPU, and fails
# unless the CUDA report names the CUDA execution provider and both COCO APs agree within 0.003.
# Prints both speeds.
#
# usage: scripts/cuda-check.sh [--skip-cuda] ORT_DIR [SHEARS]
#   ORT_DIR  a folder holding libonnxruntime.so* of the GPU build (onnxruntime-gpu 1.31.x)
#   SHEARS   the release binary [default: ORT_DIR/shears if present, else target/release/shears]
#   --skip-cuda  run the CPU half only: a dry run of this script on a machine without a GPU
#                (it checks nothing about CUDA)
# The fixtures are read from SHEARS_FIXTURES [default: ../shared/fixtures].
set -euo pipefail
cd "$(dirname "$0")/.."

skip_cuda=false
if [[ "${1:-}" == "--skip-cuda" ]]; then
    skip_cuda=true
    shift
fi
if [[ $# -lt 1 || $# -gt 2 ]]; then
    sed -n '6,10p' "$0" >&2
    exit 2
fi
ort_dir=$(cd "$1" && pwd)
shears=${2:-}
if [[ -z "$shears" ]]; then
    if [[ -x "$ort_dir/shears" ]]; then shears="$ort_dir/shears"; else shears=target/release/shears; fi
fi
[[ -x "$shears" ]] || { echo "error: no shears binary at $shears" >&2; exit 2; }

library=$(ls -1 "$ort_dir"/libonnxruntime.so* 2>/dev/null | sort -V | tail -n 1 || true)
[[ -n "$library" ]] || { echo "error: no libonnxruntime.so* in $ort_dir" >&2; exit 2; }
export ORT_DYLIB_PATH="$library"

# The CUDA provider also needs the CUDA and cuDNN libraries; pip installs them as
# site-packages/nvidia/*/lib of the machine's python3.
library_path="$ort_dir"
if command -v python3 >/dev/null; then
    while IFS= read -r folder; do
        library_path="$library_path:$folder"
    done < <(python3 - <<'EOF'
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
for root in roots:
    for folder in sorted(glob.glob(os.path.join(root, "nvidia", "*", "lib"))):
        print(folder)
EOF
)
fi
export LD_LIBRARY_PATH="$library_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

fixtures=${SHEARS_FIXTURES:-$PWD/../shared/fixtures}
model="$fixtures/models/yolov5n_op12.onnx"
data="$fixtures/coco/coco128.yaml"
root="$fixtures/coco/coco128"
for f in "$model" "$data" "$root"; do
    [[ -e "$f" ]] || { echo "error: fixture $f is missing" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# validate DEVICE: writes $work/DEVICE.json (val.py's settings of the fixture reference)
validate() {
    echo "== $1: $shears val --backend ort --device $1 (ORT_DYLIB_PATH=$ORT_DYLIB_PATH)"
    "$shears" val "$model" --data "$data" --data-root "$root" --iou 0.65 \
        --backend ort --device "$1" --json "$work/$1.json"
}

# summary FILE: "provider AP pre inference nms" of a val --json report
summary() {
    python3 - "$1" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))["models"][0]
s = m["speed_ms"]
print(m["provider"], m["coco"]["stats"][0], s["pre"], s["inference"], s["nms"])
EOF
}

validate cpu
read -r cpu_provider cpu_ap cpu_pre cpu_inf cpu_nms < <(summary "$work/cpu.json")
if $skip_cuda; then
    echo "cpu:  $cpu_provider, COCO AP $cpu_ap, ${cpu_pre} ms pre-process, ${cpu_inf} ms inference, ${cpu_nms} ms NMS per image"
    echo "CUDA half skipped (--skip-cuda): nothing about CUDA was checked"
    exit 0
fi

validate cuda
read -r cuda_provider cuda_ap cuda_pre cuda_inf cuda_nms < <(summary "$work/cuda.json")
echo "cpu:  $cpu_provider, COCO AP $cpu_ap, ${cpu_pre} ms pre-process, ${cpu_inf} ms inference, ${cpu_nms} ms NMS per image"
echo "cuda: $cuda_provider, COCO AP $cuda_ap, ${cuda_pre} ms pre-process, ${cuda_inf} ms inference, ${cuda_nms} ms NMS per image"
status=0
if [[ "$cuda_provider" != *CUDA* ]]; then
    echo "FAIL: the CUDA run reports provider $cuda_provider" >&2
    status=1
fi
if ! python3 -c "import sys; sys.exit(abs($cuda_ap - $cpu_ap) > 0.003)"; then
    echo "FAIL: COCO AP differs by more than 0.003 (cuda $cuda_ap, cpu $cpu_ap)" >&2
    status=1
fi
[[ $status -eq 0 ]] && echo "ok: CUDA ran on $cuda_provider and agrees with the CPU within 0.003 COCO AP"
exit $status
