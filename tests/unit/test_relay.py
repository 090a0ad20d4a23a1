"""lbcore_ext.Relay on real loopback TCP sockets and a uvloop loop, run
against every implementation (Cython with splice, pure Python)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time

import pytest
import uvloop

import lbcore_ext

IMPLEMENTATIONS = lbcore_ext.implementations()


@pytest.fixture(params=["cython", "python"])
def impl(request):
    if request.param not in IMPLEMENTATIONS:
        pytest.skip("lbcore_ext.relay is not built (python setup.py build_ext --inplace)")
    module = IMPLEMENTATIONS[request.param]
    yield module
    if request.param == "cython":
        module.configure(splice=True)  # tests below may turn it off


@pytest.fixture
def loop():
    loop = uvloop.new_event_loop()
    yield loop
    loop.close()


def tcp_pair():
    """Two ends of one loopback TCP connection, non-blocking."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    for s in (a, b):
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return a, b


class Counters:
    def __init__(self):
        self.bytes_in = 0
        self.bytes_out = 0


class Harness:
    """client <-> [relay] <-> server, the ends driven with loop.sock_*."""

    def __init__(self, impl, loop, timeout=0.0, preamble=b""):
        self.loop = loop
        self.client, relay_client = tcp_pair()
        relay_server, self.server = tcp_pair()
        self.relay_socks = (relay_client, relay_server)
        self.counters = [Counters(), Counters()]
        self.closed = loop.create_future()
        self.close_calls = 0
        self.relay = impl.Relay(loop, relay_client, relay_server, self._on_close,
                                counters=self.counters, timeout=timeout, preamble=preamble)

    def _on_close(self, relay):
        self.close_calls += 1
        if not self.closed.done():
            self.closed.set_result(relay.termination)

    async def recv_exactly(self, sock, n):
        chunks, got = [], 0
        while got < n:
            data = await self.loop.sock_recv(sock, min(1 << 20, n - got))
            if not data:
                break
            chunks.append(data)
            got += len(data)
        return b"".join(chunks)

    async def recv_until_eof(self, sock):
        chunks = []
        while True:
            data = await self.loop.sock_recv(sock, 1 << 20)
            if not data:
                return b"".join(chunks)
            chunks.append(data)

    def cleanup(self):
        for s in (self.client, self.server):
            s.close()
        self.relay.close()


def run(loop, coro, timeout=30):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def test_small_echo_both_ways_then_close(impl, loop):
    h = Harness(impl, loop)

    async def scenario():
        h.relay.start()
        await loop.sock_sendall(h.client, b"hello")
        assert await h.recv_exactly(h.server, 5) == b"hello"
        await loop.sock_sendall(h.server, b"world!")
        assert await h.recv_exactly(h.client, 6) == b"world!"
        h.client.shutdown(socket.SHUT_WR)
        assert await h.recv_until_eof(h.server) == b""
        h.server.shutdown(socket.SHUT_WR)
        assert await h.recv_until_eof(h.client) == b""
        return await h.closed

    try:
        assert run(loop, scenario()) == "--"
        assert h.close_calls == 1
        assert (h.relay.bytes_in, h.relay.bytes_out) == (5, 6)
        for c in h.counters:
            assert (c.bytes_in, c.bytes_out) == (5, 6)
        assert all(s.fileno() == -1 for s in h.relay_socks)
    finally:
        h.cleanup()
    assert h.close_calls == 1


def test_half_close_keeps_the_other_direction_flowing(impl, loop):
    """The client stops sending; the server keeps answering for a while."""
    h = Harness(impl, loop)

    async def scenario():
        h.relay.start()
        await loop.sock_sendall(h.client, b"request")
        h.client.shutdown(socket.SHUT_WR)
        assert await h.recv_until_eof(h.server) == b"request"  # FIN passed on
        for i in range(5):
            await asyncio.sleep(0.02)
            await loop.sock_sendall(h.server, b"part%d;" % i)
        assert not h.closed.done()
        h.server.shutdown(socket.SHUT_WR)
        reply = await h.recv_until_eof(h.client)
        return reply, await h.closed

    try:
        reply, termination = run(loop, scenario())
        assert reply == b"part0;part1;part2;part3;part4;"
        assert termination == "--"
    finally:
        h.cleanup()


