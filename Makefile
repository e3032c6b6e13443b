# Every target bootstraps .venv itself, so a fresh clone needs nothing but python3 >= 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make run` needs only the package; `make test` adds the test toolchain (separate stamps).
RUN_STAMP := $(VENV)/.installed-run
# The interpreters of `make dist` and `make test-all` (pyenv's, on this machine).
PY311 ?= $(HOME)/.pyenv/versions/3.11.7/bin/python
PY312 ?= $(HOME)/.pyenv/versions/3.12.1/bin/python
PY313 ?= $(HOME)/.pyenv/versions/3.13.0/bin/python
PYTHONS ?= $(PY311) $(PY312) $(PY313)

.PHONY: run test test-compiled conformance-compiled lint typecheck pytest pytest-plain test-all dist bench bench-quick conformance clean

PIP := $(BIN)/python -m pip install --quiet
# What ruff checks and formats (ruff format also reads Markdown code blocks: not docs/*.md).
PY_PATHS := src tests bench compliance asgi_conformance tools docs/conf.py docs/_ext examples setup.py

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

# Each stamp is one editable install with the extras its targets need.
$(STAMP): pyproject.toml setup.py src/tether/sansio/_speedups.c | $(BIN)/python
	$(PIP) -e '.[test,asgi-test]'
	touch $@

$(RUN_STAMP): pyproject.toml setup.py src/tether/sansio/_speedups.c | $(BIN)/python
	$(PIP) -e .
	touch $@

run: $(RUN_STAMP)
	$(BIN)/tether serve

lint: $(STAMP)
	$(BIN)/ruff check $(PY_PATHS)
	$(BIN)/ruff format --check $(PY_PATHS)

typecheck: $(STAMP)
	$(BIN)/mypy

# Branch coverage (settings in pyproject.toml, subprocesses included): the whole package must
# stay at or above fail_under, the sans-I/O core (sansio/, extensions/) at 100%.
pytest: $(STAMP)
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest -q
	$(BIN)/coverage combine --quiet
	$(BIN)/coverage report
	@echo "sans-I/O core (sansio/, extensions/):"
	$(BIN)/coverage report --include='src/tether/sansio/*,src/tether/extensions/*' --fail-under=100

# The tests alone, without coverage (used by test-all).
pytest-plain: $(STAMP)
	$(BIN)/pytest -q

# The test suite under each of $(PYTHONS), each in its own virtualenv (.venv-3.X).
test-all:
	@failed=""; for py in $(PYTHONS); do \
	  v=$$($$py -c 'import sys; print("%d.%d" % sys.version_info[:2])') || exit 1; \
	  echo "== Python $$v: pytest in .venv-$$v"; \
	  $(MAKE) --no-print-directory pytest-plain PYTHON=$$py VENV=.venv-$$v || failed="$$failed $$v"; \
	done; \
	if [ -n "$$failed" ]; then echo "test-all: failures on Python$$failed"; exit 1; fi

# sdist and manylinux wheels for $(PYTHONS), each installed and tried in a fresh virtualenv
# (tools/dist.py says how); the results are in dist/.
dist:
	$(firstword $(PYTHONS)) tools/dist.py $(PYTHONS)

test: lint typecheck pytest

# The whole test suite against what a wheel from `make dist` holds: the sans-I/O core compiled
# with mypyc (src/tether/compiled.py lists the modules) and the C masking helper. The wheel is
# built for $(PYTHON) (mypyc from the build requirements) and installed, with the test extras,
# into its own virtualenv, .venv-compiled; pytest runs there, from this tree's tests/, and
# imports tether from that virtualenv, never from src/ (tests/test_compiled.py checks which).
# make test stays the editable, pure-Python install (and measures coverage).
COMPILED_VENV := .venv-compiled
COMPILED_STAMP := $(COMPILED_VENV)/.installed
PACKAGE_FILES := pyproject.toml setup.py $(shell find src -name '*.py' -o -name '*.c' -o -name '*.pyi' -o -name '*.html')

$(COMPILED_STAMP): $(PACKAGE_FILES)
	test -x $(COMPILED_VENV)/bin/python || $(PYTHON) -m venv $(COMPILED_VENV)
	$(COMPILED_VENV)/bin/python -m pip install --quiet --upgrade pip
	rm -rf build $(COMPILED_VENV)/wheel  # no compiled leftovers of an earlier build
	$(COMPILED_VENV)/bin/python -m pip wheel --quiet --no-deps --wheel-dir $(COMPILED_VENV)/wheel .
	wheel=$$(ls $(COMPILED_VENV)/wheel/tether-*.whl) && \
	  $(COMPILED_VENV)/bin/python -m pip install --quiet "$$wheel[test,asgi-test]" && \
	  $(COMPILED_VENV)/bin/python -m pip install --quiet --force-reinstall --no-deps "$$wheel"
	touch $@

