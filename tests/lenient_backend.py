"""A deliberately lenient HTTP/1.1 server for smuggling tests.

Many real application servers frame a request body only by the headers
they receive and trust whatever bytes follow. This one does the same: it
reads a request head, frames the body by the last Transfer-Encoding
(chunked) or Content-Length it got, and treats any bytes after that as the
next request. A proxy that lets an unframed or mis-framed body through
therefore shows up here as a second, smuggled request in `requests`.
"""

from __future__ import annotations

import socket
import threading


class LenientBackend:
    """Records every request it reads as (request line, headers, body) in
    `requests`, and with the number of the connection it came on (1, 2, ...)
    in `records`; answers each with `response`."""

    def __init__(self, response: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"):
        self.response = response
        self.requests: list[tuple[bytes, dict, bytes]] = []
        self.records: list[tuple[int, bytes, dict, bytes]] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def lines(self) -> list[bytes]:
        with self.lock:
            return [line for line, _, _ in self.requests]

    def close(self) -> None:
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                number = self.connections
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn, number: int) -> None:
        buf = b""
        conn.settimeout(10)

        def fill():
            nonlocal buf
            data = conn.recv(65536)
            if not data:
                raise EOFError
            buf += data

        def line():
            nonlocal buf
            while b"\n" not in buf:
                fill()
            first, buf = buf.split(b"\n", 1)
            return first.rstrip(b"\r")

        try:
            while True:
                while b"\r\n\r\n" not in buf and b"\n\n" not in buf:
                    fill()
                sep = b"\r\n\r\n" if b"\r\n\r\n" in buf else b"\n\n"
                head, buf = buf.split(sep, 1)
                first, *fields = head.replace(b"\r\n", b"\n").split(b"\n")
                headers = {}
                for f in fields:
                    k, _, v = f.partition(b":")
                    headers[k.strip().lower()] = v.strip()
                body = b""
                if headers.get(b"transfer-encoding", b"").lower().endswith(b"chunked"):
                    while True:
                        size = int(line().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while line():  # trailers, up to the blank line
                                pass
                            break
                        while len(buf) < size + 2:
                            fill()
                        body += buf[:size]
                        buf = buf[size:]
                        line()
                elif b"content-length" in headers:
                    n = int(headers[b"content-length"])
                    while len(buf) < n:
                        fill()
                    body, buf = buf[:n], buf[n:]
                with self.lock:
                    self.requests.append((first, headers, body))
                    self.records.append((number, first, headers, body))
                conn.sendall(self.response)
        except (EOFError, OSError, ValueError):
            pass
        finally:
            conn.close()
