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

test: install ## bring up real services (installing what is missing) and run every test
	$(BIN)/ruff check api worker shared codeactions tests migrations
	$(BIN)/lint-imports
	$(BIN)/pytest -p no:cacheprovider $(PYTEST_ARGS)

lint: install ## ruff
	$(BIN)/ruff check api worker shared codeactions tests migrations
	$(BIN)/lint-imports

images: install ## build the engine images (debootstrap base, cached by content hash)
	$(BIN)/codeactions images

migrate: install ## apply migrations to the configured database
	$(BIN)/codeactions migrate

bench: install ## fast-path figures (own platform in .state/bench; BENCH_ARGS="--url URL" reuses one)
	$(BIN)/codeactions bench $(BENCH_ARGS)

clean: ## remove local state (databases, logs) of make run / make test
	rm -rf .state

.PHONY: help install run test lint images migrate clean bench
