#!/usr/bin/env python3
"""sitio against nginx, HAProxy, Pingora and Envoy, on this machine, in one run.

Run through bench/run.sh, which installs the peers and builds sitio first.
Each mode starts a backend (nginx: a 100-byte file, a 1 GiB file, 404
elsewhere) and every target, then runs rounds in rotating order so that
machine drift hits every target alike, then the memory runs.
"""

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import measure  # noqa: E402
import peers  # noqa: E402
import report  # noqa: E402

MODES = {
    # load generator on CPU 0; backend and proxy share CPU 1
    "pinned": {"load": "0", "server": "1"},
    # the scheduler places everything
    "unpinned": {"load": None, "server": None},
}


def arguments():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="rounds of load per target (default 3)")
    p.add_argument("--seconds", type=int, default=8, help="length of each load run (default 8)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections at saturation (default 64)")
    p.add_argument("--rate", type=int, default=2000, help="requests/s of the fixed-rate run (default 2000)")
    p.add_argument("--rate-connections", type=int, default=16, help="oha connections at the fixed rate")
    p.add_argument("--modes", default="pinned,unpinned", help="pinned, unpinned or both (default both)")
    p.add_argument("--targets", default=",".join(peers.TARGETS), help="comma-separated subset of targets")
    # 9,000, not the 10,000: HAProxy's maxconn must fit the descriptor
    # limit at two per connection (20,000 on these machines).
    p.add_argument("--idle-connections", type=int, default=9000,
                   help="idle keep-alive clients for the memory per client (default 9,000)")
    p.add_argument("--stream-rate", default="256M", help="client read rate while streaming 1 GiB (curl)")
    p.add_argument("--skip-memory", action="store_true", help="skip the idle-connection and streaming runs")
    p.add_argument("--out", default=str(peers.ROOT / "target" / "bench"), help="where results go")
    p.add_argument("--docs", action="store_true", help="also write docs/benchmarks.md and its plot")
    return p.parse_args()


def version(argv, pattern=r"[\d.]+\d"):
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(pattern, proc.stdout + proc.stderr)
    if not m:
        return None
    return m.group(1) if m.groups() else m.group(0)


def machine():
    cpu = "unknown"
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
    except (OSError, AttributeError):
        pass
    lock = (peers.ROOT / "bench" / "peers" / "pingora" / "Cargo.lock")
    pingora = None
    if lock.exists():
        m = re.search(r'name = "pingora"\nversion = "([^"]+)"', lock.read_text())
        pingora = m and m.group(1)
    rev = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=peers.ROOT)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "versions": {
            "sitio": rev.stdout.strip() or None,
            "nginx": version(["nginx", "-v"], r"nginx/([\d.]+)"),
            "haproxy": version(["haproxy", "-v"], r"version ([\d.]+)"),
            "envoy": version([shutil.which("envoy") or "envoy", "--version"], r"version: \w+/(\d+\.\d+\.\d+)/"),
            "pingora": pingora,
            "wrk": version(["wrk", "-v"], r"wrk \S*?(\d+\.\d+\.\d+)"),
            "oha": version(["oha", "--version"]),
        },
    }


