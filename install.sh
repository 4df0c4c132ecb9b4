#!/usr/bin/env bash
# Installs nanodd and everything it needs, from a bare Python >= 3.10.
#   bash install.sh          the library and CLI
#   bash install.sh --dev    plus the test tools
# torch goes first: a bare `torch` requirement on a machine without torch pulls a multi-GB CUDA
# build, so an existing torch (CPU or CUDA, your choice) is kept and only a missing one is installed.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "install.sh: no torch found; installing torch==2.13.0" >&2
  "$PY" -m pip install --quiet "torch==2.13.0"
fi
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"
"$PY" -m pip install --quiet -e ".${extra}"
