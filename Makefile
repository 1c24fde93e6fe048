# The README's two commands: `make run` (main job on its defaults) and `make test` (the test suite).
VENV ?= .venv
BIN := $(VENV)/bin
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: setup run test lint bench check-gpu-deps
setup:
	@scripts/setup.sh

## main job on its embedded defaults: the Dark Room study at convergence into runs/study/ (hours;
## resumable; HOURS=n stops starting trials after n hours), compared with the committed results
## `make run QUICK=1`: the first-look variant, a few minutes
run: setup
	scripts/main.sh $(if $(QUICK),--quick,)

## the test suite CI runs (.ci/run)
test: setup lint check-gpu-deps
	@scripts/test-services.sh
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

## style, the import layers (pyproject: [tool.importlinter]) and the types of the library (mypy)
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

## what `ZOO_GPU=1 scripts/setup.sh` asks of the registry resolves beside the pinned torch: a dry run of
## the `gpu` extra (mamba-ssm, causal-conv1d and their GPU-only dependencies) as a fresh environment
## sees it; nothing installed (~25 s). The skip flags only let the two sdists report their metadata here.
check-gpu-deps: setup
	@out=$$(MAMBA_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE $(BIN)/python -m pip install \
	  --dry-run --ignore-installed --no-build-isolation ".[gpu]" 2>&1) \
	  || { echo "$$out" | tail -30; echo "check-gpu-deps: the gpu extra does not resolve"; exit 1; }; \
	  echo "$$out" | grep '^Would install' | tr ' ' '\n' | grep -E '^(torch|mamba_ssm|causal_conv1d|triton|tilelang|quack-kernels)-[0-9]' \
	  | tr '\n' ' '; echo "(check-gpu-deps: the gpu extra resolves)"

bench: setup
	for f in bench/*.py; do $(BIN)/python $$f || exit 1; done
