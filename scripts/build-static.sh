#!/usr/bin/env bash
# Builds sitio as one static binary for this machine's architecture and copies
# it to $1 (default dist/sitio). The Dockerfile's builder stage and
# scripts/build-image.sh both build through here, so the image is the same
# binary whichever way it is made.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist/sitio}"
target="$(rustc -vV | sed -n 's/^host: //p')"
# A target dir of its own: this may run while another cargo holds target/.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/image}"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target "$target" --bin sitio
mkdir -p "$(dirname "$out")"
# Copied then renamed: another build reading $out (two image builds at once)
# sees the old binary or the new one, never half of one.
cp "$CARGO_TARGET_DIR/$target/release/sitio" "$out.tmp.$$"
mv -f "$out.tmp.$$" "$out"
# A static binary has no interpreter: it runs in a FROM scratch image.
if LC_ALL=C ldd "$out" 2>&1 | grep -q '=>'; then
  echo "$out is not static" >&2
  exit 1
fi