def _pattern(n, seed):
    block = hashlib.sha256(seed).digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


@pytest.mark.parametrize("splice", [True, False], ids=["splice-on", "splice-off"])
def test_large_transfer_both_ways_byte_for_byte(impl, loop, splice):
    if impl.IMPLEMENTATION == "python" and not splice:
        pytest.skip("the Python relay never splices; covered by splice-on")
    impl.configure(splice=splice)
    size = 10 << 20
    up, down = _pattern(size, b"up"), _pattern(size, b"down")
    h = Harness(impl, loop)

    async def server_side():
        got = await h.recv_until_eof(h.server)
        await loop.sock_sendall(h.server, down)
        h.server.shutdown(socket.SHUT_WR)
        return got

    async def client_side():
        await loop.sock_sendall(h.client, up)
        h.client.shutdown(socket.SHUT_WR)
        return await h.recv_until_eof(h.client)

    async def scenario():
        h.relay.start()
        return await asyncio.gather(server_side(), client_side(), h.closed)

    try:
        at_server, at_client, termination = run(loop, scenario(), timeout=60)
        assert hashlib.sha256(at_server).digest() == hashlib.sha256(up).digest()
        assert hashlib.sha256(at_client).digest() == hashlib.sha256(down).digest()
        assert termination == "--"
        assert (h.relay.bytes_in, h.relay.bytes_out) == (size, size)
        if impl.IMPLEMENTATION == "cython" and splice and impl.splice_available():
            # A bulk transfer must leave recv/send for splice.
            assert h.relay.spliced_in > size // 2
            assert h.relay.spliced_out > size // 2
        else:
            assert h.relay.spliced_in == h.relay.spliced_out == 0
    finally:
        h.cleanup()


def test_small_messages_do_not_splice(impl, loop):
    h = Harness(impl, loop)

    async def scenario():
        h.relay.start()
        for i in range(200):
            await loop.sock_sendall(h.client, b"ping %d\n" % i)
            assert await h.recv_exactly(h.server, len(b"ping %d\n" % i)) == b"ping %d\n" % i

    try:
        run(loop, scenario())
        assert h.relay.spliced_in == 0
    finally:
        h.cleanup()


def test_back_pressure_bounds_what_the_relay_reads(impl, loop):
    """A server that does not read must stop the relay reading the client:
    what the relay has read stays within socket buffers plus one buffer,
    however much the client pushes."""
    h = Harness(impl, loop)
    payload = _pattern(96 << 20, b"bp")

    async def push():
        view = memoryview(payload)
        sent = 0
        stalled_since = None
        while sent < len(view):
            try:
                sent += h.client.send(view[sent:sent + (1 << 20)])
                stalled_since = None
            except BlockingIOError:
                now = time.monotonic()
                stalled_since = stalled_since or now
                if now - stalled_since > 0.5:
                    return sent  # blocked for good: back-pressure reached the client
                await asyncio.sleep(0.01)
        return sent

    async def scenario():
        h.relay.start()
        pushed = await push()
        read_by_relay = h.relay.bytes_in
        # Now drain, and everything must arrive intact.
        async def finish():
            await loop.sock_sendall(h.client, payload[pushed:])
            h.client.shutdown(socket.SHUT_WR)
        got, _ = await asyncio.gather(h.recv_until_eof(h.server), finish())
        return pushed, read_by_relay, got

    try:
        pushed, read_by_relay, got = run(loop, scenario(), timeout=60)
        assert pushed < len(payload), "the client was never blocked"
        # Loopback buffers autotune up to a few MiB each (tcp_rmem/tcp_wmem).
        limit = 2 * _max_tcp_buffer() + (1 << 20)
        assert read_by_relay <= limit, (read_by_relay, limit)
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    finally:
        h.cleanup()


