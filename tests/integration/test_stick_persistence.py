"""Persistence through real processes, each case run on lbcore and on
haproxy 2.6 with the equivalent haproxy.cfg, side by side on the same
backends: stick on src, the Galera pattern (stick on dst, all backups,
shutdown_sessions, health on another port) and cookie persistence."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.haproxy import HaproxyProcess, need_haproxy
from tests.support import BackendProcess, free_port

from .rawhttp import RawClient, echo_headers, seen, start_backends, start_watched

INTER_MS = 200
HEALTH = {"type": "http", "path": "/healthcheck", "interval": f"{INTER_MS}ms", "timeout": "500ms",
          "fall": 2, "rise": 2}
HAPROXY_HEALTH = f"check inter {INTER_MS} fall 2 rise 2"
MOVE_WITHIN = 3.0  # seconds for a failed health check to take a server out of both proxies


def haproxy_cfg(port: int, mode: str, backend_lines: str, frontend_lines: str = "") -> str:
    return f"""global
    maxconn 1000
defaults
    mode {mode}
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch
frontend fe
    bind 127.0.0.1:{port}
{frontend_lines}
    default_backend be
backend be
{backend_lines}
"""


class Both:
    """lbcore and haproxy started on the same backends, each on its port."""

    def __init__(self, lb_config: dict, ha_cfg_for_port, lb_port: int, ha_port: int):
        need_haproxy()
        self.ports = {"lbcore": lb_port, "haproxy": ha_port}
        self.lb = start_watched(lb_config, wait_ports=[lb_port])
        self.ha = HaproxyProcess(ha_cfg_for_port(ha_port)).start(wait_ports=[ha_port])

    def stop(self) -> None:
        self.lb.stop()
        self.ha.stop()


def http_get(port: int, path: str = "/echo", source: str = "127.0.0.1", headers=()) -> object:
    with RawClient(port, source=source) as c:
        c.request("GET", path, headers=list(headers))
        return c.read_response()


def wait_until(predicate, timeout: float = MOVE_WITHIN, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def letters(names: list[str]) -> str:
    """Servers renamed a, b, c in order of first appearance, so two proxies
    whose round robin started at different servers compare equal."""
    order: dict[str, str] = {}
    return "".join(order.setdefault(n, "abcdefgh"[len(order)]) for n in names)


# -- stick on src -------------------------------------------------------------

@pytest.fixture
def pool3():
    procs = start_backends(["s1", "s2", "s3"])
    yield procs
    for b in procs:
        b.stop()


def test_stick_on_src_keeps_each_client_on_its_server_through_a_server_loss(pool3):
    lb_port, ha_port = free_port(), free_port()
    config = {
        "frontends": {"fe": {"bind": f"127.0.0.1:{lb_port}", "backend": "be"}},
        "backends": {"be": {
            "balance": "roundrobin", "health": HEALTH,
            "stick_table": {"type": "ip", "size": "1k", "expire": "30m"},
            "stick_on": "src",
            "servers": [{"name": b.name, "address": b.address} for b in pool3],
        }},
    }
    servers = "\n".join(f"    server {b.name} {b.address} {HAPROXY_HEALTH}" for b in pool3)
    both = Both(config, lambda port: haproxy_cfg(port, "http", f"""    balance roundrobin
    option httpchk GET /healthcheck
    stick-table type ip size 1k expire 30m
    stick on src
{servers}"""), lb_port, ha_port)
    clients = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
    try:
        time.sleep(3 * INTER_MS / 1000)
        seen_by = {impl: {c: [] for c in clients} for impl in both.ports}

        def round_of_requests(n=3):
            for impl, port in both.ports.items():
                for client in clients:
                    for _ in range(n):
                        resp = http_get(port, source=client)
                        assert resp.status == 200, (impl, resp.status)
                        seen_by[impl][client].append(resp.header("X-Server"))

        round_of_requests()
        for impl in both.ports:
            for client in clients:
                assert len(set(seen_by[impl][client])) == 1, (impl, client, seen_by[impl][client])
            # Round robin placed the four clients over the three servers.
            assert len({v[0] for v in seen_by[impl].values()}) == 3, (impl, seen_by[impl])
        # s1 fails its checks: on both proxies its clients move, once, and
        # stay where they went, even after s1 is back; the others never move.
        victim = pool3[0]
        victim.set_health(503)
        assert wait_until(lambda: all(
            http_get(port, source=client).header("X-Server") != victim.name
            for port in both.ports.values() for client in clients))
        round_of_requests()
        victim.set_health(None)
        time.sleep(4 * INTER_MS / 1000)
        round_of_requests()
        for impl in both.ports:
            for client in clients:
                history = seen_by[impl][client]
                expected = "aaabbbbbb" if history[0] == victim.name else "a" * 9
                assert letters(history) == expected, (impl, client, history)
    finally:
        for b in pool3:
            b.set_health(None)
        both.stop()


# -- the Galera pattern -------------------------------------------------------

class GaleraNode:
    """A tcp echo that greets with its name (the "database") and an http
    health endpoint on another port of the same address (clustercheck on 9200)."""

    def __init__(self, name: str, host: str, port: int, health_port: int):
        self.db = BackendProcess(name, port=port, tcp_echo=True, host=host,
                                 env={"TCP_ECHO_GREETING": "{name}\n"})
        self.health = BackendProcess(name, port=health_port, host=host)

    def start(self) -> "GaleraNode":
        self.db.start()
        self.health.start()
        return self

    def stop(self) -> None:
        self.db.stop()
        self.health.stop()


class DbClient:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.file = self.sock.makefile("rb")
        self.server = self.file.readline().decode().strip()

    def alive(self) -> bool:
        """Still connected: an echo comes back (a closed session reads EOF)."""
        try:
            self.sock.sendall(b"ping\n")
            return self.file.readline() == b"ping\n"
        except OSError:
            return False

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_galera_one_writer_and_clients_move_together_when_it_fails():
    port, health_port = free_port(), free_port()
    nodes = [GaleraNode(f"db{i}", f"127.0.0.{10 + i}", port, health_port).start() for i in (1, 2, 3)]
    lb_port, ha_port = free_port(), free_port()
    config = {
        "frontends": {"galera": {"bind": f"127.0.0.1:{lb_port}", "mode": "tcp", "backend": "be"}},
        "backends": {"be": {
            "mode": "tcp",
            "health": dict(HEALTH, port=health_port),
            "on_marked_down": "shutdown_sessions",
            "stick_table": {"type": "ip", "size": 1000},
            "stick_on": "dst",
            "servers": [{"name": n.db.name, "address": n.db.address, "backup": True} for n in nodes],
        }},
    }
    servers = "\n".join(
        f"    server {n.db.name} {n.db.address} backup {HAPROXY_HEALTH} port {health_port} "
        "on-marked-down shutdown-sessions" for n in nodes)
    both = Both(config, lambda p: haproxy_cfg(p, "tcp", f"""    option httpchk GET /healthcheck
    stick-table type ip size 1000
    stick on dst
{servers}"""), lb_port, ha_port)
    try:
        time.sleep(3 * INTER_MS / 1000)
        outcome = {}
        for impl, p in both.ports.items():
            clients = [DbClient(p) for _ in range(4)]
            first = {c.server for c in clients}
            # The writer fails its clustercheck: every session is closed and
            # every client reconnects to one same new writer.
            writer = clients[0].server
            node = next(n for n in nodes if n.db.name == writer)
            node.health.set_health(503)
            assert wait_until(lambda: not any(c.alive() for c in clients)), impl
            for c in clients:
                c.close()
            clients = [DbClient(p) for _ in range(4)]
            second = {c.server for c in clients}
            # The old writer comes back: nobody goes back to it.
            node.health.set_health(None)
            time.sleep(5 * INTER_MS / 1000)
            for c in clients:
                c.close()
            clients = [DbClient(p) for _ in range(4)]
            third = {c.server for c in clients}
            for c in clients:
                c.close()
            outcome[impl] = (first, second, third)
        for impl, (first, second, third) in outcome.items():
            assert first == {"db1"}, (impl, outcome)  # the first backup only
            assert second == {"db2"}, (impl, outcome)
            assert third == {"db2"}, (impl, outcome)
    finally:
        both.stop()
        for n in nodes:
            n.stop()


# -- cookies ------------------------------------------------------------------

def cookie_pair(mode_yaml: dict, mode_cfg: str, pool):
    lb_port, ha_port = free_port(), free_port()
    config = {
        "frontends": {"fe": {"bind": f"127.0.0.1:{lb_port}", "backend": "be"}},
        "backends": {"be": {
            "balance": "roundrobin", "health": HEALTH, "cookie": mode_yaml,
            "servers": [{"name": b.name, "address": b.address, "cookie": b.name} for b in pool],
        }},
    }
    servers = "\n".join(f"    server {b.name} {b.address} cookie {b.name} {HAPROXY_HEALTH}" for b in pool)
    return Both(config, lambda p: haproxy_cfg(p, "http", f"""    balance roundrobin
    option httpchk GET /healthcheck
    {mode_cfg}
{servers}"""), lb_port, ha_port)


def test_cookie_insert_indirect_nocache_as_haproxy(pool3):
    pool = pool3[:2]
    both = cookie_pair({"name": "SERVERID", "mode": "insert", "indirect": True, "nocache": True},
                       "cookie SERVERID insert indirect nocache", pool)
    try:
        time.sleep(3 * INTER_MS / 1000)
        result = {}
        for impl, port in both.ports.items():
            first = http_get(port)
            server = first.header("X-Server")
            other = next(b.name for b in pool if b.name != server)
            with_cookie = [http_get(port, headers=[("Cookie", f"a=1; SERVERID={server}; b=2")]) for _ in range(4)]
            alone = http_get(port, headers=[("Cookie", f"SERVERID={server}")])
            unknown = http_get(port, headers=[("Cookie", "SERVERID=nosuch")])
            post = None
            with RawClient(port) as c:
                c.request("POST", "/echo", headers=[("Content-Length", "2")], body=b"hi")
                post = c.read_response()
            fresh = http_get(port, "/headers?Last-Modified=Sat,%2001%20Jan%202000%2000:00:00%20GMT")
            private = http_get(port, "/headers?Last-Modified=x&Cache-Control=private")
            result[impl] = {
                "first": (first.all("Set-Cookie"), first.all("Cache-Control")),
                "fresh_cache": fresh.all("Cache-Control"),
                "private_cache": private.all("Cache-Control"),
                "sticky": {r.header("X-Server") == server for r in with_cookie},
                "sticky_set_cookie": [r.all("Set-Cookie") for r in with_cookie[:1]],
                "server_saw": seen(echo_headers(with_cookie[0].body), "Cookie"),
                "server_saw_alone": seen(echo_headers(alone.body), "Cookie"),
                "unknown": unknown.all("Set-Cookie") == [f"SERVERID={unknown.header('X-Server')}; path=/"],
                "post_cache": post.all("Cache-Control"),
            }
            result[impl]["first"] = (
                [v.replace(server, "X") for v in result[impl]["first"][0]], result[impl]["first"][1])
        assert result["lbcore"] == result["haproxy"], result
        assert result["lbcore"]["first"] == (["SERVERID=X; path=/"], [])
        # nocache marks only what a cache would have kept: a response with a validator.
        assert result["lbcore"]["fresh_cache"] == ["private"]
        assert result["lbcore"]["sticky"] == {True}
        assert result["lbcore"]["server_saw"] == ["a=1; b=2"]
        assert result["lbcore"]["server_saw_alone"] == []
    finally:
        both.stop()


def test_cookie_naming_a_down_server_is_rebalanced_and_replaced(pool3):
    pool = pool3[:2]
    both = cookie_pair({"name": "SERVERID", "mode": "insert", "indirect": True, "nocache": True},
                       "cookie SERVERID insert indirect nocache", pool)
    try:
        time.sleep(3 * INTER_MS / 1000)
        pool[0].set_health(503)
        result = {}
        for impl, port in both.ports.items():
            resp = wait_until(lambda: (lambda r: r if r.header("X-Server") == pool[1].name else None)(
                http_get(port, headers=[("Cookie", f"SERVERID={pool[0].name}")])))
            assert resp, impl
            result[impl] = resp.all("Set-Cookie")
        assert result["lbcore"] == result["haproxy"] == [f"SERVERID={pool[1].name}; path=/"], result
    finally:
        pool[0].set_health(None)
        both.stop()


def test_cookie_rewrite_and_prefix_as_haproxy(pool3):
    pool = pool3[:1]
    for mode in ("rewrite", "prefix"):
        name = "SERVERID" if mode == "rewrite" else "JSESSIONID"
        both = cookie_pair({"name": name, "mode": mode}, f"cookie {name} {mode}", pool)
        try:
            result = {}
            for impl, port in both.ports.items():
                set_by_app = http_get(port, f"/headers?Set-Cookie={name}%3Dabc123%3B%20Path%3D%2Fapp")
                back = http_get(port, headers=[("Cookie", f"{name}={pool[0].name}~abc123; x=1")])
                result[impl] = (set_by_app.all("Set-Cookie"), seen(echo_headers(back.body), "Cookie"),
                                back.all("Set-Cookie"))
            assert result["lbcore"] == result["haproxy"], (mode, result)
            if mode == "rewrite":
                assert result["lbcore"][0] == [f"SERVERID={pool[0].name}; Path=/app"]
            else:
                assert result["lbcore"][0] == [f"JSESSIONID={pool[0].name}~abc123; Path=/app"]
                assert result["lbcore"][1] == ["JSESSIONID=abc123; x=1"]
        finally:
            both.stop()


def test_cookie_insert_preserve_leaves_the_servers_own_cookie(pool3):
    pool = pool3[:1]
    both = cookie_pair({"name": "SRV", "mode": "insert", "preserve": True, "httponly": True, "secure": True},
                       "cookie SRV insert preserve httponly secure", pool)
    try:
        result = {}
        for impl, port in both.ports.items():
            own = http_get(port, "/headers?Set-Cookie=SRV%3Dmine")
            plain = http_get(port, "/echo")
            result[impl] = (own.all("Set-Cookie"), plain.all("Set-Cookie"))
        assert result["lbcore"] == result["haproxy"], result
        assert result["lbcore"] == (["SRV=mine"], [f"SRV={pool[0].name}; path=/; HttpOnly; Secure"])
    finally:
        both.stop()


def test_passive_cookie_is_only_read_as_haproxy(pool3):
    pool = pool3[:2]
    both = cookie_pair({"name": "APP", "mode": "passive"}, "cookie APP", pool)
    try:
        result = {}
        for impl, port in both.ports.items():
            target = pool[1].name
            served = {http_get(port, headers=[("Cookie", f"APP={target}")]).header("X-Server") for _ in range(4)}
            own = http_get(port, f"/headers?Set-Cookie=APP%3D{target}")
            plain = http_get(port)
            result[impl] = (served, own.all("Set-Cookie"), plain.all("Set-Cookie"))
        assert result["lbcore"] == result["haproxy"] == ({pool[1].name}, [f"APP={pool[1].name}"], []), result
    finally:
        both.stop()


def test_galera_writer_killed_clients_move_together():
    """The writer node dies (database and clustercheck): once it is out,
    every client of both proxies reconnects to one same new writer. lbcore
    moves them at once (the refused connect takes the server out and the
    retry is stuck elsewhere); haproxy once its checks mark it DOWN."""
    port, health_port = free_port(), free_port()
    nodes = [GaleraNode(f"db{i}", f"127.0.0.{20 + i}", port, health_port).start() for i in (1, 2, 3)]
    lb_port, ha_port = free_port(), free_port()
    config = {
        "frontends": {"galera": {"bind": f"127.0.0.1:{lb_port}", "mode": "tcp", "backend": "be"}},
        "backends": {"be": {
            "mode": "tcp", "retries": 3, "redispatch": True,
            "health": dict(HEALTH, port=health_port),
            "on_marked_down": "shutdown_sessions",
            "stick_table": {"type": "ip", "size": 1000},
            "stick_on": "dst",
            "servers": [{"name": n.db.name, "address": n.db.address, "backup": True} for n in nodes],
        }},
    }
    servers = "\n".join(
        f"    server {n.db.name} {n.db.address} backup {HAPROXY_HEALTH} port {health_port} "
        "on-marked-down shutdown-sessions" for n in nodes)
    both = Both(config, lambda p: haproxy_cfg(p, "tcp", f"""    option httpchk GET /healthcheck
    stick-table type ip size 1000
    stick on dst
{servers}"""), lb_port, ha_port)
    try:
        time.sleep(3 * INTER_MS / 1000)
        held = {impl: [DbClient(p) for _ in range(3)] for impl, p in both.ports.items()}
        before = {impl: {c.server for c in clients} for impl, clients in held.items()}
        nodes[0].stop()
        # The held sessions of the dead writer end on both proxies.
        for impl, clients in held.items():
            assert wait_until(lambda: not any(c.alive() for c in clients)), impl
            for c in clients:
                c.close()
        lbcore_at_once = DbClient(both.ports["lbcore"]).server

        def greeted(p):
            c = DbClient(p)
            c.close()
            return c.server

        after = {}
        for impl, p in both.ports.items():
            assert wait_until(lambda: greeted(p), timeout=MOVE_WITHIN + 3), impl
            after[impl] = {greeted(p) for _ in range(4)}
        assert before == {"lbcore": {"db1"}, "haproxy": {"db1"}}, before
        assert after == {"lbcore": {"db2"}, "haproxy": {"db2"}}, after
        assert lbcore_at_once == "db2"
    finally:
        both.stop()
        for n in nodes:
            n.stop()


def test_stick_on_a_request_header_as_haproxy(pool3):
    lb_port, ha_port = free_port(), free_port()
    config = {
        "frontends": {"fe": {"bind": f"127.0.0.1:{lb_port}", "backend": "be"}},
        "backends": {"be": {
            "balance": "roundrobin",
            "stick_table": {"type": "string", "len": 32, "size": 100},
            "stick_on": "req.hdr(x-user),lower",
            "servers": [{"name": b.name, "address": b.address} for b in pool3],
        }},
    }
    servers = "\n".join(f"    server {b.name} {b.address}" for b in pool3)
    both = Both(config, lambda port: haproxy_cfg(port, "http", f"""    balance roundrobin
    stick-table type string len 32 size 100
    stick on req.hdr(x-user),lower
{servers}"""), lb_port, ha_port)
    try:
        result = {}
        for impl, port in both.ports.items():
            users = ["alice", "bob", "ALICE", "carol", "bob", "alice", "Carol"]
            got = [http_get(port, headers=[("X-User", u)]).header("X-Server") for u in users]
            anonymous = {http_get(port).header("X-Server") for _ in range(6)}
            result[impl] = (letters(got), len(anonymous))
        assert result["lbcore"] == result["haproxy"], result
        # alice (any case) one server, bob another, carol a third; no header: balanced.
        assert result["lbcore"] == ("abacbac", 3)
    finally:
        both.stop()
