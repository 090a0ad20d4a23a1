"""log.target: syslog over UDP and stderr carry access and event lines."""

import http.client
import socket
import time

from tests.support import free_port, http_config


def test_syslog_udp_target_gets_access_and_event_lines(start_backend, start_lbcore):
    backend = start_backend("s1")
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    port = free_port()
    config = http_config([backend.address], port)
    config["global"]["log"] = {"target": f"127.0.0.1:{receiver.getsockname()[1]}", "format": "http"}
    start_lbcore(config)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/echo?syslog")
    assert conn.getresponse().status == 200
    datagrams = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(b"GET /echo?syslog" in d for d in datagrams):
        try:
            datagrams.append(receiver.recv(65536))
        except socket.timeout:
            break
    receiver.close()
    access = [d for d in datagrams if b"GET /echo?syslog" in d]
    assert access, datagrams
    assert access[0].startswith(b"<134>")  # local0.info, RFC 3164
    assert b"web pool/s1" in access[0]
    assert any(b"lbcore started" in d for d in datagrams), datagrams


def test_stderr_target(start_backend, start_lbcore):
    backend = start_backend("s1")
    port = free_port()
    config = http_config([backend.address], port)
    config["global"]["log"] = {"target": "stderr", "format": "json"}
    lb = start_lbcore(config)  # its stdout and stderr both land in lb.logs()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/echo?stderr")
    assert conn.getresponse().status == 200
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and '"GET /echo?stderr HTTP/1.1"' not in lb.logs():
        time.sleep(0.05)
    assert '"request": "GET /echo?stderr HTTP/1.1"' in lb.logs()
