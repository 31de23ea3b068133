#!/usr/bin/env python3
"""HTTP/2 and gRPC: sitio against Envoy (the gRPC anchor), HAProxy and nginx,
in one run on this machine, with h2load (nghttp2).

Every proxy listens for h2c with prior knowledge and speaks HTTP/2 to one
service (bench/peers/h2-backend: 100 bytes for a GET, one gRPC message and a
grpc-status trailer for a gRPC call), with one worker thread and no access
log. Load on CPU 0, service and proxy on CPU 1 (as bench/run.sh's pinned
mode). Two kinds of request:

  h2     GET of 100 bytes
  grpc   a unary gRPC call (POST application/grpc, 5-byte message each way)

For each: req/s at saturation (h2load, 16 connections x 10 streams), the
proxy's CPU per request, p99 at saturation and at a fixed 2,000 req/s (from
h2load's per-request log), and the proxy's memory (idle, peak). Rounds
rotate the order so that drift hits every target alike; medians reported.

Usage: bench/h2.py [--rounds 3] [--seconds 6] [--docs]
Needs h2load, nginx, haproxy, envoy and release builds of sitio and of the
service: bench/run.sh --h2 installs and builds them, then runs this.
"""

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import measure  # noqa: E402
import peers  # noqa: E402

BACKEND = peers.ROOT / "bench" / "peers" / "h2-backend" / "target" / "release" / "h2-backend"
TARGETS = ["sitio", "envoy", "haproxy", "nginx"]
KINDS = {
    "h2": {"path": "/hello.txt", "args": []},
    "grpc": {"path": "/bench.Echo/Say", "args": ["-H", "content-type: application/grpc", "-H", "te: trailers"]},
}
LOAD_CPU, SERVER_CPU = "0", "1"


def start_backend(workdir):
    port = peers.free_port()
    return peers.spawn("h2-backend", [str(BACKEND)], port, workdir, SERVER_CPU, {"PORT": str(port)})


def start_sitio(backend, workdir):
    port = peers.free_port()
    env = {"PORT": str(port), "TARGET_PORT": str(backend), "SITIO_TARGET_HOST": "127.0.0.1",
           "SITIO_WORKERS": "1", "SITIO_ACCESS_LOG": "off", "SITIO_ADMIN_PORT": str(peers.free_port()),
           "RUST_LOG": "warn"}
    return peers.spawn("sitio", [str(peers.SITIO)], port, workdir, SERVER_CPU, env)


def start_envoy(backend, workdir):
    return peers.start_envoy(backend, workdir, SERVER_CPU, h2=True)


def start_haproxy(backend, workdir):
    port = peers.free_port()
    conf = workdir / "haproxy-h2.cfg"
    conf.write_text(f"""
global
  nbthread 1
defaults
  mode http
  timeout connect 1s
  timeout client 300s
  timeout server 300s
  http-reuse always
frontend bench
  bind 127.0.0.1:{port} proto h2
  default_backend service
backend service
  server service 127.0.0.1:{backend} proto h2
""")
    return peers.spawn("haproxy", ["haproxy", "-db", "-f", str(conf)], port, workdir, SERVER_CPU)


def start_nginx(backend, workdir):
    """nginx proxies HTTP/2 to a service only as gRPC (grpc_pass), which
    carries plain HTTP/2 requests too."""
    port = peers.free_port()
    conf = workdir / "nginx-h2.conf"
    conf.write_text(peers.nginx_common(workdir, "nginx-h2") + f"""
  http2_max_requests 100000000;
  upstream service {{
    server 127.0.0.1:{backend};
    keepalive 16;
    keepalive_requests 100000000;
  }}
  server {{
    listen 127.0.0.1:{port} http2;
    location / {{ grpc_pass grpc://service; }}
  }}
}}
""")
    return peers.spawn("nginx", ["nginx", "-c", str(conf), "-p", str(workdir)], port, workdir, SERVER_CPU)


STARTERS = {"sitio": start_sitio, "envoy": start_envoy, "haproxy": start_haproxy, "nginx": start_nginx}


def h2load(url, kind, seconds, workdir, rate=None):
    """One h2load run: requests done, failures, and the per-request times (ms)."""
    log = workdir / "h2load.log"
    log.unlink(missing_ok=True)  # h2load appends to it
    argv = ["h2load", "-D", str(seconds), "--log-file", str(log), *KINDS[kind]["args"]]
    if kind == "grpc":
        argv += ["-d", str(workdir / "message.bin")]
    if rate:
        # 16 clients, one stream each, at rate/16 requests per second each.
        argv += ["-c", "16", "-m", "1", f"--rps={rate / 16}"]
    else:
        argv += ["-c", "16", "-m", "10"]
    out = subprocess.run(measure.pinned([*argv, url], LOAD_CPU), capture_output=True, text=True).stdout
    m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
    counts = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    if not m or not counts:
        raise RuntimeError(f"h2load got nothing from {url}:\n{out}")
    done, succeeded = int(counts.group(1)), int(counts.group(2))
    non_2xx = sum(int(n) for n in re.findall(r"(\d+) [345]xx", out))
    times = sorted(int(line.split("\t")[2]) / 1000 for line in log.read_text().splitlines())
    return {"done": done, "failed": done - succeeded + non_2xx, "rps": float(m.group(2)),
            "p99_ms": times[int(len(times) * 0.99)]}


