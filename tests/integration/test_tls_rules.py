"""Rules reading TLS facts: ssl_fc and ssl_fc_sni (the server name the
client sent), on a TLS frontend."""

import json
import socket
import ssl
import subprocess

import pytest

from tests.integration.rawhttp import no_crash_in_lbcore  # noqa: F401
from tests.support import free_port, http_config


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls-rules")
    cert, key = d / "cert.pem", d / "key.pem"
    result = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"],
        capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"openssl cannot make a certificate: {result.stderr[:200]!r}")
    return str(cert), str(key)


def tls_get(port: int, sni, cafile: str):
    context = ssl.create_default_context(cafile=cafile)
    context.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=sni) as sock:
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, (dict(json.loads(body)["headers"]) if status == 200 else None)


def test_ssl_fc_and_sni_in_rules(start_backend, start_lbcore, certificate):
    backend = start_backend("s1")
    cert, key = certificate
    port = free_port()
    config = http_config([backend.address], port, frontend={
        "tls": {"cert": cert, "key": key},
        "http_request": [
            {"deny": 403, "if": "{ ssl_fc_sni -i blocked.example.com }"},
            {"set_header": ["X-SNI", "%[ssl_fc_sni]"]},
            {"set_header": ["X-TLS", "yes"], "if": "{ ssl_fc }"},
        ],
    })
    start_lbcore(config)
    status, headers = tls_get(port, "api.example.com", cert)
    assert status == 200
    assert headers["X-SNI"] == "api.example.com" and headers["X-TLS"] == "yes"
    assert tls_get(port, "BLOCKED.example.com", cert)[0] == 403
    status, headers = tls_get(port, None, cert)  # no SNI: an empty sample
    assert status == 200 and headers["X-SNI"] == ""
