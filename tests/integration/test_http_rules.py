"""Rules against haproxy 2.6: the same requests, on one keep-alive
connection, through lbcore (lb.yaml) and haproxy (the equivalent
haproxy.cfg), must get the same status, the same backend, the same
headers at the backend, the same Location and the same rule-made headers.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile

import pytest

from tests.haproxy import HaproxyProcess, need_haproxy
from tests.integration.rawhttp import (ConnectionClosed, RawClient, no_crash_in_lbcore,  # noqa: F401
                                       start_backends, start_lbcore)
from tests.support import ROOT, LbcoreProcess, free_port, wait_port

MAP = "www.example.com web\napi.example.com api\nstatic.example.com static\n"

# Request headers the rules touch, compared at the backend.
REQUEST_HEADERS = ("x-port", "x-path", "user-agent", "x-debug", "x-backend", "x-tag")
# Response headers rules or answers make, compared at the client.
RESPONSE_HEADERS = ("location", "x-resp", "x-backend-resp", "www-authenticate", "content-type",
                    "cache-control", "content-length", "x-pong")


@pytest.fixture(scope="module")
def pools():
    procs = start_backends(["web1", "api1", "static1"])
    yield {p.name: p for p in procs}
    for p in procs:
        p.stop()


@pytest.fixture(scope="module")
def map_file():
    directory = tempfile.mkdtemp(prefix="lbrules-")
    path = os.path.join(directory, "hosts.map")
    with open(path, "w") as f:
        f.write(MAP)
    return path


def lb_config(port: int, pools: dict, map_file: str) -> dict:
    server = lambda name: [{"name": name, "address": pools[name].address}]  # noqa: E731
    return {
        "global": {"log": {"format": "none"}},
        "userlists": {"admins": [{"user": "ops", "insecure_password": "pw"}]},
        "frontends": {"fe": {
            "bind": f"127.0.0.1:{port}",
            "backend": "web",
            "forwarded_for": False,
            "forwarded_proto": False,
            "acls": {
                "api": "path_beg /api",
                "static": "path_end .css .js",
                "admin_host": "hdr(host) -i admin.example.com",
            },
            "tcp_request": [{"reject": True, "if": "{ src 127.0.0.99 }"}],
            "http_request": [
                {"deny": 403, "if": "{ path_beg /private }"},
                {"deny": 429, "if": "{ hdr(x-flood) -m found }"},
                {"return": {"status": 200, "content_type": "text/plain", "body": "pong",
                            "headers": {"X-Pong": "%[path]"}}, "if": "{ path /ping }"},
                {"redirect": "scheme https code 301", "if": "{ path_beg /secure }"},
                {"redirect": "prefix https://new.example.com", "if": "{ hdr(host) -i old.example.com }"},
                {"redirect": "location /moved", "if": "{ path /old }"},
                {"auth": {"realm": "Admin"}, "if": "admin_host !{ http_auth(admins) }"},
                {"del_header": "X-Debug"},
                {"set_header": ["X-Port", "%[dst_port]"]},
                {"add_header": ["X-Path", "%[path]"]},
                {"replace_header": ["User-Agent", "^curl/(.*)", "c-\\1"]},
                {"set_path": "/echo%[path]", "if": "{ path_beg /legacy/ }"},
                {"replace_value": ["X-Tag", "^old$", "new"]},
            ],
            "http_response": [
                {"deny": True, "if": "{ status 404 }"},
                {"replace_header": ["Location", "^http://(.*)", "https://\\1"]},
                {"set_header": ["X-Resp", "fe"]},
            ],
            "use_backend": [
                {"backend": "static", "if": "static"},
                {"backend": "api", "if": "api"},
                {"backend": "%[req.hdr(host),lower,map_dom(" + map_file + ")]"},
            ],
        }},
        "backends": {
            "web": {"servers": server("web1")},
            "api": {
                "http_request": [{"set_header": ["X-Backend", "api"]},
                                 {"deny": 405, "if": "{ method DELETE }"}],
                "http_response": [{"set_header": ["X-Backend-Resp", "api"]}],
                "servers": server("api1"),
            },
            "static": {"servers": server("static1")},
        },
    }


def haproxy_cfg(port: int, pools: dict, map_file: str) -> str:
    return f"""global
    maxconn 1000
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
userlist admins
    user ops insecure-password pw
frontend fe
    bind 127.0.0.1:{port}
    acl api path_beg /api
    acl static path_end .css .js
    acl admin_host hdr(host) -i admin.example.com
    tcp-request connection reject if {{ src 127.0.0.99 }}
    http-request deny if {{ path_beg /private }}
    http-request deny deny_status 429 if {{ hdr(x-flood) -m found }}
    http-request return status 200 content-type text/plain string pong hdr X-Pong "%[path]" if {{ path /ping }}
    http-request redirect scheme https code 301 if {{ path_beg /secure }}
    http-request redirect prefix https://new.example.com if {{ hdr(host) -i old.example.com }}
    http-request redirect location /moved if {{ path /old }}
    http-request auth realm Admin if admin_host !{{ http_auth(admins) }}
    http-request del-header X-Debug
    http-request set-header X-Port "%[dst_port]"
    http-request add-header X-Path "%[path]"
    http-request replace-header User-Agent ^curl/(.*) c-\\1
    http-request set-path "/echo%[path]" if {{ path_beg /legacy/ }}
    http-request replace-value X-Tag ^old$ new
    http-response deny if {{ status 404 }}
    http-response replace-header Location ^http://(.*) https://\\1
    http-response set-header X-Resp fe
    use_backend static if static
    use_backend api if api
    use_backend %[req.hdr(host),lower,map_dom({map_file})]
    default_backend web
backend web
    server web1 {pools["web1"].address}
