# Two commands matter: `make run` and `make test` (see README). Everything else supports them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8080
FHIR_PORT ?= 8090

.PHONY: run test build lint typecheck fhir-server check-knowledge clean clean-native bench
# Sources whose change triggers a new compile (see `build`): the whole package, to be safe.
PACKAGE_SOURCES := setup.py $(wildcard cds_service/*.py cds_service/*/*.py)

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

## make build: compile the hook call's pure modules with mypyc, in place (setup.py); without a C
## compiler the service stays pure Python, with a warning. `make run`, `test` and `bench` do this.
$(VENV)/.native: $(PACKAGE_SOURCES) | $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[compile]'
	rm -f cds_service/native-build.json && find cds_service -name '*.so' -delete
	CDS_COMPILE=1 $(BIN)/python setup.py --quiet build_ext --inplace
	touch $@

build: $(VENV)/.native

## make run: the service on http://127.0.0.1:$(PORT) with embedded development defaults
run: $(VENV)/.installed $(VENV)/.native
	CDS_ENV=development $(BIN)/cds-service run --port $(PORT)

## make test: installs what the tests need, then the whole suite (lint, types, pytest)
test: $(VENV)/.installed-test $(VENV)/.native fhir_server/node_modules/.package-lock.json
	$(BIN)/ruff check cds_service tests setup.py
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check cds_service tests setup.py
	$(BIN)/ruff format --check cds_service tests setup.py

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

## make fhir-server: a local FHIR R4 server (Medplum in-memory) on $(FHIR_PORT), seeded from fixtures/fhir
fhir-server: fhir_server/node_modules/.package-lock.json
	node --experimental-websocket fhir_server/server.mjs --port $(FHIR_PORT) --seed fixtures/fhir

## make bench: the production shape (serve, JWTs, PostgreSQL) vs two floors, wrk load; bench/README.md
bench: $(VENV)/.installed
	@$(BIN)/python -c "import matplotlib" 2>/dev/null || $(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run.py $(BENCH_ARGS)

check-knowledge: $(VENV)/.installed
	$(BIN)/cds-service check-knowledge

clean: clean-native
	rm -rf $(VENV) var fhir_server/node_modules .pytest_cache .mypy_cache .ruff_cache

## make clean-native: back to pure Python (removes the compiled modules and mypyc's build files)
clean-native:
	rm -rf build cds_service/native-build.json $(VENV)/.native
	find cds_service -name '*.so' -delete
