#!/usr/bin/env bash
# Creates .venv with the pinned packages of scripts/requirements-oracles.txt, unless it already
# has them (its comments may change without a reinstall). The onnxruntime wheel there also
# provides the library shears' ORT backend loads.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.requirements
pins() { grep -v '^#' "$1" 2>/dev/null; }
if [ -x .venv/bin/python ] && [ "$(pins scripts/requirements-oracles.txt)" = "$(pins "$stamp")" ]; then
  exit 0
fi
echo "creating .venv: pip installs scripts/requirements-oracles.txt" >&2
python3 -m venv .venv
.venv/bin/pip install --disable-pip-version-check --progress-bar on -r scripts/requirements-oracles.txt
cp scripts/requirements-oracles.txt "$stamp"
