"""Random and mutated byte streams sent to a live lbcore in front of a
lenient backend (tests/lenient_backend.py): lbcore never crashes (no
traceback in its log, still serving), and never gets a request past it
that the backend reads as more requests than lbcore answered.

Each stream goes on its own connection, then the client half-closes and
reads until lbcore closes. Every request the lenient backend reads is
answered `200 ok`; lbcore relays each answer it expects and closes a server
connection that sends more. So the backend having read more requests than
clients got 200 answers means a request lbcore did not see as one reached
it: smuggling.
"""

from __future__ import annotations

import socket
import time

import pytest
from hypothesis import given, settings

from tests.integration.rawhttp import RawClient, check_no_crash, start_watched
from tests.lenient_backend import LenientBackend
from tests.support import free_port, http_config

from .strategies import request_streams


class Live:
    def __init__(self):
        self.backend = LenientBackend()
        self.port = free_port()
        config = http_config([self.backend.address], self.port)
        config["defaults"] = {"timeouts": {"http_request": "1s", "client": "1s", "server": "2s"}}
        self.lb = start_watched(config)
        self.answered = 0

    def send(self, data: bytes) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        received = b""
        try:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # refused mid-send
            deadline = time.monotonic() + 10  # lbcore closes within its 1-2 s timeouts; this is slack for a loaded machine
            while time.monotonic() < deadline:
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    break
                if not chunk:
                    break
                received += chunk
        finally:
            sock.close()
        # Status lines, not parsed responses: an answer to HEAD carries a
        # Content-Length and no body, which a plain parser would misframe.
        self.answered += received.count(b"HTTP/1.1 200 OK\r\n")

    def stop(self):
        self.lb.stop()
        self.backend.close()


@pytest.fixture(scope="module")
def live():
    target = Live()
    yield target
    target.stop()


# Each input is a connection, some wait for a timeout: a quarter of the
# profile's examples (50 in CI).
@settings(max_examples=max(20, settings().max_examples // 4))
@given(request_streams())
def test_hostile_streams_never_crash_or_smuggle(live, data):
    live.send(data)
    assert live.lb.proc.poll() is None, "lbcore exited"


def test_after_the_streams_lbcore_serves_and_nothing_was_smuggled(live):
    time.sleep(0.3)  # a late smuggled request would have reached the backend
    with RawClient(live.port) as c:
        c.request("GET", "/still-alive", host="a")
        assert c.read_response().status == 200
    live.answered += 1
    seen = live.backend.lines()
    assert len(seen) <= live.answered, (len(seen), live.answered, seen[-5:])
    check_no_crash()
