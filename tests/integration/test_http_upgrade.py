"""Upgrade (WebSocket): 101 relayed, then a byte tunnel both ways under
timeouts.tunnel, half-close included; a refused upgrade stays HTTP."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from types import SimpleNamespace

import pytest

from tests.support import free_port, http_config

from .rawhttp import (  # noqa: F401 (fixtures)
    RawClient, backends3, no_crash_in_lbcore, start_lbcore, start_watched,
)

UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


@pytest.fixture(scope="module")
def proxy(backends3):
    port = free_port()
    config = http_config([backends3[0].address, backends3[1].address], port, defaults={"timeouts": {
        "client": "300ms", "server": "300ms", "http_keep_alive": "300ms", "tunnel": "1500ms"}})
    lb = start_watched(config)
    yield SimpleNamespace(port=port, lb=lb)
    lb.stop()


def open_tunnel(port: int, extra: bytes = b"") -> RawClient:
    c = RawClient(port, timeout=5)
    c.send(UPGRADE + extra)
    resp = c.read_response()
    assert resp.status == 101, (resp.status, resp.body[:100])
    assert (resp.header("Upgrade") or "").lower() == "websocket"
    assert "upgrade" in (resp.header("Connection") or "").lower()
    return c


def recv_exact(c: RawClient, n: int) -> bytes:
    data, c.buf = c.buf[:n], c.buf[n:]
    while len(data) < n:
        piece = c.sock.recv(min(1 << 20, n - len(data)))
        assert piece, f"tunnel closed after {len(data)} of {n} bytes"
        data += piece
    return data


def test_upgrade_then_echo_both_ways(proxy):
    c = open_tunnel(proxy.port)
    with c:
        for i in range(5):
            msg = b"frame-%d-" % i + os.urandom(100)
            c.send(msg)
            assert recv_exact(c, len(msg)) == msg


def test_bytes_sent_with_the_upgrade_request_reach_the_server(proxy):
    c = open_tunnel(proxy.port, extra=b"early-bytes")
    with c:
        assert recv_exact(c, 11) == b"early-bytes"


def test_large_transfer_through_the_tunnel(proxy):
    size = 8 << 20
    data = os.urandom(size)
    c = open_tunnel(proxy.port)
    with c:
        received = []

        def reader():
            received.append(recv_exact(c, size))

        t = threading.Thread(target=reader)
        t.start()
        for i in range(0, size, 1 << 20):
            c.send(data[i:i + (1 << 20)])
        t.join(30)
    assert received and hashlib.sha256(received[0]).digest() == hashlib.sha256(data).digest()


def test_tunnel_outlives_client_and_server_timeouts(proxy):
    # client/server are 300ms; an idle websocket is governed by tunnel (1.5s).
    c = open_tunnel(proxy.port)
    with c:
        time.sleep(0.8)
        c.send(b"still-there")
        assert recv_exact(c, 11) == b"still-there"


def test_idle_tunnel_is_closed_after_tunnel_timeout(proxy):
    c = open_tunnel(proxy.port)
    with c:
        started = time.monotonic()
        assert c.closed_within(5), "idle tunnel kept beyond timeouts.tunnel"
        elapsed = time.monotonic() - started
    assert 1.2 <= elapsed < 4.5, elapsed


def test_client_half_close_is_passed_to_the_server(proxy):
    c = open_tunnel(proxy.port)
    with c:
        c.send(b"last words")
        c.sock.shutdown(socket.SHUT_WR)
        # The server echoes, sees our FIN, closes: we get both.
        assert recv_exact(c, 10) == b"last words"
        assert c.closed_within(3)


def test_refused_upgrade_is_an_ordinary_response(proxy):
    with RawClient(proxy.port) as c:
        c.send(UPGRADE.replace(b"/ws", b"/echo"))
        resp = c.read_response()
    assert resp.status == 200
    headers = {k.lower(): v for k, v in resp.json()["headers"]}
    # The server was asked to upgrade: Upgrade and Connection went through.
    assert headers.get("upgrade") == "websocket"
    assert "upgrade" in headers.get("connection", "").lower()
    assert headers.get("x-forwarded-for") == "127.0.0.1"  # an upgrade is still a proxied request


def test_many_tunnels_at_once(proxy):
    tunnels = [open_tunnel(proxy.port) for _ in range(20)]
    try:
        for i, c in enumerate(tunnels):
            c.send(b"tunnel-%02d" % i)
        for i, c in enumerate(tunnels):
            assert recv_exact(c, 9) == b"tunnel-%02d" % i
    finally:
        for c in tunnels:
            c.close()


def test_unrequested_101_from_server_gives_502(proxy):
    # A server switching protocols on a client that never asked is broken
    # (RFC 9110 15.2.2); HAProxy answers 502 rather than open a tunnel.
    with RawClient(proxy.port, timeout=3) as c:
        c.send(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = c.read_response()
    assert resp.status == 502, resp.status


class GreetingTunnelServer:
    """Answers 101 and its first tunnel bytes in the same send(), then echoes."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\n\r\nSERVER-HELLO")
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data)


