#!/usr/bin/env python3
"""Per-request breakdown of sitio, nginx and HAProxy as proxies: user-space
instructions (callgrind) and system calls (strace -c) per request.

Each proxy runs with one worker, exactly as bench/run.sh starts it
(bench/peers.py), in front of the same nginx backend serving a 100-byte file;
one keep-alive client sends FEW and then MANY requests in two runs, and every
figure is (MANY run - FEW run) / (MANY - FEW), so start-up and shutdown cancel
out. Neither tool is disturbed by other tenants of a shared machine: these are
counts, not times.

With --browser, each request carries a browser's fields behind an ingress
(bench/callgrind.py's BROWSER) instead of a bench client's two.

Usage: bench/breakdown.py [--targets sitio-default,nginx,haproxy] [--few 1000] [--many 4000] [--browser]
Needs valgrind, strace, nginx and HAProxy
(scripts/install-missing.sh valgrind:valgrind strace:strace nginx:nginx haproxy:haproxy).
"""

import argparse
import collections
import http.client
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import peers  # noqa: E402
from callgrind import BROWSER  # noqa: E402

# valgrind keeps a few descriptors of the limit for itself, and HAProxy's
# default here asks for nearly all of a 20,000 limit: one client needs few.
peers.HAPROXY_MAXCONN = 4000

# The fields each request carries besides Host (--browser).
FIELDS = {}


def drive(port, requests):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(requests):
        conn.request("GET", peers.SMALL_PATH, headers=FIELDS)
        res = conn.getresponse()
        body = res.read()
        assert res.status == 200 and len(body) == 100, (res.status, len(body))
    conn.close()


def run_under(tool, target, backend, workdir, requests):
    """Starts `target` under `tool`, sends `requests`, stops it; returns the
    tool's output files."""
    out = workdir / f"{tool}-{target}-{requests}"
    if tool == "callgrind":
        wrapper = ["valgrind", "--tool=callgrind", "--trace-children=yes",
                   f"--callgrind-out-file={out}.%p"]
    else:
        wrapper = ["strace", "-f", "-c", "-o", str(out)]
    real_spawn = peers.spawn

    def wrapped(name, argv, port, wd, cpus, env=None):
        return real_spawn(name, [*wrapper, *argv], port, wd, cpus, env)

    peers.spawn = wrapped
    try:
        running = peers.start(target, backend, workdir, None)
    finally:
        peers.spawn = real_spawn
    try:
        drive(running.port, requests)
    finally:
        # The proxy itself gets the signal (under strace it is the tracer's
        # child); every proxy here exits cleanly on SIGTERM.
        children = [p for p in running.pids() if p != running.proc.pid] if tool == "strace" else []
        for pid in children[:1] or [running.proc.pid]:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            running.proc.wait(timeout=120)  # the tools write their figures at exit
        except subprocess.TimeoutExpired:
            pass
        running.stop()
    return sorted(workdir.glob(out.name + "*"))


def instructions(files):
    total = 0
    for f in files:
        m = re.search(r"^summary:\s+(\d+)", f.read_text(errors="replace"), re.M)
        total += int(m.group(1)) if m else 0
    return total


def syscalls(files):
    counts = collections.Counter()
    for f in files:
        for line in f.read_text(errors="replace").splitlines():
            cols = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(cols) >= 5 and cols[3].isdigit() and cols[-1] != "total":
                counts[cols[-1]] += int(cols[3])
    return counts


def measure(target, backend, workdir, few, many):
    span = many - few
    ins = (instructions(run_under("callgrind", target, backend, workdir, many))
           - instructions(run_under("callgrind", target, backend, workdir, few))) / span
    calls_many = syscalls(run_under("strace", target, backend, workdir, many))
    calls_few = syscalls(run_under("strace", target, backend, workdir, few))
    per_call = {name: (calls_many[name] - calls_few.get(name, 0)) / span for name in calls_many}
    per_call = {k: v for k, v in per_call.items() if v >= 0.05}
    return ins, per_call


def table(results):
    lines = ["| proxy | user-space instructions per request | system calls per request | of which |",
             "|---|---|---|---|"]
    for target, (ins, calls) in results.items():
        top = ", ".join(f"{name} {n:.2f}" for name, n in sorted(calls.items(), key=lambda kv: -kv[1])[:6])
        lines.append(f"| {target} | {ins:,.0f} | {sum(calls.values()):.2f} | {top} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="sitio-default,nginx,haproxy")
    ap.add_argument("--few", type=int, default=1000)
    ap.add_argument("--many", type=int, default=4000)
    ap.add_argument("--browser", action="store_true")
    args = ap.parse_args()
    if args.browser:
        FIELDS.update(BROWSER)
    if not peers.SITIO.exists():
        raise SystemExit(f"{peers.SITIO} is missing: cargo build --release first")
    results = {}
    with tempfile.TemporaryDirectory(prefix="sitio-breakdown-") as tmp:
        workdir = Path(tmp)
        backend = peers.start_backend(workdir, None)
        try:
            for target in args.targets.split(","):
                started = time.time()
                results[target] = measure(target, backend, workdir, args.few, args.many)
                print(f"{target}: {results[target][0]:,.0f} instructions, "
                      f"{sum(results[target][1].values()):.2f} system calls per request "
                      f"({time.time() - started:.0f} s)", file=sys.stderr)
        finally:
            backend.stop()
    print(table(results))


if __name__ == "__main__":
    main()
