"""tcp mode end to end: a real lbcore process, real TCP echo backends, real
client sockets; run once per relay implementation (Cython, pure Python)."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time

import pytest

import lbcore_ext
from tests.support import free_port, get_json

IMPLEMENTATIONS = lbcore_ext.implementations()


@pytest.fixture(params=["cython", "python"])
def relay(request):
    """The environment that selects a relay implementation in lbcore."""
    if request.param not in IMPLEMENTATIONS:
        pytest.skip("lbcore_ext.relay is not built (python setup.py build_ext --inplace)")
    env = {"LBCORE_NO_EXT": "1" if request.param == "python" else "0"}
    return request.param, env


def tcp_config(servers, port, backend=None, frontend=None, **top):
    pool = {"mode": "tcp", "balance": "roundrobin",
            "servers": [{"name": f"s{i + 1}", "address": a} if isinstance(a, str) else a
                        for i, a in enumerate(servers)]}
    pool.update(backend or {})
    fe = {"bind": f"127.0.0.1:{port}", "mode": "tcp", "backend": "pool"}
    fe.update(frontend or {})
    config = {"global": {"log": {"target": "stdout", "format": "http"}},
              "frontends": {"tcp": fe}, "backends": {"pool": pool}}
    config.update(top)
    return config


def start(start_lbcore, relay, config):
    name, env = relay
    lb = start_lbcore(config, env=env)
    wait_for(lambda: f"tcp relay: {name}" in lb.logs(), what=f"lbcore to announce the {name} relay")
    return lb


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def recv_all(sock):
    chunks = []
    while True:
        data = sock.recv(1 << 20)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def echo(port, payload, timeout=30):
    """Send `payload` (from a thread: the echo comes back while we send),
    half-close, and return everything received until EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        def send():
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        sender = threading.Thread(target=send)
        sender.start()
        try:
            return recv_all(sock)
        finally:
            sender.join()


