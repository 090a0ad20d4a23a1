"""A raw-socket HTTP/1.x client for tests that must control every byte sent
(hostile input, pipelining, HTTP/1.0) and see every byte received (framing,
hop-by-hop headers, whether the connection was closed)."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Optional

import pytest

from tests.support import BackendProcess, LbcoreProcess


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    chunked: bool = False
    raw_head: bytes = b""
    interim: list[int] = field(default_factory=list)

    def header(self, name: str) -> Optional[str]:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def json(self):
        return json.loads(self.body)


class ConnectionClosed(Exception):
    pass


class RawClient:
    """One client connection; `source` binds the client to another loopback
    address (127.0.0.0/8 all reaches lo) so tests can be several clients."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0,
                 source: Optional[str] = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str = "GET", path: str = "/echo", headers=None, body: bytes = b"",
                version: str = "1.1", host: Optional[str] = "test.local") -> None:
        lines = [f"{method} {path} HTTP/{version}"]
        if host is not None:
            lines.append(f"Host: {host}")
        for k, v in (headers or []):
            lines.append(f"{k}: {v}")
        if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers or []):
            lines.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionClosed("connection closed by peer")
        self.buf += data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _until_close(self) -> bytes:
        while True:
            try:
                self._fill()
            except ConnectionClosed:
                break
        data, self.buf = self.buf, b""
        return data

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        m = re.match(rb"HTTP/(\d\.\d) (\d{3}) ?(.*)", lines[0])
        assert m, f"bad status line {lines[0]!r}"
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
        return m.group(1).decode(), int(m.group(2)), m.group(3).decode("latin-1"), headers, head

    def read_response(self, head_request: bool = False) -> Response:
        """One final response (interim 1xx ones are collected in .interim)."""
        interim = []
        while True:
            version, status, reason, headers, raw = self.read_head()
            if 100 <= status < 200 and status != 101:
                interim.append(status)
                continue
            break
        resp = Response(version, status, reason, headers, b"", raw_head=raw, interim=interim)
        te = (resp.header("Transfer-Encoding") or "").lower()
        if head_request or status in (101, 204, 304):
            return resp
        if "chunked" in te:
            resp.chunked = True
            parts = []
            while True:
                size = int(self._line().split(b";")[0].strip(), 16)
                if size == 0:
                    while self._line() != b"":
                        pass
                    break
                parts.append(self._exact(size))
                assert self._exact(2) == b"\r\n", "chunk not followed by CRLF"
            resp.body = b"".join(parts)
        elif resp.header("Content-Length") is not None:
            resp.body = self._exact(int(resp.header("Content-Length")))
        else:
            resp.body = self._until_close()
        return resp

    def closed_within(self, seconds: float) -> bool:
        """True if the peer closes (EOF or reset) within `seconds`; any
        bytes that arrive meanwhile are kept in the buffer."""
        deadline = time.monotonic() + seconds
        old = self.sock.gettimeout()
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                try:
                    data = self.sock.recv(65536)
                except socket.timeout:
                    return False
                except ConnectionResetError:
                    return True
                if not data:
                    return True
                self.buf += data
        finally:
            self.sock.settimeout(old)

    def close(self) -> None:
        self.sock.close()


