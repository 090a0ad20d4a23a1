"""tcp mode rules against haproxy 2.6: tcp_request accept/reject by source
and use_backend per connection, the same connections through both."""

from __future__ import annotations

import socket

import pytest

from tests.haproxy import HaproxyProcess, need_haproxy
from tests.integration.rawhttp import no_crash_in_lbcore  # noqa: F401
from tests.support import BackendProcess, LbcoreProcess, free_port


@pytest.fixture(scope="module")
def greeters():
    env = {"TCP_ECHO_GREETING": "{name}\n"}
    procs = [BackendProcess(name, tcp_echo=True, env=env).start() for name in ("main", "alt")]
    yield {p.name: p for p in procs}
    for p in procs:
        p.stop()


def lb_config(port: int, greeters: dict) -> dict:
    return {
        "global": {"log": {"format": "none"}},
        "frontends": {"db": {
            "bind": f"127.0.0.1:{port}", "mode": "tcp", "backend": "main",
            "acls": {"banned": "src 127.0.0.99", "replica_clients": "src 127.0.0.98 127.0.0.97"},
            "tcp_request": [{"accept": True, "if": "{ src 127.0.0.97 }"},
                            {"reject": True, "if": "banned"}],
            "use_backend": [{"backend": "alt", "if": "replica_clients"}],
        }},
        "backends": {
            "main": {"mode": "tcp", "servers": [{"name": "m", "address": greeters["main"].address}]},
            "alt": {"mode": "tcp", "servers": [{"name": "a", "address": greeters["alt"].address}]},
        },
    }


def haproxy_cfg(port: int, greeters: dict) -> str:
    return f"""defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend db
    bind 127.0.0.1:{port}
    acl banned src 127.0.0.99
    acl replica_clients src 127.0.0.98 127.0.0.97
    tcp-request connection accept if {{ src 127.0.0.97 }}
    tcp-request connection reject if banned
    use_backend alt if replica_clients
    default_backend main
backend main
    server m {greeters["main"].address}
backend alt
    server a {greeters["alt"].address}
"""


@pytest.fixture(scope="module")
def proxies(greeters):
    need_haproxy()
    lb_port, hp_port = free_port(), free_port()
    lb = LbcoreProcess(lb_config(lb_port, greeters)).start()
    hp = HaproxyProcess(haproxy_cfg(hp_port, greeters)).start(wait_ports=[hp_port])
    yield {"lbcore": lb_port, "haproxy": hp_port}
    lb.stop()
    hp.stop()


def greeting(port: int, source: str) -> str:
    """The backend's name as it greets, or "refused" when the proxy closes."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3, source_address=(source, 0)) as sock:
            sock.sendall(b"ping\n")
            data = b""
            while b"ping\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return "refused"
    return data.split(b"\n", 1)[0].decode() if data else "refused"


@pytest.mark.parametrize("source, expected", [
    ("127.0.0.1", "main"), ("127.0.0.98", "alt"), ("127.0.0.97", "alt"), ("127.0.0.99", "refused"),
])
def test_tcp_rules_as_haproxy(proxies, source, expected):
    assert greeting(proxies["haproxy"], source) == expected
    assert greeting(proxies["lbcore"], source) == expected