def test_server_bytes_sent_with_the_101_reach_the_client(start_lbcore):
    server = GreetingTunnelServer()
    port = free_port()
    start_lbcore(http_config([server.address], port))
    c = open_tunnel(port)
    with c:
        assert recv_exact(c, 12) == b"SERVER-HELLO"
        c.send(b"ping")
        assert recv_exact(c, 4) == b"ping"
    server.sock.close()


@pytest.mark.parametrize("ending", ["client-closes", "tunnel-timeout"])
def test_ended_tunnel_frees_its_server_slot(backends3, start_lbcore, ending):
    # With maxconn 1 on the only server, a tunnel holds the slot while it
    # lives; once it is gone the next request must get the server, not
    # wait in the queue for a slot nobody holds (and get a 503).
    port = free_port()
    config = http_config([backends3[0].address], port, backend={"timeouts": {
        "queue": "1s", "tunnel": "500ms"}})
    config["backends"]["pool"]["servers"][0]["maxconn"] = 1
    start_lbcore(config)
    for _ in range(2):
        c = open_tunnel(port)
        c.send(b"x")
        assert recv_exact(c, 1) == b"x"
        if ending == "client-closes":
            c.close()
            time.sleep(0.3)
        else:
            assert c.closed_within(3)
            c.close()
        with RawClient(port) as plain:
            plain.request("GET", "/echo")
            resp = plain.read_response()
        assert resp.status == 200, (resp.status, resp.body[:80])


class LopsidedTunnelServer:
    """After the 101 it either never reads (`sink`) or sends without end
    (`flood`): a tunnel peer that tests back-pressure through lbcore."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.stop = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\n\r\n")
            block = b"f" * (1 << 20)
            while not self.stop.is_set():
                if self.behaviour == "flood":
                    try:
                        conn.sendall(block)
                    except OSError:
                        return
                else:
                    time.sleep(0.05)

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize("behaviour", ["sink", "flood"])
def test_tunnel_back_pressure_bounds_memory(start_lbcore, behaviour):
    from .rawhttp import RssWatcher

    server = LopsidedTunnelServer(behaviour)
    port = free_port()
    lb = start_lbcore(http_config([server.address], port))
    c = open_tunnel(port)
    try:
        with RssWatcher(lb.proc.pid) as rss:
            if behaviour == "sink":
                # Push for 1s into a tunnel whose server reads nothing.
                c.sock.setblocking(False)
                block = b"c" * (1 << 20)
                deadline = time.monotonic() + 1
                while time.monotonic() < deadline:
                    try:
                        c.sock.send(block)
                    except BlockingIOError:
                        time.sleep(0.02)
            else:
                time.sleep(1)  # read nothing of the flood
        assert rss.growth_mib < 150, f"lbcore grew by {rss.growth_mib:.0f} MiB"
    finally:
        c.close()
        server.close()


def test_tunnel_bytes_and_session_show_in_the_stats(backends3, start_lbcore):
    # A plain-TCP tunnel is carried by lbcore_ext.Relay (splice for bulk):
    # its bytes still count for the server, and its session ends with it.
    from tests.support import get_json

    port, stats_port = free_port(), free_port()
    config = http_config([backends3[0].address], port)
    config["stats"] = {"bind": f"127.0.0.1:{stats_port}"}
    start_lbcore(config)

    def server_row():
        return get_json(stats_port)["backends"]["pool"]["servers"][0]

    size = 3 << 20
    data = os.urandom(size)
    before = server_row()
    c = open_tunnel(port)
    with c:
        threading.Thread(target=c.sock.sendall, args=(data,), daemon=True).start()
        assert recv_exact(c, size) == data
        assert server_row()["current_sessions"] == 1
    deadline = time.monotonic() + 5
    while server_row()["current_sessions"] and time.monotonic() < deadline:
        time.sleep(0.05)
    after = server_row()
    assert after["current_sessions"] == 0
    assert after["bytes_in"] - before["bytes_in"] >= size
    assert after["bytes_out"] - before["bytes_out"] >= size
