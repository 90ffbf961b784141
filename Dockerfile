# Production image: gunicorn via `cds-service serve`, runtime dependencies only, non-root, JWT auth on.
FROM python:3.11-slim AS build
# A C compiler for mypyc, in the build stage only: the runtime stage gets the compiled wheel.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY cds_service ./cds_service
# mypyc type-checks what it compiles against the installed dependencies (as `make typecheck`
# does), so they are installed first; CDS_COMPILE=required fails the build rather than ship
# pure Python.
RUN pip install --no-cache-dir --upgrade pip \
 && pip install --no-cache-dir '.[compile]' \
 && CDS_COMPILE=required pip wheel --no-cache-dir --no-build-isolation --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CDS_ENV=production \
    CDS_AUTH=jwt \
    CDS_KNOWLEDGE_DIR=/app/cards \
    CDS_DATABASE_URL=sqlite:////app/var/cds.sqlite3 \
    CDS_TRUSTED_ISSUERS=/app/deploy/trusted-issuers.example.json \
    PORT=8080
RUN useradd --system --uid 10001 --home-dir /app cds
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
COPY cards ./cards
COPY deploy ./deploy
RUN mkdir -p /app/var && chown cds /app/var
USER cds
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT','8080'), timeout=2)"
CMD ["cds-service", "serve"]