def greeting(port, timeout=10):
    """Connect and read the backend's greeting line (its name)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        line = b""
        while not line.endswith(b"\n"):
            data = sock.recv(100)
            if not data:
                break
            line += data
        return line.decode().strip()


GREETING = {"TCP_ECHO_GREETING": "{name}\n"}


def test_echo_small_and_10mib_byte_for_byte(start_backend, start_lbcore, relay):
    backend = start_backend("s1", tcp_echo=True)
    port, stats_port = free_port(), free_port()
    lb = start(start_lbcore, relay, tcp_config([backend.address], port,
                                               stats={"bind": f"127.0.0.1:{stats_port}"}))
    assert echo(port, b"ping") == b"ping"
    payload = hashlib.sha256(b"seed").digest() * (10 * 1024 * 1024 // 32)
    got = echo(port, payload)
    assert len(got) == len(payload)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    # One access line per connection, normal termination, both byte counts.
    wait_for(lambda: re.search(rf" tcp pool/s1 0/\d+/\d+ {len(payload)} -- 0$", lb.logs(), re.M),
             what="the access line of the 10 MiB echo")
    # Byte counters on frontend, backend and server; every session ended.
    total = 4 + len(payload)
    stats = get_json(stats_port)
    server = stats["backends"]["pool"]["servers"][0]
    for row in (stats["frontends"]["tcp"], stats["backends"]["pool"], server):
        assert (row["bytes_in"], row["bytes_out"]) == (total, total), row
        assert row["current_sessions"] == 0
    assert server["total_sessions"] == 3  # the startup probe and two echoes


def test_half_close_client_still_receives_everything(start_backend, start_lbcore, relay):
    backend = start_backend("s1", tcp_echo=True)
    port = free_port()
    start(start_lbcore, relay, tcp_config([backend.address], port))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        payload = b"0123456789" * 50000
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # no more from us; the echo keeps coming
        assert recv_all(sock) == payload


def test_connections_spread_round_robin(start_backend, start_lbcore, relay):
    backends = [start_backend(f"s{i}", tcp_echo=True, env=GREETING) for i in (1, 2, 3)]
    port = free_port()
    start(start_lbcore, relay, tcp_config([b.address for b in backends], port))
    names = [greeting(port) for _ in range(9)]
    assert sorted(names) == ["s1"] * 3 + ["s2"] * 3 + ["s3"] * 3
    assert len(set(names[:3])) == 3  # a rotation, not bursts


def test_balance_first_fills_in_order_and_backup_serves_last(start_backend, start_lbcore, relay):
    s1, s2, b1 = (start_backend(n, tcp_echo=True, env=GREETING) for n in ("s1", "s2", "b1"))
    port = free_port()
    config = tcp_config(
        [{"name": "s1", "address": s1.address, "maxconn": 1},
         {"name": "s2", "address": s2.address, "maxconn": 1},
         {"name": "b1", "address": b1.address, "backup": True}],
        port,
        backend={"balance": "first",
                 "health": {"type": "tcp", "interval": "200ms", "timeout": "200ms",
                            "rise": 1, "fall": 1}})
    start(start_lbcore, relay, config)
    # Sequential connections all land on the first server. Each one is let
    # finish (FIN both ways, then a moment for lbcore to free s1's only slot).
    names = []
    for _ in range(3):
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.shutdown(socket.SHUT_WR)
            names.append(recv_all(sock).decode().strip())
    assert names == ["s1"] * 3
    time.sleep(0.2)
    # Held open, the first fills s1 (maxconn 1), the next goes to s2.
    held = []
    try:
        for expected in ("s1", "s2"):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            held.append(sock)
            assert sock.recv(100).strip() == expected.encode()
    finally:
        for sock in held:
            sock.close()
    # Both primaries die: once checks mark them DOWN the backup serves.
    s1.kill()
    s2.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if greeting(port, timeout=2) == "b1":
                break
        except OSError:
            pass
        time.sleep(0.1)
    assert greeting(port) == "b1"


def test_refused_server_is_retried_on_another_unseen(start_backend, start_lbcore, relay):
    live = start_backend("s2", tcp_echo=True, env=GREETING)
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: connection refused
    port = free_port()
    stats_port = free_port()
    lb = start(start_lbcore, relay, tcp_config([dead, live.address], port,
                                               stats={"bind": f"127.0.0.1:{stats_port}"}))
    for _ in range(6):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert sock.recv(100) == b"s2\n"
            sock.sendall(b"still here")
            assert sock.recv(100) == b"still here"
    wait_for(lambda: len(re.findall(r" tcp pool/s2 .* -- 1$", lb.logs(), re.M)) >= 3,
             what="access lines of retried connections")
    pool = get_json(stats_port)["backends"]["pool"]
    s1, s2 = pool["servers"]
    assert s1["connection_errors"] >= 3 and s1["current_sessions"] == 0
    assert pool["retries"] == pool["redispatches"] == s1["connection_errors"]
    assert pool["connection_errors"] == 0  # every client was served in the end
    assert s2["connection_errors"] == 0


def test_all_servers_refused_closes_the_client(start_lbcore, relay):
    dead = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    port = free_port()
    lb = start(start_lbcore, relay, tcp_config(dead, port, backend={"retries": 2}))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            assert sock.recv(100) == b""
        except ConnectionResetError:
            pass
    wait_for(lambda: re.search(r" tcp pool/s\d 0/-1/\d+ 0 SC 2$", lb.logs(), re.M),
             what="an SC access line after 2 retries")


def test_no_usable_server_closes_the_client(start_lbcore, relay):
    port = free_port()
    config = tcp_config([f"127.0.0.1:{free_port()}"], port,
                        backend={"health": {"type": "tcp", "initial_state": "down"}})
    lb = start(start_lbcore, relay, config)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        assert sock.recv(100) == b""
    wait_for(lambda: " tcp pool/<NOSRV> " in lb.logs(), what="a <NOSRV> access line")


def test_tunnel_timeout_closes_an_idle_connection(start_backend, start_lbcore, relay):
    backend = start_backend("s1", tcp_echo=True)
    port = free_port()
    lb = start(start_lbcore, relay,
               tcp_config([backend.address], port, backend={"timeouts": {"tunnel": "500ms"}}))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # Traffic for longer than the timeout keeps it open...
        for _ in range(4):
            sock.sendall(b"x")
            assert sock.recv(10) == b"x"
            last_traffic = time.monotonic()
            time.sleep(0.25)
        # ...silence closes it.
        assert sock.recv(10) == b""
        assert time.monotonic() - last_traffic >= 0.45
    wait_for(lambda: re.search(r" tcp pool/s1 .* cD 0$", lb.logs(), re.M), what="a cD access line")


def test_server_marked_down_shuts_its_sessions(start_backend, start_lbcore, relay):
    """on_marked_down: shutdown_sessions closes the sessions of a server that
    health checks mark DOWN; a backend without it keeps them."""
    backend = start_backend("s1", tcp_echo=True)
    health_listener = socket.socket()
    health_listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    health_listener.bind(("127.0.0.1", 0))
    health_listener.listen(64)
    health_port = health_listener.getsockname()[1]
    health = {"type": "tcp", "port": health_port, "interval": "200ms", "timeout": "200ms",
              "rise": 1, "fall": 1}
    port, keep_port = free_port(), free_port()
    config = tcp_config([backend.address], port,
                        backend={"health": health, "on_marked_down": "shutdown_sessions"})
    config["backends"]["keep"] = {"mode": "tcp", "health": health,
                                  "servers": [{"name": "s1", "address": backend.address}]}
    config["frontends"]["keep"] = {"bind": f"127.0.0.1:{keep_port}", "mode": "tcp", "backend": "keep"}
    lb = start(start_lbcore, relay, config)
    killed = socket.create_connection(("127.0.0.1", port), timeout=10)
    kept = socket.create_connection(("127.0.0.1", keep_port), timeout=10)
    try:
        for sock in (killed, kept):
            sock.sendall(b"hi")
            assert sock.recv(10) == b"hi"
        health_listener.close()  # the checks now fail: s1 goes DOWN in both backends
        began = time.monotonic()
        try:
            assert killed.recv(10) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - began < 8
        kept.sendall(b"still")
        assert kept.recv(10) == b"still"
    finally:
        killed.close()
        kept.close()
    wait_for(lambda: re.search(r" tcp pool/s1 .* DD 0$", lb.logs(), re.M), what="a DD access line")


def test_send_proxy_v1_header_reaches_the_server(start_backend, start_lbcore, relay):
    backend = start_backend("s1", tcp_echo=True)
    port = free_port()
    start(start_lbcore, relay, tcp_config(
        [{"name": "s1", "address": backend.address, "send_proxy": "v1"}], port))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"data")
        sock.shutdown(socket.SHUT_WR)
        got = recv_all(sock)
        client_port = sock.getsockname()[1]
    assert got == f"PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {port}\r\n".encode() + b"data"


def test_sigterm_lets_sessions_run_then_closes_them_after_grace(start_backend, start_lbcore, relay):
    import signal

    backend = start_backend("s1", tcp_echo=True)
    port = free_port()
    config = tcp_config([backend.address], port)
    config["global"]["grace"] = "1s"
    lb = start(start_lbcore, relay, config)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"before")
        assert sock.recv(10) == b"before"
        lb.signal(signal.SIGTERM)
        time.sleep(0.3)
        sock.sendall(b"during")  # the grace period: still relayed
        assert sock.recv(10) == b"during"
        assert sock.recv(10) == b""  # grace over: closed
    assert lb.wait(10) == 0
    assert re.search(r" tcp pool/s1 .* KD 0$", lb.logs(), re.M), lb.logs()


def test_full_servers_queue_connections_until_a_slot_or_the_queue_timeout(
        start_backend, start_lbcore, relay):
    backend = start_backend("s1", tcp_echo=True, env=GREETING)
    port = free_port()
    config = tcp_config([{"name": "s1", "address": backend.address, "maxconn": 1}], port,
                        backend={"timeouts": {"queue": "1s"}})
    lb = start(start_lbcore, relay, config)
    time.sleep(0.2)  # the startup probe's session is over
    first = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert first.recv(10) == b"s1\n"
    queued = socket.create_connection(("127.0.0.1", port), timeout=10)
    queued.settimeout(0.3)
    with pytest.raises(socket.timeout):
        queued.recv(10)  # s1 is full: waiting, not refused
    first.close()  # frees the slot
    queued.settimeout(10)
    assert queued.recv(10) == b"s1\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as late:
            began = time.monotonic()
            assert late.recv(10) == b""  # closed once timeouts.queue is over
            assert time.monotonic() - began >= 0.8
    finally:
        queued.close()
    wait_for(lambda: re.search(r" tcp pool/<NOSRV> \d+/-1/\d+ 0 sQ 0$", lb.logs(), re.M),
             what="an sQ access line")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    import subprocess

    d = tmp_path_factory.mktemp("tcp-tls")
    cert, key = d / "cert.pem", d / "key.pem"
    result = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"openssl cannot make a certificate: {result.stderr[:200]!r}")
    return str(cert), str(key)


def tls_echo(tls, payload: bytes, timeout: float = 30.0) -> bytes:
    """Send `payload` and read its echo on one TLS socket from one thread:
    OpenSSL forbids SSL_read and SSL_write on one connection from two
    threads at once (doing so corrupted records now and then)."""
    import selectors
    import ssl

    tls.setblocking(False)
    got = bytearray()
    sent = 0
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(tls, selectors.EVENT_READ | selectors.EVENT_WRITE)
        while len(got) < len(payload):
            assert time.monotonic() < deadline, f"echo incomplete: {len(got)} of {len(payload)}"
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if sent < len(payload) else 0)
            sel.modify(tls, events)
            sel.select(0.5)
            if sent < len(payload):
                try:
                    sent += tls.send(payload[sent:sent + 65536])
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    pass
            while True:  # drain what is readable, decrypted bytes included
                try:
                    data = tls.recv(1 << 16)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    break
                assert data, "closed before the echo was complete"
                got += data
    tls.setblocking(True)
    return bytes(got)


def test_tls_frontend_terminates_tls_and_relays_plain_bytes(start_backend, start_lbcore, relay,
                                                            certificate):
    import ssl

    backend = start_backend("s1", tcp_echo=True)
    port = free_port()
    cert, key = certificate
    lb = start(start_lbcore, relay, tcp_config([backend.address], port,
                                               frontend={"tls": {"cert": cert, "key": key}}))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    payload = hashlib.sha256(b"tls").digest() * 65536  # 2 MiB
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            got = tls_echo(tls, payload)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    # A client that is not speaking TLS is refused without reaching a server.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
        plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
        try:
            while plain.recv(1024):
                pass
        except ConnectionResetError:
            pass
    wait_for(lambda: re.search(r" tcp pool/<NOSRV> .* CR 0$", lb.logs(), re.M), what="a CR line")
    # (The echo session's line comes when its relay has closed both sides,
    # which may be after the refused client's.)
    wait_for(lambda: re.search(rf" tcp pool/s1 0/\d+/\d+ {len(payload)} -- 0$", lb.logs(), re.M),
             what="the echo session's line")


def test_balance_source_retries_its_server_then_redispatches_on_the_last_retry(
        start_backend, start_lbcore, relay):
    """Under `balance source` the hash pins a client to its server, so (as
    in HAProxy) only the last retry moves; the ones before wait a turn-around
    of min(1s, timeouts.connect) and try the same server again."""
    import zlib

    live = start_backend("live", tcp_echo=True, env=GREETING)
    dead = f"127.0.0.1:{free_port()}"
    hashed = zlib.crc32(socket.inet_pton(socket.AF_INET, "127.0.0.1")) % 2
    servers = [live.address, live.address]
    servers[hashed] = dead  # the server this client hashes to is the dead one
    port = free_port()
    lb = start(start_lbcore, relay, tcp_config(
        [{"name": f"s{i + 1}", "address": a} for i, a in enumerate(servers)], port,
        backend={"balance": "source", "retries": 2, "timeouts": {"connect": "300ms"}}))
    began = time.monotonic()
    assert greeting(port) == "live"
    assert time.monotonic() - began >= 0.25  # one turn-around before the redispatch
    wait_for(lambda: re.search(rf" tcp pool/s{2 - hashed} .* -- 2$", lb.logs(), re.M),
             what="an access line with 2 retries")


def test_tls_frontend_relays_what_came_before_the_relay_started(start_backend, start_lbcore,
                                                                relay, certificate):
    """A server that speaks first (MySQL's greeting) and a client that writes
    right after its handshake: bytes that arrive before the relay is attached
    are held and relayed, never dropped."""
    import ssl

    backend = start_backend("s1", tcp_echo=True, env=GREETING)
    port = free_port()
    cert, key = certificate
    start(start_lbcore, relay, tcp_config([backend.address], port,
                                          frontend={"tls": {"cert": cert, "key": key}}))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    for i in range(20):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"ping %d\n" % i)  # before any byte of the server's
                got = b""
                while not got.endswith(b"ping %d\n" % i):
                    data = tls.recv(1024)
                    assert data, f"closed after {got!r}"
                    got += data
                assert got == b"s1\nping %d\n" % i, got
