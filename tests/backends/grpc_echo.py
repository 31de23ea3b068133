#!/usr/bin/env python3
"""A real gRPC service (grpcio, generic handlers: no protoc) for the HTTP/2
tests, and its client.

Usage: grpc_echo.py serve          prints "PORT <n>", serves demo.Echo:
         Say (unary: b"echo:" + request), Fail (unary: NOT_FOUND),
         Stream (server streaming: 5 parts), Collect (client streaming:
         the parts joined), Chat (bidirectional: each part echoed), Crash
         (unary: INTERNAL), Slow (unary: answers after 3 s), Drip (server
         streaming: a part every 100 ms for 5 s; prints "DRIP CANCELLED"
         when the call is cancelled before its end), Left (unary: the
         call's time left as the service sees it, in whole milliseconds, or
         b"none" without a deadline).
       grpc_echo.py call ADDR      calls each method once through ADDR and
         prints one line per result ("Say b'echo:hi'", "Fail NOT_FOUND ...").
       grpc_echo.py once ADDR      calls Say once: its answer, or its status
         code and message.
       grpc_echo.py calls ADDR M...  calls each unary method M in turn and
         prints "M answer" or "M CODE details" for each.
"""
import sys
import time
from concurrent import futures

import grpc


def serve():
    def say(req, ctx):
        return b"echo:" + req

    def fail(req, ctx):
        ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

    def stream(req, ctx):
        for i in range(5):
            yield b"part%d" % i

    def collect(reqs, ctx):
        return b"+".join(reqs)

    def chat(reqs, ctx):
        for r in reqs:
            yield b"re:" + r

    def crash(req, ctx):
        ctx.abort(grpc.StatusCode.INTERNAL, "boom")

    def slow(req, ctx):
        time.sleep(3)
        return b"late"

    def drip(req, ctx):
        for i in range(50):
            if not ctx.is_active():
                print("DRIP CANCELLED", flush=True)
                return
            yield b"drop%d" % i
            time.sleep(0.1)

    def left(req, ctx):
        remaining = ctx.time_remaining()
        return b"none" if remaining is None else b"%d" % int(remaining * 1000)

    handler = grpc.method_handlers_generic_handler("demo.Echo", {
        "Left": grpc.unary_unary_rpc_method_handler(left),
        "Crash": grpc.unary_unary_rpc_method_handler(crash),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Drip": grpc.unary_stream_rpc_method_handler(drip),
        "Say": grpc.unary_unary_rpc_method_handler(say),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Collect": grpc.stream_unary_rpc_method_handler(collect),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
    })
    server = grpc.server(futures.ThreadPoolExecutor(8))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("PORT", port, flush=True)
    while True:
        time.sleep(3600)


def call(addr):
    ch = grpc.insecure_channel(addr)
    print("Say", ch.unary_unary("/demo.Echo/Say")(b"hi", timeout=10), flush=True)
    try:
        ch.unary_unary("/demo.Echo/Fail")(b"x", timeout=10)
    except grpc.RpcError as e:
        print("Fail", e.code().name, e.details(), flush=True)
    print("Stream", list(ch.unary_stream("/demo.Echo/Stream")(b"", timeout=10)), flush=True)
    parts = iter([b"a", b"b", b"c"])
    print("Collect", ch.stream_unary("/demo.Echo/Collect")(parts, timeout=10), flush=True)
    parts = iter([b"x", b"y"])
    print("Chat", list(ch.stream_stream("/demo.Echo/Chat")(parts, timeout=10)), flush=True)


def once(addr):
    ch = grpc.insecure_channel(addr)
    try:
        print("Say", ch.unary_unary("/demo.Echo/Say")(b"hi", timeout=10), flush=True)
    except grpc.RpcError as e:
        print("Say", e.code().name, e.details(), flush=True)


def calls(addr, methods):
    ch = grpc.insecure_channel(addr)
    for m in methods:
        try:
            print(m, ch.unary_unary("/demo.Echo/" + m)(b"hi", timeout=10), flush=True)
        except grpc.RpcError as e:
            print(m, e.code().name, e.details(), flush=True)


if __name__ == "__main__":
    {"serve": lambda: serve(), "call": lambda: call(sys.argv[2]), "once": lambda: once(sys.argv[2]),
     "calls": lambda: calls(sys.argv[2], sys.argv[3:])}[sys.argv[1]]()
