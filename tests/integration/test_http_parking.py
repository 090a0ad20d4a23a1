"""Idle keep-alive client connections parked off their transports
(lbcore/proxy/parking.py): a parked connection is served again on its next
request, ends on the client's close and on the keep-alive timeout, is
closed by a graceful stop, stays counted (current sessions, maxconn, stick
counters), and many park at once. `idle_parked` in /stats.json shows them."""

from __future__ import annotations

import os
import resource
import signal
import socket
import tempfile
import time
import urllib.request
from types import SimpleNamespace

import pytest

from tests.support import LbcoreProcess, free_port, get_json, http_config, socat, wait_unix

from .rawhttp import RawClient, backends3, no_crash_in_lbcore, start_watched  # noqa: F401 (fixtures)
from .test_workers import NO_PROBES, running_pids, wait_for, workers_config

KEEP_ALIVE = 3.0  # the frontend's http_keep_alive: long enough to see a connection parked first


def stats_config(servers, port, stats_port, **overrides) -> dict:
    config = http_config(servers, port, **overrides)
    config["stats"] = {"bind": f"127.0.0.1:{stats_port}"}
    config.setdefault("defaults", {})["timeouts"] = {"http_keep_alive": f"{KEEP_ALIVE}s"}
    return config


@pytest.fixture(scope="module")
def proxy(backends3):
    port, stats_port = free_port(), free_port()
    lb = start_watched(stats_config([b.address for b in backends3], port, stats_port))
    yield SimpleNamespace(port=port, stats_port=stats_port, lb=lb)
    lb.stop()


def web(stats_port) -> dict:
    return get_json(stats_port)["frontends"]["web"]


def parked_is(stats_port, count: int, sessions: int | None = None):
    """Wait until the frontend has `count` parked connections (and, if
    given, `sessions` current ones: the stats request's own not counted,
    it is on the stats listener)."""
    def check():
        row = web(stats_port)
        return row["idle_parked"] == count and (sessions is None or row["current_sessions"] == sessions)
    wait_for(check, f"{count} parked connections")


def get(client: RawClient, path: str = "/echo"):
    client.request("GET", path)
    return client.read_response()