def _max_tcp_buffer():
    sizes = []
    for name in ("tcp_rmem", "tcp_wmem"):
        try:
            with open(f"/proc/sys/net/ipv4/{name}") as f:
                sizes.append(int(f.read().split()[2]))
        except OSError:
            sizes.append(6 << 20)
    return max(sizes)


def test_server_reset_resets_the_client(impl, loop):
    h = Harness(impl, loop)

    async def scenario():
        h.relay.start()
        await loop.sock_sendall(h.client, b"x")
        await h.recv_exactly(h.server, 1)
        h.server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        h.server.close()
        termination = await h.closed
        try:
            data = await h.recv_until_eof(h.client)
        except ConnectionResetError:
            data = None
        return termination, data

    try:
        termination, data = run(loop, scenario())
        assert termination == "SD"
        assert data is None, "the client saw a clean EOF after the server reset"
    finally:
        h.cleanup()


def test_client_gone_while_server_sends(impl, loop):
    h = Harness(impl, loop)

    async def scenario():
        h.relay.start()
        await loop.sock_sendall(h.client, b"x")
        await h.recv_exactly(h.server, 1)
        h.client.close()
        # The server keeps sending into a connection nobody reads.
        for _ in range(200):
            try:
                await loop.sock_sendall(h.server, b"y" * 65536)
            except OSError:
                break
            if h.closed.done():
                break
        return await h.closed

    try:
        assert run(loop, scenario()) in ("CD", "--")
    finally:
        h.cleanup()


def test_idle_timeout_closes_but_traffic_keeps_alive(impl, loop):
    # The timeout is 8 sends apart, not 4: on a loaded 2-core machine a
    # 0.1 s sleep has come back 0.3 s late, and the relay rightly took
    # that gap for idleness.
    h = Harness(impl, loop, timeout=0.8)

    async def scenario():
        h.relay.start()
        started = time.monotonic()
        # 1.6 s of traffic every 0.1 s: longer than the timeout, never idle.
        while time.monotonic() - started < 1.6:
            await loop.sock_sendall(h.client, b".")
            await h.recv_exactly(h.server, 1)
            idle_from = time.monotonic()
            await asyncio.sleep(0.1)
        assert not h.closed.done()
        termination = await h.closed
        return termination, time.monotonic() - idle_from

    try:
        termination, waited = run(loop, scenario())
        assert termination == "cD"
        assert 0.75 <= waited < 5
        assert run(loop, h.recv_until_eof(h.client)) == b""
    finally:
        h.cleanup()


def test_preamble_goes_first(impl, loop):
    h = Harness(impl, loop, preamble=b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")

    async def scenario():
        await loop.sock_sendall(h.client, b"payload")  # already waiting
        h.relay.start()
        return await h.recv_exactly(h.server, 39)

    try:
        assert run(loop, scenario()) == b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\npayload"
        assert h.relay.bytes_in == 7  # the preamble is ours, not the client's
    finally:
        h.cleanup()


def test_close_is_idempotent_and_reports_once(impl, loop):
    h = Harness(impl, loop)

    async def scenario():
        h.relay.start()
        h.relay.close("KD")
        h.relay.close("DD")
        await asyncio.sleep(0)
        return await h.recv_until_eof(h.client), await h.recv_until_eof(h.server)

    try:
        assert run(loop, scenario()) == (b"", b"")
        assert h.close_calls == 1
        assert h.relay.termination == "KD"
    finally:
        h.cleanup()


def test_selected_implementation_follows_environment():
    import subprocess
    import sys

    code = "import lbcore_ext; print(lbcore_ext.IMPLEMENTATION)"
    env = dict(os.environ, LBCORE_NO_EXT="1")
    forced = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert forced.stdout.strip() == "python"
    env.pop("LBCORE_NO_EXT")
    default = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert default.stdout.strip() == ("cython" if "cython" in IMPLEMENTATIONS else "python")
