"""Limits: frontend and process maxconn (excess connections wait in the
backlog, then are served), per-server maxconn with a FIFO queue bounded by
timeouts.queue (then 503)."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest

from tests.support import free_port, http_config

from .rawhttp import (  # noqa: F401 (fixtures)
    KeepAliveClient, RawClient, backends3, no_crash_in_lbcore, start_lbcore,
)


def timed_get(port: int, path: str, results: dict, key, delay: float = 0.0):
    time.sleep(delay)
    started = time.monotonic()
    with RawClient(port, timeout=15) as c:
        c.request("GET", path, headers=[("Connection", "close")])
        resp = c.read_response()
    results[key] = (resp.status, time.monotonic() - started, time.monotonic(), resp.header("X-Server"))


@pytest.mark.parametrize("where", ["frontend", "global"])
def test_excess_connections_wait_then_are_served(backends3, start_lbcore, where):
    port = free_port()
    config = http_config([backends3[0].address], port)
    if where == "frontend":
        config["frontends"]["web"]["maxconn"] = 2
    else:
        config["global"]["maxconn"] = 2
    lb = start_lbcore(config)
    a, b = KeepAliveClient(port), KeepAliveClient(port)
    assert a.get_server() == "s1" and b.get_server() == "s1"
    with RawClient(port) as c:  # the kernel completes the handshake: it waits in the backlog
        c.request("GET", "/echo")
        assert not c.closed_within(1.0)
        assert c.buf == b"", "a third connection was served beyond maxconn 2"
        a.close()
        c.sock.settimeout(5)
        resp = c.read_response()
        assert resp.status == 200
    b.close()
    assert lb.proc.poll() is None


def test_global_maxconn_reached_on_one_frontend_holds_the_others_until_a_connection_ends(
        backends3, start_lbcore):
    """global.maxconn counts every frontend's connections: once reached, the
    other frontends' acceptors pause too, and the end of a connection on
    the first one resumes them (ProxyContext.closed, which resumes the
    paused acceptors only)."""
    port, other = free_port(), free_port()
    config = http_config([backends3[0].address], port)
    config["frontends"]["other"] = dict(config["frontends"]["web"], bind=f"127.0.0.1:{other}")
    config["global"]["maxconn"] = 2
    lb = start_lbcore(config)
    a, b = KeepAliveClient(port), KeepAliveClient(port)
    assert a.get_server() == "s1" and b.get_server() == "s1"
    with RawClient(other) as c:
        c.request("GET", "/echo")
        assert not c.closed_within(1.0)
        assert c.buf == b"", "another frontend served a connection beyond global.maxconn 2"
        a.close()
        c.sock.settimeout(5)
        assert c.read_response().status == 200
    b.close()
    assert KeepAliveClient(other).get_server() == "s1"  # and it accepts on
    assert lb.proc.poll() is None


def test_many_connections_beyond_maxconn_are_all_served(backends3, start_lbcore):
    port = free_port()
    config = http_config([b.address for b in backends3], port)
    config["frontends"]["web"]["maxconn"] = 4
    start_lbcore(config)
    results = {}
    threads = [threading.Thread(target=timed_get, args=(port, "/sleep/0.1", results, i)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 40
    assert {r[0] for r in results.values()} == {200}


def queue_config(backends, port, maxconn_at="server", queue="5s", n=1):
    config = http_config([b.address for b in backends[:n]], port,
                         backend={"timeouts": {"queue": queue}})
    if maxconn_at == "server":
        for server in config["backends"]["pool"]["servers"]:
            server["maxconn"] = 1
    else:
        config["backends"]["pool"]["maxconn"] = 1
    return config


@pytest.mark.parametrize("maxconn_at", ["server", "backend"])
def test_requests_beyond_server_maxconn_queue_then_are_served(backends3, start_lbcore, maxconn_at):
    port = free_port()
    start_lbcore(queue_config(backends3, port, maxconn_at))
    results = {}
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        for i in range(3):
            pool.submit(timed_get, port, f"/sleep/0.4?i={i}", results, i)
    assert {r[0] for r in results.values()} == {200}, results
    # One at a time: the last answer comes after three server sleeps.
    finished = sorted(r[2] - started for r in results.values())
    assert finished[-1] >= 1.15, finished
    assert finished[1] >= 0.75, finished


def test_queue_is_first_in_first_out(backends3, start_lbcore):
    port = free_port()
    start_lbcore(queue_config(backends3, port))
    results = {}
    threads = [threading.Thread(target=timed_get, args=(port, f"/sleep/0.2?i={i}", results, i, 0.1 * i))
               for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert {r[0] for r in results.values()} == {200}
    order = sorted(results, key=lambda i: results[i][2])
    assert order == [0, 1, 2, 3, 4], order


def test_two_servers_with_maxconn_share_the_queue(backends3, start_lbcore):
    port = free_port()
    start_lbcore(queue_config(backends3, port, n=2))
    results = {}
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for i in range(4):
            pool.submit(timed_get, port, f"/sleep/0.4?i={i}", results, i)
    assert {r[0] for r in results.values()} == {200}
    assert {r[3] for r in results.values()} == {"s1", "s2"}
    assert max(r[2] - started for r in results.values()) >= 0.75


def test_queue_timeout_gives_503(backends3, start_lbcore):
    port = free_port()
    start_lbcore(queue_config(backends3, port, queue="500ms"))
    results = {}
    holder = threading.Thread(target=timed_get, args=(port, "/sleep/1.5", results, "holder"))
    holder.start()
    time.sleep(0.3)
    timed_get(port, "/echo", results, "queued")
    holder.join(10)
    status, elapsed, _, server = results["queued"]
    # Without the queue timeout it would wait for the slot and get a 200.
    assert status == 503
    assert elapsed >= 0.4, elapsed
    assert results["holder"][0] == 200


def test_client_leaving_the_queue_does_not_block_it(backends3, start_lbcore):
    port = free_port()
    start_lbcore(queue_config(backends3, port))
    results = {}
    holder = threading.Thread(target=timed_get, args=(port, "/sleep/0.6", results, "holder"))
    holder.start()
    time.sleep(0.3)
    with RawClient(port) as quitter:
        quitter.request("GET", "/echo?quitter")
        time.sleep(0.2)  # now queued; then gone
    timed_get(port, "/echo?after", results, "after")
    holder.join(10)
    assert results["holder"][0] == 200
    assert results["after"][0] == 200
    # And the slot is free again afterwards.
    c = KeepAliveClient(port)
    assert c.get_server() == "s1"
    c.close()


def test_idle_keepalive_clients_hold_no_server_slot(backends3, start_lbcore):
    port = free_port()
    start_lbcore(queue_config(backends3, port, queue="3s"))
    idle = [KeepAliveClient(port) for _ in range(3)]
    for c in idle:
        assert c.get_server() == "s1"  # then stays connected, idle
    started = time.monotonic()
    fresh = KeepAliveClient(port)
    assert fresh.get_server() == "s1"
    assert time.monotonic() - started < 1.5  # served, not queued behind idle clients
    for c in idle + [fresh]:
        c.close()
