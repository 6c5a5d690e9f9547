#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: creates the Python oracle venv (.venv) the tests
# compare against (onnx's checker, onnxruntime, pycocotools) and provides the ONNX Runtime
# library shears loads at run time, then runs every Rust test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh
export SHEARS_FIXTURES="${SHEARS_FIXTURES:-$PWD/../shared/fixtures}"
cargo test --release --all-targets "$@"
