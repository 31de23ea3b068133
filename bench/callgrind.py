#!/usr/bin/env python3
"""Instructions per request of one or more sitio builds, counted by callgrind,
which other tenants of a shared machine do not disturb (wrk's CPU figures do).

Each build runs under valgrind with one worker and default settings in front
of nginx (100-byte responses); one keep-alive client sends N requests. The
figure is (instructions with 4,000 requests - with 1,000) / 3,000, so start-up
and shutdown cancel out.

With --browser, each request carries the fields a browser sends behind an
ingress (user agent, accepts, cookie, referer, keep-alive, X-Forwarded-For):
what a sidecar's requests look like, rather than a bench client's two fields.

With --upload, each request is a PUT with a chunked body of 1 KiB in two
chunks, which nginx stores (WebDAV) and answers with 204: the body is read
whole before the answer (an answer before it would close the client's
connection, with any proxy).

Usage: bench/callgrind.py NAME=PATH/TO/sitio [NAME=PATH ...] [--rounds 2] [--browser] [--upload]
Needs valgrind and nginx (scripts/install-missing.sh valgrind:valgrind nginx:nginx).
"""

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def start_nginx(root):
    port = free_port()
    os.makedirs(os.path.join(root, "upload"), exist_ok=True)
    with open(os.path.join(root, "hello.txt"), "w") as f:
        f.write("x" * 99 + "\n")
    conf = os.path.join(root, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off; master_process off; worker_processes 1;
error_log /dev/null; pid {root}/nginx.pid;
events {{ worker_connections 1024; }}
http {{ access_log off; keepalive_requests 100000;
  server {{ listen 127.0.0.1:{port}; root {root};
    location /upload/ {{ dav_methods PUT; client_body_temp_path {root}/tmp; }} }} }}
""")
    proc = subprocess.Popen(["nginx", "-c", conf, "-p", root], stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port


BROWSER = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "en-GB,en;q=0.5",
    "Cookie": "session=7d1c3f0e9a2b4c58; theme=dark",
    "Referer": "https://shop.example/catalog?page=2",
    "Connection": "keep-alive",
    "X-Forwarded-For": "203.0.113.9",
}


def send(conn, fields, upload):
    """One request; the response read and checked."""
    if upload:
        chunks = iter([b"u" * 512, b"v" * 512])
        conn.request("PUT", "/upload/file", body=chunks, headers=fields or {}, encode_chunked=True)
        res = conn.getresponse()
        assert res.status in (201, 204), res.status
        res.read()
        return
    conn.request("GET", "/hello.txt", headers=fields or {})
    res = conn.getresponse()
    assert res.status == 200 and len(res.read()) == 100


def instructions(binary, target_port, requests, out, fields=None, upload=False):
    port = free_port()
    env = dict(os.environ, PORT=str(port), TARGET_PORT=str(target_port),
               SITIO_WORKERS="1", SITIO_ADMIN_PORT=str(free_port()), SITIO_DRAIN_SECONDS="1")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(requests):
        send(conn, fields, upload)
    conn.close()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    total = 0
    for name in os.listdir(os.path.dirname(out)):
        if name.startswith(os.path.basename(out)):
            with open(os.path.join(os.path.dirname(out), name)) as f:
                m = re.search(r"^summary:\s+(\d+)", f.read(), re.M)
                total += int(m.group(1)) if m else 0
    return total


def main():
    args = sys.argv[1:]
    rounds = 2
    if "--rounds" in args:
        i = args.index("--rounds")
        rounds = int(args[i + 1])
        del args[i:i + 2]
    fields = None
    if "--browser" in args:
        args.remove("--browser")
        fields = BROWSER
    upload = "--upload" in args
    if upload:
        args.remove("--upload")
    builds = [a.split("=", 1) for a in args]
    if not builds:
        raise SystemExit(__doc__)
    with tempfile.TemporaryDirectory() as root:
        nginx, nport = start_nginx(root)
        try:
            for name, binary in builds:
                figures = []
                for r in range(rounds):
                    few = instructions(binary, nport, 1000, f"{root}/cg-{name}-{r}-few", fields, upload)
                    many = instructions(binary, nport, 4000, f"{root}/cg-{name}-{r}-many", fields, upload)
                    figures.append((many - few) / 3000)
                shown = ", ".join(f"{f:,.0f}" for f in figures)
                print(f"{name}: instructions per request {min(figures):,.0f} (rounds: {shown})")
        finally:
            nginx.terminate()


if __name__ == "__main__":
    main()
