# bbsync — `make run` starts the system, `make test` runs every check.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: install run test lint typecheck pytest bench clean backstage-install backstage-test

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

run: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/run.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck backstage-test pytest

# The Backstage packages (backstage/): installed from the lockfile, then type-checked,
# formatted, linted, tested and built with Backstage's own CLI, package by package.
BACKSTAGE := backstage
BACKSTAGE_PACKAGES := $(wildcard $(BACKSTAGE)/plugins/*)
BACKSTAGE_BACKEND := $(BACKSTAGE)/packages/backend
NPM ?= npm

backstage-install: $(BACKSTAGE)/node_modules/.package-lock.json

$(BACKSTAGE)/node_modules/.package-lock.json: $(BACKSTAGE)/package-lock.json $(BACKSTAGE)/package.json $(wildcard $(BACKSTAGE)/plugins/*/package.json $(BACKSTAGE)/packages/*/package.json)
	cd $(BACKSTAGE) && $(NPM) ci --no-audit --no-fund
	touch $@

backstage-test: backstage-install
	cd $(BACKSTAGE) && npx --no-install prettier --check 'plugins/*/src/**/*.{ts,tsx}' 'plugins/*/dev/**/*.{ts,tsx}' 'plugins/*/config.d.ts'
	cd $(BACKSTAGE) && npx --no-install tsc
	set -e; for pkg in $(BACKSTAGE_PACKAGES); do \
	  echo "backstage: $$pkg"; \
	  (cd $$pkg && npx --no-install backstage-cli package lint && \
	   CI=true npx --no-install backstage-cli package test && \
	   npx --no-install backstage-cli package build); \
	done
	# The real Backstage backend of tests/test_backstage_e2e.py: linted here, run by pytest.
	cd $(BACKSTAGE_BACKEND) && npx --no-install backstage-cli package lint

bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache bbsync.db*
	rm -rf $(BACKSTAGE)/node_modules $(BACKSTAGE)/dist-types $(BACKSTAGE)/plugins/*/dist
