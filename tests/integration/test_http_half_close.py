"""A client that sends its requests and half-closes (shutdown(SHUT_WR), as
`nc`, some health checkers and HTTP/1.0 tools do) gets every answer before
the connection closes, however its FIN and the server's answers interleave.
"""

from __future__ import annotations

import socket

import pytest

from tests.corpus.harness import parse_statuses
from tests.lenient_backend import LenientBackend
from tests.support import free_port, http_config

from .rawhttp import start_watched

PIPELINE = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n"


@pytest.fixture(scope="module")
def port():
    backend = LenientBackend()
    port = free_port()
    lb = start_watched(http_config([backend.address], port))
    yield port
    lb.stop()
    backend.close()


def send_and_half_close(port: int, data: bytes) -> list:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return parse_statuses(received)


@pytest.mark.parametrize("data,answers", [(PIPELINE, 2), (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1)],
                         ids=["pipelined", "single"])
def test_every_answer_arrives_before_the_close(port, data, answers):
    # The race (the FIN read in the same turn as the last answer) needs
    # repetitions to show; before the fix about half of these lost one.
    got = [send_and_half_close(port, data) for _ in range(40)]
    assert all(statuses == [200] * answers for statuses in got), got
