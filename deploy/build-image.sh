#!/bin/sh
# Build the production image with the container engine present (docker, else podman).
# Usage: deploy/build-image.sh [TAG]   (BASE_IMAGE=... to change the base; ENGINE=... to choose)
# 1. pip downloads the wheels pinned in requirements.lock and deploy/requirements-build.lock into
#    build/wheelhouse, checking each file's sha256 against the lock (needs PyPI or a mirror);
# 2. the engine builds the Dockerfile from those wheels alone (no network inside the build);
# 3. the image's SBOM (CycloneDX JSON, made in the build from what is installed) is copied out to
#    build/sbom.cdx.json.
set -eu
cd "$(dirname "$0")/.."
TAG=${1:-leg-cramps-cds:latest}
PYTHON=${PYTHON:-python3}
if [ -z "${ENGINE:-}" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker
  elif command -v podman >/dev/null; then ENGINE=podman
  else echo "no container engine: docker (with its daemon running) or podman" >&2; exit 1
  fi
fi
ARCH=$(uname -m)
PLATFORMS=""
for glibc in 2_17 2_24 2_27 2_28 2_31 2_34 2_35 2_36; do
  PLATFORMS="$PLATFORMS --platform manylinux_${glibc}_${ARCH}"
done
rm -rf build/wheelhouse
# shellcheck disable=SC2086
"$PYTHON" -m pip download --quiet --require-hashes --no-deps --only-binary=:all: $PLATFORMS \
  --platform "manylinux2014_${ARCH}" --python-version 3.11 --implementation cp \
  -r requirements.lock -r deploy/requirements-build.lock -d build/wheelhouse
"$ENGINE" build ${BASE_IMAGE:+--build-arg "BASE_IMAGE=$BASE_IMAGE"} -t "$TAG" .
container=$("$ENGINE" create "$TAG")
"$ENGINE" cp "$container:/app/sbom.cdx.json" build/sbom.cdx.json
"$ENGINE" rm "$container" >/dev/null
echo "built $TAG with $ENGINE; SBOM: build/sbom.cdx.json"
