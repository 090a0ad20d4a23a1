"""Keep-alive on the client side: many requests per connection, pipelining
answered in order, Connection: close, HTTP/1.0 clients, half-closed
clients, and many concurrent keep-alive clients."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import socket
from types import SimpleNamespace

import pytest

from tests.backend import pattern_bytes
from tests.support import free_port, http_config

from .rawhttp import (  # noqa: F401 (fixtures)
    KeepAliveClient, RawClient, backends3, no_crash_in_lbcore, start_watched,
)


@pytest.fixture(scope="module")
def proxy(backends3):
    port = free_port()
    lb = start_watched(http_config([b.address for b in backends3], port))
    yield SimpleNamespace(port=port, lb=lb)
    lb.stop()


def test_many_requests_on_one_connection(proxy):
    with RawClient(proxy.port) as c:
        servers = set()
        for i in range(60):
            c.request("GET", f"/echo?i={i}")
            resp = c.read_response()
            assert resp.status == 200
            assert (resp.header("Connection") or "").lower() != "close"
            info = resp.json()
            assert info["path"] == f"/echo?i={i}"
            servers.add(info["server"])
        assert servers == {"s1", "s2", "s3"}
        assert not c.closed_within(0.2)


def test_pipelined_requests_are_answered_in_order(proxy):
    requests = []
    for i in range(15):
        if i % 5 == 0:
            requests.append((f"/sleep/0.2?i={i}", None))  # a slow one ahead of fast ones
        elif i % 5 == 1:
            requests.append((f"/size/{1000 + i}", pattern_bytes(1000 + i)))
        elif i % 5 == 2:
            requests.append((f"/chunked/{40000 + i}", pattern_bytes(40000 + i)))
        else:
            requests.append((f"/echo?i={i}", None))
    data = b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % p.encode() for p, _ in requests)
    with RawClient(proxy.port, timeout=10) as c:
        c.send(data)
        for path, expected in requests:
            resp = c.read_response()
            assert resp.status == 200, path
            if expected is not None:
                assert resp.body == expected, path
            elif path.startswith("/echo"):
                assert resp.json()["path"] == path
            else:
                assert resp.body == b"slept\n"
        assert not c.closed_within(0.2)


def test_pipelined_requests_with_bodies(proxy):
    bodies = [os.urandom(n) for n in (0, 10, 70000, 5, 200000)]
    data = b""
    for i, body in enumerate(bodies):
        if i % 2:
            chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
            data += b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
        else:
            data += b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with RawClient(proxy.port, timeout=10) as c:
        c.send(data)
        for body in bodies:
            resp = c.read_response()
            assert resp.status == 200
            info = resp.json()
            assert (info["body_length"], info["body_sha256"]) == (len(body), hashlib.sha256(body).hexdigest())


def test_hundreds_of_pipelined_requests(proxy):
    n = 500
    data = b"".join(b"GET /echo?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(n))
    with RawClient(proxy.port, timeout=20) as c:
        c.send(data)
        for i in range(n):
            resp = c.read_response()
            assert resp.status == 200
            assert resp.json()["path"] == f"/echo?n={i}"


def test_nothing_is_served_after_a_request_with_connection_close(proxy):
    with RawClient(proxy.port) as c:
        c.send(b"GET /echo?first HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
               b"GET /echo?second HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = c.read_response()
        assert resp.json()["path"] == "/echo?first"
        assert c.closed_within(2)
        assert c.buf == b"", c.buf[:100]


def test_connection_close_from_client(proxy):
    with RawClient(proxy.port) as c:
        c.request("GET", "/echo", headers=[("Connection", "close")])
        resp = c.read_response()
        assert resp.status == 200
        assert (resp.header("Connection") or "").lower() == "close"
        assert c.closed_within(2)


def test_http10_client_without_host_gets_answer_and_close(proxy):
    with RawClient(proxy.port) as c:
        c.send(b"GET /echo HTTP/1.0\r\n\r\n")
        resp = c.read_response()
        assert resp.status == 200
        assert resp.json()["path"] == "/echo"
        assert not resp.chunked
        assert c.closed_within(2)


def test_http10_request_without_host_stays_acceptable_to_the_server(proxy):
    # An HTTP/1.0 request may omit Host; forwarded as HTTP/1.1 it must then
    # carry one, or a strict server (nginx) answers 400. HAProxy keeps
    # HTTP/1.0 on the request line.
    with RawClient(proxy.port) as c:
        c.send(b"GET /echo HTTP/1.0\r\n\r\n")
        info = c.read_response().json()
    hosts = [v for k, v in info["headers"] if k.lower() == "host"]
    assert info["version"] == "HTTP/1.0" or hosts, (info["version"], info["headers"])


def test_http10_keepalive_client(proxy):
    with RawClient(proxy.port) as c:
        for i in range(3):
            c.send(b"GET /echo?i=%d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % i)
            resp = c.read_response()
            assert resp.status == 200
            assert resp.json()["path"] == f"/echo?i={i}"
            assert (resp.header("Connection") or "").lower() == "keep-alive"
        assert not c.closed_within(0.2)


def test_http10_client_gets_chunked_response_unchunked(proxy):
    n = 100000
    with RawClient(proxy.port) as c:
        c.send(b"GET /chunked/%d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % n)
        resp = c.read_response()
        assert resp.status == 200
        assert resp.header("Transfer-Encoding") is None  # HTTP/1.0 knows no chunked
        assert not resp.chunked
        assert resp.body == pattern_bytes(n)


def test_http10_post_with_body(proxy):
    body = os.urandom(5000)
    with RawClient(proxy.port) as c:
        c.send(b"POST /echo HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        resp = c.read_response()
    assert resp.status == 200
    assert resp.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_server_closing_its_connection_keeps_the_client_connection(proxy):
    with RawClient(proxy.port) as c:
        for _ in range(3):
            c.request("GET", "/connclose")
            resp = c.read_response()
            assert resp.status == 200 and resp.body == b"closing\n"
            c.request("GET", "/echo")
            assert c.read_response().status == 200


def test_error_statuses_keep_the_connection(proxy):
    with RawClient(proxy.port) as c:
        for status in (404, 500, 503, 401):
            c.request("GET", f"/status/{status}")
            resp = c.read_response()
            assert resp.status == status
            assert resp.body == b"status\n"
        c.request("GET", "/echo")
        assert c.read_response().status == 200


def test_client_half_close_after_request_still_gets_the_answer(proxy):
    # Like `nc -N` or a client that shuts down its write side after sending:
    # HAProxy (without abortonclose) still delivers the response.
    with RawClient(proxy.port) as c:
        c.send(b"GET /sleep/0.3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        resp = c.read_response()
    assert resp.status == 200
    assert resp.body == b"slept\n"


def test_server_answering_before_reading_the_body(proxy):
    # A server may refuse an upload before reading it (401, 413): the client
    # gets that answer, not an error of lbcore's.
    body = os.urandom(1 << 20)
    with RawClient(proxy.port, timeout=10) as c:
        c.send(b"POST /early/413 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        try:
            c.send(body)
        except OSError:
            pass
        resp = c.read_response()
    assert resp.status == 413
    assert resp.body == b"early\n"


def test_many_concurrent_keepalive_clients(proxy):
    def client(n):
        kc = KeepAliveClient(proxy.port)
        counts = {}
        for i in range(25):
            body = b"%d-%d" % (n, i) * (i + 1)
            resp, data = kc.request("POST", f"/echo?c={n}&i={i}", body=body)
            assert resp.status == 200
            info = json.loads(data)
            assert info["path"] == f"/echo?c={n}&i={i}"
            assert info["body_sha256"] == hashlib.sha256(body).hexdigest()
            counts[info["server"]] = counts.get(info["server"], 0) + 1
        kc.close()
        return counts

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(client, range(20)))
    total = {}
    for counts in results:
        for server, n in counts.items():
            total[server] = total.get(server, 0) + n
    assert sum(total.values()) == 500
    assert set(total) == {"s1", "s2", "s3"}