backend api
    http-request set-header X-Backend api
    http-request deny deny_status 405 if {{ method DELETE }}
    http-response set-header X-Backend-Resp api
    server api1 {pools["api1"].address}
backend static
    server static1 {pools["static1"].address}
"""


class LbcoreFromHaproxyCfg:
    """`lbcore -f haproxy.cfg`: the same rules read from HAProxy's format."""

    def __init__(self, cfg: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="lbcore-cfg-")
        self.path = os.path.join(self.dir, "haproxy.cfg")
        with open(self.path, "w") as f:
            f.write(cfg)
        self.log = open(os.path.join(self.dir, "lbcore.log"), "ab")
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-m", "lbcore.cli", "-f", self.path], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env, cwd=self.dir)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def proxies(pools, map_file):
    need_haproxy()
    lb_port, hp_port, cfg_port = free_port(), free_port(), free_port()
    lb = LbcoreProcess(lb_config(lb_port, pools, map_file)).start()
    hp = HaproxyProcess(haproxy_cfg(hp_port, pools, map_file)).start(wait_ports=[hp_port])
    from_cfg = LbcoreFromHaproxyCfg(haproxy_cfg(cfg_port, pools, map_file))
    try:
        wait_port(cfg_port, proc=from_cfg.proc)
        yield {"lbcore": lb_port, "haproxy": hp_port, "lbcore -f": cfg_port}
    finally:
        lb.stop()
        hp.stop()
        from_cfg.stop()


AUTH = "Basic " + base64.b64encode(b"ops:pw").decode()

# (method, path, host, extra headers): all sent on one connection.
REQUESTS = [
    ("GET", "/echo", "www.example.com", []),
    ("GET", "/api/echo", "www.example.com", []),
    ("GET", "/x.css", "www.example.com", []),
    ("GET", "/echo", "api.example.com", []),
    ("GET", "/echo", "STATIC.example.com", []),
    ("GET", "/echo", "other.example.org", [("X-Debug", "1"), ("User-Agent", "curl/8.1")]),
    ("GET", "/private/x", "www.example.com", []),
    ("GET", "/echo", "www.example.com", [("X-Flood", "1")]),
    ("GET", "/ping", "www.example.com", []),
    ("GET", "/secure/a?b=1", "www.example.com:8443", []),
    ("GET", "/some/where?q=1", "old.example.com", []),
    ("GET", "/old", "www.example.com", []),
    ("GET", "/echo", "admin.example.com", []),
    ("GET", "/echo", "admin.example.com", [("Authorization", AUTH)]),
    ("DELETE", "/api/echo", "www.example.com", []),
    ("GET", "/legacy/x?y=2", "www.example.com", []),
    ("GET", "/api/echo", "static.example.com", [("X-Tag", "a")]),
    ("GET", "/echo", "www.example.com", [("X-Tag", "a, old,b")]),
    ("GET", "/status/404", "www.example.com", []),
    ("GET", "/headers?Location=http://www.example.com/next", "www.example.com", []),
    ("HEAD", "/ping", "www.example.com", []),
    ("GET", "/echo", "www.example.com", []),
]


def summary(resp, port: int) -> dict:
    out = {"status": resp.status, "server": resp.header("X-Server")}
    for name in RESPONSE_HEADERS:
        values = resp.all(name)
        if values and not (name in ("content-type", "content-length") and out["server"]):
            out[name] = values
    if out["server"] and (resp.header("content-type") or "").startswith("application/json"):
        body = json.loads(resp.body)
        out["path"] = body["path"]
        seen = [(k.lower(), v) for k, v in body["headers"]]
        out["headers"] = sorted((k, v.replace(str(port), "PORT")) for k, v in seen if k in REQUEST_HEADERS)
    else:
        out["body"] = resp.body
    return out


def run_all(port: int) -> list:
    results = []
    with RawClient(port, timeout=5) as client:
        for method, path, host, headers in REQUESTS:
            client.request(method, path, headers=headers, host=host)
            response = client.read_response(head_request=method == "HEAD")
            results.append((method, path, host, summary(response, port)))
    return results


def test_same_answers_as_haproxy_on_one_keep_alive_connection(proxies):
    ours = run_all(proxies["lbcore"])
    theirs = run_all(proxies["haproxy"])
    for mine, reference in zip(ours, theirs):
        assert mine == reference


def test_the_same_rules_read_from_haproxy_cfg(proxies):
    """`lbcore -f` on the haproxy.cfg haproxy runs: the same answers again."""
    ours = run_all(proxies["lbcore -f"])
    theirs = run_all(proxies["haproxy"])
    for mine, reference in zip(ours, theirs):
        assert mine == reference
    # and the switching really happened per request on that one connection
    servers = [result[3]["server"] for result in ours]
    assert servers[:5] == ["web1", "api1", "static1", "api1", "static1"]


def refused(port: int, source: str) -> bool:
    """True when the connection is closed or reset before any answer."""
    try:
        with RawClient(port, source=source, timeout=3) as client:
            client.request("GET", "/echo", host="www.example.com")
            client.read_response()
    except (ConnectionClosed, OSError):
        return True
    return False


@pytest.mark.parametrize("name", ["lbcore", "haproxy", "lbcore -f"])
def test_tcp_request_reject_closes_before_any_byte(proxies, name):
    assert refused(proxies[name], "127.0.0.99")
    assert not refused(proxies[name], "127.0.0.98")


def test_answers_keep_the_connection_unless_the_client_closes(proxies):
    for name in ("lbcore", "haproxy"):
        with RawClient(proxies[name], timeout=3) as client:
            client.request("GET", "/private", host="www.example.com", headers=[("Connection", "close")])
            resp = client.read_response()
            assert resp.status == 403
            assert resp.header("connection") == "close", name
            assert client.closed_within(2), name
