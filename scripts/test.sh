#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what the tests use
# (curl and python3 as real clients and backends, Prometheus and promtool for
# /metrics, Chromium for the dashboard, Docker for the pod test, kubectl,
# kubernetes-validate and checkov for the manifests, slowhttptest, h11 and
# gunicorn for the adversarial suites, websockets for WebSocket), then checks formatting, lints, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-missing.sh curl:curl python3:python3 prometheus:prometheus \
  promtool:prometheus chromium:chromium kubectl:kubernetes-client docker:docker.io \
  slowhttptest:slowhttptest ip:iproute2 openssl:openssl

# From PyPI: the Kubernetes schema validator (ships the OpenAPI schemas, works
# offline), h11 and gunicorn as second and third origins for smuggling tests,
# PyJWT and cryptography for the identity provider of the auth tests (keys and
# tokens made by another implementation than sitio's), aiosmtpd as the mail server,
# grpcio as a real gRPC service and client, h2 (with hyperframe) to write
# HTTP/2 attacks frame by frame, websockets as a real WebSocket client and service.
PY_PACKAGES="kubernetes-validate h11 gunicorn pyjwt cryptography aiosmtpd grpcio h2 websockets"
if ! python3 -c 'import kubernetes_validate, h11, gunicorn, jwt, cryptography, aiosmtpd, grpc, h2, hyperframe, websockets' >/dev/null 2>&1; then
  python3 -m pip install -q $PY_PACKAGES 2>/dev/null ||
    python3 -m pip install -q --break-system-packages $PY_PACKAGES
fi

# checkov, the policy scanner for the manifests and Dockerfiles, in a venv of
# its own: it pins old versions of common packages (boto3, packaging) that
# would otherwise replace the machine's.
CHECKOV_VENV=target/tools/checkov
if [ ! -x "$CHECKOV_VENV/bin/checkov" ]; then
  python3 -m venv "$CHECKOV_VENV" 2>/dev/null || {
    # Debian's python3 keeps venv in a package of its own.
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv
    python3 -m venv "$CHECKOV_VENV"
  }
  "$CHECKOV_VENV/bin/pip" install -q checkov==3.3.30
fi

# Every check runs even when one fails (formatting, import circles between
# modules, lints, docs, tests), and every test binary runs even when
# another fails (--no-fail-fast), so one red run shows every failure.
status=0
cargo fmt --check || status=1
python3 scripts/module_cycles.py --depth 2 || status=1
cargo clippy --all-targets -- -D warnings || status=1
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet || status=1
cargo test --no-fail-fast || status=1
exit $status
