"""lb.yaml's rule keys (acls, tcp_request, http_request, http_response,
use_backend, userlists): compiled specs and key-path errors."""

import textwrap

import pytest

from lbcore import rules
from lbcore.config import ConfigError, load, loads
from lbcore.rules import Connection, Request, Response, choose_backend, run

HEAD = """\
userlists:
  admins:
    - {user: ops, insecure_password: pw}
backends:
  be: {servers: [{name: s1, address: 10.0.0.1:80}]}
  api: {servers: [{name: s1, address: 10.0.0.2:80}]}
  db: {mode: tcp, servers: [{name: s1, address: 10.0.0.3:3306}]}
"""


def load_text(body: str, tmp_path=None):
    text = HEAD + textwrap.dedent(body)
    if tmp_path is not None:
        path = tmp_path / "lb.yaml"
        path.write_text(text)
        return load(str(path))
    return loads(text, "lb.yaml")


def problems(body: str) -> list:
    with pytest.raises(ConfigError) as info:
        load_text(body)
    return info.value.problems


def req(target=b"/", headers=b"Host: x\r\n", src="127.0.0.1"):
    return Request(Connection(src, 1, "127.0.0.1", 80), b"GET", target, b"1.1", headers)


def test_rules_compile_into_the_specs(tmp_path):
    (tmp_path / "hosts.map").write_text("api.example.com api\n")
    config = load_text("""
        frontends:
          web:
            bind: 127.0.0.1:8080
            backend: be
            acls:
              api: "path_beg /api"
              internal: ["src 10.0.0.0/8", "src 127.0.0.1"]
            tcp_request:
              - {reject: true, unless: internal}
            http_request:
              - {deny: 403, if: "{ path_beg /admin } !internal"}
              - {set_header: [X-Port, "%[dst_port]"]}
            http_response:
              - {set_header: [X-Frame-Options, DENY]}
            use_backend:
              - {backend: api, if: api}
              - {backend: "%[req.hdr(host),lower,map_str(hosts.map)]"}
        """, tmp_path)
    web = config.frontends["web"]
    assert dict(web.acls) == {"api": ("path_beg /api",), "internal": ("src 10.0.0.0/8", "src 127.0.0.1")}
    assert [r.name for r in web.http_request] == ["deny", "set_header"]
    assert run(web.tcp_request, req(src="10.1.1.1")) is None
    assert run(web.tcp_request, req(src="1.1.1.1")) == rules.REJECT
    assert run(web.http_request, req(b"/admin", src="1.1.1.1")).status == 403
    msg = req(b"/admin", src="10.0.0.1")
    assert run(web.http_request, msg) is None and msg.headers.last(b"x-port") == b"80"
    assert choose_backend(web.use_backend, req(b"/api/x")) == "api"
    assert choose_backend(web.use_backend, req(b"/", b"Host: API.example.com\r\n")) == "api"
    assert choose_backend(web.use_backend, req(b"/", b"Host: nope\r\n")) is None
    response = Response(msg, msg.conn, 200, b"")
    run(web.http_response, response)
    assert response.headers.block == b"X-Frame-Options: DENY\r\n"
    assert config.userlists["admins"].check(b"ops", b"pw")


def test_backend_section_rules():
    text = HEAD.replace("  be: {servers: [{name: s1, address: 10.0.0.1:80}]}",
                        "  be:\n    acls: {post: method POST}\n    http_request: [{deny: 405, if: post}]\n"
                        "    http_response: [{del_header: Server}]\n"
                        "    servers: [{name: s1, address: 10.0.0.1:80}]")
    config = loads(text + "frontends:\n  web: {bind: 127.0.0.1:8080, backend: be}\n")
    be = config.backends["be"]
    post = Request(Connection("1.1.1.1"), b"POST", b"/", b"1.1", b"")
    assert run(be.http_request, post).status == 405
    assert len(be.http_response) == 1


