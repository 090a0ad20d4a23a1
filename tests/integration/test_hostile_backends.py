"""Hostile servers, from raw sockets (tests/hostile_backend.py): nothing
of one response reaches the answer to a later request, of this client or
another."""

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


def conns_of(backend, path: str) -> set:
    return {s.conn for s in backend.seen if s.line.split(b" ")[1] == path.encode()}


@pytest.fixture(scope="module")
def hostile():
    backend = HostileBackend({"/extra-after": OK + STOLEN, "/extra-after-chunked": CHUNKED_OK + STOLEN})
    port = free_port()
    lb = start_watched(http_config([backend.address], port))
    yield port, backend
    lb.stop()
    backend.close()


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
