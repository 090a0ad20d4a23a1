"""No delayed-ACK stalls (issue 9): a backend that writes its response head
and body apart with Nagle on (Python's http.server, many WSGI servers)
holds the body until the head is ACKed. Through a proxy that reuses its
server connection, that ACK used to wait for the kernel's delayed-ACK
timer: ~40 ms a request. haproxy 2.6 runs beside lbcore on the same
backend, for comparison."""

from __future__ import annotations

import http.client
import time

import pytest

from tests.haproxy import HaproxyProcess, http_cfg
from tests.support import BackendProcess, free_port, http_config

REQUESTS = 60


def p50_ms(port: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times = []
    for _ in range(REQUESTS):
        began = time.perf_counter()
        conn.request("GET", "/echo")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        times.append(time.perf_counter() - began)
    conn.close()
    times.sort()
    return times[len(times) // 2] * 1000


@pytest.fixture
def nagle_backend():
    backend = BackendProcess("s1", args=["--two-writes"]).start()
    yield backend
    backend.stop()


def test_sequential_keep_alive_requests_are_not_delayed(nagle_backend, start_lbcore):
    port, ha_port = free_port(), free_port()
    start_lbcore(http_config([nagle_backend.address], port))
    haproxy = HaproxyProcess(http_cfg(ha_port, [nagle_backend.address])).start(wait_ports=[ha_port])
    try:
        ours = p50_ms(port)
        theirs = p50_ms(ha_port)
    finally:
        haproxy.stop()
    # A stalled request takes 40 ms or more; an unstalled one well under 5.
    assert ours < 10, f"lbcore p50 {ours:.1f} ms (haproxy {theirs:.1f} ms)"
    assert ours <= theirs + 2, f"lbcore p50 {ours:.1f} ms, haproxy {theirs:.1f} ms"
