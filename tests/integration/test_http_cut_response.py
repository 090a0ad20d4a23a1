"""A server that dies between the response head and the end of the body
(issue 14): a small answer to a replayable request is held until complete,
so the crash is hidden by a replay on another server; a large one streams
and the client sees the cut.

s1 is first (`balance: first`) and SIGKILLs its own process after sending
the head of /diehead/s1/N (or /diechunk/s1/N); s2 answers the same path in
full.
"""

from __future__ import annotations

import pytest

from tests.backend import pattern_bytes
from tests.integration.rawhttp import KeepAliveClient, RawClient, start_backends
from tests.support import free_port, http_config


@pytest.fixture
def pair(start_lbcore):
    backends = start_backends(["s1", "s2"])
    port = free_port()
    config = http_config([b.address for b in backends], port, balance="first",
                         backend={"retries": 3, "redispatch": True})
    lb = start_lbcore(config)
    yield lb, port, backends
    for b in backends:
        b.stop()


@pytest.mark.parametrize("kind", ["diehead", "diechunk"])
def test_small_cut_response_is_replayed_on_another_server(pair, kind):
    lb, port, (s1, s2) = pair
    client = KeepAliveClient(port)
    # A warm pooled connection to s1 first: the soak's case is a reused one.
    assert client.get_server() == "s1"
    resp, body = client.request("GET", f"/{kind}/s1/5000")
    assert resp.status == 200
    assert resp.getheader("X-Server") == "s2"
    assert body == pattern_bytes(5000)
    s1.proc.wait(5)  # it really died
    # The client's connection is intact and keeps working.
    assert client.get_server() == "s2"
    client.close()


def test_large_cut_response_still_streams(pair):
    lb, port, (s1, s2) = pair
    n = 1 << 20  # far above what is held: streamed, so the cut shows
    with RawClient(port) as c:
        c.request("GET", f"/diehead/s1/{n}")
        version, status, _, headers, _ = c.read_head()
        assert status == 200
        assert dict((k.lower(), v) for k, v in headers)["x-server"] == "s1"
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
    assert got < n


def test_cut_response_to_a_post_is_not_replayed(pair):
    lb, port, (s1, s2) = pair
    with RawClient(port) as c:
        c.request("POST", "/diehead/s1/5000", body=b"x" * 10)
        version, status, _, headers, _ = c.read_head()
        assert status == 200
        assert dict((k.lower(), v) for k, v in headers)["x-server"] == "s1"
