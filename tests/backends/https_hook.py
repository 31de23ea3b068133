#!/usr/bin/env python3
"""An https webhook receiver for the notification tests.

Usage: https_hook.py [CERT KEY]   (listens on 127.0.0.1, port chosen by the OS;
plain http without CERT and KEY)
Prints "PORT <n>" first, then "EVENT <json body>" for every POST.
"""
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hook(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        sys.stdout.write("EVENT " + body.decode() + "\n")
        sys.stdout.flush()
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()


server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
if len(sys.argv) > 2:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[1], sys.argv[2])
    server.socket = context.wrap_socket(server.socket, server_side=True)
sys.stdout.write(f"PORT {server.server_address[1]}\n")
sys.stdout.flush()
server.serve_forever()
