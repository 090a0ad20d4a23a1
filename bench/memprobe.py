"""Resident memory of a proxy holding many idle keep-alive clients.

Each client connection sends one request, reads the whole response and then
stays open doing nothing, which is what a browser or an SDK connection pool
leaves behind. The growth of the proxy's RSS divided by the number of
connections still open is the cost of one idle client.

What makes the figure stable:

- The clients arrive at a fixed pace (DEFAULT_RATE a second), not as fast as
  the machine lets them: lbcore keeps a connection on its transport (~1.7 KB)
  until it has been idle 0.1-0.2 s (lbcore/proxy/parking.py), so the number
  on transports at once, and the heap left fragmented by them, follows the
  arrival rate; unpaced, that rate follows the machine's load.
- RSS is read once the proxy has settled: the same within SETTLE_SLACK for
  `settle` seconds (lbcore parks, then hands freed pages back with
  malloc_trim up to a second later), and, where the proxy can say so
  (`parked`), once every open connection is parked. The baseline is read
  the same way.
- The clients live in child processes (`Clients`), each under its own
  descriptor limit and from its own loopback source address (127.0.0.2,
  127.0.0.3, ...: each has its own ephemeral ports), so the count is bounded
  by the proxy's descriptor limit, not the probe's.
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import select
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional
from urllib.request import urlopen

from bench.procs import tree_fd_count, tree_rss_bytes

REQUEST = b"GET /64 HTTP/1.1\r\nHost: bench\r\n\r\n"
DEFAULT_RATE = 2000  # clients opened per second (0: as fast as they go)
SETTLE_SLACK = 32 * 1024  # bytes of RSS drift still counted as settled
SETTLE_LIMIT = 30.0  # seconds: read RSS anyway after this long (settled=False)
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux
CLIENT_FD_MARGIN = 64  # descriptors a client process keeps for itself
CLIENTS_PER_PROCESS = 5000


@dataclass
class MemoryResult:
    target: str
    wanted: int
    still_open: int
    rss_before: int
    rss_after: int
    fds_before: int
    fds_after: int
    parked: Optional[int] = None  # lbcore's idle_parked at the reading, where known
    settled: bool = True  # False: RSS still moved after SETTLE_LIMIT
    ramp_s: float = 0.0  # seconds the clients took to arrive
    wait_s: float = 0.0  # seconds from the last arrival to the reading
    error: Optional[str] = None  # why fewer than `wanted` were opened

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


def _open_idle(port: int, source: str | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(10)
        if source is not None:
            # The port is picked at connect, per destination: a source
            # address then has a whole ephemeral range for each proxy port.
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
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


def _ephemeral_ports() -> int:
    try:
        low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return high - low + 1
    except (OSError, ValueError):
        return 28232  # Linux's default range


def per_client_process() -> int:
    """Clients one child process holds: its descriptors, and the ports of
    its source address (less a margin for TIME_WAIT left by earlier runs)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(1, min(soft - CLIENT_FD_MARGIN, _ephemeral_ports() - 2000))


def _client_main(pipe, port: int, source: str) -> None:
    """A child process: opens idle clients when told, counts them, closes them."""
    socks: list[socket.socket] = []
    try:
        while True:
            try:
                command, arg = pipe.recv()
            except (EOFError, OSError):
                return
            if command == "open":
                count, rate = arg
                began = time.monotonic()
                try:
                    for i in range(count):
                        if rate:
                            delay = began + i / rate - time.monotonic()
                            if delay > 0:
                                time.sleep(delay)
                        socks.append(_open_idle(port, source))
                    pipe.send(("ok", len(socks)))
                except Exception as exc:  # the parent reports it; the open ones stay
                    pipe.send(("error", f"{exc!r} with {len(socks)} open from {source}"))
            elif command == "count":
                pipe.send(("ok", _count_open(socks)))
            else:
                pipe.send(("ok", 0))
                return
    finally:
        for s in socks:
            s.close()