def measure_round(target, running, kind, args, workdir):
    url = f"http://127.0.0.1:{running.port}{KINDS[kind]['path']}"
    pids = running.pids()
    before = measure.cpu_seconds(pids)
    sat = h2load(url, kind, args.seconds, workdir)
    used = measure.cpu_seconds(pids) - before
    fixed = h2load(url, kind, args.seconds, workdir, rate=args.rate)
    return {"rps": sat["rps"], "cpu_us_per_req": used / sat["done"] * 1e6, "p99_ms": sat["p99_ms"],
            "rate_p99_ms": fixed["p99_ms"], "errors": sat["failed"] + fixed["failed"]}


def median(rows, key):
    return statistics.median(r[key] for r in rows)


def table(results, kinds, targets):
    lines = ["| kind | target | req/s | CPU µs/req | p99 ms | p99 ms @ fixed rate | idle MiB | peak MiB | errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for kind in kinds:
        for t in targets:
            r = results[kind][t]
            lines.append(f"| {kind} | {t} | {r['rps']:,.0f} | {r['cpu_us_per_req']:.1f} | {r['p99_ms']:.2f} | "
                         f"{r['rate_p99_ms']:.2f} | {r['idle_mib']:.1f} | {r['peak_mib']:.1f} | {r['errors']} |")
    return lines


def ratios(results, kinds, targets):
    lines = []
    for kind in kinds:
        s = results[kind]["sitio"]
        for peer in [t for t in targets if t != "sitio"]:
            p = results[kind][peer]
            lines.append(f"{kind}: sitio/{peer} CPU per request {s['cpu_us_per_req'] / p['cpu_us_per_req']:.2f}, "
                         f"req/s {s['rps'] / p['rps']:.2f}, p99 at the fixed rate "
                         f"{s['rate_p99_ms'] / p['rate_p99_ms']:.2f}")
    return lines


def write_docs(lines):
    docs = peers.ROOT / "docs" / "benchmarks.md"
    text = docs.read_text()
    begin, end = "<!-- h2bench:begin -->", "<!-- h2bench:end -->"
    if begin not in text:
        text += f"\n## HTTP/2 and gRPC (bench/h2.py)\n\n{begin}\n{end}\n"
    start, stop = text.index(begin), text.index(end) + len(end)
    docs.write_text(text[:start] + "\n".join([begin, *lines, end]) + text[stop:])
    print(f"updated {docs}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=6)
    p.add_argument("--rate", type=int, default=2000, help="requests/s of the fixed-rate run (default 2000)")
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--docs", action="store_true", help="also write the table into docs/benchmarks.md")
    args = p.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    kinds = list(KINDS)
    measure.raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="sitio-h2-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "message.bin").write_bytes(b"\0\0\0\0\x05hello")
        backend = start_backend(workdir)
        running = {}
        try:
            for t in targets:
                running[t] = STARTERS[t](backend.port, workdir)
            time.sleep(1.0)
            idle = {t: measure.rss_mib(r.pids()) for t, r in running.items()}
            for t in targets:  # warm-up
                for kind in kinds:
                    h2load(f"http://127.0.0.1:{running[t].port}{KINDS[kind]['path']}", kind, 1, workdir)
            rounds = {kind: {t: [] for t in targets} for kind in kinds}
            for n in range(args.rounds):
                order = targets[n % len(targets):] + targets[:n % len(targets)]
                for t in order:
                    for kind in kinds:
                        r = measure_round(t, running[t], kind, args, workdir)
                        rounds[kind][t].append(r)
                        print(f"  round {n + 1} {kind:4} {t:8} {r['rps']:>9,.0f} req/s  "
                              f"CPU {r['cpu_us_per_req']:.1f} us/req  p99 {r['p99_ms']:.2f} ms  "
                              f"p99@{args.rate}/s {r['rate_p99_ms']:.2f} ms  errors {r['errors']}", flush=True)
            results = {kind: {} for kind in kinds}
            for kind in kinds:
                for t in targets:
                    rows = rounds[kind][t]
                    results[kind][t] = {k: median(rows, k) for k in ("rps", "cpu_us_per_req", "p99_ms", "rate_p99_ms")}
                    results[kind][t]["errors"] = sum(r["errors"] for r in rows)
                    results[kind][t]["idle_mib"] = idle[t]
                    results[kind][t]["peak_mib"] = measure.peak_rss_mib(running[t].pids())
        finally:
            for r in running.values():
                r.stop()
            backend.stop()
    lines = table(results, kinds, targets)
    versions = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.strip()
    header = [f"Latest run: {time.strftime('%Y-%m-%d')}, {args.rounds} rounds of {args.seconds} s per target "
              f"and kind, medians; h2load ({versions}) -c16 -m10 at saturation, -c16 -m1 at {args.rate} req/s "
              "for the fixed rate. Load on CPU 0, service and proxy on CPU 1.", ""]
    print("\n".join(lines))
    ratio_lines = ratios(results, kinds, targets) if "sitio" in targets else []
    print("\n".join(ratio_lines))
    if args.docs:
        write_docs(header + lines + ["", "```", *ratio_lines, "```"])


if __name__ == "__main__":
    main()
