# The two commands: `make demo` and `make test`. Both create .venv and install everything themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_HOME ?= .demo
PYTEST_ARGS ?=
# Two workers (pytest-xdist): most tests wait on subprocesses and servers. Whole files go to a worker, so
# the one demo run serves every test of tests/examples/test_demo.py.
PYTEST_WORKERS ?= 2

.PHONY: demo test lint typecheck unit ui validate bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "hybrid-dagster needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.clinical_ai.demo --home $(DEMO_HOME)

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check hybrid_dagster examples benchmarks tests
	$(BIN)/ruff format --check hybrid_dagster examples benchmarks tests

typecheck: $(STAMP)
	$(BIN)/mypy

validate: $(STAMP)
	$(BIN)/hybrid-dagster validate -m examples.clinical_ai.definitions

ui: $(STAMP)
	HYBRID_DAGSTER_HOME=$(abspath $(DEMO_HOME)) $(BIN)/python -m examples.clinical_ai.ui

bench: $(STAMP)
	$(BIN)/python -m benchmarks.cdc_apply

clean:
	rm -rf $(VENV) $(DEMO_HOME) .pytest_cache .mypy_cache .ruff_cache
