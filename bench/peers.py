"""The targets of the comparison: how each proxy is configured and started.

Every proxy runs with one worker thread, without access logs, with keep-alive
to the client and a keep-alive pool to the backend, so that the comparison is
about the cost of proxying a request and nothing else.
"""

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SITIO = ROOT / "target" / "release" / "sitio"
PINGORA = ROOT / "bench" / "peers" / "pingora" / "target" / "release" / "pingora-peer"
PINGORA_CONF = ROOT / "bench" / "peers" / "pingora" / "conf.yaml"

SMALL_PATH = "/hello.txt"  # the 100-byte response every load run asks for
BIG_PATH = "/big.bin"  # the 1 GiB response of the streaming run
BIG_BYTES = 1 << 30
# Connection limits; stress/reliability.py raises them for 10,000 idle clients.
NGINX_CONNECTIONS = 16384
# HAProxy asks for two descriptors per connection: 9,990 fits a 20,000 limit.
HAPROXY_MAXCONN = 9990
# Extra settings for sitio (stress/reliability.py sets its connection cap).
SITIO_EXTRA_ENV = {}
# Extra nginx proxy directives (stress/reliability.py keeps slow reads in memory).
NGINX_PROXY_EXTRA = ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} at startup")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s")


def descendants(pid):
    """The pid and all its descendants: nginx's workers are child processes."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


@dataclass
class Running:
    """A started target: its port, its process, and the files to remove."""

    name: str
    port: int
    proc: subprocess.Popen
    log: object = None
    extra: list = field(default_factory=list)

    def pids(self):
        return descendants(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log:
            self.log.close()


def spawn(name, argv, port, workdir, cpus, env=None):
    log = open(workdir / f"{name}.log", "wb")
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    proc = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        cwd=workdir,
    )
    running = Running(name, port, proc, log)
    try:
        wait_listening(port, proc, name)
    except Exception as e:
        running.stop()
        tail = (workdir / f"{name}.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{e}; its output:\n{tail}") from None
    return running


def nginx_common(workdir, tag, workers=1):
    temp = workdir / f"{tag}-temp"
    temp.mkdir(exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
{user}
worker_processes {workers};
daemon off;
pid {workdir}/{tag}.pid;
error_log {workdir}/{tag}-error.log error;
events {{ worker_connections {NGINX_CONNECTIONS}; }}
http {{
  access_log off;
  client_body_temp_path {temp}/body;
  proxy_temp_path {temp}/proxy;
  fastcgi_temp_path {temp}/fastcgi;
  uwsgi_temp_path {temp}/uwsgi;
  scgi_temp_path {temp}/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
"""


def start_backend(workdir, cpus):
    """nginx serving a 100-byte file, a sparse 1 GiB file, and 404 elsewhere."""
    www = workdir / "www"
    www.mkdir(exist_ok=True)
    (www / SMALL_PATH.lstrip("/")).write_bytes(b"sitio bench: one hundred bytes of body. " * 2 + b"x" * 19 + b"\n")
    assert (www / SMALL_PATH.lstrip("/")).stat().st_size == 100
    with open(www / BIG_PATH.lstrip("/"), "wb") as f:
        f.truncate(BIG_BYTES)
    port = free_port()
    conf = workdir / "backend.conf"
    conf.write_text(
        nginx_common(workdir, "backend")
        + f"""
  sendfile on;
  server {{
    listen 127.0.0.1:{port} reuseport;
    root {www};
  }}
}}
"""
    )
    return spawn("backend", ["nginx", "-c", str(conf), "-p", str(workdir)], port, workdir, cpus)


def start_sitio(name, backend, workdir, cpus, defaults, binary=None):
    port = free_port()
    env = {
        "PORT": str(port),
        "TARGET_PORT": str(backend),
        "SITIO_TARGET_HOST": "127.0.0.1",
        "SITIO_WORKERS": "1",
        "SITIO_ACCESS_LOG": "off",
        "SITIO_ADMIN_PORT": str(free_port()),
        "RUST_LOG": "warn",
    }
    if not defaults:
        env["SITIO_STATS"] = "off"
    env.update(SITIO_EXTRA_ENV)
    return spawn(name, [str(binary or SITIO)], port, workdir, cpus, env)


