# The README's two commands: `make run` (main job on its defaults) and `make test` (the test suite).
VENV ?= .venv
BIN := $(VENV)/bin
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: setup run test lint bench
setup:
	@scripts/setup.sh

## main job on its embedded defaults (local files under data/, runs/, reports/; SQLite storage)
## `make run QUICK=1`: the first-look variant, a few minutes
run: setup
	scripts/main.sh $(if $(QUICK),--quick,$(if $(FULL),--full,))

## the test suite CI runs (.ci/run)
test: setup lint
	@scripts/test-services.sh
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

## style, the import layers (pyproject: [tool.importlinter]) and the types of the library (mypy)
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

bench: setup
	for f in bench/*.py; do $(BIN)/python $$f || exit 1; done
