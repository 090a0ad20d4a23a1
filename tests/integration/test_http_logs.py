"""Access logs: one line per request in HAProxy's httplog layout or JSON,
on stdout or a file; format none writes none."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time

from tests.support import free_port, http_config

from .rawhttp import (  # noqa: F401 (fixtures)
    KeepAliveClient, RawClient, backends3, no_crash_in_lbcore, start_lbcore,
)

HTTPLOG = re.compile(
    r'^(?P<ip>\d+\.\d+\.\d+\.\d+):(?P<port>\d+) '
    r'\[(?P<date>\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2}\.\d{3})\] '
    r'(?P<frontend>\S+) (?P<backend>\S+)/(?P<server>\S+) '
    r'(?P<TR>-?\d+)/(?P<Tw>-?\d+)/(?P<Tc>-?\d+)/(?P<Tr>-?\d+)/(?P<Ta>\+?-?\d+) '
    r'(?P<status>\d{3}) (?P<bytes>\+?\d+) (?P<cc>\S+) (?P<cs>\S+) (?P<term>\S{4}) '
    r'(?P<ac>\d+)/(?P<fc>\d+)/(?P<bc>\d+)/(?P<sc>\d+)/(?P<rc>\+?\d+) (?P<sq>\d+)/(?P<bq>\d+) '
    r'"(?P<request>.*)"$')


def access_lines(text: str, json_format: bool = False) -> list:
    out = []
    for line in text.splitlines():
        if json_format:
            if line.startswith("{"):
                out.append(json.loads(line))
        else:
            m = HTTPLOG.match(line)
            if m:
                out.append(m.groupdict())
    return out


def wait_lines(read, count: int, json_format: bool = False, timeout: float = 5.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        lines = access_lines(read(), json_format)
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def start(start_lbcore, backends, fmt="http", target="stdout", servers=None):
    port = free_port()
    config = http_config(servers or [b.address for b in backends[:2]], port)
    config["global"]["log"] = {"target": target, "format": fmt}
    return start_lbcore(config), port


def test_httplog_line_per_request(backends3, start_lbcore):
    lb, port = start(start_lbcore, backends3)
    client = KeepAliveClient(port)
    local_port = client.conn.sock.getsockname()[1]
    client.request("GET", "/echo?a=1")
    client.request("GET", "/size/1000")
    client.request("POST", "/echo", body=b"x" * 10)
    client.request("GET", "/sleep/0.3")
    lines = wait_lines(lb.logs, 4)
    assert len(lines) == 4, lb.logs()
    requests = [line["request"] for line in lines]
    assert requests == ["GET /echo?a=1 HTTP/1.1", "GET /size/1000 HTTP/1.1",
                        "POST /echo HTTP/1.1", "GET /sleep/0.3 HTTP/1.1"]
    for line in lines:
        assert line["ip"] == "127.0.0.1"
        assert int(line["port"]) == local_port
        assert (line["frontend"], line["backend"]) == ("web", "pool")
        assert line["status"] == "200"
        assert line["term"] == "----"
    # Each request is balanced on its own: both servers appear.
    assert {line["server"] for line in lines} == {"s1", "s2"}
    # Bytes sent to the client count the head too.
    assert int(lines[1]["bytes"].lstrip("+")) > 1000
    # Timers: the server took 300 ms to answer the last request.
    slow = lines[3]
    assert int(slow["Tr"]) >= 250 and int(slow["Ta"].lstrip("+")) >= int(slow["Tr"])


def test_httplog_for_errors(backends3, start_lbcore):
    refused = f"127.0.0.1:{free_port()}"
    lb, port = start(start_lbcore, backends3, servers=[refused])
    with RawClient(port) as c:
        c.request("GET", "/nowhere")
        assert c.read_response().status == 503
    with RawClient(port) as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        assert c.read_response().status == 400
    lines = wait_lines(lb.logs, 2)
    by_status = {line["status"]: line for line in lines}
    assert set(by_status) == {"503", "400"}, lb.logs()
    assert by_status["503"]["server"] == "s1"  # tried and refused: named, as HAProxy logs it
    assert by_status["503"]["request"] == "GET /nowhere HTTP/1.1"
    assert by_status["400"]["server"] == "<NOSRV>"
    assert by_status["400"]["term"].startswith("PR")


def test_json_log_line_per_request(backends3, start_lbcore):
    lb, port = start(start_lbcore, backends3, fmt="json")
    client = KeepAliveClient(port)
    for i in range(3):
        client.request("GET", f"/echo?i={i}")
    lines = wait_lines(lb.logs, 3, json_format=True)
    assert len(lines) == 3, lb.logs()
    for i, line in enumerate(lines):
        assert line["frontend"] == "web" and line["backend"] == "pool"
        assert line["server"] in ("s1", "s2")
        assert line["status"] == 200
        assert line["bytes"] > 0
        assert line["request"] == f"GET /echo?i={i} HTTP/1.1"
        assert line["client"].startswith("127.0.0.1:")


def test_log_format_none_writes_no_access_lines(backends3, start_lbcore):
    lb, port = start(start_lbcore, backends3, fmt="none")
    client = KeepAliveClient(port)
    for _ in range(5):
        client.request("GET", "/echo")
    client.close()
    with RawClient(port) as c:
        c.send(b"BAD\r\n\r\n")
        c.read_response()
    time.sleep(0.5)
    lb.stop()
    text = lb.logs()
    assert access_lines(text) == [] and access_lines(text, json_format=True) == []
    assert "GET /echo" not in text


def test_log_to_a_file(backends3, start_lbcore):
    path = os.path.join(tempfile.mkdtemp(prefix="lbcore-log-"), "access.log")
    lb, port = start(start_lbcore, backends3, target=path)
    client = KeepAliveClient(port)
    client.request("GET", "/echo?to-file")

    def read():
        try:
            with open(path) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    lines = wait_lines(read, 1)
    assert [line["request"] for line in lines] == ["GET /echo?to-file HTTP/1.1"]
    assert access_lines(lb.logs()) == []


def test_httplog_termination_states(backends3, start_lbcore):
    # HAProxy's two-letter termination states, checked against HAProxy 2.6
    # on the same requests.
    port, dead_port = free_port(), free_port()
    config = http_config([backends3[0].address], port, defaults={"timeouts": {
        "server": "500ms", "http_request": "500ms", "queue": "300ms"}})
    config["backends"]["pool"]["servers"][0]["maxconn"] = 1
    config["backends"]["deadpool"] = {
        "mode": "http", "servers": [{"name": "d1", "address": f"127.0.0.1:{free_port()}"}]}
    config["frontends"]["dead"] = {"bind": f"127.0.0.1:{dead_port}", "mode": "http", "backend": "deadpool"}
    lb = start_lbcore(config)

    def send(data, p=port):
        with RawClient(p) as c:
            c.send(data)
            return c.read_response().status

    assert send(b"GET /sleep/2?timeout HTTP/1.1\r\nHost: x\r\n\r\n") == 504
    assert send(b"GET /echo?slow HTTP/1.1\r\nHost: x\r\n") == 408
    assert send(b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") == 400
    assert send(b"GET /garbage HTTP/1.1\r\nHost: x\r\n\r\n") == 502
    assert send(b"GET /echo?refused HTTP/1.1\r\nHost: x\r\n\r\n", dead_port) == 503
    lines = wait_lines(lb.logs, 5)
    states = sorted(line["term"] for line in lines)
    assert states == ["PH--", "PR--", "SC--", "cR--", "sH--"], lb.logs()


def test_httplog_names_the_server_that_failed(backends3, start_lbcore):
    # An operator reads from the log which server timed out, answered
    # garbage or refused: HAProxy logs pool/s1 on these 504/502/503 lines.
    port, dead_port = free_port(), free_port()
    config = http_config([backends3[0].address], port, defaults={"timeouts": {"server": "500ms"}})
    config["backends"]["deadpool"] = {
        "mode": "http", "servers": [{"name": "d1", "address": f"127.0.0.1:{free_port()}"}]}
    config["frontends"]["dead"] = {"bind": f"127.0.0.1:{dead_port}", "mode": "http", "backend": "deadpool"}
    lb = start_lbcore(config)
    for path, p in (("/sleep/2", port), ("/garbage", port), ("/echo", dead_port)):
        with RawClient(p) as c:
            c.request("GET", path)
            c.read_response()
    lines = wait_lines(lb.logs, 3)
    seen = {line["status"]: f'{line["backend"]}/{line["server"]}' for line in lines}
    assert seen == {"504": "pool/s1", "502": "pool/s1", "503": "deadpool/d1"}, lb.logs()
