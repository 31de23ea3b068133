"""Measurements: load runs (wrk, oha), CPU time and memory of a target's processes."""

import json
import os
import re
import resource
import socket
import subprocess
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_split(pids):
    """(utime, stime) of the processes (all their threads), in seconds: time
    in user space and in the kernel on their behalf."""
    user = kernel = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        kernel += int(fields[12])
    return user / CLK_TCK, kernel / CLK_TCK


def cpu_seconds(pids):
    """utime + stime of the processes (all their threads), in seconds."""
    return sum(cpu_split(pids))


def status_kib(pids, key):
    """Sum of a /proc/<pid>/status field (VmRSS, VmHWM) over the processes, in KiB."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def rss_mib(pids):
    return status_kib(pids, "VmRSS") / 1024


def peak_rss_mib(pids):
    return status_kib(pids, "VmHWM") / 1024


def pinned(argv, cpus):
    return ["taskset", "-c", cpus, *argv] if cpus is not None else argv


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def saturation(url, seconds, connections, cpus, pids):
    """wrk at full speed: req/s, p50/p99 and proxy CPU per request (and the
    kernel's part of it: the floor that no user-space saving goes below)."""
    user_before, kernel_before = cpu_split(pids)
    out = subprocess.run(
        pinned(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url], cpus),
        capture_output=True, text=True, check=True,
    ).stdout
    user_after, kernel_after = cpu_split(pids)
    used = user_after - user_before + kernel_after - kernel_before
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": ms(latency["50"]),
        "p99_ms": ms(latency["99"]),
        "cpu_us_per_req": used / requests * 1e6 if pids else None,
        "kernel_us_per_req": (kernel_after - kernel_before) / requests * 1e6 if pids else None,
        "errors": errors,
        "requests": requests,
    }


def fixed_rate(url, seconds, rate, connections, cpus, pids=()):
    """oha at a fixed rate, with latency correction: p50/p99 a user would see,
    and the CPU per request of `pids` at that rate (most sidecars run well
    below saturation, where each request wakes the proxy on its own)."""
    cpu_before = cpu_seconds(pids)
    out = subprocess.run(
        pinned(["oha", "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-q", str(rate),
                "--latency-correction", "-c", str(connections), url], cpus),
        capture_output=True, text=True, check=True,
    ).stdout
    report = json.loads(out)
    pct = report["latencyPercentiles"]
    codes = report.get("statusCodeDistribution", {})
    ok = sum(n for code, n in codes.items() if code.startswith("2"))
    total = sum(codes.values())
    # Requests still in flight when the run's time is up are cut off by oha
    # itself ("aborted due to deadline"): not the target's failures.
    failures = {k: n for k, n in report.get("errorDistribution", {}).items() if "deadline" not in k}
    errors = sum(failures.values()) + (total - ok)
    cpu = cpu_seconds(pids) - cpu_before
    cpu_us = cpu * 1e6 / total if pids and total else None
    return {"p50_ms": pct["p50"] * 1e3, "p99_ms": pct["p99"] * 1e3, "errors": errors, "cpu_us_per_req": cpu_us}


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def idle_connections(port, path, count, pids):
    """RSS with `count` idle keep-alive clients, each having made one request:
    (RSS, clients still held, RSS just before they came)."""
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    socks = []
    at_rest = rss_mib(pids)
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(request)
            read_response(s)
            socks.append(s)
        time.sleep(1.0)
        alive = 0
        # Only connections the proxy still holds count: a proxy that closed
        # them would look cheap for the wrong reason.
        for s in socks:
            s.setblocking(False)
            try:
                alive += s.recv(1) != b""
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        return rss_mib(pids), alive, at_rest
    finally:
        for s in socks:
            s.close()


def read_response(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed before a response head")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed mid-body")
        body += chunk


def streaming(url, expected_bytes, rate, cpus, pids):
    """Peak RSS growth while one client downloads a large response at `rate`."""
    start = rss_mib(pids)
    peak = start
    done = threading.Event()
    result = {}

    def download():
        proc = subprocess.run(
            pinned(["curl", "-s", "-o", "/dev/null", "--limit-rate", rate, "-w", "%{size_download}", url], cpus),
            capture_output=True, text=True,
        )
        result["bytes"] = int(proc.stdout or 0)
        done.set()

    thread = threading.Thread(target=download)
    thread.start()
    while not done.wait(0.02):
        peak = max(peak, rss_mib(pids))
    thread.join()
    if result["bytes"] != expected_bytes:
        raise RuntimeError(f"streamed {result['bytes']} bytes of {expected_bytes}")
    return start, peak - start
