"""monitor_uri: answered 200 by lbcore itself (even with every server down),
503 once stopping; other paths still go to the backend."""

from __future__ import annotations

import signal
import time

from tests.support import free_port, http_config

from .rawhttp import RawClient, backends3, no_crash_in_lbcore, start_lbcore  # noqa: F401


def start(start_lbcore, servers):
    port = free_port()
    config = http_config(servers, port, frontend={"monitor_uri": "/healthz"})
    return start_lbcore(config), port


def dead_server() -> str:
    return f"127.0.0.1:{free_port()}"


def test_monitor_uri_answered_by_lbcore_with_servers_down(start_lbcore):
    _, port = start(start_lbcore, [dead_server()])
    with RawClient(port) as c:
        c.request("GET", "/healthz")
        resp = c.read_response()
        assert resp.status == 200
        assert resp.header("X-Server") is None
        assert resp.body  # a short page
        # Keep-alive: the connection serves the next request (here a 503:
        # the only server is down, which shows the monitor never used it).
        c.request("GET", "/healthz?from=probe")
        assert c.read_response().status == 200
        c.request("GET", "/other")
        assert c.read_response().status == 503


def test_monitor_uri_exact_path_only(backends3, start_lbcore):
    _, port = start(start_lbcore, [backends3[0].address])
    for path in ("/healthzx", "/healthz/sub", "/x/healthz"):
        with RawClient(port) as c:
            c.request("GET", path)
            resp = c.read_response()
        assert resp.status == 200 and resp.header("X-Server") == "s1", path


def test_monitor_uri_head_and_post(start_lbcore):
    _, port = start(start_lbcore, [dead_server()])
    with RawClient(port) as c:
        c.send(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
               b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
               b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = c.read_response(head_request=True)
        assert head.status == 200
        post = c.read_response()
        assert post.status == 200
        get = c.read_response()  # the POST body was consumed, not parsed as a request
        assert get.status == 200
        assert c.buf == b""


def test_monitor_uri_says_503_while_stopping(start_lbcore):
    lb, port = start(start_lbcore, [dead_server()])
    with RawClient(port) as c:
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # head not finished yet
        time.sleep(0.2)
        lb.signal(signal.SIGTERM)
        time.sleep(0.3)
        c.send(b"\r\n")
        resp = c.read_response()
    assert resp.status == 503


def test_monitor_uri_requests_are_not_logged(backends3, start_lbcore):
    """HAProxy does not log monitor requests: a probe every second from the
    layer above would bury the traffic in the access log."""
    lb, port = start(start_lbcore, [b.address for b in backends3])
    with RawClient(port) as c:
        for path in ("/healthz", "/healthz?probe=1", "/app"):
            c.request("GET", path)
            assert c.read_response().status == 200
    deadline = time.monotonic() + 5
    while "GET /app" not in lb.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    logs = lb.logs()
    assert "GET /app HTTP/1.1" in logs
    assert "/healthz" not in logs and "<NOSRV>" not in logs
