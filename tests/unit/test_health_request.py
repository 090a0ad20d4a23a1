"""The probe's request bytes and status-line parsing, without sockets."""

import pytest

from lbcore.health.probes import build_request, parse_status_line


def test_request_has_method_path_host_close_and_user_agent():
    raw = build_request("HEAD", "/healthcheck?full=1", "keystone.example:5000")
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert rest == b""
    lines = head.split(b"\r\n")
    assert lines[0] == b"HEAD /healthcheck?full=1 HTTP/1.1"
    headers = dict(line.split(b": ", 1) for line in lines[1:])
    assert headers[b"Host"] == b"keystone.example:5000"
    assert headers[b"Connection"] == b"close"
    assert headers[b"User-Agent"] == b"lbcore-health"


@pytest.mark.parametrize("method,path,host", [
    ("GET", "/a\r\nX-Evil: 1", "h"),
    ("GET", "/a b", "h"),
    ("GET", "", "h"),
    ("GE T", "/", "h"),
    ("GET", "/", "h\r\nX: y"),
    ("GET", "/", ""),
])
def test_request_rejects_values_that_would_break_the_request_line(method, path, host):
    with pytest.raises(ValueError, match="health"):
        build_request(method, path, host)


@pytest.mark.parametrize("line,code", [
    (b"HTTP/1.1 200 OK\r\n", 200),
    (b"HTTP/1.0 503 Service Unavailable\r\n", 503),
    (b"HTTP/1.1 204\r\n", 204),
    (b"HTTP/1.1 404", 404),
    (b"HTTP/1.1 2000 OK\r\n", None),
    (b"HTTP/2 200\r\n", None),
    (b"SSH-2.0-OpenSSH_9.6\r\n", None),
    (b"HTTP/1.1 OK 200\r\n", None),
    (b"HTTP/1.1 099 x\r\n", None),
    (b"", None),
])
def test_status_line(line, code):
    assert parse_status_line(line) == code


def test_more_headers_and_a_user_agent_of_the_config():
    raw = build_request("GET", "/", "h", (("User-Agent", "osa-check"), ("X-Probe", "1")))
    head = raw.decode().split("\r\n")
    assert "User-Agent: osa-check" in head and "X-Probe: 1" in head
    assert not any(line.startswith("User-Agent: lbcore") for line in head)
    with pytest.raises(ValueError):
        build_request("GET", "/", "h", (("X", "a\r\nEvil: 1"),))
