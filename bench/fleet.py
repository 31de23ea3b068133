#!/usr/bin/env python3
"""The mothership over a fleet: N sitio instances (one worker each) in front
of one service, scraped by a real Prometheus, then `sitio mothership`:
/fleet.json, /workloads.json (from the recording rules) and one workload's
/fleet.json: time and size; series in Prometheus, memory of each part.

Usage: bench/fleet.py [--instances 100] [--binary target/release/sitio]
Needs prometheus (Debian's package) and a release build of sitio.
"""

import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from callgrind import free_port, wait_port  # noqa: E402  (this directory's helpers)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def promql(port, q):
    url = f"http://127.0.0.1:{port}/api/v1/query?query=" + urllib.parse.quote(q)
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)["data"]["result"]


def traffic(ports, rounds):
    for port in ports:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        for i in range(rounds):
            for path in ("/a.txt", f"/items/{i}", "/missing"):
                conn.request("GET", path)
                conn.getresponse().read()
        conn.close()


def main():
    args = sys.argv[1:]
    n = int(args[args.index("--instances") + 1]) if "--instances" in args else 100
    binary = args[args.index("--binary") + 1] if "--binary" in args else "target/release/sitio"
    procs = []
    root = tempfile.mkdtemp()
    try:
        with open(os.path.join(root, "a.txt"), "w") as f:
            f.write("x" * 100)
        service_port = free_port()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "http.server", str(service_port), "--bind", "127.0.0.1",
             "--directory", root], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(service_port)
        sitios, traffic_ports, admins = [], [], []
        for _ in range(n):
            port, admin = free_port(), free_port()
            env = dict(os.environ, PORT=str(port), SITIO_ADMIN_PORT=str(admin),
                       TARGET_PORT=str(service_port), SITIO_WORKERS="1", SITIO_ACCESS_LOG="off")
            p = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            procs.append(p)
            sitios.append(p)
            traffic_ports.append(port)
            admins.append(admin)
        for port in admins:
            wait_port(port)
        traffic(traffic_ports, 2)
        prom_port = free_port()
        # As Kubernetes discovery labels them: workloads of 10 pods each.
        groups = "".join(
            f"      - targets: ['127.0.0.1:{a}']\n        labels: {{namespace: bench, "
            f"workload: w{i // 10}, pod: w{i // 10}-{i % 10}}}\n" for i, a in enumerate(admins))
        with open("deploy/mothership/recording-rules.yaml") as f:
            rules = f.read().replace("interval: 30s", "interval: 5s")
        with open(os.path.join(root, "rules.yml"), "w") as f:
            f.write(rules)
        with open(os.path.join(root, "prometheus.yml"), "w") as f:
            f.write("global:\n  scrape_interval: 5s\nrule_files: ['rules.yml']\n"
                    "scrape_configs:\n  - job_name: sitio\n"
                    f"    static_configs:\n{groups}")
        prom = subprocess.Popen(
            ["prometheus", f"--config.file={root}/prometheus.yml",
             f"--storage.tsdb.path={root}/data", f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(prom)
        wait_port(prom_port)
        time.sleep(12)  # two scrapes
        traffic(traffic_ports, 10)
        time.sleep(12)
        mother_port = free_port()
        mother = subprocess.Popen(
            [binary, "mothership", "--port", str(mother_port), "--prometheus",
             f"http://127.0.0.1:{prom_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(mother)
        wait_port(mother_port)
        def timed(path):
            times, body = [], b""
            for _ in range(10):
                t = time.time()
                with urllib.request.urlopen(f"http://127.0.0.1:{mother_port}{path}", timeout=60) as r:
                    body = r.read()
                times.append((time.time() - t) * 1000)
            return statistics.median(times), max(times), len(body), json.loads(body)

        fleet = timed("/fleet.json")
        instances = len(fleet[3]["instances"])
        workloads = timed("/workloads.json")
        one = timed("/fleet.json?namespace=bench&workload=w0")
        t = time.time()
        urllib.request.urlopen(f"http://127.0.0.1:{mother_port}/", timeout=10).read()
        page_ms = (time.time() - t) * 1000
        series = promql(prom_port, 'count({__name__=~"sitio_.*|process_.*"})')[0]["value"][1]
        per_pod = int(series) / n
        print(f"instances: {n} (in /fleet.json: {instances})")
        for name, (median, worst, size, _) in [("/fleet.json", fleet), ("/workloads.json", workloads),
                                               ("/fleet.json?workload=w0", one)]:
            print(f"{name}: median {median:.0f} ms, max {worst:.0f} ms, {size / 1024:.0f} KiB")
        print(f"workload view from: {workloads[3]['source']}, "
              f"{len(workloads[3]['workloads'])} workloads; one workload: {len(one[3]['instances'])} pods")
        print(f"page: {page_ms:.1f} ms")
        print(f"series in Prometheus: {series} ({per_pod:.0f} per instance, 3 routes each)")
        print(f"RSS: sitio {statistics.median(rss_mib(p.pid) for p in sitios):.1f} MiB each (median), "
              f"Prometheus {rss_mib(prom.pid):.0f} MiB, mothership {rss_mib(mother.pid):.1f} MiB")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
