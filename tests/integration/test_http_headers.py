"""Headers as the backend sees them and as the client gets them back:
X-Forwarded-For/Proto, hop-by-hop removal, Host and end-to-end headers
kept as sent."""

from __future__ import annotations

import json
import socket
import subprocess
from types import SimpleNamespace

import pytest

from tests.support import free_port, http_config

from .rawhttp import (  # noqa: F401 (fixtures)
    RawClient, add_frontend, backends3, echo_headers, no_crash_in_lbcore, seen, start_watched,
)


@pytest.fixture(scope="module")
def proxy(backends3):
    port, plain_port = free_port(), free_port()
    config = http_config([backends3[0].address], port)
    add_frontend(config, "plain", plain_port, forwarded_for=False, forwarded_proto=False)
    lb = start_watched(config)
    yield SimpleNamespace(port=port, plain_port=plain_port, lb=lb)
    lb.stop()


def backend_view(port, headers, path="/echo", source="127.0.0.1", host="test.local"):
    with RawClient(port, source=source) as c:
        c.request("GET", path, headers=headers, host=host)
        resp = c.read_response()
    assert resp.status == 200, (resp.status, resp.body)
    return resp, json.loads(resp.body)


def test_x_forwarded_for_carries_the_client_address(proxy):
    _, info = backend_view(proxy.port, [], source="127.0.0.7")
    assert seen(echo_headers(json.dumps(info).encode()), "X-Forwarded-For") == ["127.0.0.7"]


def test_x_forwarded_for_is_appended_to_an_existing_one(proxy):
    _, info = backend_view(proxy.port, [("X-Forwarded-For", "10.1.2.3")], source="127.0.0.8")
    values = seen([tuple(h) for h in info["headers"]], "X-Forwarded-For")
    assert ", ".join(values) == "10.1.2.3, 127.0.0.8", values


def test_x_forwarded_for_appended_after_several_existing_ones(proxy):
    _, info = backend_view(proxy.port, [("X-Forwarded-For", "10.0.0.1"),
                                        ("X-Forwarded-For", "10.0.0.2, 10.0.0.3")],
                           source="127.0.0.9")
    values = seen([tuple(h) for h in info["headers"]], "X-Forwarded-For")
    assert ", ".join(values) == "10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.9", values


def test_x_forwarded_proto_is_set_and_cannot_be_spoofed(proxy):
    _, info = backend_view(proxy.port, [("X-Forwarded-Proto", "https")])
    assert seen([tuple(h) for h in info["headers"]], "X-Forwarded-Proto") == ["http"]


def test_forwarded_headers_left_alone_when_disabled(proxy):
    _, info = backend_view(proxy.plain_port, [("X-Forwarded-For", "10.9.9.9"),
                                              ("X-Forwarded-Proto", "https")])
    headers = [tuple(h) for h in info["headers"]]
    assert seen(headers, "X-Forwarded-For") == ["10.9.9.9"]
    assert seen(headers, "X-Forwarded-Proto") == ["https"]
    _, info = backend_view(proxy.plain_port, [])
    headers = [tuple(h) for h in info["headers"]]
    assert seen(headers, "X-Forwarded-For") == []
    assert seen(headers, "X-Forwarded-Proto") == []


def test_hop_by_hop_request_headers_are_removed(proxy):
    _, info = backend_view(proxy.port, [
        ("Connection", "keep-alive, X-Private"),
        ("Keep-Alive", "timeout=5, max=100"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "h2c"),  # not named in Connection: no upgrade, just a stray header
        ("X-Private", "secret"),
        ("X-Kept", "yes"),
    ])
    names = {k.lower() for k, _ in info["headers"]}
    for hop in ("keep-alive", "proxy-connection", "te", "trailer", "upgrade", "x-private"):
        assert hop not in names, (hop, info["headers"])
    # The proxy may send its own Connection header, never the client's tokens.
    for value in seen([tuple(h) for h in info["headers"]], "Connection"):
        assert "x-private" not in value.lower()
    assert seen([tuple(h) for h in info["headers"]], "X-Kept") == ["yes"]


