#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv.
#   scripts/setup.sh          CPU machine: torch pinned to the local CPU wheel, mamba-ssm without CUDA.
#   ZOO_GPU=1 scripts/setup.sh  GPU machine: mamba-ssm and causal-conv1d rebuilt with their CUDA
#                             kernels (the `gpu` extra), then the kernels imported as a check.
#   scripts/setup.sh --print-stamp   the set-up stamp this environment would get, nothing installed.
# Every pip call runs under constraints.txt (PIP_CONSTRAINT), so nothing pulls a CUDA torch.
# The stamp (a file in the venv) covers this script, pyproject.toml, constraints.txt and ZOO_GPU:
# a change to any of them (e.g. ZOO_GPU=1 after a CPU set-up) installs again.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
GPU=${ZOO_GPU:-0}
export PIP_CONSTRAINT="$PWD/constraints.txt" PIP_DISABLE_PIP_VERSION_CHECK=1
setup_stamp() {
  echo "$VENV/.zoo-setup-$({ cat pyproject.toml constraints.txt scripts/setup.sh; echo "ZOO_GPU=$GPU"; } | sha1sum | cut -c1-12)"
}
stamp=$(setup_stamp)
if [ "${1:-}" = "--print-stamp" ]; then echo "$stamp"; exit 0; fi
if [ -f "$stamp" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
echo "setup: installing into $VENV (torch pinned by constraints.txt, ZOO_GPU=$GPU)" >&2
pip install -q --upgrade pip wheel "setuptools>=68" packaging
pip install -q "torch==2.13.0" numpy
if [ "$GPU" = "1" ]; then
  pip install -q -e ".[dev]"
  # mamba-ssm and causal-conv1d ship sdists whose setup.py imports torch: built here with their CUDA
  # kernels (no MAMBA_SKIP_CUDA_BUILD), never from pip's cache, and reinstalled even where a CPU
  # set-up left a kernel-less build of the same version (which would satisfy the `gpu` extra).
  pip install -q ninja  # parallel CUDA compiles
  unset MAMBA_SKIP_CUDA_BUILD CAUSAL_CONV1D_SKIP_CUDA_BUILD
  pip install -q --no-build-isolation --no-cache-dir --force-reinstall --no-deps \
    "mamba-ssm==2.3.2.post1" "causal-conv1d>=1.2.0"
  pip install -q -e ".[dev,gpu]"  # the extra's other dependencies (triton, tilelang, ...)
  if ! "$VENV/bin/python" -c "import torch, selective_scan_cuda, causal_conv1d_cuda" >&2; then
    echo "setup: mamba-ssm's or causal-conv1d's CUDA kernels do not import (above); is nvcc" \
      "(the CUDA toolkit) installed and does torch see the GPU?" >&2
    exit 1
  fi
  echo "setup: kernels import: selective_scan_cuda, causal_conv1d_cuda" >&2
else
  # mamba-ssm ships only an sdist whose setup.py imports torch; its declared dependencies are GPU-only.
  MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE \
    pip install -q --no-build-isolation --no-deps "mamba-ssm==2.3.2.post1"
  pip install -q -e ".[dev]"
fi
rm -f "$VENV"/.zoo-setup-*
touch "$stamp"
echo "setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))" >&2
