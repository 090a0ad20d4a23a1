"""The stream layer (lbcore/proxy/stream.py) as the client and the stats
see it: queued requests keep their hash affinity, every timer is counted
in both modes, and the backend's byte counters add up in every view."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.haproxy import HaproxyProcess
from tests.integration.rawhttp import KeepAliveClient, start_backends
from tests.support import BackendProcess, free_port, get_json, http_config

QUEUE_HAPROXY_CFG = """global
    maxconn 1000
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout queue 5s
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    balance source
    server s1 {s1} maxconn 1
    server s2 {s2} maxconn 1
"""


@pytest.fixture(scope="module")
def pair():
    backends = start_backends(["s1", "s2"])
    yield backends
    for b in backends:
        b.stop()


def start_proxy(kind, start_lbcore, backends, port):
    if kind == "haproxy":
        proc = HaproxyProcess(QUEUE_HAPROXY_CFG.format(
            port=port, s1=backends[0].address, s2=backends[1].address))
        return proc.start(wait_ports=[port])
    config = http_config([b.address for b in backends], port, balance="source",
                         backend={"maxconn": 1, "timeouts": {"queue": "5s"}})
    return start_lbcore(config)


@pytest.mark.parametrize("kind", ["lbcore", "haproxy"])
def test_a_queued_request_keeps_its_source_affinity(pair, start_lbcore, kind):
    """balance source with maxconn 1: a client whose server is busy waits
    for it (HAProxy queues on that server) instead of being sent to the
    other, and is given it when it frees."""
    port = free_port()
    proc = start_proxy(kind, start_lbcore, pair, port)
    try:
        source = None
        for last in range(2, 60):
            address = f"127.0.0.{last}"
            client = KeepAliveClient(port, source=address)
            try:
                if client.get_server() == "s2":
                    source = address
                    break
            finally:
                client.close()
        assert source is not None, "no loopback source address hashes to s2"

        busy = KeepAliveClient(port, source=source)
        slow = threading.Thread(target=busy.request, args=("GET", "/sleep/1"))
        slow.start()
        time.sleep(0.3)  # the slow request holds s2's only slot
        waiting = KeepAliveClient(port, source=source)
        began = time.monotonic()
        assert waiting.get_server() == "s2"
        assert time.monotonic() - began > 0.4  # it waited for s2
        slow.join(10)
        busy.close()
        waiting.close()
    finally:
        if kind == "haproxy":
            proc.stop()


def test_queue_connect_and_total_times_are_counted_in_http_mode(pair, start_lbcore):
    port, stats_port = free_port(), free_port()
    config = http_config([pair[0].address], port, backend={"maxconn": 1, "timeouts": {"queue": "5s"}},
                         stats={"bind": f"127.0.0.1:{stats_port}"})
    start_lbcore(config)
    busy = KeepAliveClient(port)
    slow = threading.Thread(target=busy.request, args=("GET", "/sleep/0.5"))
    slow.start()
    time.sleep(0.2)
    waiting = KeepAliveClient(port)
    assert waiting.get_server() == "s1"  # after a wait in the queue
    slow.join(10)
    busy.close()
    waiting.close()
    pool = get_json(stats_port)["backends"]["pool"]
    server = pool["servers"][0]
    for row in (pool, server):
        assert row["timed_requests"] == 2
        assert row["queue_time_avg_s"] > 0.1  # one of two waited ~0.3 s
        assert row["total_time_avg_s"] > 0.3
        assert row["response_time_avg_s"] > 0.2


def test_tcp_mode_counts_its_timers(start_lbcore):
    echo = BackendProcess("e1", tcp_echo=True).start()
    try:
        port, stats_port = free_port(), free_port()
        config = {
            "global": {"log": {"target": "stdout", "format": "http"}},
            "stats": {"bind": f"127.0.0.1:{stats_port}"},
            "frontends": {"db": {"bind": f"127.0.0.1:{port}", "mode": "tcp", "backend": "pool"}},
            "backends": {"pool": {"mode": "tcp", "servers": [{"name": "e1", "address": echo.address}]}},
        }
        start_lbcore(config)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"ping")
            assert sock.recv(100) == b"ping"
            time.sleep(0.2)
        # (The start-up probe of the port was a session too, a short one.)
        deadline = time.monotonic() + 5
        while True:
            pool = get_json(stats_port)["backends"]["pool"]
            total = (pool["total_time_avg_s"] or 0) * pool["timed_requests"]
            if total >= 0.2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        server = pool["servers"][0]
        for row in (pool, server):
            assert row["timed_requests"] >= 1
            assert row["connect_time_avg_s"] > 0
            assert row["total_time_avg_s"] * row["timed_requests"] >= 0.2
    finally:
        echo.stop()


def test_backend_bytes_in_add_up_in_every_view(pair, start_lbcore):
    port, stats_port = free_port(), free_port()
    config = http_config([b.address for b in pair], port, stats={"bind": f"127.0.0.1:{stats_port}"})
    start_lbcore(config)
    client = KeepAliveClient(port)
    for _ in range(4):
        resp, _ = client.request("POST", "/echo", body=b"x" * 5000)
        assert resp.status == 200
    client.close()
    pool = get_json(stats_port)["backends"]["pool"]
    servers_in = sum(s["bytes_in"] for s in pool["servers"])
    assert servers_in > 4 * 5000
    assert pool["bytes_in"] == servers_in

    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", stats_port, timeout=5)
    conn.request("GET", "/stats.csv")
    csv_text = conn.getresponse().read().decode()
    conn.request("GET", "/metrics")
    metrics = conn.getresponse().read().decode()
    conn.close()
    header = csv_text.splitlines()[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","))) for line in csv_text.splitlines()[1:] if line]
    backend_row = next(r for r in rows if r["pxname"] == "pool" and r["svname"] == "BACKEND")
    assert int(backend_row["bin"]) == servers_in
    assert f'haproxy_backend_bytes_in_total{{proxy="pool"}} {servers_in}' in metrics


def test_each_request_is_counted_and_logged_where_it_went(pair, start_lbcore):
    """Content switching on one keep-alive connection: the access line, the
    backend's and the server's counters name the backend each request
    really went to, not the frontend's default."""
    port, stats_port = free_port(), free_port()
    s1, s2 = pair
    config = http_config([s1.address], port, stats={"bind": f"127.0.0.1:{stats_port}"},
                         frontend={"use_backend": [{"backend": "static", "if": "{ path_beg /static }"}]})
    config["backends"]["static"] = {"mode": "http", "servers": [{"name": "st1", "address": s2.address}]}
    lb = start_lbcore(config)
    client = KeepAliveClient(port)
    for path, server in (("/static/a", "s2"), ("/api", "s1"), ("/static/b", "s2")):
        resp, _ = client.request("POST", path, body=b"x" * 100)
        assert resp.status == 200
        assert resp.getheader("X-Server") == server
    client.close()
    stats = get_json(stats_port)["backends"]
    assert stats["static"]["http_requests"] == 2 and stats["pool"]["http_requests"] == 1
    assert stats["static"]["servers"][0]["http_requests"] == 2
    for name in ("static", "pool"):
        assert stats[name]["bytes_in"] == stats[name]["servers"][0]["bytes_in"] > 0
        assert stats[name]["bytes_out"] > 0
    deadline = time.monotonic() + 5
    while True:
        lines = [line for line in lb.logs().splitlines() if '"POST ' in line]
        if len(lines) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [" static/st1 " in lines[0], " pool/s1 " in lines[1], " static/st1 " in lines[2]] == [True] * 3, lines
