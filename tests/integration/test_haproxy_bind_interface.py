"""`bind ADDR interface IF` (openstack-ansible's haproxy_bind_*_vip_interface)
beside haproxy 2.6: bound to `lo` both serve on a loopback address; with an
interface that does not exist both warn and listen on every interface."""

from __future__ import annotations

import http.client
import json

import pytest

from tests.haproxy import need_haproxy, start_on_file, stop_on_file
from tests.integration.test_haproxy_cfg import lbcore_env
from tests.support import free_port, wait_port

CONFIG = """\
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend keystone_service-front-1
    bind {vip}:{port} interface {interface}
    option forwardfor except 127.0.0.0/8
    default_backend keystone_service-back
backend keystone_service-back
    server infra1 {s1}
"""


@pytest.mark.parametrize("interface", ["lo", "nosuch0"])
def test_bind_interface_as_haproxy(start_backend, tmp_path, interface):
    need_haproxy()
    s1 = start_backend("infra1")
    outcome = {}
    for name, vip in (("haproxy", "127.34.0.1"), ("lbcore", "127.34.0.2")):
        port = free_port()
        path = tmp_path / f"{name}.cfg"
        path.write_text(CONFIG.format(vip=vip, port=port, interface=interface, s1=s1.address))
        proc, log = start_on_file(name, str(path), str(tmp_path), lbcore_env())
        try:
            try:
                wait_port(port, host=vip, proc=proc, timeout=20)
            except RuntimeError:  # exited before listening
                outcome[name] = ("refused to start", proc.returncode != 0)
                continue
            conn = http.client.HTTPConnection(vip, port, timeout=5)
            conn.request("GET", "/echo")
            resp = conn.getresponse()
            outcome[name] = (resp.status, json.loads(resp.read())["server"])
            conn.close()
        finally:
            stop_on_file(proc, log)
    assert outcome == {"haproxy": (200, "infra1"), "lbcore": (200, "infra1")}, outcome
    if interface != "lo":
        for name in ("haproxy", "lbcore"):
            assert "nosuch0" in (tmp_path / f"{name}.log").read_text(), name
