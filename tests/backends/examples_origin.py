#!/usr/bin/env python3
"""A service process for the examples' tests (HTTP/1.1, keep-alive, threaded).

Usage: examples_origin.py NAME   (listens on 127.0.0.1, port chosen by the OS)
Prints "PORT <n>" first. Routes:
  GET  /headers[/...]    the request head as text (what the service received)
  POST /echo             the request body back; X-Origin: NAME on every answer
  GET  /page.html?n=N    text/html with Content-Length: "Boring page N. " N times
  GET  /chunked.html     text/html, chunked, "Boring" split across chunks
  GET  /data.json        application/json mentioning Boring (not HTML)
  POST /introspect       RFC 7662 after 300 ms: tokens "good-X" are active for
                         user "user-X" (exp in 60 s), anything else inactive;
                         prints "INTROSPECT <token>" for each call
"""
import json
import sys
import time
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

NAME = sys.argv[1] if len(sys.argv) > 1 else "origin"
lock = threading.Lock()


def emit(line):
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, ctype, body):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Origin", NAME)
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/headers" or url.path.startswith("/headers/"):
            head = f"{self.command} {self.path} {self.request_version}\n{self.headers}"
            self.send(200, "text/plain", head.encode())
        elif url.path == "/page.html":
            n = int(parse_qs(url.query).get("n", ["1"])[0])
            page = "".join(f"Boring page {i}. " for i in range(n))
            self.send(200, "text/html; charset=utf-8", page.encode())
        elif url.path == "/chunked.html":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("X-Origin", NAME)
            self.end_headers()
            for part in [b"<p>Bor", b"ing", b" and Bo", b"r", b"ing, Boring", b" end Bori"]:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
                time.sleep(0.02)  # separate reads, separate chunks
            self.wfile.write(b"0\r\n\r\n")
        elif url.path == "/data.json":
            self.send(200, "application/json", b'{"mood": "Boring"}')
        else:
            self.send(404, "text/plain", b"not here\n")

    def do_POST(self):
        url = urlparse(self.path)
        body = self.body()
        if url.path == "/echo":
            self.send(200, "application/octet-stream", body)
        elif url.path == "/introspect":
            token = parse_qs(body.decode()).get("token", [""])[0]
            emit(f"INTROSPECT {token}")
            time.sleep(0.3)
            if token.startswith("good-"):
                answer = {"active": True, "username": "user-" + token[5:],
                          "exp": int(time.time()) + 60}
            else:
                answer = {"active": False}
            self.send(200, "application/json", json.dumps(answer).encode())
        else:
            self.send(404, "text/plain", b"not here\n")


# The default backlog of 5 drops SYNs of a burst (clients retry after 1 s).
ThreadingHTTPServer.request_queue_size = 256
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
emit(f"PORT {server.server_address[1]}")
server.serve_forever()
