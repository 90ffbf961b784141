# Two commands matter: `make run` and `make test` (see README). Everything else supports them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8080
FHIR_PORT ?= 8090

.PHONY: run test lint typecheck fhir-server check-knowledge clean bench gallery capacity

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The runtime dependencies come from requirements.lock (exact versions, sha256-checked), as in the image.
$(VENV)/.installed: pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

fhir_server/node_modules/.package-lock.json: fhir_server/package.json fhir_server/package-lock.json
	cd fhir_server && npm ci --no-audit --no-fund --loglevel=error

## make run: the service on http://127.0.0.1:$(PORT) with embedded development defaults
run: $(VENV)/.installed
	CDS_ENV=development $(BIN)/cds-service run --port $(PORT)

## make test: installs what the tests need, then the whole suite (lint, format, types, pytest)
test: $(VENV)/.installed-test fhir_server/node_modules/.package-lock.json
	$(BIN)/ruff check cds_service tests bench
	$(BIN)/ruff format --check cds_service tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check cds_service tests bench
	$(BIN)/ruff format --check cds_service tests bench

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

## make fhir-server: a local FHIR R4 server (Medplum in-memory) on $(FHIR_PORT), seeded from fixtures/fhir
fhir-server: fhir_server/node_modules/.package-lock.json
	node --experimental-websocket fhir_server/server.mjs --port $(FHIR_PORT) --seed fixtures/fhir

## make bench: the production shape (serve, JWTs, PostgreSQL) vs two floors, wrk load; bench/README.md
## (writes bench/results.md, results.json, latency.png, and the capacity table deploy/capacity.md)
bench: $(VENV)/.installed
	@$(BIN)/python -c "import matplotlib" 2>/dev/null || $(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run.py $(BENCH_ARGS)

## make gallery: every card kind as an EHR shows it, for the committee's sign-off: build/gallery/index.html
gallery: $(VENV)/.installed
	@$(BIN)/python -c "import markdown_it" 2>/dev/null || $(BIN)/pip install --quiet -e '.[gallery]'
	$(BIN)/cds-service gallery build/gallery

## make capacity: deploy/capacity.md again from the last bench (bench/results.json) and deploy/k8s/base
capacity: $(VENV)/.installed
	$(BIN)/python deploy/capacity.py

check-knowledge: $(VENV)/.installed
	$(BIN)/cds-service check-knowledge

clean:
	rm -rf $(VENV) var fhir_server/node_modules .pytest_cache .mypy_cache .ruff_cache build

# --- Release artifacts (deploy/README.md): lock files, image, SBOM, audit. Not part of `make test`.
.PHONY: lock image image-test audit
IMAGE ?= leg-cramps-cds:latest
PIP_COMPILE = $(BIN)/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links --no-header

## make lock: re-pin the runtime (requirements.lock) and image-build (deploy/requirements-build.lock)
## dependencies, every file with its sha256; commit both
lock: | $(BIN)/python
	@$(BIN)/python -c "import piptools" 2>/dev/null || $(BIN)/pip install --quiet 'pip-tools==7.7.0'
	$(PIP_COMPILE) --upgrade -o requirements.lock pyproject.toml
	$(PIP_COMPILE) --upgrade -o deploy/requirements-build.lock deploy/requirements-build.in

## make image: the production image from the locked wheels, and its SBOM in build/sbom.cdx.json
## (BASE_IMAGE=... to change the base image; docker or podman)
image:
	deploy/build-image.sh $(IMAGE)

## make image-test: build the image, run it as deployed and check it (tests/deploy/test_image.py)
image-test: $(VENV)/.installed-test
	CDS_IMAGE_TESTS=1 $(BIN)/python -m pytest -n 0 -p no:cacheprovider tests/deploy/test_image.py

## make audit: known vulnerabilities in requirements.lock (needs PyPI's JSON API, pypi.org/pypi/...)
audit: | $(BIN)/python
	@$(BIN)/python -c "import pip_audit" 2>/dev/null || $(BIN)/pip install --quiet 'pip-audit==2.10.1'
	$(BIN)/pip-audit --strict --require-hashes --disable-pip -r requirements.lock
