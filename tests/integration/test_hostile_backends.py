"""Hostile and broken servers, from raw sockets (tests/hostile_backend.py).

For every bad answer the client gets a 502 (nothing of it was relayed) or
a clean cut (what was relayed, then the connection closes); the server
connection is never reused after a framing error; and nothing of one
response reaches the answer to a later request, of this client or another.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.corpus.harness import send_case
from tests.hostile_backend import HostileBackend
from tests.support import free_port, http_config

from .rawhttp import RawClient, start_watched

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
STOLEN = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nSTOLEN!"
CHUNKED_OK = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"


def endless(prefix: bytes, unit: bytes, total: int = 4 << 20):
    """An answer that never ends: `prefix`, then `unit` until `total` bytes
    or until the proxy gives up and closes."""
    def answer(conn, seen):
        conn.sendall(prefix)
        sent = 0
        try:
            while sent < total:
                conn.sendall(unit * 64)
                sent += len(unit) * 64
        except OSError:
            pass
        return "close"
    return answer


def early(conn, seen):
    """Answers before reading the request body."""
    conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nnope")


early.early = True


def extra_while_idle(conn, seen):
    """A whole answer, then more bytes once the connection is idle."""
    conn.sendall(OK)
    time.sleep(0.2)
    conn.sendall(STOLEN)


# path -> (answer, what the client must see: "502", "502|cut", or a status)
ANSWERS = {
    "/cl-and-te": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n0\r\n\r\n" + STOLEN, "502"),
    "/te-and-cl": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
                   b"5\r\nhello\r\n0\r\n\r\n" + STOLEN, "502"),
    "/cl-twice-differ": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                         "502"),
    "/cl-twice-same": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
                       "502"),
    "/cl-list": (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", "502"),
    "/cl-negative": (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhello", "502"),
    "/cl-plus": (b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", "502"),
    "/cl-overflow": (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\nhi", "502"),
    "/te-gzip-only": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello", "502"),
    "/te-chunked-not-last": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nhi", "502"),
    # Read as chunked by a careless check, not by llhttp: the forged answer
    # behind reached the next client.
    "/te-chunked-twice": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"
                          b"2\r\nok\r\n0\r\n\r\n" + STOLEN, "502"),
    "/te-two-fields": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" + STOLEN, "502"),
    "/te-xchunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n"
                     b"2\r\nok\r\n0\r\n\r\n" + STOLEN, "502"),
    "/100-flood": (b"HTTP/1.1 100 Continue\r\n\r\n" * 2000 + OK, "502"),
    "/103-flood": (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" * 2000 + OK, "502"),
    "/100-endless": (endless(b"", b"HTTP/1.1 100 Continue\r\n\r\n"), "502"),
    "/endless-head": (endless(b"HTTP/1.1 200 OK\r\n", b"X-Filler: aaaaaaaaaaaaaaaaaaaa\r\n"), "502"),
    "/endless-status-line": (endless(b"HTTP/1.1 200 ", b"reason"), "502"),
    "/endless-field-value": (endless(b"HTTP/1.1 200 OK\r\nX: ", b"aaaaaaaaaaaaaaaa"), "502"),
    "/endless-head-after-100": (endless(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
                                        b"X-Filler: aaaaaaaaaaaaaaaaaaaa\r\n"), "502"),
    "/status-999": (b"HTTP/1.1 999 Weird\r\nContent-Length: 2\r\n\r\nok", "502"),
    "/status-letters": (b"HTTP/1.1 abc Weird\r\nContent-Length: 2\r\n\r\nok", "502"),
    "/status-099": (b"HTTP/1.1 099 Low\r\nContent-Length: 2\r\n\r\nok", "502"),
    "/status-000": (b"HTTP/1.1 000 Zero\r\nContent-Length: 2\r\n\r\nok", "502"),
    "/reason-nul": (b"HTTP/1.1 200 O\x00K\r\nContent-Length: 2\r\n\r\nok", "502"),
    "/reason-esc": (b"HTTP/1.1 200 O\x1bK\r\nContent-Length: 2\r\n\r\nok", "502"),
    "/version-2": (b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok", "502"),
    "/bare-lf": (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", "502"),
    "/value-nul": (b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 2\r\n\r\nok", "502"),
    "/value-bare-cr": (b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 2\r\n\r\nok", "502"),
    "/space-before-colon": (b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", "502"),
    "/obs-fold": (b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 2\r\n\r\nok", "502"),
    "/space-before-first-field": (b"HTTP/1.1 200 OK\r\n X: a\r\nContent-Length: 2\r\n\r\nok",
                                  "502"),
    "/101-unasked": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: upgrade\r\n\r\n" + STOLEN, "502"),
    "/bad-chunk-size": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
                        "502|cut"),
    "/chunk-ext-nul": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a\x00\r\nhello\r\n"
                       b"0\r\n\r\n", "502|cut"),
    "/cl-in-trailer": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                       b"0\r\nContent-Length: 7\r\n\r\n", "502|cut"),
    "/short-body": (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", "502|cut"),
    # Valid framing, with something after the end: relayed, connection not reused.
    "/extra-after": (OK + STOLEN, 200),
    "/extra-after-chunked": (CHUNKED_OK + STOLEN, 200),
    "/extra-after-http10": (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
                            + STOLEN, 200),
    "/204-with-body": (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello" + STOLEN, 204),
    "/extra-while-idle": (extra_while_idle, 200),
}
CLOSE_AFTER = frozenset(("/short-body", "/bad-chunk-size"))


@pytest.fixture(scope="module")
def hostile():
    answers = {path: answer for path, (answer, _) in ANSWERS.items()}
    answers["/early"] = early
    answers["/head-with-body"] = OK + b"garbage after a HEAD answer"
    backend = HostileBackend(answers, CLOSE_AFTER)
    port = free_port()
    config = http_config([backend.address], port)
    config["defaults"] = {"timeouts": {"server": "3s"}}
    lb = start_watched(config)
    yield port, backend
    lb.stop()
    backend.close()


def conns_of(backend, path: str) -> set:
    return {s.conn for s in backend.seen if s.line.split(b" ")[1] == path.encode()}


def check_next_request_is_clean(port, backend, bad_conns: set) -> None:
    """A fresh request gets its own answer, on a connection the bad answer
    did not come from."""
    out = send_case(port, b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
    assert out.statuses == [200] and out.raw.endswith(b"/next"), out.raw
    assert b"STOLEN" not in out.raw
    assert not conns_of(backend, "/next") & bad_conns, "a connection was reused after a bad answer"
    backend.seen[:] = [s for s in backend.seen if s.line.split(b" ")[1] != b"/next"]


@pytest.mark.parametrize("path", list(ANSWERS))
def test_bad_answers(hostile, path):
    port, backend = hostile
    expect = ANSWERS[path][1]
    out = send_case(port, b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % path.encode(), limit=8)
    finals = [s for s in out.statuses if s >= 200]
    assert b"STOLEN" not in out.raw
    if expect == "502":
        assert finals == [502] and out.closed, out.short()
    elif expect == "502|cut":
        # A 502, or what was relayed and then a close (never a complete-looking answer).
        assert out.closed and (finals == [502] or (finals == [200] and b"0\r\n\r\n" not in out.raw)), \
            (out.short(), out.raw[-80:])
    else:
        assert finals == [expect], out.short()
    if path == "/204-with-body":
        assert b"content-length" not in out.raw.lower()
    if path == "/extra-while-idle":
        time.sleep(0.5)  # the extra bytes reach the idle pooled connection
    check_next_request_is_clean(port, backend, conns_of(backend, path))


def test_an_answer_before_the_request_body_ended(hostile):
    """The server answers (413) while the client is still sending: the
    client gets it and the connection closes (the rest of its body has no
    taker); the server connection is not reused."""
    port, backend = hostile
    with RawClient(port) as c:
        c.send(b"POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        resp = c.read_response()
        assert resp.status == 413 and resp.body == b"nope"
        assert c.closed_within(3)
    check_next_request_is_clean(port, backend, conns_of(backend, "/early"))


def test_a_body_after_an_answer_to_head_is_not_reused(hostile):
    port, backend = hostile
    out = send_case(port, b"HEAD /head-with-body HTTP/1.1\r\nHost: a\r\n\r\n")
    assert out.statuses == [200] and out.raw.endswith(b"\r\n\r\n"), out.raw
    check_next_request_is_clean(port, backend, conns_of(backend, "/head-with-body"))


def test_bytes_after_a_response_never_answer_a_pipelined_request(hostile):
    """Two requests pipelined on one connection; the first answer carries
    a forged second answer behind it. The second request must get its own
    answer from the server, never the forged one."""
    port, backend = hostile
    for path in ("/extra-after-chunked", "/extra-after"):
        with RawClient(port) as c:
            c.send(b"GET %s HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\n\r\n"
                   % path.encode())
            first = c.read_response()
            second = c.read_response()
        assert first.body == b"ok"
        assert second.body == b"/second", second.body


def test_bytes_after_a_response_never_answer_a_queued_client():
    """The server takes one connection at a time (maxconn 1): a second
    client waits in the queue and gets the connection the first answer
    came on, unless that answer had bytes after its end."""
    backend = HostileBackend({"/first": lambda conn, seen: (time.sleep(0.3), conn.sendall(CHUNKED_OK + STOLEN))[1]})
    port = free_port()
    config = http_config([backend.address], port, backend={"servers": [
        {"name": "s1", "address": backend.address, "maxconn": 1}]})
    lb = start_watched(config)
    try:
        results = {}

        def fetch(path):
            results[path] = send_case(port, b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % path.encode())

        first = threading.Thread(target=fetch, args=("/first",))
        first.start()
        time.sleep(0.1)
        fetch("/queued")
        first.join()
        assert results["/first"].statuses == [200]
        assert results["/queued"].statuses == [200], results["/queued"].raw
        assert results["/queued"].raw.endswith(b"/queued") and b"STOLEN" not in results["/queued"].raw
        assert not conns_of(backend, "/queued") & conns_of(backend, "/first")
    finally:
        lb.stop()
        backend.close()
