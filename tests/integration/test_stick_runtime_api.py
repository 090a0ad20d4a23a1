"""show/clear/set table on the runtime API, side by side with haproxy 2.6
on the equivalent config; haproxy_sticktable_size/used in /metrics."""

from __future__ import annotations

import os
import re
import tempfile
import urllib.request

from tests.haproxy import HaproxyProcess, need_haproxy
from tests.support import LbcoreProcess, free_port, socat, wait_unix

from .rawhttp import RawClient, start_backends


def cli(path: str, command: str) -> str:
    return socat(f"unix-connect:{path}", command + "\n")


def normalise(text: str) -> str:
    """Entry addresses and expiry countdowns differ between any two runs."""
    text = re.sub(r"0x[0-9a-f]+:", "PTR:", text)
    return re.sub(r"exp=\d+", lambda m: "exp=0" if m.group(0) == "exp=0" else "exp=N", text)


def test_table_commands_answer_as_haproxy():
    need_haproxy()
    servers = start_backends(["s1", "s2"])
    work = tempfile.mkdtemp(prefix="stick-rt-")
    h_sock, l_sock = os.path.join(work, "h.sock"), os.path.join(work, "l.sock")
    h_port, l_port, stats_port = free_port(), free_port(), free_port()
    haproxy = HaproxyProcess(f"""global
    stats socket {h_sock} mode 600 level admin
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:{h_port}
    stick-table type ip size 1k expire 10m store conn_cnt,http_req_rate(10s),http_err_cnt
    default_backend be
backend be
    stick-table type ip size 100 expire 30m
    stick on src
    server s1 {servers[0].address}
    server s2 {servers[1].address}
""").start(wait_ports=[h_port])
    config = {
        "stats": {"bind": f"127.0.0.1:{stats_port}", "socket": {"path": l_sock}},
        "frontends": {"fe": {
            "bind": f"127.0.0.1:{l_port}", "backend": "be",
            "stick_table": {"type": "ip", "size": "1k", "expire": "10m",
                            "store": ["conn_cnt", "http_req_rate(10s)", "http_err_cnt"]}}},
        "backends": {"be": {
            "stick_table": {"type": "ip", "size": 100, "expire": "30m"}, "stick_on": "src",
            "servers": [{"name": s.name, "address": s.address} for s in servers]}},
    }
    lbcore = LbcoreProcess(config, workdir=work).start(wait_ports=[l_port])
    try:
        wait_unix(l_sock)
        for port in (h_port, l_port):
            for source in ("127.0.0.2", "127.0.0.3"):
                with RawClient(port, source=source) as c:
                    c.request("GET", "/echo")
                    assert c.read_response().status == 200

        def both(command: str) -> tuple[str, str]:
            return normalise(cli(h_sock, command)), normalise(cli(l_sock, command))

        for command in (
            "show table",
            "show table be key 127.0.0.2",
            "set table fe key 10.0.0.1 data.http_req_rate 7 data.conn_cnt 3",
            "show table fe",
            "show table fe data.http_req_rate gt 5",
            "show table fe data.http_req_rate lt 5",
            "show table fe data.conn_cur gt 5",
            "show table fe data.bogus gt 5",
            "show table fe data.conn_cnt xx 5",
            "set table fe key 10.0.0.1 data.conn_cur 1",
            "set table fe key 10.0.0.1 data.nope 1",
            "set table fe key 10.0.0.1 data.conn_cnt x",
            "set table fe key not-an-ip data.conn_cnt 1",
            "set table fe key",
            "set table fe",
            "show table nosuch",
            "clear table fe key 10.0.0.1",
            "show table fe",
            "clear table be data.server_id eq 1",
            "show table",
            "clear table be",
            "show table be",
        ):
            h, l = both(command)
            if command.startswith("show table be") or command == "show table":
                # Which server each client got depends on each one's round robin.
                h, l = re.sub(r"server_(id|key)=\S+", "server", h), re.sub(r"server_(id|key)=\S+", "server", l)
            assert h == l, (command, h, l)
        with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/metrics?scope=sticktable") as resp:
            metrics = resp.read().decode()
        assert 'haproxy_sticktable_size{name="be",type="ip"} 100.0' in metrics
        assert 'haproxy_sticktable_used{name="fe",type="ip"} 0.0' in metrics
    finally:
        haproxy.stop()
        lbcore.stop()
        for s in servers:
            s.stop()