def exchange(port: int, data: bytes, timeout: float = 5.0, source: Optional[str] = None) -> Response:
    """Send `data` on a fresh connection and read one response."""
    with RawClient(port, timeout=timeout, source=source) as c:
        c.send(data)
        return c.read_response()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class RssWatcher:
    """Samples a process's resident memory from another thread; `.peak`."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import threading

        self.pid = pid
        self.base = rss_kib(pid)
        self.peak = self.base
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except (OSError, RuntimeError):
                return
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_kib(self.pid)) if os.path.exists(f"/proc/{self.pid}") else self.peak

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.base) / 1024.0


class KeepAliveClient:
    """http.client on one connection that is never silently reopened: if
    the proxy closes it, the next request raises instead of hiding it."""

    def __init__(self, port: int, timeout: float = 10.0, source: Optional[str] = None) -> None:
        import http.client

        self.conn = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=timeout,
            source_address=(source, 0) if source else None)
        self.conn.connect()
        self.conn.auto_open = 0
        self.requests = 0

    def request(self, method: str = "GET", path: str = "/echo", body=None, headers=None):
        self.conn.request(method, path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        data = resp.read()
        self.requests += 1
        return resp, data

    def get_server(self, path: str = "/echo") -> str:
        resp, _ = self.request("GET", path)
        assert resp.status == 200, resp.status
        return resp.getheader("X-Server")

    def close(self) -> None:
        self.conn.close()


def start_backends(names, **kwargs) -> list[BackendProcess]:
    """Start several test backends at once (each takes a Python start-up)."""
    import concurrent.futures

    procs = [BackendProcess(name, **kwargs) for name in names]
    with concurrent.futures.ThreadPoolExecutor(len(procs)) as pool:
        list(pool.map(lambda b: b.start(), procs))
    return procs


@pytest.fixture(scope="session")
def backends3():
    """Three stateless backends s1..s3 shared by every test; tests that
    kill servers start their own."""
    procs = start_backends(["s1", "s2", "s3"])
    yield procs
    for b in procs:
        b.stop()


def add_frontend(config: dict, name: str, port: int, **settings) -> dict:
    """A second http frontend on `port` in front of the same backend."""
    frontend = {"bind": f"127.0.0.1:{port}", "mode": "http", "backend": "pool"}
    frontend.update(settings)
    config["frontends"][name] = frontend
    return config


def echo_headers(resp_body: bytes) -> list[tuple[str, str]]:
    """The request headers as the backend saw them (from /echo)."""
    return [tuple(h) for h in json.loads(resp_body)["headers"]]


def seen(headers: list[tuple[str, str]], name: str) -> list[str]:
    name = name.lower()
    return [v for k, v in headers if k.lower() == name]


# -- lbcore processes whose logs are watched for crashes -----------------------

WATCHED: list = []  # LbcoreProcess instances started by these tests


def start_watched(config, wait_ports=()) -> LbcoreProcess:
    lb = LbcoreProcess(config)
    WATCHED.append(lb)
    return lb.start(wait_ports=wait_ports)


def log_text(lb: LbcoreProcess) -> str:
    try:
        return lb.logs()
    except OSError:
        return ""


def tracebacks(text: str) -> list[str]:
    """Uncaught exceptions that uvloop/asyncio logged (callbacks that died)."""
    blocks = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            end = i + 1
            while end < len(lines) and (lines[end].startswith(" ") or lines[end].startswith("Traceback")):
                end += 1
            blocks.append("\n".join(lines[max(0, i - 3):end + 1]))
    return blocks


def new_tracebacks(lb: LbcoreProcess, since: int) -> list[str]:
    return tracebacks(log_text(lb)[since:])


@pytest.fixture
def start_lbcore():
    """Like the conftest fixture, with every process's log watched."""
    started = []

    def start(config, env=None, wait_ports=()):
        lb = LbcoreProcess(config, env=env)
        started.append(lb)
        WATCHED.append(lb)
        return lb.start(wait_ports=wait_ports)

    yield start
    for lb in started:
        lb.stop()


_log_offsets: dict = {}


def _remember_offsets() -> None:
    for lb in WATCHED:
        _log_offsets[id(lb)] = len(log_text(lb))


def check_no_crash(settle: float = 0.02) -> None:
    """Fail if any watched lbcore logged a traceback since the test began
    (or since the last check): an exception in a protocol callback means a
    connection left in an unknown state."""
    time.sleep(settle)  # a late callback (a server answering after the client left)
    found = []
    for lb in list(WATCHED):
        found += new_tracebacks(lb, _log_offsets.get(id(lb), 0))
    _remember_offsets()
    if found:
        raise AssertionError("lbcore logged exceptions:\n" + "\n\n".join(found))


@pytest.fixture(autouse=True)
def no_crash_in_lbcore(request):
    _remember_offsets()
    yield
    if request.node.get_closest_marker("xfail"):
        _remember_offsets()
        return
    try:
        check_no_crash()
    except AssertionError as exc:
        pytest.fail(str(exc), pytrace=False)
