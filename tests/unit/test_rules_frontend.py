"""FrontendRules: the calls the proxy makes, over specs from lb.yaml
(model objects stood in for by plain ones: no sockets)."""

import textwrap
from types import SimpleNamespace

from lbcore.config import loads
from lbcore.rules import Answer
from lbcore.rules.frontend import FrontendRules

CONFIG = """
frontends:
  web:
    bind: 127.0.0.1:8080
    backend: be
    acls: {api: "path_beg /api", internal: "src 10.0.0.0/8"}
    tcp_request:
      - {reject: true, if: "{ src 192.0.2.0/24 }"}
    http_request:
      - {deny: 403, if: "{ path_beg /admin } !internal"}
      - {set_header: [X-Port, "%[dst_port]"]}
    http_response:
      - {set_header: [X-Frontend, web]}
      - {deny: true, if: "{ status 500 }"}
    use_backend:
      - {backend: api, if: api}
      - {backend: "%[req.hdr(x-pool)]"}
  plain:
    bind: 127.0.0.1:8081
    backend: tcpbe
    mode: tcp
backends:
  be: {servers: [{name: s1, address: 10.0.0.1:80}]}
  api:
    http_request: [{set_header: [X-Backend, api]}, {deny: 405, if: "{ method DELETE }"}]
    http_response: [{set_header: [X-Backend-Resp, api]}, {set_header: [X-Frontend, backend-first]}]
    servers: [{name: s1, address: 10.0.0.2:80}]
  tcpbe: {mode: tcp, servers: [{name: s1, address: 10.0.0.3:80}]}
"""


def model():
    config = loads(textwrap.dedent(CONFIG))
    backends = {name: SimpleNamespace(spec=spec, mode=spec.mode, name=name)
                for name, spec in config.backends.items()}
    frontends = {name: SimpleNamespace(spec=spec, backend=backends[spec.backend])
                 for name, spec in config.frontends.items()}
    return frontends, backends


def test_no_rules_no_object():
    frontends, backends = model()
    assert FrontendRules.build(frontends["plain"], backends) is None
    assert FrontendRules.build(frontends["web"], backends) is not None


def test_the_calls_the_proxy_makes():
    frontends, backends = model()
    rules = FrontendRules.build(frontends["web"], backends)
    assert not rules.tcp_request(rules.connection(("192.0.2.7", 5000), ("127.0.0.1", 8080), None))
    facts = rules.connection(("10.1.1.1", 5000), ("127.0.0.1", 8080), None)
    assert rules.tcp_request(facts)

    request = rules.request(facts, b"GET", b"/api/x", b"1.1", b"Host: a\r\n")
    assert rules.http_request(request) is None
    assert rules.use_backend(request) is backends["api"]
    assert request.changed
    assert request.headers.block == b"Host: a\r\nX-Port: 8080\r\nX-Backend: api\r\n"
    head = rules.http_response(request, b"HTTP/1.1 200 OK\r\nServer: s\r\n")
    # the backend's response rules run first, then the frontend's
    assert head == (b"HTTP/1.1 200 OK\r\nServer: s\r\nX-Backend-Resp: api\r\nX-Frontend: web\r\n")
    denied = rules.http_response(request, b"HTTP/1.1 500 Oops\r\n")
    assert isinstance(denied, Answer) and denied.status == 502

    # the chosen backend's own request rules can answer too
    delete = rules.request(facts, b"DELETE", b"/api/x", b"1.1", b"")
    assert rules.http_request(delete).status == 405

    outsider = rules.connection(("1.2.3.4", 5000), ("127.0.0.1", 8080), None)
    assert rules.http_request(rules.request(outsider, b"GET", b"/admin", b"1.1", b"")).status == 403


def test_dynamic_backend_names_fall_back_to_the_default():
    frontends, backends = model()
    rules = FrontendRules.build(frontends["web"], backends)
    facts = rules.connection(("10.1.1.1", 5000), ("127.0.0.1", 8080), None)
    for pool, expected in ((b"api", backends["api"]), (b"nope", None), (b"tcpbe", None)):
        request = rules.request(facts, b"GET", b"/x", b"1.1", b"X-Pool: " + pool + b"\r\n")
        assert rules.http_request(request) is None
        assert rules.use_backend(request) is expected
    # no header at all: no name, the default
    request = rules.request(facts, b"GET", b"/x", b"1.1", b"")
    rules.http_request(request)
    assert rules.use_backend(request) is None
    assert rules.http_response(request, b"HTTP/1.1 200 OK\r\n") == b"HTTP/1.1 200 OK\r\nX-Frontend: web\r\n"


def test_tcp_mode_switching_per_connection():
    config = loads(textwrap.dedent("""
        frontends:
          db:
            bind: 127.0.0.1:3306
            mode: tcp
            backend: main
            use_backend:
              - {backend: replica, if: "{ src 10.0.0.0/8 }"}
        backends:
          main: {mode: tcp, servers: [{name: s1, address: 10.0.0.3:3306}]}
          replica: {mode: tcp, servers: [{name: s1, address: 10.0.0.4:3306}]}
        """))
    backends = {name: SimpleNamespace(spec=spec, mode=spec.mode) for name, spec in config.backends.items()}
    frontend = SimpleNamespace(spec=config.frontends["db"], backend=backends["main"])
    rules = FrontendRules.build(frontend, backends)
    assert rules.tcp_backend(rules.connection(("10.1.1.1", 1), ("127.0.0.1", 3306), None)) is backends["replica"]
    assert rules.tcp_backend(rules.connection(("192.0.2.1", 1), ("127.0.0.1", 3306), None)) is None


def test_sni_is_remembered_for_ssl_fc_sni():
    import ssl
    from lbcore.rules import remember_sni
    seen = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.sni_callback = lambda obj, name, ctx: seen.append(name)
    remember_sni(context)
    holder = SimpleNamespace()
    context.sni_callback(holder, "api.example.com", context)
    assert holder.lbcore_sni == "api.example.com" and seen == ["api.example.com"]
    facts = FrontendRules.connection(("1.1.1.1", 1), ("127.0.0.1", 443), holder)
    assert facts.ssl and facts.sni == b"api.example.com"


def test_a_frontend_gets_rules_only_when_some_can_touch_its_traffic():
    config = loads(textwrap.dedent("""
        frontends:
          plain: {bind: 127.0.0.1:8080, backend: a}
          to_ruled: {bind: 127.0.0.1:8081, backend: b}
        backends:
          a: {servers: [{name: s1, address: 10.0.0.1:80}]}
          b:
            http_request: [{set_header: [X-B, b]}]
            servers: [{name: s1, address: 10.0.0.2:80}]
        """))
    backends = {name: SimpleNamespace(spec=spec, mode=spec.mode) for name, spec in config.backends.items()}
    frontends = {name: SimpleNamespace(spec=spec, backend=backends[spec.backend])
                 for name, spec in config.frontends.items()}
    assert FrontendRules.build(frontends["plain"], backends) is None
    rules = FrontendRules.build(frontends["to_ruled"], backends)
    request = rules.request(rules.connection(("1.1.1.1", 1), ("127.0.0.1", 8081), None), b"GET", b"/", b"1.1", b"")
    assert rules.http_request(request) is None and request.headers.block == b"X-B: b\r\n"
