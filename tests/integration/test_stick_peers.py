"""Peers: stick-table entries shared between nodes over HAProxy's peers
protocol - two lbcore nodes, and an lbcore node beside a haproxy 2.6 node
(a migration), each learning the other's entries on loopback."""

from __future__ import annotations

import os
import re
import tempfile
import time

from tests.haproxy import HaproxyProcess, need_haproxy
from tests.support import LbcoreProcess, free_port, socat, wait_unix

from .rawhttp import RawClient, start_backends


def cli(path: str, command: str) -> str:
    return socat(f"unix-connect:{path}", command + "\n")


def get_from(port: int, source: str) -> str:
    with RawClient(port, source=source) as c:
        c.request("GET", "/echo")
        resp = c.read_response()
        assert resp.status == 200
        return resp.header("X-Server")


def wait_for(predicate, timeout: float = 8.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return predicate()


def entry_server(table_dump: str, key: str):
    match = re.search(rf"key={re.escape(key)} .*?server_id=(\d+)", table_dump)
    return int(match.group(1)) if match else None


def lbcore_node(name: str, port: int, peer_ports: dict, servers, sock: str) -> LbcoreProcess:
    config = {
        "stats": {"socket": {"path": sock}},
        "peers": {"lbnodes": {"local": name, "nodes": [
            {"name": n, "address": f"127.0.0.1:{p}"} for n, p in peer_ports.items()]}},
        "frontends": {"fe": {"bind": f"127.0.0.1:{port}", "backend": "be"}},
        "backends": {"be": {
            "stick_table": {"type": "ip", "size": "1k", "expire": "30m", "peers": "lbnodes",
                            "store": ["http_req_cnt"]},
            "stick_on": "src",
            "servers": [{"name": s.name, "address": s.address} for s in servers]}},
    }
    return LbcoreProcess(config, workdir=os.path.dirname(sock))


def test_two_lbcore_nodes_share_stickiness():
    servers = start_backends(["s1", "s2", "s3"])
    peer_ports = {"lb1": free_port(), "lb2": free_port()}
    ports = {"lb1": free_port(), "lb2": free_port()}
    socks = {n: os.path.join(tempfile.mkdtemp(prefix=f"peers-{n}-"), "admin.sock") for n in ports}
    nodes = {n: lbcore_node(n, ports[n], peer_ports, servers, socks[n]) for n in ports}
    try:
        for n, node in nodes.items():
            node.start(wait_ports=[ports[n]])
            wait_unix(socks[n])
        clients = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        first = {c: get_from(ports["lb1"], c) for c in clients}
        # lb2 learns lb1's entries and sends each client where lb1 did (a VIP
        # failover keeps Galera's writer and every stuck session).
        assert wait_for(lambda: all(entry_server(cli(socks["lb2"], "show table be"), c) for c in clients)), \
            cli(socks["lb2"], "show table be")
        assert {c: get_from(ports["lb2"], c) for c in clients} == first
        # And back: a client first seen by lb2 is stuck the same way on lb1.
        late = get_from(ports["lb2"], "127.0.0.9")
        assert wait_for(lambda: entry_server(cli(socks["lb1"], "show table be"), "127.0.0.9"))
        assert get_from(ports["lb1"], "127.0.0.9") == late
        # A node that restarts asks for a resync and learns everything again.
        nodes["lb2"].stop()
        nodes["lb2"] = lbcore_node("lb2", ports["lb2"], peer_ports, servers, socks["lb2"]).start(
            wait_ports=[ports["lb2"]])
        wait_unix(socks["lb2"])
        assert wait_for(lambda: all(entry_server(cli(socks["lb2"], "show table be"), c)
                                    for c in clients + ["127.0.0.9"]))
    finally:
        for node in nodes.values():
            node.stop()
        for s in servers:
            s.stop()


def test_lbcore_and_haproxy_learn_each_others_entries():
    need_haproxy()
    servers = start_backends(["s1", "s2"])
    peer_ports = {"hap": free_port(), "lb": free_port()}
    h_port, l_port = free_port(), free_port()
    work = tempfile.mkdtemp(prefix="peers-mixed-")
    h_sock, l_sock = os.path.join(work, "h.sock"), os.path.join(work, "l.sock")
    lines = "\n".join(f"    server {s.name} {s.address}" for s in servers)
    haproxy = HaproxyProcess(f"""global
    localpeer hap
    stats socket {h_sock} mode 600 level admin
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
peers lbnodes
    peer hap 127.0.0.1:{peer_ports['hap']}
    peer lb 127.0.0.1:{peer_ports['lb']}
frontend fe
    bind 127.0.0.1:{h_port}
    default_backend be
backend be
    stick-table type ip size 1k expire 30m peers lbnodes store http_req_cnt
    stick on src
{lines}
""")
    lbcore = lbcore_node("lb", l_port, peer_ports, servers, l_sock)
    try:
        haproxy.start(wait_ports=[h_port])
        lbcore.start(wait_ports=[l_port])
        wait_unix(l_sock)
        via_haproxy = get_from(h_port, "127.0.0.2")
        via_lbcore = get_from(l_port, "127.0.0.3")
        learnt = wait_for(lambda: entry_server(cli(l_sock, "show table be"), "127.0.0.2"))
        assert learnt, (cli(l_sock, "show table be"), haproxy.logs())
        assert wait_for(lambda: entry_server(cli(h_sock, "show table be"), "127.0.0.3")), \
            (cli(h_sock, "show table be"), lbcore.logs())
        # Each sends the other's client to the server the other chose.
        assert get_from(l_port, "127.0.0.2") == via_haproxy
        assert get_from(h_port, "127.0.0.3") == via_lbcore
        assert "server_key=" + via_lbcore in cli(h_sock, "show table be key 127.0.0.3")
    finally:
        haproxy.stop()
        lbcore.stop()
        for s in servers:
            s.stop()
