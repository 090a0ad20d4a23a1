"""SIGTERM drains (in-flight requests finish, nothing new is accepted,
monitor_uri says 503, exit 0); SIGINT stops at once."""

import http.client
import signal
import socket
import threading
import time

from tests.support import free_port, http_config


def _slow_requests(port, n, seconds):
    results = []

    def one():
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
            conn.request("GET", f"/sleep/{seconds}")
            resp = conn.getresponse()
            results.append((resp.status, resp.read()))
        except Exception as exc:  # recorded, asserted below
            results.append((None, repr(exc)))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, results


def test_sigterm_finishes_in_flight_requests_then_exits_0(start_backend, start_lbcore):
    backend = start_backend("s1")
    port = free_port()
    config = http_config([backend.address], port, frontend={"monitor_uri": "/healthz"})
    lb = start_lbcore(config)
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    idle.request("GET", "/healthz")
    assert idle.getresponse().read()
    threads, results = _slow_requests(port, 6, 1.0)
    time.sleep(0.3)
    started = time.monotonic()
    lb.signal(signal.SIGTERM)
    time.sleep(0.1)
    # No longer accepting.
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        refused = False
    except OSError:
        refused = True
    assert refused
    # An existing keep-alive connection sees the monitor fail.
    idle.request("GET", "/healthz")
    resp = idle.getresponse()
    assert resp.status == 503
    resp.read()
    for t in threads:
        t.join(10)
    assert [status for status, _ in results] == [200] * 6, results
    assert lb.wait(10) == 0
    assert time.monotonic() - started < 5


def test_sigterm_grace_period_bounds_the_wait(start_backend, start_lbcore):
    backend = start_backend("s1")
    port = free_port()
    config = http_config([backend.address], port)
    config["global"]["grace"] = "1s"
    lb = start_lbcore(config)
    threads, results = _slow_requests(port, 1, 10)
    time.sleep(0.3)
    started = time.monotonic()
    lb.signal(signal.SIGTERM)
    assert lb.wait(10) == 0
    assert 0.8 < time.monotonic() - started < 4
    for t in threads:
        t.join(10)
    assert results[0][0] is None  # cut at the end of the grace period


def test_sigint_stops_now(start_backend, start_lbcore):
    backend = start_backend("s1")
    port = free_port()
    lb = start_lbcore(http_config([backend.address], port))
    threads, results = _slow_requests(port, 1, 10)
    time.sleep(0.3)
    started = time.monotonic()
    lb.signal(signal.SIGINT)
    lb.wait(10)
    assert time.monotonic() - started < 2
    for t in threads:
        t.join(10)
