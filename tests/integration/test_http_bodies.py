"""Bodies streamed both ways: large uploads (Content-Length and chunked)
checked by sha256 at the backend with lbcore's memory bounded, large and
chunked responses compared byte for byte, HEAD/204/304 without a body,
Expect: 100-continue."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from types import SimpleNamespace

import pytest

from tests.backend import PATTERN, pattern_bytes
from tests.support import free_port, http_config

from .rawhttp import KeepAliveClient, RawClient, RssWatcher, backends3, no_crash_in_lbcore, start_watched  # noqa: F401

MiB = 1 << 20
BIG = 200 * MiB
RSS_LIMIT_MIB = 150  # the brief: a 200 MB transfer must not grow lbcore by this much


@pytest.fixture(scope="module")
def proxy(backends3):
    port = free_port()
    config = http_config([backends3[0].address], port,
                         defaults={"timeouts": {"client": "30s", "server": "30s"}})
    lb = start_watched(config)
    yield SimpleNamespace(port=port, lb=lb, pid=lb.proc.pid)
    lb.stop()


def upload_blocks(total: int, block: int = MiB):
    """Deterministic, non-repeating-per-block content: each block differs."""
    seed = hashlib.sha256(b"lbcore").digest() * (block // 32 + 1)
    sent = 0
    i = 0
    while sent < total:
        n = min(block, total - sent)
        data = bytes([i & 0xFF]) + seed[1:n]
        yield data
        sent += n
        i += 1


def stream_upload(port: int, path: str, total: int, chunked: bool, pid: int):
    digest = hashlib.sha256()
    with RawClient(port, timeout=60) as c:
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
        c.send(f"POST {path} HTTP/1.1\r\nHost: up\r\n{framing}\r\n\r\n".encode())
        with RssWatcher(pid) as rss:
            for i, block in enumerate(upload_blocks(total)):
                digest.update(block)
                if chunked:
                    # Uneven chunk sizes: split each block in two.
                    cut = 1 + (i * 7919) % (len(block) - 1)
                    for piece in (block[:cut], block[cut:]):
                        c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                else:
                    c.send(block)
            if chunked:
                c.send(b"0\r\n\r\n")
            resp = c.read_response()
    return resp, digest.hexdigest(), rss


def test_200mb_content_length_upload_is_streamed(proxy):
    resp, sha, rss = stream_upload(proxy.port, "/echo", BIG, chunked=False, pid=proxy.pid)
    assert resp.status == 200, resp.body[:200]
    info = json.loads(resp.body)
    assert info["body_length"] == BIG
    assert info["body_sha256"] == sha
    assert rss.growth_mib < RSS_LIMIT_MIB, f"lbcore grew by {rss.growth_mib:.0f} MiB"


def test_200mb_chunked_upload_is_streamed(proxy):
    resp, sha, rss = stream_upload(proxy.port, "/echo", BIG, chunked=True, pid=proxy.pid)
    assert resp.status == 200, resp.body[:200]
    info = json.loads(resp.body)
    assert info["body_length"] == BIG
    assert info["body_sha256"] == sha
    assert rss.growth_mib < RSS_LIMIT_MIB, f"lbcore grew by {rss.growth_mib:.0f} MiB"


def test_upload_to_a_server_not_reading_is_held_back(proxy):
    # The server waits before reading: without back-pressure lbcore would
    # swallow the whole upload into memory meanwhile.
    resp, sha, rss = stream_upload(proxy.port, "/slowbody/1", BIG, chunked=False, pid=proxy.pid)
    assert resp.status == 200, resp.body[:200]
    info = json.loads(resp.body)
    assert (info["body_length"], info["body_sha256"]) == (BIG, sha)
    assert rss.growth_mib < RSS_LIMIT_MIB, f"lbcore grew by {rss.growth_mib:.0f} MiB"


def pattern_sha(n: int) -> str:
    digest = hashlib.sha256()
    block = PATTERN * 64  # 1 MiB, a whole number of patterns
    left = n
    while left:
        piece = block[:min(left, len(block))]
        digest.update(piece)
        left -= len(piece)
    return digest.hexdigest()


def test_200mb_download_to_a_client_not_reading_is_held_back(proxy):
    with RawClient(proxy.port, timeout=60) as c:
        with RssWatcher(proxy.pid) as rss:
            c.request("GET", f"/size/{BIG}")
            time.sleep(1)  # the client reads nothing: the server must be paused
            version, status, _, headers, _ = c.read_head()
            assert status == 200
            assert dict((k.lower(), v) for k, v in headers)["content-length"] == str(BIG)
            digest = hashlib.sha256()
            got = len(c.buf)
            digest.update(c.buf)
            c.buf = b""
            while got < BIG:
                data = c.sock.recv(1 << 20)
                assert data, f"connection closed after {got} bytes"
                digest.update(data)
                got += len(data)
    assert got == BIG
    assert digest.hexdigest() == pattern_sha(BIG)
    assert rss.growth_mib < RSS_LIMIT_MIB, f"lbcore grew by {rss.growth_mib:.0f} MiB"


@pytest.mark.parametrize("n", [0, 1, 16383, 16384, 16385, 5 * MiB + 123])
def test_chunked_response_byte_for_byte(proxy, n):
    with RawClient(proxy.port) as c:
        c.request("GET", f"/chunked/{n}")
        resp = c.read_response()
        assert resp.status == 200
        assert resp.chunked
        assert resp.body == pattern_bytes(n)
        # The connection stays usable: the framing ended where it should.
        c.request("GET", "/echo")
        assert c.read_response().status == 200


def test_content_length_response_byte_for_byte(proxy):
    n = 20 * MiB + 7
    client = KeepAliveClient(proxy.port)
    resp, body = client.request("GET", f"/size/{n}")
    assert resp.status == 200
    assert resp.getheader("Content-Length") == str(n)
    assert body == pattern_bytes(n)
    resp, body = client.request("GET", "/size/3")
    assert body == pattern_bytes(3)


def test_curl_download_of_chunked_response(proxy):
    n = 3 * MiB + 1
    out = subprocess.run(["curl", "-sS", "--max-time", "20", f"http://127.0.0.1:{proxy.port}/chunked/{n}"],
                         capture_output=True, check=True, timeout=30)
    assert hashlib.sha256(out.stdout).hexdigest() == pattern_sha(n)


@pytest.mark.parametrize("extra", [b"", b"X-Forwarded-For: 10.0.0.1\r\n", b"Transfer-Encoding: chunked\r\n"],
                         ids=["plain", "xff", "chunked-request"])
@pytest.mark.parametrize("path", ["/size/1000", "/chunked/1000"])
def test_head_response_has_no_body(proxy, extra, path):
    body = b"0\r\n\r\n" if b"chunked" in extra else b""
    with RawClient(proxy.port) as c:
        # HEAD then GET in one write: any stray body byte after the HEAD
        # answer would corrupt the second response.
        c.send(b"HEAD %s HTTP/1.1\r\nHost: x\r\n%s\r\n%sGET /size/5 HTTP/1.1\r\nHost: x\r\n\r\n"
               % (path.encode(), extra, body))
        head = c.read_response(head_request=True)
        assert head.status == 200
        if path.startswith("/size"):
            assert head.header("Content-Length") == "1000"
            assert head.header("Transfer-Encoding") is None
        after = c.read_response()
        assert after.status == 200
        assert after.body == pattern_bytes(5)
        assert c.buf == b""


@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_have_no_body(proxy, status):
    with RawClient(proxy.port) as c:
        c.send(b"GET /status/%d HTTP/1.1\r\nHost: x\r\n\r\nGET /size/7 HTTP/1.1\r\nHost: x\r\n\r\n" % status)
        resp = c.read_response()
        assert resp.status == status
        assert resp.header("Transfer-Encoding") is None
        after = c.read_response()
        assert after.status == 200 and after.body == pattern_bytes(7)
        assert c.buf == b""


def test_304_announcing_a_length_has_no_body(proxy):
    with RawClient(proxy.port, timeout=3) as c:
        c.request("GET", "/notmod")
        resp = c.read_response()
        assert resp.status == 304
        assert resp.header("ETag") == '"v1"'
        c.request("GET", "/size/4")
        assert c.read_response().body == pattern_bytes(4)


def test_expect_100_continue_before_the_body(proxy):
    body = b"hello world"
    with RawClient(proxy.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body))
        # The body is withheld until the 100 arrives.
        version, status, _, _, _ = c.read_head()
        assert status == 100
        c.send(body)
        resp = c.read_response()
    assert resp.status == 200
    info = json.loads(resp.body)
    assert info["body_length"] == len(body)
    assert info["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_curl_upload_with_expect_100_continue(proxy):
    data = os.urandom(2 * MiB + 5)
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        out = subprocess.run(
            ["curl", "-sS", "-v", "--max-time", "20", "-H", "Expect: 100-continue",
             "--expect100-timeout", "10", "--data-binary", f"@{f.name}",
             f"http://127.0.0.1:{proxy.port}/echo"],
            capture_output=True, check=True, timeout=30)
    assert b"HTTP/1.1 100 Continue" in out.stderr
    info = json.loads(out.stdout)
    assert info["body_length"] == len(data)
    assert info["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_curl_chunked_upload(proxy):
    data = os.urandom(3 * MiB + 11)
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "20", "-H", "Transfer-Encoding: chunked",
             "--data-binary", f"@{f.name}", f"http://127.0.0.1:{proxy.port}/echo"],
            capture_output=True, check=True, timeout=30)
    info = json.loads(out.stdout)
    assert info["body_length"] == len(data)
    assert info["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_chunked_request_with_extensions_and_trailers(proxy):
    with RawClient(proxy.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
               b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = c.read_response()
        assert resp.status == 200
        info = json.loads(resp.body)
        assert info["body_length"] == 11
        assert info["body_sha256"] == hashlib.sha256(b"hello world").hexdigest()
        nxt = c.read_response()
        assert nxt.status == 200 and json.loads(nxt.body)["method"] == "GET"


def test_post_bodies_on_one_keepalive_connection(proxy):
    client = KeepAliveClient(proxy.port)
    for size in (0, 1, 70000, 300000):
        body = os.urandom(size)
        resp, data = client.request("POST", "/echo", body=body)
        assert resp.status == 200
        info = json.loads(data)
        assert (info["body_length"], info["body_sha256"]) == (size, hashlib.sha256(body).hexdigest())
    client.close()


def test_echoed_body_round_trip(proxy):
    body = os.urandom(600_000)
    client = KeepAliveClient(proxy.port)
    resp, data = client.request("PUT", "/echo/body", body=body)
    assert resp.status == 200
    assert data == body


def test_close_delimited_response_reaches_the_client_whole(proxy):
    # The server sends no length and closes at the end: an HTTP/1.1 client
    # must get a framed body (chunked) or a closed connection at its end.
    with RawClient(proxy.port) as c:
        c.request("GET", "/closebody")
        resp = c.read_response()
        assert resp.status == 200
        assert resp.body == pattern_bytes(100000)
        if resp.chunked:
            c.request("GET", "/size/3")
            assert c.read_response().body == pattern_bytes(3)


def test_pipelined_flood_from_a_client_not_reading_is_held_back(proxy):
    # Thousands of pipelined requests for 1 MiB answers, none read: lbcore
    # must stop reading requests rather than queue them or their answers.
    request = b"GET /size/%d HTTP/1.1\r\nHost: x\r\n\r\n" % MiB
    with RawClient(proxy.port) as c, RssWatcher(proxy.pid) as rss:
        c.sock.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 3
        blob = request * 1000
        while time.monotonic() < deadline and sent < 20 * len(blob):
            try:
                sent += c.sock.send(blob)
            except BlockingIOError:
                time.sleep(0.05)
        time.sleep(0.5)
    assert rss.growth_mib < RSS_LIMIT_MIB, f"lbcore grew by {rss.growth_mib:.0f} MiB"
    assert proxy.lb.proc.poll() is None
