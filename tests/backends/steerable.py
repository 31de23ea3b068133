#!/usr/bin/env python3
"""A service the tests steer, as a real process they can kill and restart.

Usage: steerable.py [PORT]   (0 or nothing: the OS picks; prints "PORT <n>")

  GET /__mode/<code>   from now on, answer <code> (0: healthy pages); 204
  GET /hang            never answers (for timeouts)
  GET /<anything>      healthy: 200 "page /<anything>"; else the chosen status
"""
import http.server
import sys
import threading
import time

mode = 0
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        global mode
        if self.path.startswith("/__mode/"):
            with lock:
                mode = int(self.path.rsplit("/", 1)[1])
            self.send_response(204)
            self.end_headers()
            return
        if self.path == "/hang":
            time.sleep(3600)
            return
        with lock:
            code = mode
        body = ("page %s" % self.path).encode() if code == 0 else b"failing on purpose\n"
        self.send_response(200 if code == 0 else code)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Origin", "steerable")
        self.end_headers()
        self.wfile.write(body)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = Server(("127.0.0.1", port), Handler)
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()
