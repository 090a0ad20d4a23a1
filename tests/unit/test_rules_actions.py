"""Rule actions, answers, formats, maps, use_backend and userlists
(lbcore/rules), no sockets. Answer bytes are HAProxy 2.6's, as captured
from haproxy on the same rules."""

import base64
import warnings

import pytest

from lbcore import rules
from lbcore.rules import (STOP, AclTable, Connection, Request, Response, RuleError, Rule,
                          UseBackend, choose_backend, compile_action, compile_condition,
                          compile_format, run)
from lbcore.rules.auth import Userlist, check_hash, crypt


def ctx(list_name="http_request", base_dir=".", userlists=None):
    return rules.context(list_name, base_dir, userlists or {}, {}, "fe")


def request(target=b"/x?a=1", headers=b"Host: h.example:8080\r\nUser-Agent: curl/8.1\r\n", src="127.0.0.1"):
    return Request(Connection(src, 40000, "127.0.0.1", 8080), b"GET", target, b"1.1", headers)


def rule(action, value, cond=None, list_name="http_request", **kw):
    c = ctx(list_name, **kw)
    when = compile_condition(cond, AclTable({}, c), c) if cond else None
    return Rule(when, compile_action(list_name, action, value, c), action)


def test_deny_default_and_status_pages_are_haproxys():
    answer = run((rule("deny", True),), request())
    assert answer.render(close=True) == (
        b"HTTP/1.1 403 Forbidden\r\ncontent-length: 93\r\ncache-control: no-cache\r\n"
        b"content-type: text/html\r\nconnection: close\r\n\r\n"
        b"<html><body><h1>403 Forbidden</h1>\nRequest forbidden by administrative rules.\n</body></html>\n")
    answer = run((rule("deny", 429),), request())
    assert answer.status == 429 and answer.kind == "deny"
    assert answer.render(close=False).startswith(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 117\r\n")
    assert answer.render(close=False).endswith(b"You have sent too many requests in a given amount of time.\n</body></html>\n")


def test_rules_run_in_order_and_a_final_action_ends_the_list():
    msg = request(b"/ping")
    rules_ = (rule("set_header", ["X-A", "1"]),
              rule("return", {"status": 200, "content_type": "text/plain", "body": "pong"}, "{ path /ping }"),
              rule("set_header", ["X-B", "2"]))
    answer = run(rules_, msg)
    assert answer.render(close=False) == (b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n"
                                          b"content-type: text/plain\r\n\r\npong")
    assert msg.headers.last(b"x-a") == b"1" and not msg.headers.has(b"x-b")
    assert run(rules_, request(b"/other")) is None


def test_return_with_headers_and_samples():
    answer = run((rule("return", {"status": 201, "content_type": "application/json", "body": "{}",
                                  "headers": {"X-A": "a", "X-B": "b%[path]"}}),), request(b"/ret2"))
    assert answer.render(close=False) == (b"HTTP/1.1 201 Created\r\nX-A: a\r\nX-B: b/ret2\r\n"
                                          b"content-length: 2\r\ncontent-type: application/json\r\n\r\n{}")
    assert run((rule("return", {"status": 404}),), request()).render(close=False) == (
        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")


def test_allow_stops_the_list():
    rules_ = (rule("allow", True, "{ src 127.0.0.1 }"), rule("deny", True))
    assert run(rules_, request()) is STOP
    assert run(rules_, request(src="10.0.0.1")).status == 403


@pytest.mark.parametrize("value, target, location, cache", [
    ("scheme https code 301", b"/sch/a?b=1", b"https://h.example:8080/sch/a?b=1", False),
    ("prefix https://x.example.com", b"/pre/x?q", b"https://x.example.com/pre/x?q", True),
    ("prefix /p drop-query append-slash", b"/pdq/a?b", b"/p/pdq/a/", True),
    ("prefix /", b"/same?x", b"/same?x", True),
    ("location /new", b"/loc", b"/new", True),
    ("location /r308 code 308", b"/x", b"/r308", False),
    ("location /r303 code 303", b"/x", b"/r303", True),
    ("location https://%[req.hdr(host)]%[path]/", b"/p", b"https://h.example:8080/p/", True),
])
def test_redirects(value, target, location, cache):
    answer = run((rule("redirect", value),), request(target))
    code = int(value.split("code ")[1]) if "code" in value else 302
    reason = {301: b"Moved Permanently", 302: b"Found", 303: b"See Other", 308: b"Permanent Redirect"}[code]
    expected = b"HTTP/1.1 %d %s\r\ncontent-length: 0\r\nlocation: %s\r\n" % (code, reason, location)
    if cache:
        expected += b"cache-control: no-cache\r\n"
    assert answer.render(close=False) == expected + b"\r\n"


def test_scheme_redirect_without_host_as_haproxy():
    msg = Request(Connection("127.0.0.1"), b"GET", b"/nohost", b"1.0", b"")
    assert b"location: https:///nohost\r\n" in run((rule("redirect", "scheme https"),), msg).head


def test_header_edits():
    msg = request(headers=b"Host: h\r\nX-A: 1\r\nx-a: 2\r\nUser-Agent: curl/7.1\r\nX-T: a, old, b\r\n")
    run((rule("set_header", ["X-A", "new"]),
         rule("add_header", ["X-Port", "%[dst_port]"]),
         rule("add_header", ["X-Miss", "a%[req.hdr(nope)]b"]),
         rule("del_header", "host"),
         rule("replace_header", ["User-Agent", "curl/(.*)", "c-\\1"]),
         rule("replace_value", ["X-T", "^old$", "new"])), msg)
    assert msg.changed
    assert msg.headers.block == (b"User-Agent: c-7.1\r\nX-T: a,new,b\r\nX-A: new\r\nX-Port: 8080\r\n"
                                 b"X-Miss: ab\r\n")


def test_replace_header_replaces_the_whole_value_as_haproxy():
    msg = request(headers=b"User-Agent: curl/7.1\r\n")
    run((rule("replace_header", ["User-Agent", "curl", "foo"]),), msg)
    assert msg.headers.last(b"user-agent") == b"foo"


def test_a_sample_cannot_inject_a_header_line():
    msg = request(target=b"/a%0d%0aX-Evil:%201")
    run((rule("set_header", ["X-P", "%[path,url_dec]"]),), msg)
    assert msg.headers.block.count(b"\r\n") == 3
    assert b"X-P: /aX-Evil: 1\r\n" in msg.headers.block


def test_path_and_query_edits():
    msg = request(b"/legacy/x?a=1")
    run((rule("set_path", "/v2%[path]"),), msg)
    assert msg.target == b"/v2/legacy/x?a=1" and msg.changed
    run((rule("set_query", "lang=en"),), msg)
    assert msg.target == b"/v2/legacy/x?lang=en"
    run((rule("set_uri", "/index.html"),), msg)
    assert msg.target == b"/index.html" and msg.path() == b"/index.html"


def test_response_rules():
    resp = Response(request(), request().conn, 200, b"Server: x\r\nLocation: http://a/b\r\n")
    answer = run((rule("replace_header", ["Location", "^http://(.*)", "https://\\1"], list_name="http_response"),
                  rule("set_header", ["Strict-Transport-Security", "max-age=1"], list_name="http_response"),
                  rule("del_header", "Server", list_name="http_response"),
                  rule("deny", True, "{ status 500:599 }", list_name="http_response")), resp)
    assert answer is None
    assert resp.headers.block == b"Location: https://a/b\r\nStrict-Transport-Security: max-age=1\r\n"
    resp.status = 503
    answer = run((rule("deny", True, "{ status 500:599 }", list_name="http_response"),), resp)
    assert answer.status == 502 and answer.head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")


def test_tcp_request_actions():
    rules_ = (rule("accept", True, "{ src 10.0.0.0/8 }", "tcp_request"),
              rule("reject", True, None, "tcp_request"))
    assert run(rules_, request(src="10.1.1.1")) is STOP
    assert run(rules_, request(src="1.1.1.1")) == rules.REJECT


@pytest.mark.parametrize("list_name, action, value, error", [
    ("http_request", "deny", 418, "status 418 is not one of"),
    ("http_request", "deny", "x", "deny takes true, a status code"),
    ("http_request", "redirect", "scheme", "redirect takes"),
    ("http_request", "redirect", "location /x code 200", "status 200 is not one of 301, 302"),
    ("http_request", "redirect", "location /x nope", "unknown option 'nope'"),
    ("http_request", "set_header", "X-A", "set_header takes [NAME, VALUE]"),
    ("http_request", "set_header", ["X A", "1"], "invalid header name 'X A'"),
    ("http_request", "replace_header", ["X", "(", "y"], "invalid regex '('"),
    ("http_request", "return", {"status": 99}, "status must be a code in 200..599"),
    ("http_request", "return", {"stat": 200}, "unknown key 'stat'"),
    ("http_request", "auth", 5, "auth takes true, a realm"),
    ("http_request", "frob", True, "unknown http_request action 'frob'"),
    ("http_response", "redirect", "location /", "unknown http_response action 'redirect'"),
    ("tcp_request", "reject", False, "reject takes true"),
    ("http_request", "set_header", ["X", "%[status]"], "fetch 'status' reads the response"),
])
def test_bad_actions_are_clear_errors(list_name, action, value, error):
    with pytest.raises(RuleError) as info:
        compile_action(list_name, action, value, ctx(list_name))
    assert error in str(info.value)


def test_format_strings():
    c = ctx()
    assert compile_format("plain 100%% sure", c).constant == b"plain 100% sure"
    fmt = compile_format("%[src]:%[dst_port] %[hdr(host),upper] [%[query]]", c)
    assert fmt.constant is None
    assert fmt.render(request(b"/x")) == b"127.0.0.1:8080 H.EXAMPLE:8080 []"
    with pytest.raises(RuleError, match="missing"):
        compile_format("%[path", c)


def test_maps(tmp_path):
    (tmp_path / "hosts.map").write_text(
        "# comment\nstatic.example.com static\n\nexample.com  web\n")
    (tmp_path / "paths.map").write_text("/api/v2 api2\n/api api\n")
    (tmp_path / "re.map").write_text("^/img/.*\\.png$ images\n")
    c = ctx(base_dir=str(tmp_path))

    def render(text, msg):
        return compile_format(text, c).render(msg)
    host = lambda h: request(b"/", b"Host: " + h + b"\r\n")  # noqa: E731
    assert render("%[req.hdr(host),lower,map_dom(hosts.map)]", host(b"IMG.Static.Example.com")) == b"static"
    assert render("%[req.hdr(host),lower,map_dom(hosts.map)]", host(b"www.example.com")) == b"web"
    assert render("%[req.hdr(host),map_dom(hosts.map,dflt)]", host(b"other.org")) == b"dflt"
    assert render("%[req.hdr(host),map_str(hosts.map)]", host(b"example.com")) == b"web"
    assert render("%[req.hdr(host),map(hosts.map)]", host(b"www.example.com")) == b""
    assert render("%[path,map_beg(paths.map)]", request(b"/api/v2/x")) == b"api2"
    assert render("%[path,map_beg(paths.map)]", request(b"/api/v1")) == b"api"
    assert render("%[path,map_reg(re.map)]", request(b"/img/a.png")) == b"images"
    (tmp_path / "bad.map").write_text("ok x\n([ y\n")
    with pytest.raises(RuleError, match=r"bad.map:2: invalid regex"):
        compile_format("%[path,map_reg(bad.map)]", c)


def test_use_backend_first_match_and_dynamic_names(tmp_path):
    (tmp_path / "hosts.map").write_text("api.example.com api\n")
    c = ctx(base_dir=str(tmp_path))
    table = AclTable({"static": "path_beg /static"}, c)
    switch = (UseBackend(compile_condition("static", table, c), "static", None),
              UseBackend(None, None, compile_format("%[req.hdr(host),lower,map_str(hosts.map)]", c)))
    assert choose_backend(switch, request(b"/static/x")) == "static"
    assert choose_backend(switch, request(b"/", b"Host: API.example.com\r\n")) == "api"
    assert choose_backend(switch, request(b"/", b"Host: other\r\n")) is None


def test_userlists_with_crypt_hashes_and_plain_passwords():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt as pycrypt
        sha512 = pycrypt.crypt("s3cret", pycrypt.mksalt(pycrypt.METHOD_SHA512))
        sha256 = pycrypt.crypt("s3cret", pycrypt.mksalt(pycrypt.METHOD_SHA256))
    for hashed in (sha512, sha256):
        check_hash(hashed)
        assert crypt(b"s3cret", hashed.encode()) == hashed.encode()
    users = Userlist("admins", {b"ops": (True, sha512.encode()), b"five": (True, sha256.encode()),
                                b"ci": (False, b"plain")})
    assert users.check(b"ops", b"s3cret") and users.check(b"ops", b"s3cret")  # second from the cache
    assert users.check(b"five", b"s3cret")
    assert not users.check(b"ops", b"wrong")
    assert users.check(b"ci", b"plain") and not users.check(b"ci", b"plainx")
    assert not users.check(b"nobody", b"s3cret")
    with pytest.raises(RuleError, match="unsupported password hash"):
        check_hash("$9$abc")

    c = ctx(userlists={"admins": users})
    authed = compile_condition("{ http_auth(admins) }", AclTable({}, c), c)

    def with_auth(value):
        return request(headers=b"Host: h\r\nAuthorization: " + value + b"\r\n")
    assert authed(with_auth(b"Basic " + base64.b64encode(b"ops:s3cret")))
    assert not authed(with_auth(b"Basic " + base64.b64encode(b"ops:nope")))
    assert not authed(with_auth(b"Basic !!!"))
    assert not authed(with_auth(b"Bearer x"))
    assert not authed(request())
    challenge = run((Rule(compile_condition("!{ http_auth(admins) }", AclTable({}, c), c),
                          compile_action("http_request", "auth", {"realm": "Ops"}, c), "auth"),), request())
    assert challenge.render(close=False) == (
        b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 112\r\ncache-control: no-cache\r\n"
        b"content-type: text/html\r\nwww-authenticate: Basic realm=\"Ops\"\r\n\r\n"
        b"<html><body><h1>401 Unauthorized</h1>\nYou need a valid user and password to access this content.\n"
        b"</body></html>\n")


def test_no_action_value_crashes_the_parser():
    """Any YAML value under any action key: a RuleError or a working action."""
    import itertools
    values = [None, True, False, 0, 403, 418, -1, "", "x", "%[", "%[path]", "scheme", "location /x code",
              [], ["X"], ["X", 1], ["X A", "v"], ["X", "(", "y"], ["X", "a", "b", "c"], {}, {"status": "x"},
              {"status": 200, "body": 5}, {"realm": 1}, {"scheme": "https", "code": 301}, 1.5]
    msg = request(b"/a?b=1")
    for list_name in ("http_request", "http_response", "tcp_request"):
        for action, value in itertools.product(list(rules.LISTS[list_name][0]), values):
            try:
                act = compile_action(list_name, action, value, ctx(list_name))
            except RuleError as exc:
                assert str(exc)
                continue
            target = msg if list_name != "http_response" else Response(msg, msg.conn, 200, b"X: 1\r\n")
            act(target)
