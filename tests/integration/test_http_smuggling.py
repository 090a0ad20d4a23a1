"""Request smuggling through the Connection header: a request that names
its framing header (or Host) among its Connection tokens must reach the
server with that header intact, so the body stays framed and the server
sees exactly one request. haproxy 2.6 runs the same inputs side by side.

The backend here is deliberately lenient, as many real ones are: it frames
a body only by the headers it receives, so an unframed body would show up
as a second, smuggled request."""

from __future__ import annotations

import time

import pytest

from tests.haproxy import HaproxyProcess, http_cfg, need_haproxy
from tests.lenient_backend import LenientBackend
from tests.support import free_port, http_config

from .rawhttp import RawClient, start_watched

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: evil\r\n\r\n"


@pytest.fixture(scope="module")
def lenient():
    b = LenientBackend()
    yield b
    b.close()


@pytest.fixture(scope="module", params=["lbcore", "haproxy"])
def proxy_port(request, lenient):
    port = free_port()
    if request.param == "lbcore":
        proc = start_watched(http_config([lenient.address], port))
    else:
        need_haproxy()
        proc = HaproxyProcess(http_cfg(port, [lenient.address])).start(wait_ports=[port])
    yield port
    proc.stop()


def send_and_collect(port, backend, raw: bytes):
    """Send one raw request, read its answer, and return what the backend
    saw meanwhile (a smuggled request would be a second entry)."""
    before = len(backend.requests)
    with RawClient(port) as c:
        c.send(raw)
        resp = c.read_response()
        time.sleep(0.2)  # a smuggled second request would have arrived by now
    return resp, backend.requests[before:]


def cl_request(connection: str) -> bytes:
    return (b"POST /upload HTTP/1.1\r\nHost: t\r\nConnection: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (connection.encode(), len(SMUGGLED), SMUGGLED))


def te_request(connection: str) -> bytes:
    return (b"POST /upload HTTP/1.1\r\nHost: t\r\nConnection: %s\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
            % (connection.encode(), len(SMUGGLED), SMUGGLED))


@pytest.mark.parametrize("raw", [
    cl_request("Content-Length"),
    cl_request("content-length"),
    cl_request("keep-alive, Content-Length"),
    cl_request("close ,  CONTENT-LENGTH"),
    te_request("Transfer-Encoding"),
    te_request("keep-alive, transfer-encoding"),
    te_request("Transfer-Encoding, Content-Length"),
], ids=["cl", "cl-lower", "cl-list", "cl-close-spaces", "te", "te-list", "te-and-cl"])
def test_a_framing_header_named_in_connection_keeps_the_body_framed(proxy_port, lenient, raw):
    resp, seen = send_and_collect(proxy_port, lenient, raw)
    assert resp.status == 200
    assert [line for line, _, _ in seen] == [b"POST /upload HTTP/1.1"], seen
    assert seen[0][2] == SMUGGLED


def test_host_named_in_connection_still_reaches_the_server(proxy_port, lenient):
    resp, seen = send_and_collect(
        proxy_port, lenient, b"GET /h HTTP/1.1\r\nHost: api.example\r\nConnection: Host\r\n\r\n")
    assert resp.status == 200
    assert len(seen) == 1 and seen[0][1].get(b"host") == b"api.example", seen


def test_other_headers_named_in_connection_are_still_removed(proxy_port, lenient):
    resp, seen = send_and_collect(
        proxy_port, lenient,
        b"GET /p HTTP/1.1\r\nHost: t\r\nConnection: X-Private, Content-Length\r\n"
        b"X-Private: secret\r\nX-Public: yes\r\n\r\n")
    assert resp.status == 200
    assert len(seen) == 1, seen
    headers = seen[0][1]
    assert headers.get(b"x-public") == b"yes"


def test_lbcore_removes_the_other_named_headers(lenient):
    port = free_port()
    lb = start_watched(http_config([lenient.address], port))
    try:
        _, seen = send_and_collect(
            port, lenient,
            b"GET /p HTTP/1.1\r\nHost: t\r\nConnection: X-Private, Content-Length\r\n"
            b"X-Private: secret\r\n\r\n")
        assert len(seen) == 1 and b"x-private" not in seen[0][1], seen
    finally:
        lb.stop()


@pytest.fixture(scope="module")
def framing_in_connection_backend():
    b = LenientBackend(b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\n"
                       b"Content-Length: 5\r\n\r\nhello")
    yield b
    b.close()


@pytest.mark.parametrize("target", ["lbcore", "haproxy"])
def test_a_response_naming_its_length_in_connection_stays_framed(
        framing_in_connection_backend, target):
    port = free_port()
    if target == "lbcore":
        proc = start_watched(http_config([framing_in_connection_backend.address], port))
    else:
        need_haproxy()
        proc = HaproxyProcess(http_cfg(port, [framing_in_connection_backend.address])).start(
            wait_ports=[port])
    try:
        with RawClient(port) as c:
            for _ in range(2):  # the second answer proves the first was framed
                c.request("GET", "/r")
                resp = c.read_response()
                assert resp.status == 200 and resp.body == b"hello"
                assert resp.header("Content-Length") == "5"
    finally:
        proc.stop()