test-compiled: $(COMPILED_STAMP)
	TETHER_TEST_COMPILED=1 $(COMPILED_VENV)/bin/python -m pytest -q -p no:cacheprovider

# Issue 13's table: picows, aiohttp, websockets and tether from one interleaved run (~4 min;
# bench-quick ~1 min). Needs gcc and taskset; the peers come from the `bench` extra.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PIP) -e '.[test,bench]'
	touch $@

# tether's column is the compiled wheel (what users install), unpacked alone into a folder
# that bench/ puts first on sys.path (TETHER_BENCH_SRC); add `--tether-alt src` for pure Python.
COMPILED_TREE := $(COMPILED_VENV)/tether-only
$(COMPILED_TREE)/.installed: $(COMPILED_STAMP)
	rm -rf $(COMPILED_TREE)
	$(COMPILED_VENV)/bin/python -m pip install --quiet --no-deps --target $(COMPILED_TREE) \
	  $(COMPILED_VENV)/wheel/tether-*.whl
	touch $@

bench: $(BENCH_STAMP) $(COMPILED_TREE)/.installed
	TETHER_BENCH_SRC=$(abspath $(COMPILED_TREE)) $(BIN)/python bench/compare.py $(BENCH_ARGS)

bench-quick: $(BENCH_STAMP) $(COMPILED_TREE)/.installed
	TETHER_BENCH_SRC=$(abspath $(COMPILED_TREE)) $(BIN)/python bench/compare.py --quick $(BENCH_ARGS)

# Issue 16's adversarial experiments at full size, tether beside websockets (not in CI).
.PHONY: soak
soak: $(BENCH_STAMP)
	$(BIN)/python bench/soak.py

# The hub against broadcaster+websockets through Redis, and broadcast to 10,000 connections.
.PHONY: bench-hub
bench-hub: $(BENCH_STAMP)
	$(BIN)/python bench/hub.py

# Autobahn Testsuite, both roles, all sections but 9 (about 15 minutes per role on 2 cores).
# The suite lives in its own Python 2.7 virtualenv, compliance/.venv27; see compliance/README.md.
conformance: $(STAMP)
	bash compliance/install.sh
	$(BIN)/python compliance/run.py --mode both
	$(MAKE) conformance-sync

# The same Autobahn run against the compiled wheel (make test-compiled's virtualenv): the
# sans-I/O core as users install it, mypyc-compiled (issue 13: no regression in either mode).
conformance-compiled: $(STAMP) $(COMPILED_STAMP)
	bash compliance/install.sh
	cd compliance && ../$(COMPILED_VENV)/bin/python -c \
	  'import tether.sansio.protocol as p; assert p.__file__.endswith(".so"), p.__file__'
	$(COMPILED_VENV)/bin/python compliance/run.py --mode both --agent tether-compiled

# The threading layer (tether.sync), client and server, on the sections where its I/O differs
# from the asyncio layer's (reads, threads, closing, large messages): about 2 minutes.
# compliance/README.md says which and why.
SYNC_DEFLATE := 12.1.1,12.1.2,12.1.3,12.1.4,12.1.5,12.1.6,12.1.7,12.1.8,12.1.9
SYNC_DEFLATE := $(SYNC_DEFLATE),13.1.1,13.1.2,13.1.3,13.1.4,13.1.5,13.1.6,13.1.7,13.1.8,13.1.9
SYNC_CASES := 1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*,$(SYNC_DEFLATE)
.PHONY: conformance-sync
conformance-sync: $(STAMP)
	bash compliance/install.sh
	$(BIN)/python compliance/run.py --mode both --agent tether-sync --with-perf --baseline \
		--cases '$(SYNC_CASES)' --client-cmd '{python} compliance/client_sync.py {url} {agent}' \
		--server-cmd '{python} compliance/server_sync.py {port}'

# The same plus section 9 (performance: messages of up to 16 MiB), printing each case's time.
.PHONY: conformance-perf
conformance-perf: $(STAMP)
	bash compliance/install.sh
	$(BIN)/python compliance/run.py --mode both --with-perf

.PHONY: docs
# Sphinx and MyST, on top of the test install (docs/conf.py imports tether for autodoc).
DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): $(STAMP)
	$(PIP) -e '.[test,docs]'
	touch $@

# The documentation site, warnings as errors (nitpicky: every reference must resolve).
docs: $(DOCS_STAMP)
	$(BIN)/sphinx-build -W --keep-going -n -q -b html docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

clean:
	rm -rf $(VENV) .venv-3.* $(COMPILED_VENV) .dist-tools build dist src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
	rm -f .coverage .coverage.*
	rm -f src/tether/sansio/*.so

# uvicorn's own tests/protocols/test_websocket.py with tether's class added to its ws_protocol_cls
# parametrization, beside websockets-sansio and wsproto (pinned sdist and venv in
# asgi_conformance/.cache; about 50 s the first time, 30 s after).
.PHONY: asgi-conformance
asgi-conformance: $(STAMP)
	$(BIN)/python asgi_conformance/run.py
