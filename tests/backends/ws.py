"""A real WebSocket service and client (the `websockets` package), to check
that sitio relays WebSocket connections as a user's would run.

  ws.py serve          listens on a free port of 127.0.0.1, prints `PORT <n>`,
                       then one `SEEN <path> <subprotocol> <x-forwarded-for>`
                       line per connection; echoes every message; answers
                       `push` with a message of its own first, and `close-me`
                       by closing with code 4001.
  ws.py client <url>   runs the checks below through <url>, printing
                       `OK <check>` for each; exits 1 at the first failure.
"""

import asyncio
import os
import sys

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def handler(ws):
    req = ws.request
    print("SEEN", req.path, ws.subprotocol,
          req.headers.get("x-forwarded-for", "-"), flush=True)
    async for message in ws:
        if message == "push":
            await ws.send("pushed by the service")
        if message == "close-me":
            await ws.close(4001, "bye")
            return
        await ws.send(message)


async def run_server():
    async with serve(handler, "127.0.0.1", 0,
                     subprotocols=["chat.v1"], max_size=4 << 20) as server:
        port = server.sockets[0].getsockname()[1]
        print("PORT", port, flush=True)
        await asyncio.Future()


def check(ok, what):
    if not ok:
        print("FAIL", what, flush=True)
        sys.exit(1)
    print("OK", what, flush=True)


async def run_client(url):
    async with connect(url, subprotocols=["chat.v1"], max_size=4 << 20,
                       open_timeout=10) as ws:
        check(ws.subprotocol == "chat.v1", "subprotocol")
        await ws.send("hello")
        check(await ws.recv() == "hello", "text")
        big = os.urandom(1 << 20)
        await ws.send(big)
        check(await ws.recv() == big, "binary")
        for i in range(100):
            await ws.send(f"m{i}")
        got = [await ws.recv() for _ in range(100)]
        check(got == [f"m{i}" for i in range(100)], "burst")
        pong = await ws.ping()
        await asyncio.wait_for(pong, 5)
        check(True, "ping")
        await ws.send("push")
        check(await ws.recv() == "pushed by the service", "push")
        check(await ws.recv() == "push", "push-echo")
        await ws.send("close-me")
        try:
            await asyncio.wait_for(ws.recv(), 5)
            check(False, "close")
        except ConnectionClosed as closed:
            check(closed.rcvd is not None and closed.rcvd.code == 4001
                  and closed.rcvd.reason == "bye", "close")


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        asyncio.run(run_server())
    else:
        asyncio.run(run_client(sys.argv[2]))
