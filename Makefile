# Index Builder: two commands on a fresh machine (Python 3.11, pip).
#   make run   - set up .venv, ingest the embedded synthetic market (if the database is
#                empty), build every index, serve the API on 127.0.0.1:8000
#   make test  - set up .venv and run the whole test suite (fails loudly)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: run test lint bench bench-quick loadtest clean help system-deps

help:
	@echo "make run | make test | make lint | make bench | make loadtest | make clean"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The dashboard's chart library (package.json: plotly.js's partial bundle, 1.1 MB
# instead of the plotly package's full 4.8 MB, so a first visit loads fast). Without
# npm the dashboard serves the full bundle of the plotly Python package instead.
JS_STAMP := node_modules/.installed

$(JS_STAMP): package.json package-lock.json
	@if command -v npm >/dev/null; then \
	  npm ci --no-audit --no-fund --loglevel=error && touch $(JS_STAMP) \
	    || echo "npm ci failed: the dashboard will serve plotly's full bundle (slower first load)"; \
	else \
	  echo "npm not found: the dashboard will serve plotly's full bundle (slower first load)"; \
	fi

run: $(STAMP) $(JS_STAMP)
	$(BIN)/index-builder quickstart
	$(BIN)/index-builder serve

# Real services the tests start themselves (redis-server on a free loopback port),
# the load tool of the benchmarks, promtool (alert rule unit tests) and the headless
# browser of the dashboard tests (driven by Playwright, which downloads no browser);
# PostgreSQL for the warehouse tests (they run its binaries from /usr/lib/postgresql as
# the postgres user); nginx in front of two API processes (tests/deploy/test_nginx.py);
# Java 17 for Spark in local mode (tests/engine/spark, build --engine spark);
# Debian packages, installed when missing. An entry is `command` or `command:package`.
SYSTEM_TOOLS := redis-server wrk promtool:prometheus chromium:chromium java:openjdk-17-jre-headless pg_ctlcluster:postgresql nginx
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

system-deps:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $${t%%:*} >/dev/null || missing="$$missing $${t##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

test: $(STAMP) $(JS_STAMP) system-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --durations=15

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(STAMP) $(JS_STAMP) system-deps
	$(BIN)/python bench/run.py --sizes 3000x252,6000x2520
	$(BIN)/python bench/incremental.py --symbols 6000 --days 2520 --repeats 3
	$(BIN)/python bench/api.py
	$(BIN)/python bench/reads.py
	$(BIN)/python bench/ops_overhead.py
	$(BIN)/python bench/dashboard.py

# nginx (deploy/nginx/nginx.conf) in front of 1, 2 and 4 API processes over an Iceberg
# copy of the 6000 x 2520 bench data (prepared once from `make bench`'s database), with
# a mix of cached, uncached, job and abusive clients: docs/benchmarks.md, "Scale-out"
loadtest: $(STAMP) system-deps
	$(BIN)/python bench/loadtest.py

bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --sizes 3000x252

clean:
	rm -rf $(VENV) node_modules data bench/data .pytest_cache .mypy_cache .ruff_cache .hypothesis
