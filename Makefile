# The front door. `make help` lists the targets; the README and CI call these same targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[local,dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## create the virtualenv with pinned dependencies (cached)

run: install ## start the whole platform locally (API on 127.0.0.1:8050); Ctrl-C stops it
	$(BIN)/codeactions standalone

test: lint test-fast ## lint, the fast layer, then real services (installing what is missing) and every other test
	$(BIN)/pytest -p no:cacheprovider --ignore=tests/unit $(PYTEST_ARGS)

test-fast: install ## services against a real PostgreSQL, each test rolled back; no stack (under a minute)
	$(BIN)/pytest -p no:cacheprovider tests/unit $(PYTEST_ARGS)

lint: install ## ruff, the architecture's import rules (import-linter), types (mypy)
	$(BIN)/ruff check api worker shared codeactions tests migrations
	$(BIN)/lint-imports
	$(BIN)/mypy

fuzz: install ## Schemathesis at length over /openapi.json (own test platform; a new seed each time)
	CODEACTIONS_FUZZ_EXAMPLES=$${CODEACTIONS_FUZZ_EXAMPLES:-100} CODEACTIONS_FUZZ_MIN_CASES=5000 $(BIN)/pytest -p no:cacheprovider -s tests/integration/test_fuzz.py $(PYTEST_ARGS)

images: install ## build the engine images (debootstrap base, cached by content hash)
	$(BIN)/codeactions images

migrate: install ## apply migrations to the configured database
	$(BIN)/codeactions migrate

bench: install ## fast-path figures (own platform in .state/bench; BENCH_ARGS="--url URL" reuses one)
	$(BIN)/codeactions bench $(BENCH_ARGS)

chaos: install ## kill and restart the platform's parts under load; counts per fault (own platform in .state/chaos; CHAOS_ARGS="--quick")
	$(BIN)/codeactions chaos $(CHAOS_ARGS)

clean: ## remove local state (databases, logs) of make run / make test
	rm -rf .state

.PHONY: help install run test test-fast lint fuzz images migrate clean bench chaos
