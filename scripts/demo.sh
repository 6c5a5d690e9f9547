#!/usr/bin/env bash
# The main job: run pipelines/demo.yaml (prune yolov5n, validate dense and pruned on coco128,
# gate on the accuracy drop). Sets up .venv (the ONNX Runtime library) and builds shears first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh
export SHEARS_FIXTURES="${SHEARS_FIXTURES:-$PWD/../shared/fixtures}"
# cargo prints each crate it compiles: a first build takes minutes (see README).
cargo run --release -- run pipelines/demo.yaml "$@"
