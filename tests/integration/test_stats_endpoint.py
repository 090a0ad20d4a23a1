"""The stats/admin endpoint over real sockets on 127.0.0.1, with http.client."""

import asyncio
import base64
import csv
import http.client
import io
import json
import socket
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lbcore.config import Address, StatsSpec
from lbcore.model import DRAIN, MAINT, READY
from lbcore.stats import AdminAction, StatsEndpoint, merge, snapshot
from tests.unit.test_stats_snapshot import add_traffic, make_runtime

AUTH = ("admin", "s3cret")


class Running:
    """A StatsEndpoint served by its own event loop in a background thread."""

    def __init__(self, spec, get_snapshot, admin):
        self.loop = asyncio.new_event_loop()
        self.endpoint = StatsEndpoint(spec, get_snapshot, admin)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.endpoint.start(self.loop), self.loop).result(10)
        self.port = self.endpoint.port

    def call(self, fn):
        return asyncio.run_coroutine_threadsafe(self._call(fn), self.loop).result(10)

    @staticmethod
    async def _call(fn):
        return fn()

    def stop(self):
        self.call(self.endpoint.close)
        asyncio.run_coroutine_threadsafe(self.endpoint.wait_closed(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def serve():
    started = []

    def start(auth=AUTH, admin=True, refresh=5.0, get_snapshot=None, runtime=None):
        runtime = runtime or make_runtime()
        spec = StatsSpec(bind=Address("127.0.0.1", 0), auth=auth, admin=admin, refresh=refresh)
        running = Running(spec, get_snapshot or (lambda: snapshot(runtime)), AdminAction(lambda: runtime))
        running.runtime = runtime
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def auth_header(user=AUTH[0], password=AUTH[1]):
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def request(port, method, path, body=None, headers=None, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        hdrs = dict(headers if headers is not None else auth_header())
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        if own:
            conn.close()


def raw(port, data: bytes) -> bytes:
    """Send bytes as they are; read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


# -- auth -----------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {},
    auth_header(password="wrong"),
    auth_header(user="root"),
    auth_header(password=AUTH[1] + "x"),
    {"Authorization": "Basic !!!not-base64!!!"},
    {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
    {"Authorization": "Bearer " + base64.b64encode(b"admin:s3cret").decode()},
])
def test_auth_required_on_every_path(serve, headers):
    srv = serve()
    for method, path in (("GET", "/"), ("GET", "/stats.json"), ("GET", "/stats.csv"), ("GET", "/metrics"),
                         ("GET", "/nope"), ("POST", "/admin/backends/keystone/servers/ks1")):
        status, hdrs, _ = request(srv.port, method, path, body={"state": "drain"} if method == "POST" else None,
                                  headers=headers)
        assert status == 401, (method, path)
        assert hdrs["WWW-Authenticate"].startswith("Basic realm=")
    assert all(s.admin == READY for s in srv.runtime.servers())


def test_no_auth_configured_means_open(serve):
    srv = serve(auth=None)
    assert request(srv.port, "GET", "/stats.json", headers={})[0] == 200


# -- read paths -----------------------------------------------------------------

def test_every_read_path(serve):
    srv = serve(refresh=3)
    add_traffic(srv.runtime)

    status, hdrs, body = request(srv.port, "GET", "/")
    assert status == 200 and hdrs["Content-Type"].startswith("text/html")
    assert b'<meta http-equiv="refresh" content="3">' in body and b"ks1" in body

    status, hdrs, body = request(srv.port, "GET", "/stats.json")
    assert status == 200 and hdrs["Content-Type"] == "application/json"
    data = json.loads(body)
    ks1 = data["backends"]["keystone"]["servers"][0]
    assert ks1["name"] == "ks1" and ks1["total_sessions"] == 3 and ks1["check_status"] == "L7OK"

    status, hdrs, body = request(srv.port, "GET", "/stats.csv")
    assert status == 200 and hdrs["Content-Type"].startswith("text/plain")
    rows = list(csv.DictReader(io.StringIO(body.decode()[2:])))
    assert [r["svname"] for r in rows if r["pxname"] == "keystone"] == ["FRONTEND", "ks1", "ks2", "ks3", "BACKEND"]

    status, hdrs, body = request(srv.port, "GET", "/metrics")
    assert status == 200 and hdrs["Content-Type"].startswith("text/plain; version=0.0.4")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"haproxy_server_status", "haproxy_frontend_http_requests", "haproxy_backend_active_servers"} <= names


@pytest.mark.parametrize("path", ["/;csv", "/;csv;norefresh", "/stats;csv", "/haproxy?stats;csv"])
def test_haproxy_csv_aliases(serve, path):
    srv = serve()
    status, _, body = request(srv.port, "GET", path)
    assert status == 200 and body.startswith(b"# pxname,svname,")


def test_metrics_scope_and_bad_scope(serve):
    srv = serve()
    status, _, body = request(srv.port, "GET", "/metrics?scope=backend")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert status == 200 and names and all(n.startswith("haproxy_backend_") for n in names)
    assert request(srv.port, "GET", "/metrics?scope=everything")[0] == 400


def test_head_has_headers_but_no_body(serve):
    srv = serve()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    status, hdrs, body = request(srv.port, "HEAD", "/stats.json", conn=conn)
    assert status == 200 and int(hdrs["Content-Length"]) > 100 and body == b""
    # The connection is still in step: a GET on it works.
    assert request(srv.port, "GET", "/stats.json", conn=conn)[0] == 200
    conn.close()


def test_unknown_paths_and_wrong_methods(serve):
    srv = serve()
    assert request(srv.port, "GET", "/nope")[0] == 404
    assert request(srv.port, "GET", "/stats.json/extra")[0] == 404
    status, hdrs, _ = request(srv.port, "POST", "/stats.json", body=b"{}")
    assert status == 405 and "GET" in hdrs["Allow"]
    assert request(srv.port, "DELETE", "/metrics")[0] == 405
    status, hdrs, _ = request(srv.port, "GET", "/admin/backends/keystone/servers/ks1")
    assert status == 405 and hdrs["Allow"] == "POST"


def test_keep_alive_serves_many_requests_on_one_connection(serve):
    srv = serve()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.connect()
    first_socket = conn.sock
    for path in ("/", "/stats.json", "/stats.csv", "/metrics", "/nope", "/stats.json"):
        status, hdrs, _ = request(srv.port, "GET", path, conn=conn)
        assert status in (200, 404)
        assert hdrs.get("Connection", "").lower() != "close"
    assert conn.sock is first_socket
    conn.close()


def test_counters_change_between_scrapes(serve):
    srv = serve()
    before = json.loads(request(srv.port, "GET", "/stats.json")[2])
    srv.call(lambda: add_traffic(srv.runtime))
    after = json.loads(request(srv.port, "GET", "/stats.json")[2])
    assert before["frontends"]["keystone"]["total_sessions"] == 0
    assert after["frontends"]["keystone"]["total_sessions"] == 3


def test_async_snapshot_source_of_several_workers(serve):
    workers = [make_runtime(), make_runtime()]
    for runtime in workers:
        add_traffic(runtime)

    async def gather():
        await asyncio.sleep(0)  # as a master asking its workers would
        return merge([snapshot(r) for r in workers])

    srv = serve(get_snapshot=gather)
    data = json.loads(request(srv.port, "GET", "/stats.json")[2])
    assert data["process"]["processes"] == 2
    assert data["backends"]["keystone"]["servers"][0]["total_sessions"] == 6


def test_snapshot_failure_is_500_and_the_endpoint_lives_on(serve):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("worker went away")
        return snapshot(make_runtime())

    srv = serve(get_snapshot=flaky)
    assert request(srv.port, "GET", "/stats.json")[0] == 500
    assert request(srv.port, "GET", "/stats.json")[0] == 200


# -- admin ----------------------------------------------------------------------

ADMIN = "/admin/backends/{}/servers/{}"


def test_admin_drain_maint_weight_ready(serve):
    srv = serve()
    ks1 = srv.runtime.backends["keystone"].by_name["ks1"]
    pool = srv.runtime.backends["keystone"]

    status, hdrs, body = request(srv.port, "POST", ADMIN.format("keystone", "ks1"), {"state": "drain"})
    assert status == 200 and hdrs["Content-Type"] == "application/json"
    row = json.loads(body)
    assert row["name"] == "ks1" and row["status"] == "DRAIN"
    assert ks1.admin == DRAIN and ks1 not in pool.candidates
    stats = json.loads(request(srv.port, "GET", "/stats.json")[2])
    assert stats["backends"]["keystone"]["servers"][0]["status"] == "DRAIN"

    row = json.loads(request(srv.port, "POST", ADMIN.format("keystone", "ks1"), {"state": "maint"})[2])
    assert row["status"] == "MAINT" and ks1.admin == MAINT

    row = json.loads(request(srv.port, "POST", ADMIN.format("keystone", "ks1"), {"state": "ready", "weight": 42})[2])
    assert (row["status"], row["weight"]) == ("UP", 42)
    assert ks1.admin == READY and ks1.weight == 42 and ks1 in pool.candidates

    row = json.loads(request(srv.port, "POST", ADMIN.format("keystone", "ks1"), {"weight": 0})[2])
    assert row["status"] == "NOLB"
    csv_text = request(srv.port, "GET", "/stats.csv")[2].decode()
    assert "keystone,ks1," in csv_text and ",NOLB,0," in csv_text


@pytest.mark.parametrize("backend, server", [("nope", "ks1"), ("keystone", "nope"), ("galera", "ks1")])
def test_admin_unknown_names_are_404(serve, backend, server):
    srv = serve()
    status, _, body = request(srv.port, "POST", ADMIN.format(backend, server), {"state": "drain"})
    assert status == 404 and "error" in json.loads(body)


@pytest.mark.parametrize("body", [
    b"{not json", b"[]", b"{}", {"state": "sleep"}, {"weight": 300}, {"weight": -1}, {"weight": "7"},
    {"state": "drain", "colour": "red"},
    # Nesting past the JSON decoder's recursion limit (it raises
    # RecursionError, not ValueError), numbers too long for int().
    b"[" * 30000 + b"]" * 30000, b'{"state":' * 7000, b'{"weight": ' + b"9" * 5000 + b"}",
])
def test_admin_bad_values_are_400_and_change_nothing(serve, body):
    srv = serve()
    status, _, answer = request(srv.port, "POST", ADMIN.format("keystone", "ks1"), body)
    assert status == 400 and json.loads(answer)["error"]
    ks1 = srv.runtime.backends["keystone"].by_name["ks1"]
    assert ks1.admin == READY and ks1.weight == 10


def test_admin_disabled_is_403(serve):
    srv = serve(admin=False)
    status, _, body = request(srv.port, "POST", ADMIN.format("keystone", "ks1"), {"state": "maint"})
    assert status == 403 and "disabled" in json.loads(body)["error"]
    assert srv.runtime.backends["keystone"].by_name["ks1"].admin == READY


def test_admin_body_too_large_is_413(serve):
    srv = serve()
    answer = raw(srv.port, (
        f"POST {ADMIN.format('keystone', 'ks1')} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: {auth_header()['Authorization']}\r\nContent-Length: 200000\r\n\r\n"
    ).encode() + b"x" * 200000)
    assert answer.startswith(b"HTTP/1.1 413 ")


# -- bad clients ----------------------------------------------------------------

@pytest.mark.parametrize("garbage", [
    b"GARBAGE\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(40)) + b"\r\n\r\n",  # TLS hello
    b"POST /admin/backends/k/servers/s HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
])
def test_garbage_gets_400_and_the_endpoint_lives_on(serve, garbage):
    srv = serve()
    answer = raw(srv.port, garbage)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:80]
    assert request(srv.port, "GET", "/stats.json")[0] == 200


def test_unknown_http_version_is_505(serve):
    srv = serve()
    answer = raw(srv.port, b"GET / HTTP/9.9\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 505 "), answer[:80]
    assert request(srv.port, "GET", "/stats.json")[0] == 200


def test_oversized_head_is_refused(serve):
    srv = serve()
    answer = raw(srv.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert request(srv.port, "GET", "/")[0] == 200


def test_client_closing_early_does_not_hurt(serve):
    srv = serve()
    for partial in (b"", b"GET /stats.json HTTP/1.1\r\nHo", b"POST /admin/backends/k/servers/s HTTP/1.1\r\n"
                    b"Content-Length: 10\r\n\r\n{\"st"):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
            sock.sendall(partial)
    assert request(srv.port, "GET", "/stats.json")[0] == 200


def test_close_stops_listening(serve):
    srv = serve()
    port = srv.port
    srv.call(srv.endpoint.close)
    asyncio.run_coroutine_threadsafe(srv.endpoint.wait_closed(), srv.loop).result(10)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_bind_conflict_names_the_address(serve):
    srv = serve()
    spec = StatsSpec(bind=Address("127.0.0.1", srv.port))
    other = StatsEndpoint(spec, lambda: {}, AdminAction(lambda: srv.runtime))
    with pytest.raises(OSError, match=f"127.0.0.1:{srv.port}"):
        asyncio.run_coroutine_threadsafe(other.start(), srv.loop).result(10)


# -- the endpoint inside a running lbcore, with real traffic ---------------------------

def test_real_traffic_counts_and_admin_drain_in_a_running_lbcore(start_backend, start_lbcore):
    from tests.support import free_port, http_config

    backends = [start_backend("s1"), start_backend("s2")]
    port, stats_port = free_port(), free_port()
    config = http_config([b.address for b in backends], port,
                         stats={"bind": f"127.0.0.1:{stats_port}",
                                "auth": {"user": AUTH[0], "password": AUTH[1]}})
    start_lbcore(config)

    def served_by(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        names = []
        for _ in range(n):
            conn.request("GET", "/echo")
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
            names.append(resp.getheader("X-Server"))
        conn.close()
        return names

    assert set(served_by(10)) == {"s1", "s2"}
    data = json.loads(request(stats_port, "GET", "/stats.json")[2])
    rows = {r["name"]: r for r in data["backends"]["pool"]["servers"]}
    assert sum(r["http_responses"]["2xx"] for r in rows.values()) == 10
    assert data["frontends"]["web"]["http_requests"] == 10

    fams = {f.name: f for f in text_string_to_metric_families(request(stats_port, "GET", "/metrics")[2].decode())}
    requests_total = [s.value for s in fams["haproxy_frontend_http_requests"].samples
                      if s.labels.get("proxy") == "web" and s.name.endswith("_total")]
    assert requests_total == [10]
    ok = sum(s.value for s in fams["haproxy_server_http_responses"].samples
             if s.labels.get("code") == "2xx" and s.name.endswith("_total"))
    assert ok == 10

    status, _, body = request(stats_port, "POST", ADMIN.format("pool", "s1"), {"state": "drain"})
    assert status == 200 and json.loads(body)["status"] == "DRAIN"
    assert set(served_by(6)) == {"s2"}
    rows = list(csv.DictReader(io.StringIO(request(stats_port, "GET", "/stats.csv")[2].decode()[2:])))
    by = {(r["pxname"], r["svname"]): r for r in rows}
    assert by[("pool", "s1")]["status"] == "DRAIN" and by[("pool", "s2")]["status"] == "UP"
    assert by[("web", "FRONTEND")]["req_tot"] == "16"

    status, _, body = request(stats_port, "POST", ADMIN.format("pool", "s1"), {"state": "ready"})
    assert status == 200 and json.loads(body)["status"] == "UP"
    assert "s1" in set(served_by(6))
