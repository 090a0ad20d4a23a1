"""A frontend with `tls` terminates TLS and says so in X-Forwarded-Proto."""

import http.client
import json
import ssl
import subprocess

import pytest

import time

from tests.support import free_port, get_json, http_config


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    result = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"],
        capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"openssl cannot make a certificate: {result.stderr[:200]!r}")
    return str(cert), str(key)


def test_tls_frontend(start_backend, start_lbcore, certificate):
    backend = start_backend("s1")
    port = free_port()
    cert, key = certificate
    stats_port = free_port()
    config = http_config([backend.address], port, frontend={"tls": {"cert": cert, "key": key}})
    config["stats"] = {"bind": f"127.0.0.1:{stats_port}"}
    lb = start_lbcore(config)
    context = ssl.create_default_context(cafile=cert)
    context.check_hostname = False
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    for _ in range(3):  # keep-alive over TLS
        conn.request("GET", "/echo")
        resp = conn.getresponse()
        assert resp.status == 200
        headers = dict(json.loads(resp.read())["headers"])
        assert headers["X-Forwarded-Proto"] == "https"
    # A plain-text client on the TLS port is dropped, and lbcore goes on.
    plain = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    with pytest.raises((OSError, http.client.HTTPException)):
        plain.request("GET", "/echo")
        plain.getresponse().read()
    conn.request("GET", "/echo")
    assert conn.getresponse().read()
    assert lb.proc.poll() is None
    conn.close()
    plain.close()
    # Every connection, failed handshakes included, is accounted for.
    deadline = time.monotonic() + 3
    while get_json(stats_port)["frontends"]["web"]["current_sessions"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert get_json(stats_port)["frontends"]["web"]["current_sessions"] == 0


def test_websocket_tunnel_over_tls(start_backend, start_lbcore, certificate):
    # A TLS tunnel stays on the event loop's transports (bytes are decrypted
    # in user space: nothing to splice): it echoes both ways, and its
    # session ends when the client goes.
    import os
    import socket

    backend = start_backend("s1")
    port, stats_port = free_port(), free_port()
    cert, key = certificate
    config = http_config([backend.address], port, frontend={"tls": {"cert": cert, "key": key}})
    config["stats"] = {"bind": f"127.0.0.1:{stats_port}"}
    start_lbcore(config)
    context = ssl.create_default_context(cafile=cert)
    context.check_hostname = False
    tls = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                              server_hostname="localhost")
    with tls:
        tls.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            piece = tls.recv(4096)
            assert piece, head
            head += piece
        assert head.split(b"\r\n", 1)[0].split()[1] == b"101", head
        echoed = head.split(b"\r\n\r\n", 1)[1]
        sent = b""
        for _ in range(16):  # 1 MiB, one 64 KiB message at a time
            message = os.urandom(65536)
            tls.sendall(message)
            sent += message
            while len(echoed) < len(sent):
                piece = tls.recv(65536)
                assert piece, f"tunnel closed after {len(echoed)} bytes"
                echoed += piece
        assert echoed == sent
        row = get_json(stats_port)["backends"]["pool"]["servers"][0]
        assert row["current_sessions"] == 1
    deadline = time.monotonic() + 3
    while get_json(stats_port)["backends"]["pool"]["servers"][0]["current_sessions"] \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert get_json(stats_port)["backends"]["pool"]["servers"][0]["current_sessions"] == 0
