#!/usr/bin/env python3
"""An origin built on h11's HTTP/1.1 parser: prints "REQ <method> <target>" for
every request it parses, answers 200, keeps connections alive; answers 400 and
closes on anything h11 refuses. Prints "PORT <n>" first."""
import socket
import sys
import threading

import h11


def serve(sock):
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = sock.recv(65536)
                conn.receive_data(data)
                if not data and conn.their_state is h11.DONE:
                    return
                continue
            if isinstance(event, h11.Request):
                print("REQ %s %s" % (event.method.decode("latin-1"), event.target.decode("latin-1")), flush=True)
            elif isinstance(event, h11.EndOfMessage):
                body = b"h11 ok\n"
                sock.sendall(conn.send(h11.Response(status_code=200, headers=[("Content-Length", str(len(body)))])))
                sock.sendall(conn.send(h11.Data(data=body)))
                sock.sendall(conn.send(h11.EndOfMessage()))
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return
    except h11.RemoteProtocolError:
        try:
            sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except OSError:
            pass
    except OSError:
        pass
    finally:
        sock.close()


if __name__ == "__main__":
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0))
    listener.listen(128)
    print("PORT %d" % listener.getsockname()[1], flush=True)
    while True:
        s, _ = listener.accept()
        threading.Thread(target=serve, args=(s,), daemon=True).start()
