#!/usr/bin/env bash
# Creates target/bench-venv: a bench-only virtual environment with PyTorch (used on the CPU) and
# onnx, for benches/peer_train_step.py. It is kept apart from .venv (the test oracles' pinned
# environment) so that torch never enters the tests' dependencies. Re-running is cheap once the
# packages are there.
#
# PyPI is the only Python registry reachable here; its default Linux torch wheel also pulls the
# nvidia-* CUDA packages (several GB). The CPU is all the bench uses. Set TORCH_SPEC to pin a version.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/bench-venv
spec=${TORCH_SPEC:-torch}
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import torch, onnx, numpy' 2>/dev/null; then
  exit 0
fi
echo "creating $venv: pip installs $spec, onnx, numpy" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install --disable-pip-version-check --progress-bar off "$spec" onnx numpy