def test_an_idle_connection_parks_and_its_next_requests_are_served(proxy):
    parked_is(proxy.stats_port, 0, 0)
    with RawClient(proxy.port) as c:
        assert get(c, "/echo?n=1").status == 200
        parked_is(proxy.stats_port, 1, 1)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{proxy.stats_port}/metrics", timeout=5).read().decode()
        assert 'lbcore_frontend_idle_parked{proxy="web"} 1.0' in metrics
        assert 'haproxy_frontend_current_sessions{proxy="web"} 1.0' in metrics
        csv = urllib.request.urlopen(f"http://127.0.0.1:{proxy.stats_port}/stats.csv", timeout=5).read().decode()
        header = csv.splitlines()[0].lstrip("# ").split(",")
        row = next(line.split(",") for line in csv.splitlines() if line.startswith("web,FRONTEND"))
        assert row[header.index("scur")] == "1"
        for n in range(2, 5):  # unparked, served, parked again
            resp = get(c, f"/echo?n={n}")
            assert resp.status == 200
            assert resp.json()["path"] == f"/echo?n={n}"
            assert (resp.header("Connection") or "").lower() != "close"
            parked_is(proxy.stats_port, 1, 1)
        # A request sent in pieces across the unpark is read whole.
        c.send(b"GET /echo?n=pieces HTTP/1.1\r\n")
        time.sleep(0.05)
        c.send(b"Host: x\r\n\r\n")
        assert c.read_response().json()["path"] == "/echo?n=pieces"
        # Pipelined requests arriving at once on a parked connection.
        parked_is(proxy.stats_port, 1, 1)
        c.send(b"GET /echo?p=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /echo?p=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response().json()["path"] == "/echo?p=1"
        assert c.read_response().json()["path"] == "/echo?p=2"
        # A body (the request's bytes are all still in the kernel when it unparks).
        parked_is(proxy.stats_port, 1, 1)
        body = os.urandom(50000)
        c.request("POST", "/echo", body=body)
        assert c.read_response().status == 200
    parked_is(proxy.stats_port, 0, 0)


def test_a_client_closing_while_parked_is_counted_gone(proxy):
    clients = [RawClient(proxy.port) for _ in range(3)]
    for c in clients:
        assert get(c).status == 200
    parked_is(proxy.stats_port, 3, 3)
    clients[0].close()
    parked_is(proxy.stats_port, 2, 2)
    # A reset rather than a FIN.
    clients[1].sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    clients[1].close()
    parked_is(proxy.stats_port, 1, 1)
    clients[2].close()
    parked_is(proxy.stats_port, 0, 0)


def test_the_keep_alive_timeout_closes_a_parked_connection(proxy):
    with RawClient(proxy.port) as c:
        assert get(c).status == 200
        idle_from = time.monotonic()
        parked_is(proxy.stats_port, 1, 1)
        c.sock.settimeout(KEEP_ALIVE + 3)
        assert c.sock.recv(1) == b""  # closed by lbcore, with a FIN and nothing else
        waited = time.monotonic() - idle_from
        assert KEEP_ALIVE - 0.2 <= waited <= KEEP_ALIVE + 1.0, waited
    parked_is(proxy.stats_port, 0, 0)


def test_many_parked_connections(proxy):
    clients = []
    try:
        for _ in range(300):
            c = RawClient(proxy.port)
            clients.append(c)
            assert get(c).status == 200
        parked_is(proxy.stats_port, 300, 300)
        for i, c in enumerate(clients):
            resp = get(c, f"/echo?i={i}")
            assert resp.status == 200 and resp.json()["path"] == f"/echo?i={i}"
        parked_is(proxy.stats_port, 300, 300)
        for c in clients[::2]:
            c.close()
        parked_is(proxy.stats_port, 150, 150)
    finally:
        for c in clients:
            c.close()
    parked_is(proxy.stats_port, 0, 0)


def test_maxconn_counts_parked_connections(backends3):
    port, stats_port = free_port(), free_port()
    config = stats_config([backends3[0].address], port, stats_port, frontend={"maxconn": 2})
    lb = start_watched(config)
    try:
        first, second = RawClient(port), RawClient(port)
        for c in (first, second):
            assert get(c).status == 200
        parked_is(stats_port, 2, 2)
        third = RawClient(port, timeout=0.5)
        third.request("GET", "/echo?third")
        with pytest.raises(OSError):  # not accepted while both are parked
            third.read_response()
        first.close()  # a parked connection ends: the waiting one is taken
        third.sock.settimeout(5)
        assert third.read_response().json()["path"] == "/echo?third"
        assert get(second).status == 200  # the other parked one still served
        for c in (second, third):
            c.close()
        parked_is(stats_port, 0, 0)
    finally:
        lb.stop()


def test_a_crowd_parking_near_the_descriptor_limit_parks_every_connection(backends3):
    """Parking a crowd in one sweep holds two descriptors per connection
    until uvloop closes the transports' own on its next turn: with fewer
    free than the crowd, some found none, and stayed on their transports
    until the keep-alive timeout. They park on a later sweep."""
    port, stats_port = free_port(), free_port()
    config = stats_config([backends3[0].address], port, stats_port)
    config["defaults"]["timeouts"]["http_keep_alive"] = "30s"
    lb = start_watched(config)
    clients = []
    try:
        held = len(os.listdir(f"/proc/{lb.proc.pid}/fd"))
        crowd, spare = 80, 12
        resource.prlimit(lb.proc.pid, resource.RLIMIT_NOFILE, (held + crowd + spare,) * 2)
        for _ in range(crowd):  # one after the other: a single server connection
            clients.append(RawClient(port))
            assert get(clients[-1]).status == 200

        def all_parked():
            try:
                return web(stats_port)["idle_parked"] == crowd
            except OSError:  # the stats endpoint, too, may find no descriptor for a moment
                return False
        wait_for(all_parked, f"{crowd} parked connections")  # far below the keep-alive timeout
        for i, c in enumerate(clients):
            assert get(c, f"/echo?i={i}").json()["path"] == f"/echo?i={i}"
    finally:
        for c in clients:
            c.close()
        lb.stop()


def test_parked_connections_keep_their_stick_counters_and_show_in_show_sess(backends3):
    work = tempfile.mkdtemp(prefix="parking-")
    sock_path = os.path.join(work, "lb.sock")
    port, stats_port = free_port(), free_port()
    config = stats_config([backends3[0].address], port, stats_port, frontend={
        "stick_table": {"type": "ip", "size": "1k", "expire": "30s", "store": ["conn_cur", "http_req_cnt"]},
        "tcp_request": [{"track_sc0": "src"}]})
    config["stats"]["socket"] = {"path": sock_path, "level": "admin"}
    lb = LbcoreProcess(config, workdir=work).start()
    try:
        wait_unix(sock_path)

        def entry() -> str:
            return next((x for x in socat(f"unix-connect:{sock_path}", "show table web\n").splitlines()
                         if "key=127.0.0.1 " in x), "")

        with RawClient(port) as c:
            assert get(c).status == 200
            parked_is(stats_port, 1, 1)
            assert "conn_cur=1" in entry() and "http_req_cnt=1" in entry(), entry()
            sessions = socat(f"unix-connect:{sock_path}", "show sess\n")
            assert "fe=web" in sessions, sessions
            assert get(c).status == 200
            parked_is(stats_port, 1, 1)
            assert "conn_cur=1" in entry() and "http_req_cnt=2" in entry(), entry()
        parked_is(stats_port, 0, 0)
        wait_for(lambda: "conn_cur=0" in entry(), "the tracked connection to end")
    finally:
        lb.stop()


def test_a_reload_leaves_parked_connections_working(backends3):
    port, stats_port = free_port(), free_port()
    config = stats_config([b.address for b in backends3], port, stats_port)
    lb = start_watched(config)
    try:
        with RawClient(port) as c:
            assert get(c).status == 200
            parked_is(stats_port, 1, 1)
            config["backends"]["pool"]["servers"] = config["backends"]["pool"]["servers"][:1]
            lb.reload(config)
            wait_for(lambda: len(get_json(stats_port)["backends"]["pool"]["servers"]) == 1, "the reload")
            parked_is(stats_port, 1, 1)
            resp = get(c)
            assert resp.status == 200 and resp.json()["server"] == "s1"
    finally:
        lb.stop()


def refused(port) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_graceful_stop_closes_parked_connections(backends3):
    port, stats_port = free_port(), free_port()
    config = stats_config([backends3[0].address], port, stats_port)
    config["global"]["grace"] = "20s"
    lb = LbcoreProcess(config).start()
    try:
        idle = [RawClient(port) for _ in range(20)]
        for c in idle:
            assert get(c).status == 200
        late = RawClient(port)
        assert get(late).status == 200
        parked_is(stats_port, 21, 21)
        began = time.monotonic()
        lb.signal(signal.SIGTERM)
        wait_for(lambda: refused(port), "the listener to close")
        # A request that reaches a parked connection as the stop begins is
        # answered, with Connection: close.
        resp = get(late, "/echo?late")
        assert resp.status == 200 and (resp.header("Connection") or "").lower() == "close"
        assert lb.wait(10) == 0
        assert time.monotonic() - began < 5  # not the 20 s grace: the idle ones were closed
        for c in idle:
            c.sock.settimeout(2)
            assert c.sock.recv(1) == b""
            c.close()
        late.close()
    finally:
        lb.stop()


def test_parked_connections_of_a_killed_worker_go_on(backends3):
    port, stats_port = free_port(), free_port()
    lb = LbcoreProcess(workers_config([backends3[0]], port, stats_port, health=NO_PROBES)).start()
    try:
        wait_for(lambda: len(running_pids(stats_port)) == 2, "both workers to run")
        master_fds = lambda: len(os.listdir(f"/proc/{lb.proc.pid}/fd"))  # noqa: E731
        time.sleep(0.3)
        baseline = master_fds()
        clients = [RawClient(port) for _ in range(30)]
        for c in clients:
            assert get(c).status == 200
        parked_is(stats_port, 30, 30)
        # The master holds a descriptor of each (the parked one, not the one
        # its transport had): one per connection.
        wait_for(lambda: master_fds() == baseline + 30, "the master to hold the 30 connections")
        for pid in running_pids(stats_port):
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.3)
            for i, c in enumerate(clients):  # idle (parked) when their worker died: each goes on
                resp = get(c, f"/echo?i={i}")
                assert resp.status == 200 and resp.json()["path"] == f"/echo?i={i}"
            wait_for(lambda: len(running_pids(stats_port)) == 2, "the master to replace the killed worker")
        for c in clients:
            c.close()
        wait_for(lambda: master_fds() <= baseline + 1, f"the master's descriptors back to {baseline}")
        assert "died holding" in lb.logs()
    finally:
        lb.stop()
