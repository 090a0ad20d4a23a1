"""Timeouts: http_request against slowloris (408), http_keep_alive on idle
clients, client on stalled bodies, server (504), connect (retried
elsewhere, then 503)."""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace

import pytest

from tests.support import free_port, http_config

from .rawhttp import (  # noqa: F401 (fixtures)
    ConnectionClosed, KeepAliveClient, RawClient, add_frontend, backends3, no_crash_in_lbcore,
    start_lbcore, start_watched,
)


@pytest.fixture(scope="module")
def proxy(backends3):
    port, ka_port, stall_port, upload_port = free_port(), free_port(), free_port(), free_port()
    config = http_config([backends3[0].address], port, defaults={"timeouts": {
        "http_request": "500ms", "http_keep_alive": "1s", "server": "500ms", "client": "5s"}})
    config["backends"]["patient"] = {
        "mode": "http", "timeouts": {"server": "10s"},
        "servers": [{"name": "s1", "address": backends3[0].address}]}
    add_frontend(config, "ka", ka_port, timeouts={"http_request": "2s", "http_keep_alive": "500ms"})
    add_frontend(config, "stall", stall_port, backend="patient", timeouts={"client": "1s"})
    add_frontend(config, "upload", upload_port, backend="patient")
    lb = start_watched(config)
    yield SimpleNamespace(port=port, ka_port=ka_port, stall_port=stall_port, upload_port=upload_port,
                          lb=lb)
    lb.stop()


def read_answer(c: RawClient, within: float):
    """The response lbcore sends (or None if it just closes) within `within` s."""
    c.sock.settimeout(within)
    try:
        return c.read_response()
    except ConnectionClosed:
        return None
    except socket.timeout:
        pytest.fail(f"no answer and no close within {within}s")


def test_partial_head_gets_408(proxy):
    with RawClient(proxy.port) as c:
        started = time.monotonic()
        c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        resp = read_answer(c, 5)
        elapsed = time.monotonic() - started
        assert resp is not None and resp.status == 408
        assert c.closed_within(2)
    assert 0.4 <= elapsed < 3.5, elapsed


def test_slowloris_trickle_does_not_extend_http_request(proxy):
    with RawClient(proxy.port) as c:
        started = time.monotonic()
        c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        resp = None
        for i in range(40):  # would go on for 8 s, sixteen times http_request
            try:
                c.send(b"X-Slow-%d: y\r\n" % i)
            except OSError:
                break
            if c.closed_within(0.2) or c.buf:
                break
        elapsed = time.monotonic() - started
        resp = c.read_response() if c.buf else None
    assert resp is not None and resp.status == 408, resp
    assert elapsed < 3.5, elapsed


def test_slow_second_request_on_keepalive_connection_gets_408(proxy):
    with RawClient(proxy.port) as c:
        c.request("GET", "/echo")
        assert c.read_response().status == 200
        c.send(b"GET /echo HTTP/1.1\r\nHo")
        resp = read_answer(c, 5)
        assert resp is not None and resp.status == 408


def test_idle_keepalive_connection_is_closed_silently(proxy):
    with RawClient(proxy.ka_port) as c:
        c.request("GET", "/echo")
        assert c.read_response().status == 200
        started = time.monotonic()
        assert c.closed_within(3), "idle keep-alive connection left open"
        assert time.monotonic() - started < 2
        assert c.buf == b"", c.buf  # no 408 for a client that sent nothing


def test_new_connection_waits_http_request_not_keep_alive(proxy):
    # Before its first request a connection is governed by http_request (2s
    # on this frontend), not by the shorter http_keep_alive (500ms).
    with RawClient(proxy.ka_port) as c:
        assert not c.closed_within(1.2)
        c.request("GET", "/echo")
        assert c.read_response().status == 200


def test_idle_new_connection_is_closed(proxy):
    with RawClient(proxy.port) as c:
        assert c.closed_within(4), "a connection that never sends is kept forever"
        if c.buf:
            assert c.buf.startswith(b"HTTP/1.1 408"), c.buf[:100]


