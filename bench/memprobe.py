"""Resident memory of a proxy holding many idle keep-alive clients.

Each client connection sends one request, reads the whole response and then
stays open doing nothing, which is what a browser or an SDK connection pool
leaves behind. The growth of the proxy's RSS divided by the number of
connections still open is the cost of one idle client.
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass

from bench.procs import tree_fd_count, tree_rss_bytes

REQUEST = b"GET /64 HTTP/1.1\r\nHost: bench\r\n\r\n"


@dataclass
class MemoryResult:
    target: str
    wanted: int
    still_open: int
    rss_before: int
    rss_after: int
    fds_before: int
    fds_after: int

    @property
    def bytes_per_conn(self) -> float | None:
        if self.still_open == 0:
            return None
        return (self.rss_after - self.rss_before) / self.still_open


def _read_response(sock: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if status.split(b" ")[1:2] != [b"200"]:
        raise ConnectionError(f"unexpected status line {status!r}")
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None:
        raise ConnectionError("response without Content-Length")
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the response body")
        body += chunk


def _open_idle(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(REQUEST)
        _read_response(sock)
    except Exception:
        sock.close()
        raise
    return sock


def _count_open(socks: list[socket.socket]) -> int:
    """Sockets the proxy has not closed: an idle one has nothing to read."""
    poller = select.poll()
    for s in socks:
        poller.register(s, select.POLLIN)
    closed = {fd for fd, _ in poller.poll(0)}
    return sum(1 for s in socks if s.fileno() not in closed)


def probe(name: str, pid: int, port: int, conns: int, settle: float = 1.0) -> MemoryResult:
    # Warm the proxy first so one-off allocations (first backend connection,
    # lazily built tables) are not charged to the idle connections.
    for _ in range(3):
        _open_idle(port).close()
    time.sleep(settle)
    rss_before, fds_before = tree_rss_bytes(pid), tree_fd_count(pid)
    socks: list[socket.socket] = []
    try:
        for _ in range(conns):
            socks.append(_open_idle(port))
        time.sleep(settle)
        rss_after, fds_after = tree_rss_bytes(pid), tree_fd_count(pid)
        return MemoryResult(name, conns, _count_open(socks), rss_before, rss_after,
                            fds_before, fds_after)
    finally:
        for s in socks:
            s.close()
