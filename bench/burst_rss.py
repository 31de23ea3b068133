#!/usr/bin/env python3
"""Whether memory comes back after a burst of clients: sitio's RSS at rest,
with N clients that each sent one request at once and then sat idle (parked
after 100 ms), and 6 s after they all closed.

Usage: bench/burst_rss.py N PATH/TO/sitio   (raise `ulimit -n` above 2N first)
"""

import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import measure  # noqa: E402
import peers  # noqa: E402


def main():
    n, binary = int(sys.argv[1]), sys.argv[2]
    with tempfile.TemporaryDirectory(prefix="sitio-burst-") as tmp:
        workdir = Path(tmp)
        backend = peers.start_backend(workdir, None)
        peers.SITIO_EXTRA_ENV = {"SITIO_MAX_CONNECTIONS": str(n + 100)}
        sitio = peers.start_sitio("sitio", backend.port, workdir, None, True, binary=binary)
        try:
            time.sleep(1)
            idle = measure.rss_mib(sitio.pids())
            request = f"GET {peers.SMALL_PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            clients = []
            for _ in range(n):
                c = socket.create_connection(("127.0.0.1", sitio.port))
                c.sendall(request)
                clients.append(c)
            for c in clients:
                got = b""
                while b"\r\n\r\n" not in got:
                    got += c.recv(4096)
            time.sleep(4)
            held = measure.rss_mib(sitio.pids())
            for c in clients:
                c.close()
            time.sleep(6)
            after = measure.rss_mib(sitio.pids())
            print(f"idle {idle:.1f} MiB; {n} clients after a burst {held:.1f} MiB; "
                  f"6 s after they closed {after:.1f} MiB ({after / idle:.2f}x idle)")
        finally:
            sitio.stop()
            backend.stop()


if __name__ == "__main__":
    main()