def start_nginx(backend, workdir, cpus, workers=1):
    port = free_port()
    tag = "nginx-proxy" if workers == 1 else f"nginx-proxy-{workers}w"
    conf = workdir / f"{tag}.conf"
    conf.write_text(
        nginx_common(workdir, tag, workers)
        + f"""
  upstream backend {{
    server 127.0.0.1:{backend};
    keepalive 64;
    keepalive_requests 100000000;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      {NGINX_PROXY_EXTRA}
    }}
  }}
}}
"""
    )
    return spawn("nginx", ["nginx", "-c", str(conf), "-p", str(workdir)], port, workdir, cpus)


def start_haproxy(backend, workdir, cpus):
    port = free_port()
    conf = workdir / "haproxy.cfg"
    conf.write_text(
        f"""
global
  nbthread 1
  maxconn {HAPROXY_MAXCONN}
defaults
  mode http
  timeout connect 1s
  timeout client 300s
  timeout server 300s
  option http-keep-alive
  http-reuse always
frontend bench
  bind 127.0.0.1:{port}
  default_backend service
backend service
  server service 127.0.0.1:{backend}
"""
    )
    return spawn("haproxy", ["haproxy", "-db", "-f", str(conf)], port, workdir, cpus)


def start_pingora(backend, workdir, cpus):
    port = free_port()
    env = {"PINGORA_LISTEN": f"127.0.0.1:{port}", "PINGORA_UPSTREAM": f"127.0.0.1:{backend}"}
    return spawn("pingora", [str(PINGORA), "-c", str(PINGORA_CONF)], port, workdir, cpus, env)


def start_envoy(backend, workdir, cpus, h2=False):
    """Envoy with one worker; with `h2`, HTTP/2 on both sides (h2c clients by
    the preface, HTTP/2 to the service), as bench/h2.py compares."""
    port = free_port()
    conf = workdir / ("envoy-h2.yaml" if h2 else "envoy.yaml")
    upstream_h2 = """
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}""" if h2 else ""
    conf.write_text(
        f"""
static_resources:
  listeners:
  - name: bench
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: {"AUTO" if h2 else "HTTP1"}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: service, timeout: 0s}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: service
    connect_timeout: 1s
    type: STATIC{upstream_h2}
    load_assignment:
      cluster_name: service
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {backend}}}}}}}
"""
    )
    envoy = shutil.which("envoy") or "envoy"
    argv = [envoy, "-c", str(conf), "--concurrency", "1", "--log-level", "error",
            "--disable-hot-restart", "--base-id", str(port)]
    return spawn("envoy", argv, port, workdir, cpus)


def start_direct(backend_running):
    """'direct' is the backend itself: the floor every proxy is compared with."""
    return Running("direct", backend_running.port, backend_running.proc)


# Order matters only for the table; rounds rotate it so drift hits all alike.
TARGETS = ["direct", "sitio-bare", "sitio-default", "nginx", "haproxy", "pingora", "envoy"]
# Run only when asked for (--targets ...,sitio-baseline): another build, SITIO_BASELINE.
OPTIONAL = ["sitio-baseline"]
PEERS = ["nginx", "haproxy", "pingora", "envoy"]


def start(name, backend, workdir, cpus):
    if name == "direct":
        return start_direct(backend)
    if name == "sitio-bare":
        return start_sitio(name, backend.port, workdir, cpus, defaults=False)
    if name == "sitio-default":
        return start_sitio(name, backend.port, workdir, cpus, defaults=True)
    if name == "sitio-baseline":
        # Another build of sitio (SITIO_BASELINE=path), default settings: compares
        # two builds in one run, rounds interleaved like every target.
        baseline = os.environ.get("SITIO_BASELINE")
        if not baseline:
            raise SystemExit("sitio-baseline: set SITIO_BASELINE to the other build's binary")
        return start_sitio(name, backend.port, workdir, cpus, defaults=True, binary=baseline)
    return {
        "nginx": start_nginx,
        "haproxy": start_haproxy,
        "pingora": start_pingora,
        "envoy": start_envoy,
    }[name](backend.port, workdir, cpus)