class Clients:
    """Idle clients held by child processes, CLIENTS_PER_PROCESS at most
    each (fewer where its descriptors or ports run short). They open their
    shares side by side, each at its part of `rate`: one process opens one
    connection after the other, and under load a round trip through the
    proxy takes long enough (3 ms at load 13) to fall far below the rate."""

    def __init__(self, port: int, rate: float = DEFAULT_RATE, per_process: int | None = None) -> None:
        self.port = port
        self.rate = rate
        self.per_process = per_process or min(per_client_process(), CLIENTS_PER_PROCESS)
        self.children: list[tuple[multiprocessing.Process, object]] = []
        self.held: list[int] = []
        # fork: the child needs nothing but this module, already imported;
        # the parent has no threads running while clients are made.
        self._mp = multiprocessing.get_context("fork")

    def _spawn(self) -> None:
        index = len(self.children)
        if index >= 253:
            raise RuntimeError("out of loopback source addresses")
        parent, child = self._mp.Pipe()
        source = f"127.0.0.{index + 2}"
        proc = self._mp.Process(target=_client_main, args=(child, self.port, source), daemon=True)
        proc.start()
        child.close()
        self.children.append((proc, parent))
        self.held.append(0)

    def _answer(self, pipe, command: str, timeout: float) -> int:
        if not pipe.poll(timeout):
            raise RuntimeError(f"a client process did not answer {command!r} in {timeout:.0f} s")
        status, value = pipe.recv()
        if status != "ok":
            raise ConnectionError(value)
        return value

    def open(self, count: int) -> None:
        """`count` more idle clients, spread evenly over the processes."""
        total = sum(self.held) + count
        while len(self.children) * self.per_process < total:
            self._spawn()
        wanted = [0] * len(self.children)
        for _ in range(count):  # each to the process holding the fewest
            i = min(range(len(wanted)), key=lambda j: self.held[j] + wanted[j])
            wanted[i] += 1
        busy = [i for i, n in enumerate(wanted) if n > 0]
        for i in busy:
            self.children[i][1].send(("open", (wanted[i], self.rate / len(busy))))
        # A client waits at most its 10 s timeout; a loaded machine may
        # take 50 ms a connection.
        timeout = 60 + 0.05 * max(wanted)
        errors = []
        for i in busy:
            try:
                self.held[i] = self._answer(self.children[i][1], "open", timeout)
            except ConnectionError as exc:
                errors.append(str(exc))
        if errors:
            raise ConnectionError("; ".join(errors))

    def _ask(self, command: str, timeout: float) -> list[int]:
        for _, pipe in self.children:
            pipe.send((command, None))
        return [self._answer(pipe, command, timeout) for _, pipe in self.children]

    def still_open(self) -> int:
        return sum(self._ask("count", 60))

    def close(self) -> None:
        try:
            self._ask("close", 30)
        except (OSError, RuntimeError, ConnectionError, EOFError):
            pass
        for proc, pipe in self.children:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
            pipe.close()
        self.children, self.held = [], []


def lbcore_parked(stats_port: int) -> Callable[[], int]:
    """lbcore's idle_parked summed over its frontends, read from /stats.json."""
    def count() -> int:
        with urlopen(f"http://127.0.0.1:{stats_port}/stats.json", timeout=10) as resp:
            snapshot = json.load(resp)
        return sum(row.get("idle_parked", 0) for row in snapshot["frontends"].values())
    return count


def settled_rss(pid: int, window: float, ready: Callable[[], bool] | None = None,
                limit: float = SETTLE_LIMIT) -> tuple[int, bool]:
    """RSS of the process tree once it has stayed within SETTLE_SLACK for
    `window` seconds (and `ready()` holds at the end of the window), or
    after `limit` seconds: (RSS, settled)."""
    began = time.monotonic()
    start_rss, start = tree_rss_bytes(pid), began
    while True:
        time.sleep(min(0.1, window / 4) or 0.01)
        now, rss = time.monotonic(), tree_rss_bytes(pid)
        if abs(rss - start_rss) > SETTLE_SLACK:
            start_rss, start = rss, now  # it moved: the window starts again
        elif now - start >= window and (ready is None or ready()):
            return rss, True
        if now - began >= limit:
            return rss, False


def probe_levels(name: str, pid: int, port: int, levels: list[int], settle: float = 2.0,
                 rate: float = DEFAULT_RATE, parked: Callable[[], int] | None = None,
                 per_process: int | None = None) -> list[MemoryResult]:
    """One proxy, clients added up to each of `levels` (ascending) in turn,
    RSS read at each once settled. `parked()`: the proxy's count of parked
    connections (lbcore's idle_parked), waited for as well."""
    # Warm the proxy first so one-off allocations (first backend connection,
    # lazily built tables) are not charged to the idle connections.
    for _ in range(3):
        _open_idle(port).close()
    expected = [0]
    ready = (lambda: parked() >= expected[0]) if parked is not None else None
    rss_before, _ = settled_rss(pid, settle, ready)
    fds_before = tree_fd_count(pid)
    clients = Clients(port, rate, per_process)
    results = []
    try:
        held = 0
        for level in levels:
            began, error = time.monotonic(), None
            try:
                clients.open(level - held)
            except (OSError, RuntimeError) as exc:  # ConnectionError included
                error = str(exc)
            held = level
            arrived = time.monotonic()
            expected[0] = clients.still_open()
            rss_after, settled = settled_rss(pid, settle, ready)
            read_at = time.monotonic()
            fds_after = tree_fd_count(pid)
            results.append(MemoryResult(
                name, level, clients.still_open(), rss_before, rss_after, fds_before, fds_after,
                parked() if parked is not None else None, settled, arrived - began, read_at - arrived,
                error))
            if error is not None:
                break  # the proxy holds no more: the next levels would not either
        return results
    finally:
        clients.close()


def probe(name: str, pid: int, port: int, conns: int, settle: float = 2.0,
          rate: float = DEFAULT_RATE, parked: Callable[[], int] | None = None) -> MemoryResult:
    """`conns` idle clients on the proxy `pid` listening on `port`."""
    return probe_levels(name, pid, port, [conns], settle, rate, parked)[0]
