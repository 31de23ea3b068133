#!/usr/bin/env python3
"""Steady load for restart tests, as well-behaved clients send it.

Usage: load.py HOST PORT SECONDS
Two threads make one request per new connection; one keeps a connection alive
and, like browsers (RFC 9112 §9.3.1), sends an idempotent request again once
when a reused connection closes before answering. Prints "ok N failed M".
"""
import http.client
import socket
import sys
import threading
import time

host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.time() + seconds
lock = threading.Lock()
counts = {"ok": 0, "failed": 0}


def count(ok, why=""):
    with lock:
        counts["ok" if ok else "failed"] += 1
    if not ok:
        print("failure:", why, file=sys.stderr, flush=True)


def fresh_connections():
    while time.time() < deadline:
        try:
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(b"GET /api/photos HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            s.close()
            count(data.startswith(b"HTTP/1.1 200"), data[:40])
        except OSError as e:
            count(False, repr(e))


def keep_alive():
    conn = None
    while time.time() < deadline:
        for attempt in (1, 2):
            reused = conn is not None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=5)
                conn.request("GET", "/api/photos")
                res = conn.getresponse()
                res.read()
                count(res.status == 200, res.status)
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                conn = None
                if reused and attempt == 1:
                    continue  # closed while idle: send again on a new connection
                count(False, repr(e))
                break
            except OSError as e:
                conn = None
                count(False, repr(e))
                break
        time.sleep(0.002)


threads = [threading.Thread(target=fresh_connections) for _ in range(2)]
threads.append(threading.Thread(target=keep_alive))
for t in threads:
    t.start()
for t in threads:
    t.join()
print("ok %d failed %d" % (counts["ok"], counts["failed"]), flush=True)
