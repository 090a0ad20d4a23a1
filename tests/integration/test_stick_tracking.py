"""Rate limits with stick counters, side by side with haproxy 2.6 on the
equivalent haproxy.cfg: track_sc0 src in http_request, deny 429 on
sc_http_req_rate and on sc_http_err_rate (openstack-ansible's rule),
the counters as `show table` shows them."""

from __future__ import annotations

import os
import re
import tempfile

from tests.haproxy import HaproxyProcess, need_haproxy
from tests.support import LbcoreProcess, free_port, socat, wait_unix

from .rawhttp import RawClient, start_backends


def run_pair(lb_frontend: dict, ha_frontend_lines: str, scenario):
    need_haproxy()
    servers = start_backends(["s1"])
    work = tempfile.mkdtemp(prefix="stick-track-")
    h_sock, l_sock = os.path.join(work, "h.sock"), os.path.join(work, "l.sock")
    h_port, l_port = free_port(), free_port()
    haproxy = HaproxyProcess(f"""global
    stats socket {h_sock} mode 600 level admin
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:{h_port}
{ha_frontend_lines}
    default_backend be
backend be
    server s1 {servers[0].address}
""")
    frontend = {"bind": f"127.0.0.1:{l_port}", "backend": "be"}
    frontend.update(lb_frontend)
    lbcore = LbcoreProcess({
        "stats": {"socket": {"path": l_sock}},
        "frontends": {"fe": frontend},
        "backends": {"be": {"servers": [{"name": "s1", "address": servers[0].address}]}},
    }, workdir=work)
    try:
        haproxy.start(wait_ports=[h_port])
        lbcore.start(wait_ports=[l_port])
        wait_unix(l_sock)
        return {"haproxy": scenario(h_port, h_sock), "lbcore": scenario(l_port, l_sock)}
    finally:
        haproxy.stop()
        lbcore.stop()
        servers[0].stop()


def statuses(port: int, path: str, n: int, source: str) -> list[int]:
    out = []
    with RawClient(port, source=source) as c:  # one keep-alive connection
        for _ in range(n):
            c.request("GET", path)
            out.append(c.read_response().status)
    return out


def table_line(sock: str, key: str) -> str:
    text = socat(f"unix-connect:{sock}", f"show table fe key {key}\n")
    line = next((x for x in text.splitlines() if f"key={key} " in x), "")
    return re.sub(r"^0x[0-9a-f]+: ", "", re.sub(r"exp=\d+", "exp=N", line))


def test_the_eleventh_request_sees_eleven():
    result = run_pair(
        {"stick_table": {"type": "ip", "size": "100k", "expire": "30s",
                         "store": ["http_req_rate(10s)", "http_req_cnt"]},
         "http_request": [{"track_sc0": "src"},
                          {"deny": 429, "if": "{ sc_http_req_rate(0) gt 10 }"}]},
        """    stick-table type ip size 100k expire 30s store http_req_rate(10s),http_req_cnt
    http-request track-sc0 src
    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 10 }""",
        lambda port, sock: (statuses(port, "/echo", 12, "127.0.0.2"), statuses(port, "/echo", 2, "127.0.0.3"),
                            table_line(sock, "127.0.0.2")))
    assert result["lbcore"] == result["haproxy"], result
    assert result["lbcore"][0] == [200] * 10 + [429, 429]
    assert result["lbcore"][1] == [200, 200]


def test_error_rate_limit_as_openstack_ansible_uses_it():
    result = run_pair(
        {"stick_table": {"type": "ip", "size": "256k", "expire": "10s",
                         "store": ["http_err_rate(10s)", "http_err_cnt", "conn_cur"]},
         "http_request": [{"track_sc0": "src"},
                          {"deny": 429, "if": "{ sc_http_err_rate(0) gt 3 }"}]},
        """    stick-table type ip size 256k expire 10s store http_err_rate(10s),http_err_cnt,conn_cur
    http-request track-sc0 src
    http-request deny deny_status 429 if { sc_http_err_rate(0) gt 3 }""",
        lambda port, sock: (statuses(port, "/status/404", 6, "127.0.0.4"), statuses(port, "/echo", 1, "127.0.0.4"),
                            table_line(sock, "127.0.0.4")))
    assert result["lbcore"] == result["haproxy"], result
    assert result["lbcore"][0] == [404, 404, 404, 404, 429, 429]
