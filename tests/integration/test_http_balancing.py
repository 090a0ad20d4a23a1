"""http mode balances every request, not every connection: keep-alive
clients spread their requests over the pool according to the algorithm."""

from __future__ import annotations

import collections
import threading
import time

from tests.support import free_port, http_config

from .rawhttp import KeepAliveClient, backends3, no_crash_in_lbcore, start_backends, start_lbcore  # noqa: F401


def start_pool(backends, start_lbcore, n=3, weights=None, server_extra=None, **overrides):
    backends = backends[:n]
    port = free_port()
    config = http_config([b.address for b in backends], port, **overrides)
    for i, server in enumerate(config["backends"]["pool"]["servers"]):
        if weights is not None:
            server["weight"] = weights[i]
        if server_extra:
            server.update(server_extra[i] if isinstance(server_extra, list) else server_extra)
    lb = start_lbcore(config)
    return lb, port, backends


def test_roundrobin_spreads_every_keepalive_client_over_the_pool(backends3, start_lbcore):
    _, port, _ = start_pool(backends3, start_lbcore, n=3)
    clients = [KeepAliveClient(port) for _ in range(4)]
    total = collections.Counter()
    per_client = [collections.Counter() for _ in clients]
    for _ in range(30):
        for i, client in enumerate(clients):
            server = client.get_server()
            total[server] += 1
            per_client[i][server] += 1
    for client in clients:
        client.close()
    assert total == {"s1": 40, "s2": 40, "s3": 40}
    for counts in per_client:
        # A keep-alive connection is not pinned: each one reaches every server.
        assert set(counts) == {"s1", "s2", "s3"}, counts
        assert min(counts.values()) >= 8, counts


def test_roundrobin_single_keepalive_client_rotates(backends3, start_lbcore):
    _, port, _ = start_pool(backends3, start_lbcore, n=2)
    client = KeepAliveClient(port)
    seen = [client.get_server() for _ in range(10)]
    client.close()
    assert all(a != b for a, b in zip(seen, seen[1:])), seen
    assert collections.Counter(seen) == {"s1": 5, "s2": 5}


def test_roundrobin_honours_weights_and_weight_zero_gets_nothing(backends3, start_lbcore):
    _, port, _ = start_pool(backends3, start_lbcore, n=3, weights=[3, 1, 0])
    clients = [KeepAliveClient(port) for _ in range(2)]
    counts = collections.Counter()
    for _ in range(20):
        for client in clients:
            counts[client.get_server()] += 1
    assert counts == {"s1": 30, "s2": 10}, counts


def test_smooth_weighted_roundrobin_interleaves(backends3, start_lbcore):
    _, port, _ = start_pool(backends3, start_lbcore, n=3, weights=[5, 1, 1])
    client = KeepAliveClient(port)
    seen = [client.get_server() for _ in range(14)]
    assert collections.Counter(seen) == {"s1": 10, "s2": 2, "s3": 2}
    # Smooth (nginx's a a b a c a a, repeated): any seven successive picks
    # hold one whole cycle, never a burst of five s1 then s2, s3.
    for i in range(len(seen) - 6):
        assert collections.Counter(seen[i:i + 7]) == {"s1": 5, "s2": 1, "s3": 1}, seen


def test_all_weights_zero_means_no_server(backends3, start_lbcore):
    _, port, _ = start_pool(backends3, start_lbcore, n=2, weights=[0, 0])
    client = KeepAliveClient(port)
    resp, body = client.request()
    assert resp.status == 503
    assert resp.getheader("X-Server") is None


