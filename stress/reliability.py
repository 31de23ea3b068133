#!/usr/bin/env python3
"""sitio, nginx and HAProxy side by side under slow-client attacks, in one run.

For each proxy (one worker each, in front of the same nginx backend): a normal
client's success rate and p99 while slowhttptest runs slowloris (-H), slow body
(-B, against a URL the backend answers at the head, as `return 200` would) and
slow read (-X, a large file); peak memory during the slow read and memory
after it; memory with 9,000 idle keep-alive clients held at each proxy's connection
limit, and whether 5 new clients are served meanwhile. Prints a Markdown table (the one in
docs/reliability.md) and writes target/reliability.jsonl.

Usage: stress/reliability.py [--quick] [--only=sitio-default]   (run by stress/run.sh; needs
20,000 descriptors, nginx, haproxy and slowhttptest installed).
"""

import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import measure  # noqa: E402
import peers  # noqa: E402

QUICK = "--quick" in sys.argv
ATTACK_SECONDS = 12 if QUICK else 30
# 9,000, not 10,000: this machine's descriptor hard limit is 20,000 and
# HAProxy insists on two per connection (its maxconn tops out at 9,990).
IDLE_CLIENTS = 2000 if QUICK else 9_000
SLOW_CONNECTIONS = 1000


def normal_client(port, seconds, rate=50):
    """Fresh-connection GETs at `rate`/s; returns (requests, failed, p99 ms)."""
    latencies, failed = [], 0
    request = f"GET {peers.SMALL_PATH} HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n".encode()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.settimeout(5)
                s.sendall(request)
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                ok = data.startswith(b"HTTP/1.1 200")
        except OSError:
            ok = False
        latencies.append((time.monotonic() - t) * 1000)
        failed += not ok
        time.sleep(max(0.0, 1 / rate - (time.monotonic() - t)))
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)]
    return len(latencies), failed, round(p99, 1)


def attack(mode, url, extra):
    argv = ["slowhttptest", mode, "-c", str(SLOW_CONNECTIONS), "-r", "200", "-i", "5",
            "-l", str(ATTACK_SECONDS + 8), "-p", "5", "-u", url, *extra]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def under_attack(target, mode, path, extra):
    """Normal client's figures while `mode` runs, and the proxy's peak RSS."""
    proc = attack(mode, f"http://127.0.0.1:{target.port}{path}", extra)
    time.sleep(5)  # the attack ramps up
    peak = [0.0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], measure.rss_mib(target.pids()))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample)
    sampler.start()
    n, failed, p99 = normal_client(target.port, ATTACK_SECONDS - 5)
    stop.set()
    sampler.join()
    proc.wait()
    return {"requests": n, "failed": failed, "p99_ms": p99, "peak_rss_mib": round(peak[0], 1)}


def idle_and_new(target):
    """RSS with IDLE_CLIENTS idle keep-alive clients; then 5 new clients."""
    request = f"GET {peers.SMALL_PATH} HTTP/1.1\r\nHost: i\r\n\r\n".encode()
    socks, served = [], 0
    try:
        for _ in range(IDLE_CLIENTS):
            s = socket.create_connection(("127.0.0.1", target.port), timeout=10)
            s.sendall(request)
            measure.read_response(s)
            socks.append(s)
        time.sleep(1)
        rss = measure.rss_mib(target.pids())
        started = time.monotonic()
        for _ in range(5):
            try:
                with socket.create_connection(("127.0.0.1", target.port), timeout=2) as s:
                    s.settimeout(2)
                    s.sendall(request)
                    measure.read_response(s)
                    served += 1
            except (OSError, RuntimeError):
                pass
        new_ms = round((time.monotonic() - started) * 1000, 1)
        per_client = (rss - idle_rss[target.name]) * 1024 / IDLE_CLIENTS
        return {"idle_clients_rss_mib": round(rss, 1), "kib_per_idle_client": round(per_client, 2),
                "new_clients_served": served, "new_clients_ms": new_ms}
    finally:
        for s in socks:
            s.close()


idle_rss = {}


def run_target(name, backend, workdir):
    target = peers.start(name, backend, workdir, None)
    try:
        time.sleep(1)
        idle_rss[name] = measure.rss_mib(target.pids())
        row = {"target": name, "idle_rss_mib": round(idle_rss[name], 1)}
        row["baseline"] = dict(zip(("requests", "failed", "p99_ms"), normal_client(target.port, 5)))
        # Idle clients first, so their figure is not mixed with what the
        # attacks left behind.
        row.update(idle_and_new(target))
        time.sleep(5)
        row["slowloris"] = under_attack(target, "-H", peers.SMALL_PATH, [])
        row["slow_body"] = under_attack(target, "-B", peers.SMALL_PATH, ["-s", "65536"])
        row["slow_read"] = under_attack(
            target, "-X", peers.BIG_PATH, ["-k", "1", "-n", "5", "-w", "512", "-y", "1024", "-z", "32"])
        time.sleep(15)
        row["rss_after_load_mib"] = round(measure.rss_mib(target.pids()), 1)
        return row
    finally:
        target.stop()


def table(rows):
    def ok(r, k):
        a = r[k]
        return f"{100 * (a['requests'] - a['failed']) / max(1, a['requests']):.0f}% / {a['p99_ms']}"
    lines = [
        "| proxy | idle MiB | normal client, no attack: ok / p99 ms | slowloris | slow body | slow read | "
        "peak MiB in slow read | MiB 15 s after it | MiB with "
        f"{IDLE_CLIENTS} idle clients (KiB each) | new clients served while they idle |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['idle_rss_mib']} | {ok(r, 'baseline')} | {ok(r, 'slowloris')} | "
            f"{ok(r, 'slow_body')} | {ok(r, 'slow_read')} | {r['slow_read']['peak_rss_mib']} | "
            f"{r['rss_after_load_mib']} | {r['idle_clients_rss_mib']} ({r['kib_per_idle_client']}) | "
            f"{r['new_clients_served']}/5 in {r['new_clients_ms']} ms |"
        )
    return "\n".join(lines)


def raise_fd_limit():
    """Room for the idle clients and their service connections in every
    proxy (HAProxy wants twice its maxconn)."""
    import resource
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
    except (ValueError, OSError):
        measure.raise_fd_limit()


def main():
    raise_fd_limit()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    # Every proxy's connection limit is the number of idle clients, so the 5
    # new clients arrive at the cap: does an idle client make room for them?
    peers.NGINX_CONNECTIONS = peers.HAPROXY_MAXCONN = IDLE_CLIENTS
    peers.SITIO_EXTRA_ENV = {"SITIO_MAX_CONNECTIONS": str(IDLE_CLIENTS)}
    # nginx's default spools what slow readers do not take to temporary files
    # (up to 1 GiB each): its worker then waits on the disk and a 1,000-client
    # slow read writes gigabytes. Kept in memory, like the other proxies.
    peers.NGINX_PROXY_EXTRA = "proxy_max_temp_file_size 0;"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        backend = peers.start_backend(workdir, None)
        try:
            only = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--only=")]
            for name in only or ["sitio-default", "nginx", "haproxy"]:
                rows.append(run_target(name, backend, workdir))
                print(json.dumps(rows[-1]), flush=True)
        finally:
            backend.stop()
    out = ROOT / "target" / "reliability.jsonl"
    out.parent.mkdir(exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(table(rows))


if __name__ == "__main__":
    main()
