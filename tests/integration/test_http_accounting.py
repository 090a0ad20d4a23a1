"""Session accounting returns to zero: after every kind of ending (normal,
error, abort, retry, timeout, tunnel) no frontend, backend or server keeps
a phantom session or queue entry. A leaked session is not only a wrong
number on the stats page: it counts against maxconn and skews leastconn."""

from __future__ import annotations

import socket
import struct
import time
from types import SimpleNamespace

import pytest

from tests.support import free_port, get_json, http_config

from .rawhttp import (  # noqa: F401 (fixtures)
    ConnectionClosed, KeepAliveClient, RawClient, add_frontend, backends3, no_crash_in_lbcore,
    start_watched,
)


@pytest.fixture(scope="module")
def proxy(backends3):
    port, flaky_port, narrow_port, stats_port = free_port(), free_port(), free_port(), free_port()
    config = http_config([b.address for b in backends3[:2]], port, defaults={"timeouts": {
        "server": "500ms", "tunnel": "500ms", "queue": "300ms", "http_request": "500ms"}})
    s1 = backends3[0].address
    config["backends"]["flaky"] = {"mode": "http", "servers": [
        {"name": "refused", "address": f"127.0.0.1:{free_port()}"}, {"name": "s1", "address": s1}]}
    config["backends"]["narrow"] = {"mode": "http", "timeouts": {"server": "5s", "queue": "300ms"},
                                    "servers": [{"name": "s1", "address": s1, "maxconn": 1}]}
    add_frontend(config, "flaky", flaky_port, backend="flaky")
    add_frontend(config, "narrow", narrow_port, backend="narrow")
    config["stats"] = {"bind": f"127.0.0.1:{stats_port}"}
    lb = start_watched(config)
    yield SimpleNamespace(port=port, flaky_port=flaky_port, narrow_port=narrow_port,
                          stats_port=stats_port, lb=lb)
    lb.stop()


def counters(stats: dict) -> dict:
    found = {}
    for name, fe in stats["frontends"].items():
        found[f"frontend {name} current_sessions"] = fe["current_sessions"]
    for name, be in stats["backends"].items():
        for key in ("current_sessions", "queue_current"):
            found[f"backend {name} {key}"] = be[key]
        for server in be["servers"]:
            found[f"server {name}/{server['name']} current_sessions"] = server["current_sessions"]
    return found


@pytest.fixture(autouse=True)
def before(proxy):
    """The counters before the test: a leak found by an earlier test does
    not make every later one fail too."""
    return counters(get_json(proxy.stats_port))


def assert_settles(proxy, before: dict, timeout: float = 1.5) -> None:
    deadline = time.monotonic() + timeout
    while True:
        now = counters(get_json(proxy.stats_port))
        grown = {k: (before.get(k, 0), v) for k, v in now.items() if v > before.get(k, 0)}
        if not grown or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert grown == {}, f"left behind (before, after): {grown}"


def test_plain_requests(proxy, before):
    c = KeepAliveClient(proxy.port)
    for _ in range(6):
        c.request("POST", "/echo", body=b"x" * 1000)
    c.request("HEAD", "/size/10")
    c.request("GET", "/status/204")
    c.close()
    assert_settles(proxy, before)


def test_server_errors_and_timeouts(proxy, before):
    for path in ("/garbage", "/close", "/sleep/2", "/truncate/1000", "/connclose", "/early/413"):
        with RawClient(proxy.port) as c:
            c.request("GET", path)
            try:
                c.read_response()
            except ConnectionClosed:
                pass
    assert_settles(proxy, before)


def test_retries_on_a_refused_server(proxy, before):
    c = KeepAliveClient(proxy.flaky_port)
    for _ in range(4):
        resp, _ = c.request("GET", "/echo")
        assert resp.status == 200
    c.close()
    assert_settles(proxy, before)


def test_client_aborts(proxy, before):
    with RawClient(proxy.port) as c:  # while the server thinks
        c.request("GET", "/sleep/0.3")
    with RawClient(proxy.port) as c:  # mid-download
        c.request("GET", f"/size/{20 << 20}")
        c.read_head()
    with RawClient(proxy.port) as c:  # mid-upload
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
        time.sleep(0.1)
    c = RawClient(proxy.port)  # reset with pipelined requests queued
    c.send(b"GET /sleep/0.2 HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
    time.sleep(0.05)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    time.sleep(0.8)  # the servers finish what they were doing
    assert_settles(proxy, before)


def test_rejected_requests(proxy, before):
    for data in (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhello",
                 b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                 b"GET /echo HTTP/1.1\r\nHost: x\r\n"):  # unfinished: 408
        with RawClient(proxy.port) as c:
            c.send(data)
            try:
                c.read_response()
            except ConnectionClosed:
                pass
    assert_settles(proxy, before)


def test_half_closed_client(proxy, before):
    with RawClient(proxy.port) as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        try:
            c.read_response()
        except ConnectionClosed:
            pass
    assert_settles(proxy, before)


UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")


@pytest.mark.parametrize("ending", ["client-closes", "client-half-closes", "tunnel-timeout"])
def test_tunnels(proxy, ending, before):
    c = RawClient(proxy.port)
    c.send(UPGRADE)
    assert c.read_response().status == 101
    if ending == "client-closes":
        c.close()
    elif ending == "client-half-closes":
        c.sock.shutdown(socket.SHUT_WR)  # the echo server then closes its side
        c.closed_within(3)
        c.close()
    else:
        c.closed_within(3)
        c.close()
    assert_settles(proxy, before)


def test_queue_timeouts(proxy, before):
    holder_client = RawClient(proxy.narrow_port)
    holder_client.request("GET", "/sleep/2")
    time.sleep(0.1)
    statuses = []
    for _ in range(3):
        with RawClient(proxy.narrow_port) as c:
            c.request("GET", "/echo")
            statuses.append(c.read_response().status)
    assert statuses == [503, 503, 503]
    assert holder_client.read_response().status == 200
    holder_client.close()
    assert_settles(proxy, before)


def test_request_and_response_counters(proxy, before):
    def snapshot():
        stats = get_json(proxy.stats_port)
        fe, be = stats["frontends"]["web"], stats["backends"]["pool"]
        return {
            "fe_requests": fe["http_requests"], "fe_2xx": fe["http_responses"]["2xx"],
            "fe_5xx": fe["http_responses"]["5xx"], "fe_4xx": fe["http_responses"]["4xx"],
            "be_requests": be["http_requests"], "be_2xx": be["http_responses"]["2xx"],
            "be_5xx": be["http_responses"]["5xx"],
            "srv_requests": sum(s["total_sessions"] for s in be["servers"]),
        }

    start = snapshot()
    c = KeepAliveClient(proxy.port)
    for i in range(10):
        c.request("GET", "/echo")                      # fast path
        c.request("GET", "/echo", headers={"X-Forwarded-For": "10.0.0.%d" % i})  # slow path
    c.request("GET", "/status/500")
    c.request("GET", "/status/503")
    c.request("GET", "/status/404")
    c.close()
    time.sleep(0.2)
    end = snapshot()
    delta = {k: end[k] - start[k] for k in end}
    assert delta == {"fe_requests": 23, "fe_2xx": 20, "fe_5xx": 2, "fe_4xx": 1,
                     "be_requests": 23, "be_2xx": 20, "be_5xx": 2, "srv_requests": 23}, delta
    assert_settles(proxy, before)
