"""`errorfile CODE FILE` beside haproxy 2.6: the same file, the same bytes.

HAProxy parses an errorfile and writes it again (lowercase header names,
its own Connection handling), so the test does not compare with the file
but with what haproxy sends for the same request on the same config:
defaults' files (openstack-ansible's `haproxy_errorfiles`), a backend's own
file over the defaults', deny, monitor-uri and an HTTP/1.0 status line.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest

from tests.haproxy import HAPROXY, need_haproxy, start_on_file, stop_on_file
from tests.integration.test_haproxy_cfg import lbcore_cmd, lbcore_env
from tests.support import free_port, wait_port

FILES = {
    # openstack-ansible's documented example: LF line ends, HTTP/1.0, no length
    "503.http": b"HTTP/1.0 503 Service Unavailable\nCache-Control: no-cache\nConnection: close\n"
                b"Content-Type: text/html\n\n<html><body><h1>503 Service Unavailable</h1>\n"
                b"No server is available to handle this request.\n</body></html>\n",
    "502.http": b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nbad gateway\n",
    "502-be.http": b"HTTP/1.1 502 Bad Gateway\r\nX-From: backend\r\nContent-Type: text/plain\r\n\r\nthe backend's own\n",
    "403.http": b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\nno way\n",
    "429.http": b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 10\r\nContent-Type: text/plain\r\n\r\nslow down\n",
    "200.http": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n",
    "400.http": b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\r\nbad request\n",
}

CONFIG = """\
defaults
    mode http
    retries 0
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    errorfile 503 {dir}/503.http
    errorfile 502 {dir}/502.http
    errorfile 403 {dir}/403.http
    errorfile 429 {dir}/429.http
    errorfile 200 {dir}/200.http
    errorfile 400 {dir}/400.http

frontend front
    bind {vip}:{port}
    monitor-uri /healthz
    http-request deny if {{ path /deny }}
    http-request deny deny_status 429 if {{ path /slow }}
    use_backend garbage if {{ path_beg /garbage }}
    default_backend nobody

backend nobody
    server s1 127.0.0.1:{closed}

backend garbage
    errorfile 502 {dir}/502-be.http
    server s1 127.0.0.1:{garbage}
"""

REQUESTS = {
    "503 from the defaults' HTTP/1.0 file": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "502 from the backend's own file": b"GET /garbage HTTP/1.1\r\nHost: x\r\n\r\n",
    "403 deny, then keep-alive": b"GET /deny HTTP/1.1\r\nHost: x\r\n\r\nGET /slow HTTP/1.1\r\nHost: x\r\n\r\n",
    "429 deny_status": b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n",
    "200 monitor-uri keeps the connection": b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "an HTTP/1.0 client": b"GET /deny HTTP/1.0\r\n\r\n",
}


def _garbage_server():
    """Answers every connection with bytes that are not HTTP: a 502."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                conn.recv(4096)
                conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            except OSError:
                pass
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener


def _read_all(vip: str, port: int, data: bytes) -> bytes:
    with socket.create_connection((vip, port), timeout=5) as sock:
        sock.sendall(data)
        out = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            out += chunk


@pytest.fixture(scope="module")
def balancers(tmp_path_factory):
    need_haproxy()
    tmp = tmp_path_factory.mktemp("errorfile")
    for name, content in FILES.items():
        (tmp / name).write_bytes(content)
    garbage = _garbage_server()
    closed = free_port()
    running = {}
    try:
        for name, vip in (("haproxy", "127.22.0.1"), ("lbcore", "127.22.0.2")):
            port = free_port()
            path = tmp / f"{name}.cfg"
            path.write_text(CONFIG.format(dir=tmp, vip=vip, port=port, closed=closed,
                                          garbage=garbage.getsockname()[1]))
            proc, log = start_on_file(name, str(path), str(tmp), lbcore_env())
            running[name] = (vip, port, proc, log)
            wait_port(port, host=vip, proc=proc)
        yield {name: (vip, port) for name, (vip, port, _, _) in running.items()}
    finally:
        for vip, port, proc, log in running.values():
            stop_on_file(proc, log)
        garbage.close()


@pytest.mark.parametrize("case", list(REQUESTS))
def test_errorfile_answers_are_haproxys_bytes(balancers, case):
    answers = {name: _read_all(vip, port, REQUESTS[case]) for name, (vip, port) in balancers.items()}
    assert answers["haproxy"], case
    assert answers["lbcore"] == answers["haproxy"], case


def test_a_request_parsing_error_keeps_haproxys_own_page(balancers):
    """HAProxy's HTTP/1 layer answers a malformed request before any
    errorfile applies: its 400 page, not the 400 file."""
    answers = {name: _read_all(vip, port, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
               for name, (vip, port) in balancers.items()}
    for answer in answers.values():
        assert answer.startswith(b"HTTP/1.1 400 Bad request\r\n") and b"bad request\n" not in answer
    assert answers["lbcore"].split(b"\r\n\r\n")[1] == answers["haproxy"].split(b"\r\n\r\n")[1]


def test_check_names_the_errorfile_line_as_haproxy_does(tmp_path):
    need_haproxy()
    (tmp_path / "short.http").write_bytes(b"HTTP/1.1 503 X\r\nContent-Length: 10\r\n\r\nabc")
    path = tmp_path / "bad.cfg"
    path.write_text(f"""\
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    errorfile 999 {tmp_path}/short.http
    errorfile 503 {tmp_path}/missing.http
frontend fe
    bind 127.0.0.1:{free_port()}
    errorfile 503 {tmp_path}/short.http
    default_backend be
backend be
    server s1 127.0.0.1:1
""")
    lines = {}
    for name, cmd in (("haproxy", [HAPROXY, "-c", "-f", str(path)]), ("lbcore", lbcore_cmd("-c", "-f", str(path)))):
        result = subprocess.run(cmd, capture_output=True, text=True, env=lbcore_env(), cwd=tmp_path, timeout=30)
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        text = result.stdout + result.stderr
        lines[name] = sorted(n for n in (6, 7, 10) if f"bad.cfg:{n}" in text or f"bad.cfg:{n}]" in text)
    assert lines["lbcore"] == lines["haproxy"] == [6, 7, 10]


def test_lb_yaml_error_files(tmp_path, start_lbcore):
    """The lb.yaml form: error_files on defaults, overridden per backend."""
    (tmp_path / "503.http").write_bytes(FILES["503.http"])
    port = free_port()
    lb = start_lbcore({
        "defaults": {"error_files": {503: str(tmp_path / "503.http")}},
        "frontends": {"web": {"bind": f"127.0.0.1:{port}", "backend": "pool"}},
        "backends": {"pool": {"servers": [{"name": "s1", "address": f"127.0.0.1:{free_port()}"}],
                              "retries": 0, "health": {"type": "none"}}},
    }, wait_ports=[port])
    started = time.monotonic()
    answer = _read_all("127.0.0.1", port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 503 Service Unavailable\r\ncache-control: no-cache\r\n"
                             b"content-type: text/html\r\n\r\n<html>"), answer
    assert time.monotonic() - started < 5
    assert lb.proc.poll() is None
