#!/usr/bin/env bash
# Makes a local stand-in for the official Rust image the Dockerfile builds
# from, for machines that reach Debian's packages and crates.io but no
# container registry (the project's CI machines): a Debian bookworm rootfs from
# debootstrap with gcc and libc6-dev, plus this machine's rustup toolchain laid
# out as the official image lays it out (RUSTUP_HOME=/usr/local/rustup,
# CARGO_HOME=/usr/local/cargo), and this machine's CA certificates. With it, `docker build .` runs the Dockerfile
# exactly as written, no --build-arg needed.
#
# Usage: scripts/offline-rust-image.sh   (root; prints the tag it made)
set -euo pipefail
cd "$(dirname "$0")/.."
channel="$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)"
tag="${1:-$(sed -n 's/^FROM \(rust:[^ ]*\) AS build$/\1/p' Dockerfile)}"
if docker image inspect "$tag" >/dev/null 2>&1; then echo "$tag"; exit 0; fi

host="$(rustc -vV | sed -n 's/^host: //p')"
toolchain="$(rustup toolchain list -v | awk -v c="$channel-$host" '$1 == c { print $NF }')"
toolchain="$(readlink -f "${toolchain:-$(rustc --print sysroot)}")"
rootfs="$(mktemp -d /tmp/rust-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT

debootstrap --variant=minbase --include=gcc,libc6-dev,ca-certificates \
  bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
# This machine's CA bundle: where the network intercepts TLS (a proxy with
# its own CA), cargo in the image must trust what the host trusts.
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
mkdir -p "$rootfs/usr/local/rustup/toolchains" "$rootfs/usr/local/cargo/bin"
cp -a "$toolchain" "$rootfs/usr/local/rustup/toolchains/$channel-$host"
cp "$(command -v rustup)" "$rootfs/usr/local/cargo/bin/rustup"
for tool in cargo rustc rustdoc cargo-clippy cargo-fmt rustfmt clippy-driver; do
  ln -s rustup "$rootfs/usr/local/cargo/bin/$tool"
done
printf 'default_toolchain = "%s-%s"\nprofile = "minimal"\nversion = "12"\n\n[overrides]\n' \
  "$channel" "$host" >"$rootfs/usr/local/rustup/settings.toml"

tar -C "$rootfs" -c . | docker import \
  --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
  --change 'ENV CARGO_HOME=/usr/local/cargo' \
  --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  - "$tag" >/dev/null
echo "$tag"
