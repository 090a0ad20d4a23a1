"""Send a corpus of raw requests to a proxy and record what came back.

`run_cases(port, cases)` sends each case on its own connection (several at
a time), reads until the proxy closes or falls silent, and returns one
`Outcome` per case id. `python -m tests.corpus.harness` runs the hostile
request corpus against lbcore and haproxy 2.6 side by side and prints a
table: the quickest way to see where the two differ.
"""

from __future__ import annotations

import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})[^\r\n]*\r?\n")


@dataclass
class Outcome:
    statuses: list  # the status of each response read, in order
    closed: bool  # the proxy closed the connection
    raw: bytes

    @property
    def refused(self) -> bool:
        """An error answer, or a close with no answer at all."""
        if not self.statuses:
            return self.closed
        return self.statuses[-1] >= 400 and self.closed

    @property
    def first(self):
        return self.statuses[0] if self.statuses else None

    def short(self) -> str:
        s = ",".join(str(x) for x in self.statuses) or "-"
        return s + ("/closed" if self.closed else "/open")


def parse_statuses(data: bytes) -> list:
    """The status codes of the responses in `data`, framed by their
    Content-Length or chunked bodies (enough for proxies' answers)."""
    out = []
    pos = 0
    while True:
        m = STATUS_LINE.match(data, pos)
        if m is None:
            return out
        status = int(m.group(1))
        end = data.find(b"\r\n\r\n", m.start())
        if end < 0:
            out.append(status)
            return out
        head = data[m.start():end].lower()
        pos = end + 4
        if 100 <= status < 200:
            out.append(status)
            continue
        out.append(status)
        length = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
        if b"transfer-encoding: chunked" in head:
            while True:
                line_end = data.find(b"\r\n", pos)
                if line_end < 0:
                    return out
                try:
                    size = int(data[pos:line_end].split(b";")[0] or b"0", 16)
                except ValueError:
                    return out  # (a hostile server's chunks, relayed)
                pos = line_end + 2 + size + 2
                if size == 0:
                    break
        elif length:
            pos += int(length.group(1))
        else:
            return out
        if pos > len(data):
            return out


def send_case(port: int, raw: bytes, requests: int = 1, limit: float = 8.0) -> Outcome:
    """Send `raw` and read until the proxy closes, or has answered all
    `requests` without an error (`limit` seconds in all)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=limit)
    data = b""
    closed = False
    try:
        try:
            sock.sendall(raw)
        except OSError:
            pass  # refused mid-send: what came back still counts
        deadline = time.monotonic() + limit
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            statuses = parse_statuses(data)
            finals = [x for x in statuses if x >= 200]
            if len(finals) >= requests and all(x < 400 for x in finals):
                break
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
    finally:
        sock.close()
    return Outcome(parse_statuses(data), closed, data)


def run_cases(port: int, cases, parallel: int = 16, limit: float = 8.0,
              short: frozenset = frozenset(), short_limit: float = 3.0) -> dict:
    """`short`: ids of cases known to wait for bytes that never come, read
    for `short_limit` seconds only."""
    def one(case):
        return send_case(port, case.raw, case.requests, short_limit if case.id in short else limit)

    with ThreadPoolExecutor(parallel) as pool:
        outcomes = list(pool.map(one, cases))
    return {case.id: out for case, out in zip(cases, outcomes)}


def unintended(cases, seen) -> list:
    """Request lines the backend saw that no client meant to send (beyond
    the intended count of each): smuggled requests, or replays."""
    from collections import Counter

    intended = Counter()
    for case in cases:
        intended[case.first_line] += 1
        intended.update(case.also)
    extra = Counter(seen) - intended
    return sorted(extra.elements())


def haproxy_cfg(port: int, backend: str) -> str:
    from tests.haproxy import http_cfg

    return http_cfg(port, [backend], extra_frontend="    timeout http-request 2s")


def lbcore_cfg(port: int, backend: str) -> dict:
    from tests.support import http_config

    config = http_config([backend], port)
    config["defaults"] = {"timeouts": {"http_request": "2s"}}
    return config


def main() -> None:
    import sys

    from tests.corpus.hostile_requests import CASES
    from tests.haproxy import HaproxyProcess
    from tests.lenient_backend import LenientBackend
    from tests.support import LbcoreProcess, free_port

    only = sys.argv[1:]
    cases = [c for c in CASES if not only or any(o in c.id for o in only)]
    results = {}
    for name in ("lbcore", "haproxy"):
        backend = LenientBackend()
        port = free_port()
        if name == "lbcore":
            proc = LbcoreProcess(lbcore_cfg(port, backend.address)).start()
        else:
            proc = HaproxyProcess(haproxy_cfg(port, backend.address)).start(wait_ports=[port])
        try:
            results[name] = run_cases(port, cases)
            time.sleep(0.3)
            results[name + "-backend"] = backend.lines()
        finally:
            proc.stop()
            backend.close()
    for case in cases:
        lb, ha = results["lbcore"][case.id], results["haproxy"][case.id]
        flag = ""
        if ha.refused and not lb.refused:
            flag = "  <-- haproxy refuses, lbcore does not"
        elif case.rfc == "refuse" and not lb.refused:
            flag = "  <-- RFC: refuse"
        elif case.rfc == "accept" and lb.first != 200:
            flag = "  <-- RFC: accept"
        print(f"{case.id:32} {case.rfc:7} lbcore {lb.short():14} haproxy {ha.short():14}{flag}")
    for name in ("lbcore", "haproxy"):
        extra = unintended(cases, results[name + "-backend"])
        print(name, "backend saw", len(results[name + "-backend"]), "requests; unintended:", extra)


if __name__ == "__main__":
    main()
