#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv.
#   scripts/setup.sh          CPU machine: torch pinned to the local CPU wheel, mamba-ssm without CUDA.
#   ZOO_GPU=1 scripts/setup.sh  GPU machine: mamba-ssm with its CUDA kernels (the `gpu` extra).
# Every pip call runs under constraints.txt (PIP_CONSTRAINT), so nothing pulls a CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
export PIP_CONSTRAINT="$PWD/constraints.txt" PIP_DISABLE_PIP_VERSION_CHECK=1
stamp="$VENV/.zoo-setup-$(cat pyproject.toml constraints.txt scripts/setup.sh | sha1sum | cut -c1-12)"
if [ -f "$stamp" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
echo "setup: installing into $VENV (torch pinned by constraints.txt)" >&2
pip install -q --upgrade pip wheel "setuptools>=68" packaging
pip install -q "torch==2.13.0" numpy
if [ "${ZOO_GPU:-0}" = "1" ]; then
  pip install -q -e ".[dev,gpu]"
else
  # mamba-ssm ships only an sdist whose setup.py imports torch; its declared dependencies are GPU-only.
  MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE \
    pip install -q --no-build-isolation --no-deps "mamba-ssm==2.3.2.post1"
  pip install -q -e ".[dev]"
fi
rm -f "$VENV"/.zoo-setup-*
touch "$stamp"
echo "setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))" >&2
