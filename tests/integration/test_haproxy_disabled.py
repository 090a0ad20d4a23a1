"""`disabled` beside haproxy 2.6: a disabled server starts in maintenance
(MAINT, no traffic) until `enable server` on the runtime socket or the stats
page's "ready" action; a disabled listen is not started at all."""

from __future__ import annotations

import base64
import csv
import http.client
import io
import json
import socket
import subprocess

from tests.haproxy import need_haproxy, start_on_file, stop_on_file
from tests.integration.test_haproxy_cfg import lbcore_cmd, lbcore_env
from tests.support import free_port, socat, wait_port, wait_until

AUTH = ("ops", "pa55")

CONFIG = """\
global
    stats socket {dir}/{name}.sock level admin
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
listen stats
    bind {vip}:{stats}
    stats enable
    stats uri /
    stats auth ops:pa55
    stats admin if TRUE
frontend web
    bind {vip}:{web}
    default_backend pool
backend pool
    server s1 {s1} check inter 200
    server s2 {s2} check inter 200 disabled
listen off
    disabled
    bind {vip}:{off}
    server s1 {s1}
"""


def served_by(vip: str, port: int, count: int = 6) -> set:
    names = set()
    for _ in range(count):
        conn = http.client.HTTPConnection(vip, port, timeout=5)
        conn.request("GET", "/echo")
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        names.add(json.loads(body)["server"] if resp.status == 200 else resp.status)
    return names


def status(vip: str, port: int, server: str) -> str:
    conn = http.client.HTTPConnection(vip, port, timeout=5)
    auth = base64.b64encode(":".join(AUTH).encode()).decode()
    conn.request("GET", "/;csv", headers={"Authorization": f"Basic {auth}"})
    text = conn.getresponse().read().decode()
    conn.close()
    for row in csv.DictReader(io.StringIO(text.lstrip("# "))):
        if row["pxname"] == "pool" and row["svname"] == server:
            return row["status"]
    raise AssertionError(f"no row for pool/{server}")


def refused(vip: str, port: int) -> bool:
    try:
        socket.create_connection((vip, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_disabled_server_and_listen_behave_as_haproxy(start_backend, tmp_path):
    need_haproxy()
    s1, s2 = start_backend("s1"), start_backend("s2")
    running = []
    try:
        for name, vip in (("haproxy", "127.23.0.1"), ("lbcore", "127.23.0.2")):
            ports = {"stats": free_port(), "web": free_port(), "off": free_port()}
            path = tmp_path / f"{name}.cfg"
            path.write_text(CONFIG.format(dir=tmp_path, name=name, vip=vip, s1=s1.address, s2=s2.address, **ports))
            proc, log = start_on_file(name, str(path), str(tmp_path), lbcore_env())
            running.append((proc, log))
            for key in ("stats", "web"):
                wait_port(ports[key], host=vip, proc=proc)
            sock = str(tmp_path / f"{name}.sock")
            assert status(vip, ports["stats"], "s2") == "MAINT", name
            assert served_by(vip, ports["web"]) == {"s1"}, name
            assert refused(vip, ports["off"]), name
            assert socat(f"unix-connect:{sock}", "enable server pool/s2\n").strip() == "", name
            wait_until(lambda: status(vip, ports["stats"], "s2") == "UP", 5, f"{name}: s2 UP")
            assert served_by(vip, ports["web"]) == {"s1", "s2"}, name
    finally:
        for proc, log in running:
            stop_on_file(proc, log)


def test_lb_yaml_disabled_server_is_enabled_from_the_stats_page(start_backend, start_lbcore):
    s1, s2 = start_backend("s1"), start_backend("s2")
    port, stats_port = free_port(), free_port()
    start_lbcore({
        "stats": {"bind": f"127.0.0.1:{stats_port}", "admin": True,
                  "auth": {"user": AUTH[0], "password": AUTH[1]}},
        "frontends": {"web": {"bind": f"127.0.0.1:{port}", "backend": "pool"}},
        "backends": {"pool": {"health": {"type": "tcp", "interval": "200ms"}, "servers": [
            {"name": "s1", "address": s1.address},
            {"name": "s2", "address": s2.address, "disabled": True}]}},
    }, wait_ports=[port, stats_port])
    assert status("127.0.0.1", stats_port, "s2") == "MAINT"
    assert served_by("127.0.0.1", port) == {"s1"}
    conn = http.client.HTTPConnection("127.0.0.1", stats_port, timeout=5)
    auth = base64.b64encode(":".join(AUTH).encode()).decode()
    conn.request("POST", "/", body="b=pool&action=ready&s=s2",
                 headers={"Authorization": f"Basic {auth}", "Content-Type": "application/x-www-form-urlencoded"})
    assert conn.getresponse().status == 303
    conn.close()
    wait_until(lambda: status("127.0.0.1", stats_port, "s2") == "UP", 5, "s2 UP")
    assert served_by("127.0.0.1", port) == {"s1", "s2"}


def test_a_disabled_backend_is_refused_with_its_line(tmp_path):
    path = tmp_path / "h.cfg"
    path.write_text(f"defaults\n    mode http\nbackend b\n    disabled\n    server s 127.0.0.1:1\n"
                    f"frontend f\n    bind 127.0.0.1:{free_port()}\n    default_backend b\n")
    result = subprocess.run(lbcore_cmd("-c", "-f", str(path)), capture_output=True, text=True,
                            env=lbcore_env(), timeout=30)
    assert result.returncode == 1
    assert f"{path}:4: disabled: a disabled backend is not supported" in result.stdout + result.stderr