def test_leastconn_avoids_the_busy_server(backends3, start_lbcore):
    _, port, _ = start_pool(backends3, start_lbcore, n=2, balance="leastconn")
    client = KeepAliveClient(port)
    # Idle pool: ties are broken round robin.
    idle = [client.get_server() for _ in range(4)]
    assert collections.Counter(idle) == {"s1": 2, "s2": 2}, idle

    slow = {}

    def slow_request():
        c = KeepAliveClient(port)
        resp, _ = c.request("GET", "/sleep/2")
        slow["server"] = resp.getheader("X-Server")
        slow["status"] = resp.status
        c.close()

    t = threading.Thread(target=slow_request)
    t.start()
    time.sleep(0.4)  # the slow request now holds one server
    during = [client.get_server() for _ in range(4)]
    t.join()
    assert slow["status"] == 200
    assert len(set(during)) == 1, during
    assert during[0] != slow["server"], (during, slow)


def test_source_keeps_each_client_address_on_one_server(backends3, start_lbcore):
    _, port, _ = start_pool(backends3, start_lbcore, n=3, balance="source")
    chosen = {}
    for i in range(2, 14):
        source = f"127.0.0.{i}"
        client = KeepAliveClient(port, source=source)
        servers = {client.get_server() for _ in range(4)}
        client.close()
        # New connections from the same address land on the same server.
        for _ in range(2):
            c = KeepAliveClient(port, source=source)
            servers.add(c.get_server())
            c.close()
        assert len(servers) == 1, (source, servers)
        chosen[source] = servers.pop()
    # The hash spreads addresses: twelve clients do not all share one server.
    assert len(set(chosen.values())) >= 2, chosen
    # Stable while the pool is unchanged.
    for source, server in chosen.items():
        c = KeepAliveClient(port, source=source)
        assert c.get_server() == server
        c.close()


def test_first_fills_servers_in_declaration_order(backends3, start_lbcore):
    _, port, _ = start_pool(backends3, start_lbcore, n=3, balance="first",
                            server_extra={"maxconn": 1})
    client = KeepAliveClient(port)
    assert {client.get_server() for _ in range(6)} == {"s1"}

    results = {}

    def hold(name, path):
        c = KeepAliveClient(port)
        resp, _ = c.request("GET", path)
        results[name] = resp.getheader("X-Server")
        c.close()

    t1 = threading.Thread(target=hold, args=("a", "/sleep/2"))
    t1.start()
    time.sleep(0.4)  # s1 is now full
    t2 = threading.Thread(target=hold, args=("b", "/sleep/1.5"))
    t2.start()
    time.sleep(0.4)  # s2 is now full too
    third = client.get_server()
    t1.join()
    t2.join()
    assert results == {"a": "s1", "b": "s2"}
    assert third == "s3"
    # Once the earlier servers have room again, s1 takes the work back.
    assert client.get_server() == "s1"


def test_backup_serves_only_while_no_primary_is_up(start_backend, start_lbcore):
    health = {"type": "tcp", "interval": "200ms", "timeout": "200ms", "rise": 1, "fall": 1}
    own = [start_backend(f"s{i}") for i in (1, 2, 3)]
    _, port, backends = start_pool(
        own, start_lbcore, n=3, server_extra=[{}, {}, {"backup": True}],
        backend={"health": health})
    client = KeepAliveClient(port)
    assert {client.get_server() for _ in range(8)} == {"s1", "s2"}
    backends[0].kill()
    backends[1].kill()
    deadline = time.monotonic() + 5
    last = None
    while time.monotonic() < deadline:
        c = KeepAliveClient(port)
        resp, _ = c.request()
        c.close()
        last = (resp.status, resp.getheader("X-Server"))
        if last == (200, "s3"):
            break
        time.sleep(0.1)
    assert last == (200, "s3"), last
    assert {client_get(port) for _ in range(4)} == {"s3"}


def client_get(port: int) -> str:
    c = KeepAliveClient(port)
    try:
        return c.get_server()
    finally:
        c.close()


def test_server_connections_are_pooled_across_clients(backends3, start_lbcore):
    _, port, _ = start_pool(backends3, start_lbcore, n=1)
    peers = set()
    for _ in range(5):
        c = KeepAliveClient(port)
        resp, body = c.request()
        c.close()
        import json
        peers.add(tuple(json.loads(body)["peer"]))
        time.sleep(0.05)
    # Five successive clients, one server connection.
    assert len(peers) == 1, peers