def run_mode(mode, cpus, targets, args, workdir):
    print(f"\n== {mode}: load on CPU {cpus['load'] or 'any'}, backend and proxy on CPU {cpus['server'] or 'any'}",
          flush=True)
    backend = peers.start_backend(workdir, cpus["server"])
    running = {}
    try:
        for name in targets:
            running[name] = peers.start(name, backend, workdir, cpus["server"])
        time.sleep(1.0)
        rows = {name: {"target": name} for name in targets}
        for name, r in running.items():
            rows[name]["idle_rss_mib"] = measure.rss_mib(r.pids()) if name != "direct" else None
        url = lambda name: f"http://127.0.0.1:{running[name].port}{peers.SMALL_PATH}"
        proxy_pids = lambda name: running[name].pids() if name != "direct" else []
        # Warm-up: pools filled, caches hot, lazy allocations done.
        for name in targets:
            measure.saturation(url(name), 2, args.connections, cpus["load"], [])
        rounds = {name: [] for name in targets}
        for n in range(args.rounds):
            order = targets[n % len(targets):] + targets[: n % len(targets)]
            for name in order:
                sat = measure.saturation(url(name), args.seconds, args.connections, cpus["load"], proxy_pids(name))
                rate = measure.fixed_rate(url(name), args.seconds, args.rate, args.rate_connections, cpus["load"],
                                          proxy_pids(name))
                rounds[name].append({
                    **sat,
                    "rate_p50_ms": rate["p50_ms"],
                    "rate_p99_ms": rate["p99_ms"],
                    "rate_cpu_us_per_req": rate["cpu_us_per_req"],
                    "errors": sat["errors"] + rate["errors"],
                })
                cpu = sat["cpu_us_per_req"]
                print(f"  round {n + 1} {name:14} {sat['rps']:>9,.0f} req/s  "
                      f"p99 {sat['p99_ms']:.2f} ms  p99@{args.rate}/s {rate['p99_ms']:.3f} ms  "
                      + (f"CPU {cpu:.1f} us/req, {rate['cpu_us_per_req']:.1f} at the rate" if cpu else ""),
                      flush=True)
        for name in targets:
            rows[name].update(report.summarize(rounds[name]))
            if name != "direct":
                rows[name]["peak_rss_mib"] = measure.peak_rss_mib(running[name].pids())
        if not args.skip_memory:
            for name in targets:
                if name == "direct":
                    continue
                pids = running[name].pids()
                rss, alive, at_rest = measure.idle_connections(running[name].port, peers.SMALL_PATH,
                                                               args.idle_connections, pids)
                rows[name]["idle_conns_rss_mib"] = rss
                rows[name]["idle_conns_alive"] = alive
                # What each idle client costs: the growth over the proxy's RSS
                # just before they came (after the load runs, for every proxy alike).
                if alive:
                    rows[name]["idle_conn_kib"] = (rss - at_rest) * 1024 / alive
                before, growth = measure.streaming(f"http://127.0.0.1:{running[name].port}{peers.BIG_PATH}",
                                                   peers.BIG_BYTES, args.stream_rate, cpus["load"], pids)
                rows[name]["stream_growth_mib"] = growth
                per = rows[name].get("idle_conn_kib")
                each = f" ({per:.2f} KiB each)" if per is not None else ""
                print(f"  memory {name:13} {rss:.1f} MiB with {alive} idle clients{each}, "
                      f"+{growth:.1f} MiB while streaming 1 GiB", flush=True)
        direct = rows.get("direct", {}).get("rps")
        for row in rows.values():
            if direct and row.get("rps"):
                row["rps_vs_direct"] = row["rps"] / direct
        return [rows[name] for name in targets]
    finally:
        for r in running.values():
            if r.name != "direct":
                r.stop()
        backend.stop()


def write_docs(machine_info, modes, plot_path, args):
    docs = peers.ROOT / "docs" / "benchmarks.md"
    text = docs.read_text() if docs.exists() else "<!-- bench:begin -->\n<!-- bench:end -->\n"
    lines = [
        "<!-- bench:begin -->",
        f"Latest run: {machine_info['date']} on {machine_info['cpu']}, {machine_info['cores']} cores, "
        f"{machine_info['memory_gib']} GiB, Linux {machine_info['kernel']}.  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in machine_info["versions"].items() if v) + ".  ",
        f"{args.rounds} rounds of {args.seconds} s per target; wrk -c{args.connections}; "
        f"oha -q {args.rate} -c{args.rate_connections}. Medians; ±x% is half the spread between rounds.",
        "",
    ]
    for mode, rows in modes.items():
        lines += [f"### {mode}", "", report.table(rows, markdown=True), ""]
        lines += ["```"] + report.ratios(rows) + [""]
        lines += [f"{status} {text}" for status, text in report.checks(rows)] + ["```", ""]
    if plot_path:
        shutil.copy(plot_path, peers.ROOT / "docs" / "benchmarks.png")
        lines += ["![sitio and its peers](benchmarks.png)", ""]
    lines.append("<!-- bench:end -->")
    start, end = text.index("<!-- bench:begin -->"), text.index("<!-- bench:end -->") + len("<!-- bench:end -->")
    docs.write_text(text[:start] + "\n".join(lines) + text[end:])
    print(f"updated {docs}")


def main():
    args = arguments()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(targets) - set(peers.TARGETS) - set(peers.OPTIONAL)
    if unknown:
        sys.exit(f"unknown targets {sorted(unknown)}; known: {', '.join(peers.TARGETS + peers.OPTIONAL)}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(modes) - set(MODES):
        sys.exit(f"--modes accepts pinned, unpinned; got {args.modes}")
    if (os.cpu_count() or 1) < 2 and "pinned" in modes:
        sys.exit("pinned mode needs 2 CPUs")
    measure.raise_fd_limit()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = machine()
    results = {}
    with tempfile.TemporaryDirectory(prefix="sitio-bench-") as tmp:
        for mode in modes:
            results[mode] = run_mode(mode, MODES[mode], targets, args, Path(tmp))
    for mode, rows in results.items():
        print(f"\n== {mode} ({info['date']}, {info['cpu']}, {info['cores']} cores)")
        print(report.table(rows))
        for line in report.ratios(rows):
            print(line)
        for status, text in report.checks(rows):
            print(f"{status} {text}")
        errors = {r["target"]: r["errors"] for r in rows if r.get("errors")}
        if errors:
            print(f"WARNING failed requests: {errors}")
    report.write_jsonl(out / "results.jsonl", info, results)
    plot_path = report.plot(out / "benchmarks.png", results)
    print(f"\nresults: {out / 'results.jsonl'}" + (f", plot: {plot_path}" if plot_path else ", no plot (matplotlib missing)"))
    if args.docs:
        write_docs(info, results, plot_path, args)


if __name__ == "__main__":
    main()
