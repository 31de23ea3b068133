#!/usr/bin/env python3
"""A keep-alive HTTP/1.1 origin that prints every request head it parses.

It is the "victim" in the request-smuggling tests: a lenient parser of its own,
written independently of sitio's, that frames bodies by Transfer-Encoding
(if it mentions chunked) or Content-Length, like many real servers. If sitio ever
forwarded bytes this server reads as two requests where sitio saw one, its output
shows the extra request.

Usage: recorder.py   (listens on 127.0.0.1, port chosen by the OS)
Prints "PORT <n>" first, then "REQ <method> <target>" for every request head.
"""
import socketserver
import sys
import threading

lock = threading.Lock()


def emit(line: str) -> None:
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            line = self.rfile.readline(65537)
            if not line:
                return
            if line in (b"\r\n", b"\n"):
                continue
            parts = line.rstrip(b"\r\n").split(b" ")
            target = parts[1] if len(parts) > 1 else b""
            emit("REQ %s %s" % (parts[0].decode("latin-1"), target.decode("latin-1")))
            headers = {}
            while True:
                h = self.rfile.readline(65537)
                if h in (b"\r\n", b"\n", b""):
                    break
                name, _, value = h.partition(b":")
                headers[name.strip().lower()] = value.strip()
            te = headers.get(b"transfer-encoding", b"").lower()
            if b"chunked" in te:
                while True:
                    size_line = self.rfile.readline(65537)
                    size = int(size_line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    self.rfile.read(size + 2)
            elif b"content-length" in headers:
                self.rfile.read(int(headers[b"content-length"]))
            body = b"recorded\n"
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            self.wfile.flush()
            if headers.get(b"connection", b"").lower() == b"close":
                return


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the default of 5 drops bursts of connections


if __name__ == "__main__":
    with Server(("127.0.0.1", 0), Handler) as server:
        emit("PORT %d" % server.server_address[1])
        server.serve_forever()
