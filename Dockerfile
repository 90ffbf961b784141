# Production image: gunicorn via `cds-service serve`, pure Python, runtime dependencies only,
# non-root, JWT auth on, read-only root filesystem ready.
#
# Build with `make image` (or deploy/image-test.sh): it downloads the locked wheels, hash-checked,
# into build/wheelhouse, and this build installs only from there (no network, same files every
# time: requirements.lock and deploy/requirements-build.lock pin each file's sha256).
# BASE_IMAGE: any Debian-like image with python3 (3.11+) and its venv module; tested with
# python:3.11-slim-bookworm and with a locally made Debian bookworm (deploy/make-base-image.sh).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=/wheels \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The wheels live in this stage only: the runtime stage copies the installed environment.
COPY build/wheelhouse /wheels
COPY requirements.lock deploy/requirements-build.lock /locks/
# The service's environment: exactly the locked dependencies, every file's hash checked.
RUN python3 -m venv /opt/cds \
 && /opt/cds/bin/pip install --require-hashes --no-deps -r /locks/requirements.lock
# Build tools (setuptools, the SBOM generator) in their own environment, never shipped.
RUN python3 -m venv /opt/tools \
 && /opt/tools/bin/pip install --require-hashes --no-deps -r /locks/requirements-build.lock
WORKDIR /src
COPY pyproject.toml README.md setup.py* ./
COPY cds_service ./cds_service
# The project itself (pure Python), then a check that the locked set is complete and consistent,
# then the SBOM of exactly what is installed.
RUN /opt/tools/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /dist . \
 && /opt/cds/bin/pip install --no-deps /dist/*.whl \
 && /opt/cds/bin/pip check \
 && /opt/tools/bin/cyclonedx-py environment --output-reproducible --output-format JSON \
      --output-file /sbom.cdx.json /opt/cds/bin/python

FROM ${BASE_IMAGE}
# XDG_RUNTIME_DIR: a writable runtime directory for whatever looks for one (`serve` turns
# gunicorn's control socket off). PROMETHEUS_MULTIPROC_DIR: each worker's metric files, so
# /metrics adds up every worker. Both belong on tmpfs (docker run --read-only --tmpfs /tmp
# --tmpfs /run/prometheus:uid=10001,gid=10001; emptyDirs in deploy/k8s).
ENV PATH=/opt/cds/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CDS_ENV=production \
    CDS_AUTH=jwt \
    CDS_KNOWLEDGE_DIR=/app/cards \
    CDS_DATABASE_URL=sqlite:////app/var/cds.sqlite3 \
    CDS_TRUSTED_ISSUERS=/app/deploy/trusted-issuers.example.json \
    PORT=8080 \
    XDG_RUNTIME_DIR=/tmp \
    PROMETHEUS_MULTIPROC_DIR=/run/prometheus
RUN groupadd --system --gid 10001 cds \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home cds \
 && mkdir -p /app/var /run/prometheus \
 && chown cds:cds /app/var /run/prometheus
COPY --from=build /opt/cds /opt/cds
COPY --from=build /sbom.cdx.json /app/sbom.cdx.json
COPY cards /app/cards
COPY deploy/trusted-issuers.example.json deploy/sandbox-jwks.json /app/deploy/
WORKDIR /app
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=2)"]
CMD ["cds-service", "serve"]
