# Every target bootstraps .venv itself, so a fresh clone needs nothing but python3 >= 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench bench-quick conformance clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml src/tether/sansio/_speedups.c | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/tether serve

lint: $(STAMP)
	$(BIN)/ruff check src tests bench compliance
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck pytest

# Issue 13's table: picows, aiohttp, websockets and tether from one interleaved run (~4 min;
# bench-quick ~1 min). Needs gcc and taskset; the peers come from the `bench` extra.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python bench/compare.py

bench-quick: $(BENCH_STAMP)
	$(BIN)/python bench/compare.py --quick

# Autobahn Testsuite, both roles, all sections but 9 (about 15 minutes per role on 2 cores).
# The suite lives in its own Python 2.7 virtualenv, compliance/.venv27; see compliance/README.md.
conformance: $(STAMP)
	bash compliance/install.sh
	$(BIN)/python compliance/run.py --mode both

# The same plus section 9 (performance: messages of up to 16 MiB), printing each case's time.
.PHONY: conformance-perf
conformance-perf: $(STAMP)
	bash compliance/install.sh
	$(BIN)/python compliance/run.py --mode both --with-perf

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
	rm -f src/tether/sansio/*.so
