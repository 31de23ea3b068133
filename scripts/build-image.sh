#!/usr/bin/env bash
# Builds sitio as a static binary on this machine and the FROM scratch image
# around it with Dockerfile.prebuilt: no base image is pulled, so this works
# without a registry. (Online, `docker build .` builds the same binary inside
# the official Rust image; see Dockerfile.)
# Usage: scripts/build-image.sh [image tag]   (default sitio:<version>, also tagged sitio:latest)
set -euo pipefail
cd "$(dirname "$0")/.."
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
tag="${1:-sitio:$version}"
scripts/build-static.sh dist/sitio
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
docker build -q -f Dockerfile.prebuilt --build-arg VERSION="$version" --build-arg REVISION="$revision" \
  -t "$tag" . >/dev/null
if [ $# -eq 0 ]; then docker tag "$tag" sitio:latest; fi
echo "$tag: $(docker image inspect "$tag" --format '{{.Size}}') bytes"
