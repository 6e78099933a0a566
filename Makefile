# The two commands: `make run` and `make test`. Everything else is a step they share.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
WEB_DIST := src/openova_sandbox/web/dist
WEB_STAMP := $(WEB_DIST)/.build-stamp
WEB_SOURCES := $(shell [ -d web ] && find web -path web/node_modules -prune -o -type f -print 2>/dev/null)
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test setup web lint typecheck importlint pytest webtest bench clean

setup: $(STAMP) web

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# Console assets: rebuilt (npm ci + vite) when missing or older than any source file.
web: $(STAMP)
	@if [ -f web/package.json ]; then $(MAKE) --no-print-directory $(WEB_STAMP); fi

$(WEB_STAMP): $(WEB_SOURCES)
	cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build
	touch $@

run: setup
	$(BIN)/sandbox serve --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/ruff format --check src tests $(wildcard bench)

typecheck: $(STAMP)
	$(BIN)/mypy

importlint: $(STAMP)
	$(BIN)/lint-imports

webtest: web
	@if [ -f web/package.json ]; then cd web && npm run --silent gen:api && npm run --silent typecheck && npm test --silent; fi

# pytest's exit code 5 (no test collected) is a failure here, never a silent pass (the
# `|| rc=` keeps bash's -e from exiting before the message). Two pytest-xdist workers by
# default (most tests wait on processes and sockets, so two share two cores well); a
# test file runs whole on one worker, so its module fixtures start once; files go in
# collection order (docs/testing.md, "Wall time"). PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2
pytest: setup
	rc=0; $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder \
	  $(PYTEST_ARGS) || rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

test: setup lint typecheck importlint webtest pytest

bench: setup
	@bench/reference/ttyd.sh >/dev/null || echo "ttyd (the bench's reference) not built: its row says n/a"
	$(BIN)/python bench/terminal.py
	$(BIN)/python bench/isolation_ab.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/control_plane.py
	$(BIN)/python bench/mcp_calls.py
	$(BIN)/python bench/mcp_events.py

clean:
	rm -rf $(VENV) $(WEB_DIST) web/node_modules .pytest_cache .mypy_cache .ruff_cache
