# Two commands matter: `make run` and `make test` (see README). Everything else supports them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8080
FHIR_PORT ?= 8090

.PHONY: run test lint typecheck fhir-server check-knowledge clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

fhir_server/node_modules/.package-lock.json: fhir_server/package.json fhir_server/package-lock.json
	cd fhir_server && npm ci --no-audit --no-fund --loglevel=error

## make run: the service on http://127.0.0.1:$(PORT) with embedded development defaults
run: $(VENV)/.installed
	CDS_ENV=development $(BIN)/cds-service run --port $(PORT)

## make test: installs what the tests need, then the whole suite (lint, format, types, pytest)
test: $(VENV)/.installed-test fhir_server/node_modules/.package-lock.json
	$(BIN)/ruff check cds_service tests
	$(BIN)/ruff format --check cds_service tests
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check cds_service tests
	$(BIN)/ruff format --check cds_service tests

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

## make fhir-server: a local FHIR R4 server (Medplum in-memory) on $(FHIR_PORT), seeded from fixtures/fhir
fhir-server: fhir_server/node_modules/.package-lock.json
	node --experimental-websocket fhir_server/server.mjs --port $(FHIR_PORT) --seed fixtures/fhir

## make bench: service vs a framework floor under gunicorn, wrk load (needs wrk); see bench/README.md
bench: $(VENV)/.installed fhir_server/node_modules/.package-lock.json
	@$(BIN)/python -c "import matplotlib" 2>/dev/null || $(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run.py $(BENCH_ARGS)

check-knowledge: $(VENV)/.installed
	$(BIN)/cds-service check-knowledge

clean:
	rm -rf $(VENV) var fhir_server/node_modules .pytest_cache .mypy_cache .ruff_cache build