@pytest.mark.parametrize("body, expected", [
    ("""
     frontends:
       api:
         bind: 127.0.0.1:8080
         backend: be
         http_request:
           - {deny: 403}
           - {set_header: [X-A, b]}
           - {deny: 403, if: "{ pathx /a }"}
     """, ["lb.yaml:16: frontends.api.http_request[2].if: unknown fetch 'pathx'"]),
    ("""
     frontends:
       api:
         bind: 127.0.0.1:8080
         backend: be
         acls: {a: "path_beg /a"}
         http_request:
           - {deny: 403, if: "a b"}
     """, ["lb.yaml:15: frontends.api.http_request[0].if: unknown ACL 'b' (defined: a)"]),
    ("""
     frontends:
       api:
         bind: 127.0.0.1:8080
         backend: be
         acls: {bad: "path_reg (x"}
         http_request:
           - {deny: 403, if: bad}
     """, ["lb.yaml:13: frontends.api.acls.bad: invalid regex '(x': missing ), unterminated subpattern "
           "at position 0"]),
    ("""
     frontends:
       api:
         bind: 127.0.0.1:8080
         backend: be
         use_backend:
           - {backend: "%[req.hdr(host),map_dom(/nonexistent/hosts.map)]"}
           - {backend: apx}
           - {backend: db}
           - {backend: api, when: x}
           - {if: x}
     """, ["lb.yaml:14: frontends.api.use_backend[0].backend: map_dom: map file not found: "
           "/nonexistent/hosts.map",
           "lb.yaml:15: frontends.api.use_backend[1].backend: backend 'apx' is not defined "
           "(did you mean 'api'?)",
           "lb.yaml:16: frontends.api.use_backend[2].backend: frontend mode 'http' does not match "
           "backend 'db' mode 'tcp'",
           "lb.yaml:17: frontends.api.use_backend[3].when: unknown key 'when' (expected backend, if or unless)",
           "lb.yaml:18: frontends.api.use_backend[4].backend: required key is missing"]),
    ("""
     frontends:
       api:
         bind: 127.0.0.1:8080
         backend: be
         http_request:
           - {deny: 403, if: x, unless: y}
           - {deny: 403, set_header: [a, b]}
           - {sethdr: [a, b]}
           - deny
           - {auth: true, if: "!{ http_auth(nobody) }"}
     """, ["lb.yaml:14: frontends.api.http_request[0]: give either 'if' or 'unless', not both",
           "lb.yaml:15: frontends.api.http_request[1]: expected exactly one action (one of allow, deny, "
           "return, redirect, auth, set_header, add_header, del_header, replace_header, replace_value, "
           "set_path, set_query, set_uri, track_sc0, track_sc1, track_sc2), got deny, set_header",
           "lb.yaml:16: frontends.api.http_request[2].sethdr: unknown http_request action 'sethdr' "
           "(did you mean 'set_header'?) (expected one of allow, deny, return, redirect, auth, set_header, "
           "add_header, del_header, replace_header, replace_value, set_path, set_query, set_uri, "
           "track_sc0, track_sc1, track_sc2)",
           "lb.yaml:17: frontends.api.http_request[3]: expected a rule like {deny: 403, if: \"...\"}, "
           "got string 'deny'",
           "lb.yaml:18: frontends.api.http_request[4].if: http_auth: unknown userlist 'nobody' (admins)"]),
    ("""
     frontends:
       db:
         bind: 127.0.0.1:3306
         mode: tcp
         backend: db
         tcp_request:
           - {reject: true, if: "{ hdr(host) x }"}
         http_request:
           - {deny: 403}
     """, ["lb.yaml:15: frontends.db.tcp_request[0].if: fetch 'hdr' reads the request, which tcp_request "
           "rules cannot see",
           "lb.yaml:16: frontends.db.http_request: http_request rules need mode http (this section is mode tcp)"]),
])
def test_bad_rules_name_their_key_path(body, expected):
    assert problems(textwrap.dedent(body)) == expected


def test_userlist_errors():
    text = """
    userlists:
      l:
        - {user: a, password: "$9$bogus"}
        - {user: b}
        - {user: "c:d", insecure_password: x}
    frontends:
      web: {bind: 127.0.0.1:8080, backend: be}
    backends:
      be: {servers: [{name: s1, address: 10.0.0.1:80}]}
    """
    with pytest.raises(ConfigError) as info:
        loads(textwrap.dedent(text), "lb.yaml")
    assert info.value.problems == [
        "lb.yaml:4: userlists.l[0].password: unsupported password hash '$9$bog'... (expected a crypt(3) "
        "hash such as mkpasswd -m sha-512 makes: $6$...)",
        "lb.yaml:5: userlists.l[1]: give exactly one of password (a crypt(3) hash) or insecure_password",
        "lb.yaml:6: userlists.l[2].user: must not contain ':' (HTTP basic auth separator)",
    ]


def test_every_key_is_in_the_configuration_reference():
    """docs/configuration.md documents every key the loader reads: a new key
    goes into the reference with its code."""
    import pathlib
    from lbcore import config as config_module
    docs = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    keys = set()
    for name in dir(config_module):
        if name.startswith("_") and name.endswith("_KEYS"):
            keys.update(getattr(config_module, name))
    keys.update(config_module._RulesReader.USER_KEYS)
    import re
    missing = sorted(key for key in keys if not re.search(rf"[`.{{ ]{re.escape(key)}\b", docs))
    assert missing == []
