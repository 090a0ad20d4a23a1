"""A raw-socket HTTP server that answers with whatever bytes a test scripts.

Each request's path picks an answer from `answers` (a dict path -> bytes,
or path -> callable(conn, request) that writes what it likes); every
request is recorded with the number of the connection it came on, so a
test can tell whether the proxy reused a connection after a bad answer.
After an answer the connection stays open for the next request unless the
answer says `close=True`.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass


@dataclass
class Seen:
    conn: int  # which accepted connection (1, 2, ...)
    line: bytes
    headers: dict
    body: bytes


class HostileBackend:
    def __init__(self, answers: dict, close_after: frozenset = frozenset()):
        self.answers = answers
        self.close_after = close_after  # paths after whose answer the connection closes
        self.seen: list[Seen] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()
        for conn in list(self.open):
            try:
                conn.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                number = self.connections
                self.open.append(conn)
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        buf = b""
        conn.settimeout(20)
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                line, *fields = head.split(b"\r\n")
                headers = {}
                for f in fields:
                    k, _, v = f.partition(b":")
                    headers[k.strip().lower()] = v.strip()
                length = int(headers.get(b"content-length", b"0"))
                path = line.split(b" ")[1].decode("latin-1")
                answer = self.answers.get(path.split("?")[0])
                early = callable(answer) and getattr(answer, "early", False)
                body = b""
                if not early:
                    while len(buf) < length:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buf += data
                    body, buf = buf[:length], buf[length:]
                seen = Seen(number, line, headers, body)
                with self.lock:
                    self.seen.append(seen)
                if answer is None:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Conn: %d\r\n\r\n%s"
                                 % (len(path), number, path.encode()))
                elif callable(answer):
                    if answer(conn, seen) == "close":
                        return
                else:
                    conn.sendall(answer)
                if path in self.close_after:
                    return
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass
