#!/bin/sh
# A Debian bookworm base image with Python 3.11, made locally (debootstrap + docker import), for a
# machine that cannot pull from a container registry. Usage: deploy/make-base-image.sh [TAG]
# Needs root, debootstrap and a Debian mirror (DEBIAN_MIRROR). Elsewhere, build with the default
# BASE_IMAGE (python:3.11-slim-bookworm) instead.
set -eu
TAG=${1:-cds-base:bookworm}
ENGINE=${ENGINE:-docker}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOTFS=$(mktemp -d)
trap 'rm -rf "$ROOTFS"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$ROOTFS" "$MIRROR"
chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin
tar -C "$ROOTFS" -c . | "$ENGINE" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$TAG"
echo "base image: $TAG"
