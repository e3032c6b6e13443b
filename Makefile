# Every target bootstraps .venv itself, so a fresh clone needs nothing but python3 >= 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench conformance clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml src/tether/sansio/_speedups.c | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/tether serve

lint: $(STAMP)
	$(BIN)/ruff check src tests bench compliance docs examples
	$(BIN)/ruff format --check src tests docs/conf.py docs/_ext examples

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python bench/frames.py

# The hub against broadcaster+websockets through Redis, and broadcast to 10,000 connections.
.PHONY: bench-hub
bench-hub: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/hub.py

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

.PHONY: docs
# Sphinx and MyST, on top of the test install (docs/conf.py imports tether for autodoc).
DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,docs]'
	touch $(DOCS_STAMP)

# The documentation site, warnings as errors (nitpicky: every reference must resolve).
docs: $(DOCS_STAMP)
	$(BIN)/sphinx-build -W --keep-going -n -q -b html docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
	rm -f src/tether/sansio/*.so