def test_headers_named_in_several_connection_headers_are_removed(proxy):
    _, info = backend_view(proxy.port, [
        ("Connection", "X-One"), ("Connection", "x-two , keep-alive"),
        ("X-One", "1"), ("X-Two", "2"), ("X-Three", "3"),
    ])
    names = [k.lower() for k, _ in info["headers"]]
    assert "x-one" not in names and "x-two" not in names, names
    assert "x-three" in names


def test_host_is_preserved_exactly(proxy):
    _, info = backend_view(proxy.port, [], host="Api.Example.COM:8443")
    assert seen([tuple(h) for h in info["headers"]], "Host") == ["Api.Example.COM:8443"]


def test_end_to_end_headers_kept_with_order_case_and_duplicates(proxy):
    _, info = backend_view(proxy.port, [
        ("X-Dup", "first"), ("x-MiXeD-Case", "Value  with  inner  spaces"),
        ("X-Dup", "second"), ("Cookie", "a=1"), ("Cookie", "b=2"), ("X-Empty", ""),
        ("Authorization", "Bearer abc.def"),
    ])
    headers = [tuple(h) for h in info["headers"]]
    assert seen(headers, "X-Dup") == ["first", "second"]
    assert ("x-MiXeD-Case", "Value  with  inner  spaces") in headers
    assert seen(headers, "Cookie") == ["a=1", "b=2"]
    assert seen(headers, "X-Empty") == [""]
    assert seen(headers, "Authorization") == ["Bearer abc.def"]


def test_request_target_is_forwarded_verbatim(proxy):
    path = "/echo/a%20b/%7Euser?x=1&y=%2F&z=a+b#"
    _, info = backend_view(proxy.port, [], path=path.rstrip("#"))
    assert info["path"] == path.rstrip("#")
    assert info["method"] == "GET"


def test_hop_by_hop_response_headers_are_removed(proxy):
    with RawClient(proxy.port) as c:
        c.request("GET", "/headers?Keep-Alive=timeout%3D99&Proxy-Connection=keep-alive"
                         "&X-End=kept&Trailer=X-Sum")
        resp = c.read_response()
    assert resp.status == 200
    assert resp.header("X-End") == "kept"
    assert resp.header("X-Server") == "s1"
    assert resp.header("Keep-Alive") is None
    assert resp.header("Proxy-Connection") is None
    assert resp.header("Trailer") is None
    assert resp.body == b"headers\n"


def test_response_headers_named_in_connection_are_removed(proxy):
    # RFC 9110 7.6.1: a proxy removes the fields a Connection header names,
    # in responses as in requests.
    with RawClient(proxy.port) as c:
        c.request("GET", "/headers?Connection=X-Hop&X-Hop=private&X-End=kept")
        resp = c.read_response()
    assert resp.status == 200
    assert resp.header("X-End") == "kept"
    assert resp.header("X-Hop") is None, resp.headers


def test_curl_sees_forwarded_headers(proxy):
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "5", "-H", "X-Forwarded-For: 192.0.2.1",
         "-H", "Host: curl.example", f"http://127.0.0.1:{proxy.port}/echo"],
        capture_output=True, check=True, timeout=10)
    headers = [tuple(h) for h in json.loads(out.stdout)["headers"]]
    assert ", ".join(seen(headers, "X-Forwarded-For")) == "192.0.2.1, 127.0.0.1"
    assert seen(headers, "X-Forwarded-Proto") == ["http"]
    assert seen(headers, "Host") == ["curl.example"]


def test_ipv6_client_address_in_x_forwarded_for(backends3):
    port = free_port()
    config = http_config([backends3[0].address], port)
    config["frontends"]["web"]["bind"] = [f"127.0.0.1:{port}", f"[::1]:{port}"]
    lb = start_watched(config)
    try:
        with socket.create_connection(("::1", port), timeout=5) as s:
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: v6\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                piece = s.recv(65536)
                if not piece:
                    break
                data += piece
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        headers = [tuple(h) for h in json.loads(body)["headers"]]
        assert seen(headers, "X-Forwarded-For") == ["::1"]
    finally:
        lb.stop()
