#!/usr/bin/env python3
"""Frame-level HTTP/2 cases against a server (the h2 library from PyPI, its
outbound checks off so that it sends what a broken client would).

Usage: h2_conformance.py HOST PORT CASE...

Cases, each printing one line "CASE outcome":
  frame-size        a HEADERS frame over the 16 KiB SETTINGS_MAX_FRAME_SIZE
                    -> "GOAWAY FRAME_SIZE_ERROR"
  streams           101 requests for /slow/1500 at once on one connection
                    -> "<answered> answered <status>, <refused> REFUSED_STREAM"
  connection-header a request with `connection: keep-alive`
                    -> "RESET PROTOCOL_ERROR" (or the status it got)
  uppercase         a request with an upper-case header name
                    -> "RESET PROTOCOL_ERROR" or "GOAWAY PROTOCOL_ERROR"
  big-header        a request whose header list is 64 KiB
                    -> "STATUS 431" or "RESET <reason>"
  trailers          a POST with a body and trailers to /echo
                    -> "STATUS <status> <body bytes echoed>"
"""
import socket
import sys
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import hpack
from hyperframe.frame import HeadersFrame, SettingsFrame


def connect(host, port):
    s = socket.create_connection((host, port))
    s.settimeout(10)
    config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                       validate_outbound_headers=False, normalize_outbound_headers=False,
                                       validate_inbound_headers=False)
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    s.sendall(conn.data_to_send())
    return s, conn


def base(path="/status/200", method="GET"):
    return [(":method", method), (":scheme", "http"), (":authority", "t"), (":path", path)]


def pump(s, conn, until, within=10.0):
    """Reads events until `until(events_so_far)` is true, or the connection ends."""
    seen = []
    deadline = time.time() + within
    while time.time() < deadline and not until(seen):
        try:
            data = s.recv(65536)
        except (socket.timeout, ConnectionResetError):
            break
        if not data:
            seen.append("closed")
            break
        try:
            seen.extend(conn.receive_data(data))
        except h2.exceptions.ProtocolError as e:
            seen.append(f"protocol error {e}")
            break
        out = conn.data_to_send()
        if out:
            try:
                s.sendall(out)
            except (BrokenPipeError, ConnectionResetError):
                seen.append("closed")
                break
    return seen


def ended(events, stream):
    for e in events:
        if isinstance(e, h2.events.StreamEnded) and e.stream_id == stream:
            return "ended"
        if isinstance(e, h2.events.StreamReset) and e.stream_id == stream:
            return "reset"
        if isinstance(e, h2.events.ConnectionTerminated) or e == "closed":
            return "closed"
    return None


def one_request(headers, body=None, trailers=None):
    """Sends one request; returns its outcome as the line to print."""
    s, conn = connect(*TARGET)
    conn.send_headers(1, headers, end_stream=body is None)
    if body is not None:
        conn.send_data(1, body, end_stream=trailers is None)
        if trailers:
            conn.send_headers(1, trailers, end_stream=True)
    s.sendall(conn.data_to_send())
    events = pump(s, conn, lambda ev: ended(ev, 1))
    s.close()
    status, got = None, 0
    for e in events:
        if isinstance(e, h2.events.ResponseReceived):
            status = dict(e.headers).get(":status")
        if isinstance(e, h2.events.DataReceived):
            got += len(e.data)
        if isinstance(e, h2.events.StreamReset):
            return f"RESET {h2.errors.ErrorCodes(e.error_code).name}"
        if isinstance(e, h2.events.ConnectionTerminated):
            return f"GOAWAY {h2.errors.ErrorCodes(e.error_code).name}"
    return f"STATUS {status} {got}" if status else f"NOTHING {events}"


def frame_size():
    s, conn = connect(*TARGET)
    block = conn.encoder.encode(base() + [("x-big", "a" * 20000)], huffman=False)
    f = HeadersFrame(1, block)
    f.flags.add("END_HEADERS")
    f.flags.add("END_STREAM")
    # The frame's 9-byte header only: the server must refuse it on its
    # length alone (and nothing left unread turns its close into a reset
    # that would swallow the GOAWAY).
    s.sendall(f.serialize()[:9])
    events = pump(s, conn, lambda ev: any(isinstance(e, h2.events.ConnectionTerminated) or e == "closed" for e in ev))
    for e in events:
        if isinstance(e, h2.events.ConnectionTerminated):
            return f"GOAWAY {h2.errors.ErrorCodes(e.error_code).name}"
    return f"NO GOAWAY {events}"


def streams():
    """Raw frames: the h2 library would refuse to open more streams than the
    server allows, as an unruly client does."""
    sock = socket.create_connection(TARGET)
    sock.settimeout(15)
    encoder, decoder = hpack.Encoder(), hpack.Decoder()
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize()
    ids = [1 + 2 * i for i in range(101)]
    for i in ids:
        f = HeadersFrame(i, encoder.encode(base("/slow/1500")))
        f.flags.add("END_HEADERS")
        f.flags.add("END_STREAM")
        out += f.serialize()
    sock.sendall(out)
    status, ended, refused = {}, set(), set()
    buf = b""
    deadline = time.time() + 15
    while len(ended) + len(refused) < len(ids) and time.time() < deadline:
        data = sock.recv(65536)
        if not data:
            break
        buf += data
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            kind, flags = buf[3], buf[4]
            stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            payload, buf = buf[9:9 + length], buf[9 + length:]
            if kind == 4 and not flags & 1:  # SETTINGS: acknowledged
                ack = SettingsFrame(0)
                ack.flags.add("ACK")
                sock.sendall(ack.serialize())
            elif kind == 1:  # HEADERS (no padding or priority from these servers)
                headers = dict(decoder.decode(payload))
                status.setdefault(stream, headers.get(":status"))
            elif kind == 3:  # RST_STREAM
                if int.from_bytes(payload[:4], "big") == h2.errors.ErrorCodes.REFUSED_STREAM:
                    refused.add(stream)
            if kind in (0, 1) and flags & 1:  # END_STREAM
                ended.add(stream)
    sock.close()
    codes = ",".join(sorted({status.get(i) or "?" for i in ended}))
    return f"{len(ended)} answered {codes}, {len(refused)} REFUSED_STREAM"


CASES = {
    "frame-size": frame_size,
    "streams": streams,
    "connection-header": lambda: one_request(base() + [("connection", "keep-alive")]),
    "uppercase": lambda: one_request(base() + [("X-Upper", "1")]),
    "big-header": lambda: one_request(base() + [(f"x-h{i}", "v" * 1000) for i in range(64)]),
    "trailers": lambda: one_request(base("/echo", "POST"), b"0123456789", [("x-checksum", "abc")]),
}

if __name__ == "__main__":
    TARGET = (sys.argv[1], int(sys.argv[2]))
    for case in sys.argv[3:]:
        print(case, CASES[case](), flush=True)
