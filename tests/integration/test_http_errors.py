"""Errors as HAProxy gives them: malformed and hostile requests (400, 431),
refused and killed servers (retried, then 503), invalid server responses
(502). After each, lbcore must still serve."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import struct
import threading
import time
from types import SimpleNamespace

import pytest

from tests.support import free_port, http_config

from .rawhttp import (  # noqa: F401 (fixtures)
    ConnectionClosed, KeepAliveClient, RawClient, backends3, check_no_crash, no_crash_in_lbcore,
    start_lbcore, start_watched,
)


@pytest.fixture(scope="module")
def proxy(backends3):
    port = free_port()
    config = http_config([b.address for b in backends3[:2]], port)
    lb = start_watched(config)
    yield SimpleNamespace(port=port, lb=lb)
    lb.stop()


def assert_alive(port: int) -> None:
    """lbcore still serves, and nothing blew up inside it meanwhile."""
    c = KeepAliveClient(port, timeout=5)
    for _ in range(2):  # both servers, round robin
        resp, _ = c.request("GET", "/echo")
        assert resp.status == 200
    c.close()
    check_no_crash()


def send_raw(port: int, data: bytes, split_after_head: bool = False, expect_close: bool = True):
    """Send `data`, read one response, and whether the connection then closed."""
    with RawClient(port, timeout=5) as c:
        if split_after_head:
            head, _, rest = data.partition(b"\r\n\r\n")
            c.send(head + b"\r\n\r\n")
            time.sleep(0.3)  # the head is now on its way to a server
            try:
                c.send(rest)
            except OSError:
                pass
        else:
            c.send(data)
        try:
            resp = c.read_response()
        except ConnectionClosed:
            return None, True
        return resp, (c.closed_within(2) if expect_close else None)


GOOD_HEAD = b"POST /echo HTTP/1.1\r\nHost: x\r\n"

MALFORMED = {
    "cl_and_te": GOOD_HEAD + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te_and_cl": GOOD_HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "conflicting_cl": GOOD_HEAD + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "cl_list": GOOD_HEAD + b"Content-Length: 5, 6\r\n\r\nhello!",
    "cl_not_a_number": GOOD_HEAD + b"Content-Length: abc\r\n\r\n",
    "cl_negative": GOOD_HEAD + b"Content-Length: -1\r\n\r\n",
    "cl_plus_sign": GOOD_HEAD + b"Content-Length: +5\r\n\r\nhello",
    "bad_chunk_size": GOOD_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "chunk_size_overflow": GOOD_HEAD + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nhello\r\n",
    "chunk_longer_than_size": GOOD_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloEXTRA\r\n0\r\n\r\n",
    "te_chunked_not_last": GOOD_HEAD + b"Transfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te_unknown_coding": GOOD_HEAD + b"Transfer-Encoding: gzip\r\n\r\nhello",
    "te_chunked_twice": GOOD_HEAD + b"Transfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "header_name_with_space": b"GET /echo HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
    "space_before_colon": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A : v\r\n\r\n",
    "control_char_in_name": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-\x01A: v\r\n\r\n",
    "nul_in_value": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "bare_cr_in_value": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
    "missing_host_http11": b"GET /echo HTTP/1.1\r\nX-A: v\r\n\r\n",
    "two_hosts": b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "garbage_request_line": b"HELLO THERE\r\n\r\n",
    "bad_method_chars": b"G@T /echo HTTP/1.1\r\nHost: x\r\n\r\n",
    "space_in_target": b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    "not_http": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64) + b"\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_request_gets_400_and_close(proxy, name):
    assert_alive(proxy.port)  # idle pooled server connections, as in real life
    resp, closed = send_raw(proxy.port, MALFORMED[name])
    assert resp is not None, "closed without an answer"
    assert resp.status == 400, (resp.status, resp.body[:200])
    assert closed
    assert_alive(proxy.port)


def test_request_rejected_after_it_was_forwarded_leaves_no_dangling_exchange(proxy):
    # llhttp flags "Transfer-Encoding: gzip" only once the head is complete,
    # so lbcore has already sent the head to a pooled server connection when
    # it answers 400. The server then answers too: that answer must be
    # dropped with its connection, not delivered to a finished exchange.
    assert_alive(proxy.port)
    resp, closed = send_raw(proxy.port, b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                                        b"Transfer-Encoding: gzip\r\n\r\nhello")
    assert resp is not None and resp.status == 400
    time.sleep(0.3)  # the server's answer arrives
    check_no_crash()
    assert_alive(proxy.port)


@pytest.mark.parametrize("name", ["bad_chunk_size", "chunk_longer_than_size", "chunk_size_overflow"])
def test_bad_chunk_after_the_request_went_to_a_server(proxy, name):
    resp, closed = send_raw(proxy.port, MALFORMED[name], split_after_head=True)
    assert resp is not None, "closed without an answer"
    assert resp.status == 400, (resp.status, resp.body[:200])
    assert closed
    assert_alive(proxy.port)
    assert proxy.lb.proc.poll() is None


def test_unsupported_http_version(proxy):
    resp, closed = send_raw(proxy.port, b"GET /echo HTTP/9.9\r\nHost: x\r\n\r\n")
    assert resp is not None and resp.status in (400, 505)
    assert closed
    assert_alive(proxy.port)


def test_obs_fold_is_rejected_or_unfolded(proxy):
    resp, _ = send_raw(proxy.port, b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
                       expect_close=False)
    assert resp is not None
    if resp.status == 200:
        # Unfolded: the server must never see a line break inside a value.
        headers = json.loads(resp.body)["headers"]
        value = [v for k, v in headers if k.lower() == "x-folded"]
        assert value and "\n" not in value[0] and "\r" not in value[0]
        assert not any(k.strip() == "b" or k.startswith(" ") for k, _ in headers)
    else:
        assert resp.status == 400
    assert_alive(proxy.port)


def test_oversized_header_gets_431(proxy):
    resp, closed = send_raw(proxy.port, b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    assert resp is not None and resp.status == 431, resp and resp.status
    assert closed
    assert_alive(proxy.port)


def test_many_headers_past_the_limit_get_431(proxy):
    head = b"GET /echo HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 60) for i in range(400))
    resp, closed = send_raw(proxy.port, head + b"\r\n")
    assert resp is not None and resp.status == 431, resp and resp.status
    assert closed
    assert_alive(proxy.port)


def test_oversized_request_line_is_refused(proxy):
    resp, closed = send_raw(proxy.port, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resp is not None and resp.status in (414, 431, 400), resp and resp.status
    assert closed
    assert_alive(proxy.port)


def test_large_but_acceptable_head_passes(proxy):
    resp, _ = send_raw(proxy.port, b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n",
                       expect_close=False)
    assert resp is not None and resp.status == 200
    headers = json.loads(resp.body)["headers"]
    assert ["X-Big", "a" * 8000] in headers


def test_endless_head_without_line_breaks_gets_431(proxy):
    with RawClient(proxy.port) as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        try:
            for _ in range(100):
                c.send(b"b" * 1024)
        except OSError:
            pass  # lbcore already answered and closed
        resp = c.read_response()
    assert resp.status == 431


def test_malformed_second_pipelined_request_after_a_good_one(proxy):
    with RawClient(proxy.port) as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n" + MALFORMED["cl_and_te"])
        first = c.read_response()
        assert first.status == 200
        second = c.read_response()
        assert second.status == 400
        assert c.closed_within(2)
    assert_alive(proxy.port)


def test_error_response_is_well_formed(proxy):
    resp, _ = send_raw(proxy.port, MALFORMED["two_hosts"])
    assert resp.status == 400
    assert resp.header("Content-Length") == str(len(resp.body))
    assert b"400" in resp.body
    assert (resp.header("Connection") or "").lower() == "close"


# -- clients that go away ------------------------------------------------------


def test_client_leaving_mid_upload(proxy):
    with RawClient(proxy.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        time.sleep(0.2)
    time.sleep(0.2)
    assert_alive(proxy.port)


def test_client_leaving_while_the_server_thinks(proxy):
    with RawClient(proxy.port) as c:
        c.request("GET", "/sleep/0.5")
        time.sleep(0.1)
    time.sleep(0.7)  # the server answers a connection lbcore should have dropped
    assert_alive(proxy.port)


def test_client_leaving_mid_download(proxy):
    with RawClient(proxy.port) as c:
        c.request("GET", f"/size/{50 << 20}")
        c.read_head()
        c.sock.recv(65536)
    time.sleep(0.3)
    assert_alive(proxy.port)


def test_client_resetting_with_pipelined_requests_queued(proxy):
    c = RawClient(proxy.port)
    c.send(b"GET /sleep/0.3 HTTP/1.1\r\nHost: x\r\n\r\n" * 5)
    time.sleep(0.1)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    time.sleep(0.5)
    assert_alive(proxy.port)


# -- server failures -----------------------------------------------------------


def refused_address() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


def test_refused_server_is_retried_on_another(backends3, start_lbcore):
    port = free_port()
    lb = start_lbcore(http_config([refused_address(), backends3[0].address, refused_address()], port))
    client = KeepAliveClient(port)
    for i in range(9):
        body = b"x" * (100 * i)
        resp, data = client.request("POST" if i % 2 else "GET", "/echo", body=body or None)
        assert resp.status == 200, (i, resp.status, data[:200])
        info = json.loads(data)
        assert info["server"] == "s1"
        assert info["body_sha256"] == hashlib.sha256(body).hexdigest()
    # Bodies too large to keep for a replay: the connect failed before any
    # byte left, so they still go through whole.
    for size in (300_000, 2_000_000, 2_000_001):
        body = bytes([size % 251]) * size
        resp, data = client.request("POST", "/echo", body=body)
        assert resp.status == 200, (size, resp.status, data[:200])
        assert json.loads(data)["body_sha256"] == hashlib.sha256(body).hexdigest()
    client.close()
    assert lb.proc.poll() is None


def test_expect_100_continue_survives_a_refused_server(backends3, start_lbcore):
    port = free_port()
    start_lbcore(http_config([refused_address(), backends3[0].address], port))
    body = b"z" * 5000
    for _ in range(2):  # the refused server comes first once
        with RawClient(port) as c:
            c.send(b"PUT /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(body))
            version, status, _, _, _ = c.read_head()
            assert status == 100
            c.send(body)
            resp = c.read_response()
        assert resp.status == 200
        assert resp.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_without_retries_or_redispatch_a_refused_server_shows(backends3, start_lbcore):
    port = free_port()
    lb = start_lbcore(http_config([refused_address(), backends3[0].address], port,
                                  backend={"retries": 0, "redispatch": False}))
    statuses = []
    for _ in range(4):
        c = KeepAliveClient(port)
        resp, _ = c.request()
        statuses.append(resp.status)
        c.close()
    assert sorted(statuses) == [200, 200, 503, 503], statuses
    assert lb.proc.poll() is None


def test_killed_server_with_pooled_connections_is_invisible(start_backend, start_lbcore):
    s1, s2 = start_backend("s1"), start_backend("s2")
    port = free_port()
    start_lbcore(http_config([s1.address, s2.address], port))
    clients = [KeepAliveClient(port) for _ in range(3)]
    for c in clients:
        for _ in range(4):
            c.get_server()  # both servers now have idle pooled connections
    s1.kill()
    for c in clients:
        for i in range(4):
            body = b"payload-%d" % i
            resp, data = c.request("POST" if i % 2 else "GET", "/echo", body=body)
            assert resp.status == 200, (resp.status, data[:200])
            info = json.loads(data)
            assert info["server"] == "s2"
            assert info["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_all_servers_down_gives_503_with_a_short_body(start_lbcore):
    port = free_port()
    lb = start_lbcore(http_config([refused_address(), refused_address()], port))
    started = time.monotonic()
    with RawClient(port) as c:
        c.request("GET", "/echo")
        resp = c.read_response()
    assert resp.status == 503
    assert 0 < len(resp.body) < 1024
    assert resp.header("Content-Length") == str(len(resp.body))
    assert time.monotonic() - started < 5
    assert lb.proc.poll() is None


def test_all_servers_killed_at_runtime_gives_503(start_backend, start_lbcore):
    s1, s2 = start_backend("s1"), start_backend("s2")
    port = free_port()
    start_lbcore(http_config([s1.address, s2.address], port))
    client = KeepAliveClient(port)
    assert {client.get_server() for _ in range(4)} == {"s1", "s2"}
    s1.kill()
    s2.kill()
    resp, body = client.request()
    assert resp.status == 503
    assert 0 < len(body) < 1024


@pytest.mark.parametrize("path", ["/garbage", "/badlength", "/close"])
def test_invalid_server_response_gives_502(proxy, path):
    with RawClient(proxy.port) as c:
        c.request("GET", path)
        resp = c.read_response()
    assert resp.status == 502, (resp.status, resp.body[:200])
    assert b"502" in resp.body
    assert_alive(proxy.port)


def test_truncated_server_response_is_not_passed_off_as_complete(proxy):
    n = 100000
    with RawClient(proxy.port) as c:
        c.request("GET", f"/truncate/{n}")
        version, status, _, headers, _ = c.read_head()
        assert status == 200
        assert dict((k.lower(), v) for k, v in headers)["content-length"] == str(n)
        got = len(c.buf)
        c.sock.settimeout(5)
        while True:
            try:
                data = c.sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            got += len(data)
    # The client must see the connection end before the announced length.
    assert got == n // 2
    assert_alive(proxy.port)


class ResettingServer:
    """A hostile server: accepts, optionally reads the request, then resets
    the connection (SO_LINGER 0) without a byte of answer."""

    def __init__(self, read_first: bool) -> None:
        self.read_first = read_first
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.read_first:
                try:
                    conn.recv(65536)
                except OSError:
                    pass
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("read_first", [False, True], ids=["reset-on-accept", "reset-after-request"])
def test_resetting_server_is_retried_on_another(backends3, start_lbcore, read_first):
    bad = ResettingServer(read_first)
    port = free_port()
    start_lbcore(http_config([bad.address, backends3[0].address], port))
    try:
        for _ in range(10):
            c = KeepAliveClient(port, timeout=5)
            resp, _ = c.request("GET", "/echo")
            c.close()
            assert resp.status == 200
            assert resp.getheader("X-Server") == "s1"
    finally:
        bad.close()


def test_resetting_server_under_concurrency_never_leaves_a_client_hanging(backends3, start_lbcore):
    # With sixteen clients at once, the reset often lands between the end of
    # lbcore's connect and its first write on that connection.
    bad = ResettingServer(read_first=False)
    port = free_port()
    start_lbcore(http_config([bad.address, backends3[0].address], port))
    failures, done = [], [0]
    stop = threading.Event()

    def run():
        while not stop.is_set():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
                conn.request("GET", "/echo")
                resp = conn.getresponse()
                resp.read()
                conn.close()
                if resp.status != 200:
                    failures.append(resp.status)
                done[0] += 1
            except (OSError, http.client.HTTPException) as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=run) for _ in range(16)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(10)
    bad.close()
    assert done[0] > 50
    assert failures == [], f"{len(failures)} of {done[0] + len(failures)} requests failed: {failures[:5]}"
    check_no_crash()


def test_duplicate_content_length_from_server_gives_502(proxy):
    with RawClient(proxy.port) as c:
        c.request("GET", "/dupcl")
        resp = c.read_response()
    assert resp.status == 502, (resp.status, resp.body)
    assert_alive(proxy.port)


def test_content_length_and_chunked_from_server(proxy):
    # RFC 9112 6.3: chunked wins; an intermediary forwarding it must drop the
    # Content-Length. Refusing it (502) is the other safe choice.
    with RawClient(proxy.port) as c:
        c.request("GET", "/clte")
        resp = c.read_response()
    if resp.status == 200:
        assert resp.body == b"hello"
        assert not (resp.header("Content-Length") and resp.header("Transfer-Encoding"))
    else:
        assert resp.status == 502
    assert_alive(proxy.port)


def test_oversized_response_head_gives_502(proxy):
    with RawClient(proxy.port) as c:
        c.request("GET", "/bighead/100000")
        resp = c.read_response()
    assert resp.status == 502
    assert_alive(proxy.port)


def test_large_but_acceptable_response_head_passes(proxy):
    with RawClient(proxy.port) as c:
        c.request("GET", "/bighead/12000")
        resp = c.read_response()
    assert resp.status == 200
    assert resp.header("X-Big") == "b" * 12000


def test_http10_server_connection_is_not_reused(proxy):
    for _ in range(4):
        with RawClient(proxy.port) as c:
            c.request("GET", "/http10")
            resp = c.read_response()
            assert resp.status == 200 and resp.body == b"hello"
    assert_alive(proxy.port)


def test_post_after_server_closed_its_idle_connection(backends3, start_lbcore):
    # Servers close idle keep-alive connections when they like (Apache's
    # KeepAliveTimeout, eventlet). /lateclose answers as keep-alive and then
    # closes: the next request must not be sent on that dead connection and
    # turned into a 502. Sequentially HAProxy 2.6 gets all of these through;
    # pipelined, lbcore reuses the dying connection every time.
    port = free_port()
    start_lbcore(http_config([backends3[0].address], port))
    statuses = []
    for i in range(30):
        body = b"payload-%d" % i
        with RawClient(port) as c:
            post = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            if i % 2:
                c.send(b"GET /lateclose HTTP/1.1\r\nHost: x\r\n\r\n" + post)
                assert c.read_response().status == 200
            else:
                c.request("GET", "/lateclose")
                assert c.read_response().status == 200
                c.send(post)
            resp = c.read_response()
            statuses.append(resp.status)
            if resp.status == 200:
                assert resp.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert statuses == [200] * 30, statuses


def test_bytes_beyond_content_length_never_reach_a_client(proxy):
    # /overlong sends a forged second response after the announced body:
    # a desync if it were relayed, to this client or to the next one.
    with RawClient(proxy.port) as c:
        c.request("GET", "/overlong")
        resp = c.read_response()
        assert (resp.status, resp.body) == (200, b"hello")
        for _ in range(3):
            c.request("GET", "/echo")
            nxt = c.read_response()
            assert nxt.status == 200 and nxt.body != b"forged"
    assert_alive(proxy.port)


def test_invalid_chunk_from_server_is_not_an_empty_reply(proxy):
    # The head, a chunk and a broken chunk size arrive together. HAProxy
    # answers 502 (nothing was sent yet); relaying the head and then cutting
    # the connection would do too. Closing with no byte at all leaves the
    # client with "empty reply from server" and nothing to log against.
    with RawClient(proxy.port) as c:
        c.request("GET", "/badchunk")
        try:
            version, status, _, headers, _ = c.read_head()
        except ConnectionClosed:
            pytest.fail("lbcore closed the connection without a response")
        assert status in (200, 502)
        if status == 200:
            assert c.closed_within(3)  # the body cannot complete: cut, not left hanging
    assert_alive(proxy.port)


# -- hostile servers, answering canned bytes per path -----------------------------

CANNED = {
    "/nohead-end": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
    "/nocolon": b"HTTP/1.1 200 OK\r\nBadHeader\r\nContent-Length: 2\r\n\r\nok",
    "/space-before-colon": b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
    "/cl-negative": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok",
    "/cl-plus": b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
    "/http09": b"just a body\n",
    "/204-with-body": b"HTTP/1.1 204 No Content\r\n\r\nGARBAGE",
    "/http10-close": b"HTTP/1.0 200 OK\r\n\r\nold-style body",
    "/te-gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nbody-until-close",
}


class CannedServer:
    """Reads one request head and answers the bytes CANNED has for its path,
    then closes (lingering, so the answer is not destroyed by a reset)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn) -> None:
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            path = buf.split(b" ", 2)[1].decode()
            conn.sendall(CANNED.get(path, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
            conn.shutdown(socket.SHUT_WR)
            time.sleep(0.2)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def canned():
    server = CannedServer()
    port = free_port()
    lb = start_watched(http_config([server.address], port))
    yield SimpleNamespace(port=port, lb=lb)
    lb.stop()
    server.close()


@pytest.mark.parametrize("path", ["/nohead-end", "/nocolon", "/space-before-colon", "/cl-negative",
                                  "/cl-plus", "/http09"])
def test_invalid_server_head_gives_502(canned, path):
    with RawClient(canned.port, timeout=5) as c:
        c.request("GET", path)
        resp = c.read_response()
    assert resp.status == 502, (resp.status, resp.body[:100])
    check_no_crash()


def test_body_after_204_is_dropped(canned):
    with RawClient(canned.port, timeout=5) as c:
        c.request("GET", "/204-with-body")
        resp = c.read_response()
        assert resp.status == 204
        c.request("GET", "/http10-close")
        nxt = c.read_response()
        assert (nxt.status, nxt.body) == (200, b"old-style body")


def test_http10_close_delimited_response(canned):
    with RawClient(canned.port, timeout=5) as c:
        c.request("GET", "/http10-close")
        resp = c.read_response()
    assert (resp.status, resp.body) == (200, b"old-style body")


def test_unknown_transfer_coding_from_server_is_not_hidden(canned):
    # Without chunked last the body runs to the close (RFC 9112 6.3), but it
    # is still gzip-coded: relayed without saying so, the client would take
    # the coded bytes for the content. HAProxy answers 502.
    with RawClient(canned.port, timeout=5) as c:
        c.request("GET", "/te-gzip")
        resp = c.read_response()
    if resp.status == 200:
        assert "gzip" in (resp.header("Transfer-Encoding") or "").lower(), resp.headers
    else:
        assert resp.status == 502


def test_bare_lf_request_is_answered_at_once(proxy):
    # `printf 'GET / HTTP/1.0\n\n' | nc` style: RFC 9112 2.2 lets a
    # recipient accept bare LF (HAProxy 2.6 answers 200) or refuse it; lbcore
    # must not sit on it until timeouts.http_request (10s here) for a 408.
    with RawClient(proxy.port, timeout=3) as c:
        c.send(b"GET /echo HTTP/1.1\nHost: x\n\n")
        try:
            resp = c.read_response()
        except socket.timeout:
            pytest.fail("no answer within 3s to a complete LF-only request")
    assert resp.status in (200, 400)


def test_extension_method_is_treated_alike_whatever_the_framing(proxy):
    # Any token is a method (RFC 9110 9.1); HAProxy forwards them all. The
    # answer must not depend on whether the request also has a chunked body.
    statuses = set()
    for framing in (b"Content-Length: 5\r\n\r\nhello",
                    b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"):
        with RawClient(proxy.port) as c:
            c.send(b"BAN /echo HTTP/1.1\r\nHost: x\r\n" + framing)
            statuses.add(c.read_response().status)
    assert len(statuses) == 1, statuses
