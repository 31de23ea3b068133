#!/usr/bin/env bash
# Builds sitio as a static binary and the FROM scratch image around it.
# Usage: scripts/build-image.sh [image tag]   (default sitio:latest)
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-sitio:latest}"
target="$(rustc -vV | sed -n 's/^host: //p')"
# A target dir of its own: this may run while another cargo holds target/.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/image}"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target "$target" --bin sitio
mkdir -p dist
cp "$CARGO_TARGET_DIR/$target/release/sitio" dist/sitio
if ! file dist/sitio 2>/dev/null | grep -q 'static'; then
  ldd dist/sitio 2>&1 | grep -q 'not a dynamic executable' || { echo "dist/sitio is not static" >&2; exit 1; }
fi
docker build -q -t "$tag" . >/dev/null
echo "$tag: $(docker image inspect "$tag" --format '{{.Size}}') bytes"