def steady_upload(port: int, pieces: int, pause: float):
    body = b"x" * pieces
    with RawClient(port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        for i in range(pieces):
            time.sleep(pause)
            try:
                c.send(body[i:i + 1])
            except OSError:
                break  # lbcore gave up: its answer says why
        resp = read_answer(c, 5)
    return resp, len(body)


def test_slow_body_is_not_cut_by_http_request(proxy):
    # http_request (500ms) covers the head only; a body arriving steadily
    # is governed by the client timeout (5s).
    resp, n = steady_upload(proxy.upload_port, 10, 0.12)
    assert resp is not None and resp.status == 200, resp and (resp.status, resp.body[:80])
    assert resp.json()["body_length"] == n


def test_upload_lasting_longer_than_server_timeout_is_not_cut(proxy):
    # `server` is the server's inactivity (lb-yaml.md): while lbcore keeps
    # writing the body to it the server is not idle; it cannot answer before
    # it has the body. An upload taking longer than timeouts.server (500ms
    # here; 60s by default, a few GB image upload) must go through.
    resp, n = steady_upload(proxy.port, 12, 0.1)
    assert resp is not None and resp.status == 200, resp and (resp.status, resp.body[:80])
    assert resp.json()["body_length"] == n


def test_stalled_body_is_ended_by_client_timeout(proxy):
    with RawClient(proxy.stall_port) as c:
        started = time.monotonic()
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        resp = read_answer(c, 6)
        elapsed = time.monotonic() - started
        if resp is not None:
            assert resp.status == 408, resp.status
    assert 0.8 <= elapsed < 5, elapsed


def test_slow_server_gets_504(proxy):
    with RawClient(proxy.port) as c:
        started = time.monotonic()
        c.request("GET", "/sleep/5")
        resp = read_answer(c, 8)
        elapsed = time.monotonic() - started
    assert resp is not None and resp.status == 504
    assert b"504" in resp.body
    assert 0.4 <= elapsed < 4.5, elapsed
    # The server is fine, just slow: lbcore keeps using it.
    c2 = KeepAliveClient(proxy.port)
    resp, _ = c2.request("GET", "/sleep/0.1")
    assert resp.status == 200


def test_slow_server_behind_patient_backend_is_waited_for(proxy):
    with RawClient(proxy.stall_port) as c:
        c.request("GET", "/sleep/1")
        resp = read_answer(c, 5)
    assert resp is not None and resp.status == 200


@pytest.fixture
def blackhole():
    """An address whose connects hang: a listener with a full backlog."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    filler = socket.create_connection(lsock.getsockname())
    yield f"127.0.0.1:{lsock.getsockname()[1]}"
    filler.close()
    lsock.close()


def test_connect_timeout_is_redispatched(backends3, start_lbcore, blackhole):
    port = free_port()
    start_lbcore(http_config([blackhole, backends3[0].address], port,
                             defaults={"timeouts": {"connect": "300ms"}}))
    client = KeepAliveClient(port)
    for _ in range(4):
        started = time.monotonic()
        resp, data = client.request()
        assert resp.status == 200
        assert resp.getheader("X-Server") == "s1"
        assert time.monotonic() - started < 4


def test_connect_timeout_on_the_only_server_gives_503(start_lbcore, blackhole):
    port = free_port()
    start_lbcore(http_config([blackhole], port, backend={"retries": 1},
                             defaults={"timeouts": {"connect": "300ms"}}))
    started = time.monotonic()
    with RawClient(port, timeout=10) as c:
        c.request("GET", "/echo")
        resp = c.read_response()
    assert resp.status == 503
    assert time.monotonic() - started < 5


def test_client_pausing_a_download_is_governed_by_client_timeout(proxy):
    # The server is not idle while lbcore holds it back for a slow client:
    # a pause longer than `server` (500ms) but shorter than `client` (5s)
    # must not cut the download.
    n = 20 << 20
    with RawClient(proxy.port, timeout=10) as c:
        c.request("GET", f"/size/{n}")
        version, status, _, headers, _ = c.read_head()
        assert status == 200
        got = len(c.buf)
        c.buf = b""
        while got < 1 << 20:
            got += len(c.sock.recv(65536))
        time.sleep(1.2)
        while got < n:
            data = c.sock.recv(1 << 20)
            if not data:
                break
            got += len(data)
    assert got == n, f"download cut after {got} of {n} bytes"


def test_hundreds_of_slowloris_connections_do_not_starve_others(proxy):
    attackers = []
    try:
        for i in range(200):
            c = RawClient(proxy.port)
            c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            attackers.append(c)
        started = time.monotonic()
        client = KeepAliveClient(proxy.port)
        resp, _ = client.request("GET", "/echo")
        assert resp.status == 200
        assert time.monotonic() - started < 2
        client.close()
        # And every attacker is sent away with its 408.
        answered = 0
        for c in attackers:
            resp = read_answer(c, 5)
            if resp is not None and resp.status == 408:
                answered += 1
        assert answered == len(attackers)
    finally:
        for c in attackers:
            c.close()
