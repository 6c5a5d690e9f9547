#!/usr/bin/env bash
# Creates .venv with the pinned packages of scripts/requirements-oracles.txt, unless it already
# has them. The onnxruntime wheel there also provides the library shears' ORT backend loads.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.requirements
if [ -x .venv/bin/python ] && cmp -s scripts/requirements-oracles.txt "$stamp"; then
  exit 0
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-oracles.txt
cp scripts/requirements-oracles.txt "$stamp"
