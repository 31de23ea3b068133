#!/usr/bin/env python3
"""What streaming a large body costs each proxy: CPU seconds per GiB.

The fast-path issue asks whether splice(2) (zero-copy between the two
sockets, when no decorator watches the body) is worth building. HAProxy has
it (`option splice-auto`), so HAProxy with and without it, beside sitio and
nginx, measures what the copy through user space costs on this machine.

Each target runs with one worker in front of the same nginx backend; curl
fetches the backend's 1 GiB file through it ROUNDS times (rotating the
order); the figure is the proxy's CPU time (user + system, /proc) per GiB,
median of the rounds.

Usage: bench/stream_cpu.py [--rounds 3]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import measure  # noqa: E402
import peers  # noqa: E402


def start_haproxy_splice(backend, workdir, cpus):
    """HAProxy as bench/run.sh starts it, with splice(2) for bodies."""
    running = peers.start_haproxy(backend, workdir, cpus)
    running.stop()
    text = (workdir / "haproxy.cfg").read_text()
    # Splicing needs a pipe pair per stream: fewer connections fit the fd limit.
    text = text.replace(f"maxconn {peers.HAPROXY_MAXCONN}", "maxconn 4096")
    text = text.replace("  http-reuse always\n", "  http-reuse always\n  option splice-auto\n")
    port = peers.free_port()
    text = text.replace(f"bind 127.0.0.1:{running.port}", f"bind 127.0.0.1:{port}")
    conf = workdir / "haproxy-splice.cfg"
    conf.write_text(text)
    return peers.spawn("haproxy-splice", ["haproxy", "-db", "-f", str(conf)], port, workdir, cpus)


def fetch(port):
    started = time.time()
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}",
         f"http://127.0.0.1:{port}{peers.BIG_PATH}"],
        capture_output=True, text=True, check=True)
    assert int(out.stdout) == peers.BIG_BYTES, out.stdout
    return time.time() - started


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    targets = ["sitio-default", "nginx", "haproxy", "haproxy-splice"]
    cpu = {t: [] for t in targets}
    wall = {t: [] for t in targets}
    with tempfile.TemporaryDirectory(prefix="sitio-stream-") as tmp:
        workdir = Path(tmp)
        backend = peers.start_backend(workdir, None)
        running = {}
        try:
            for t in targets:
                running[t] = (start_haproxy_splice(backend.port, workdir, None) if t == "haproxy-splice"
                              else peers.start(t, backend, workdir, None))
            for r in range(args.rounds):
                for t in targets[r % len(targets):] + targets[:r % len(targets)]:
                    pids = running[t].pids()
                    before = measure.cpu_seconds(pids)
                    wall[t].append(fetch(running[t].port))
                    cpu[t].append(measure.cpu_seconds(pids) - before)
                    print(f"  round {r + 1} {t:15} {cpu[t][-1]:.2f} CPU s/GiB, {wall[t][-1]:.2f} s", file=sys.stderr)
        finally:
            for t in running.values():
                t.stop()
            backend.stop()
    print("| proxy | CPU s per GiB | time per GiB (s) |")
    print("|---|---|---|")
    for t in targets:
        print(f"| {t} | {statistics.median(cpu[t]):.2f} | {statistics.median(wall[t]):.2f} |")


if __name__ == "__main__":
    main()
