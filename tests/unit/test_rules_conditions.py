"""ACL syntax, matching and conditions (lbcore/rules), no sockets."""

import pytest

from lbcore import rules
from lbcore.rules import AclTable, Connection, Request, Response, RuleError, compile_condition


def ctx(list_name="http_request", **kw):
    return rules.context(list_name, kw.pop("base_dir", "."), kw.pop("userlists", {}), {}, "fe", **kw)


def request(target=b"/", headers=b"Host: www.example.com\r\n", method=b"GET", src="127.0.0.1",
            dst_port=80, ssl=False, sni=None):
    return Request(Connection(src, 40000, "127.0.0.1", dst_port, ssl, sni), method, target, b"1.1", headers)


def check(text, msg, acls=None, c=None):
    c = c or ctx()
    return compile_condition(text, AclTable(acls or {}, c), c)(msg)


@pytest.mark.parametrize("text, target, expected", [
    ("{ path /a }", b"/a", True),
    ("{ path /a }", b"/a?x=1", True),
    ("{ path /a }", b"/ab", False),
    ("{ path_beg /api /v2 }", b"/v2/x", True),
    ("{ path_beg /api }", b"/API", False),
    ("{ path_beg -i /api }", b"/API/x", True),
    ("{ path_end .css .js }", b"/x/y.js?v=1", True),
    ("{ path_sub admin }", b"/x/admin/y", True),
    ("{ path_reg ^/v[0-9]+/ }", b"/v12/x", True),
    ("{ path_reg ^/v[0-9]+/ }", b"/vx/x", False),
    ("{ path_dir admin }", b"/x/admin/y", True),
    ("{ path_dir adm }", b"/x/admin/y", False),
    ("{ path -m beg /a }", b"/abc", True),
    ("{ url /a?b }", b"/a?b", True),
    ("{ url_beg http:// }", b"http://h/a", True),
    ("{ path /a }", b"http://h/a?x", True),
    ("{ query x=1 }", b"/a?x=1", True),
    ("{ query -m found }", b"/a", False),
    ("{ query -m found }", b"/a?", True),
    ("{ url_param(id) 42 }", b"/a?x=1&id=42", True),
    ("{ url_param(id) 42 }", b"/a?xid=42", False),
    ("{ url_param(id) -m found }", b"/a?id=", True),
    ("{ path_len gt 3 }", b"/abcd", True),
    ("{ path,url_dec '/a b' }", b"/a%20b", True),
    ("{ path,upper /A }", b"/a", True),
])
def test_path_url_and_query_matching(text, target, expected):
    assert check(text, request(target)) is expected


@pytest.mark.parametrize("text, expected", [
    ("{ hdr(host) www.example.com }", True),
    ("{ hdr(Host) -i WWW.EXAMPLE.COM }", True),
    ("{ hdr(host) -m dom example.com }", True),
    ("{ hdr(host) -m dom ample.com }", False),
    ("{ hdr_dom(host) www }", True),
    ("{ hdr_beg(host) www. }", True),
    ("{ hdr_end(host) .com }", True),
    ("{ req.hdr(host),lower -m str www.example.com }", True),
    ("{ hdr(x-list) b }", True),          # comma-separated values are tried one by one
    ("{ fhdr(x-list) b }", False),        # fhdr takes the whole line
    ("{ hdr(x-list,1) a }", True),
    ("{ hdr(x-list,-1) c }", True),
    ("{ hdr_cnt(x-list) eq 3 }", True),
    ("{ hdr_cnt(x-none) eq 0 }", True),
    ("{ hdr(x-none) -m found }", False),
    ("{ hdr(x-num) gt 10 }", False),      # default match of hdr is str
    ("{ hdr_val(x-num) gt 10 }", True),
    ("{ hdr(x-num) -m int ge 12 }", True),
    ("{ hdr(x-num) -m int 10:20 }", True),
    ("{ hdr(x-num) -m int :11 }", False),
    ("{ hdr_sub(user-agent) -i CURL }", True),
    ("{ method GET HEAD }", True),
    ("{ method POST }", False),
])
def test_header_and_method_matching(text, expected):
    msg = request(b"/", b"Host: www.example.com\r\nX-List: a, b\r\nx-list: c\r\nX-Num: 12\r\n"
                        b"User-Agent: curl/8\r\n")
    assert check(text, msg) is expected


@pytest.mark.parametrize("text, src, expected", [
    ("{ src 10.0.0.0/8 }", "10.1.2.3", True),
    ("{ src 10.0.0.0/8 192.168.0.0/16 }", "192.168.7.1", True),
    ("{ src 10.0.0.0/8 }", "11.0.0.1", False),
    ("{ src 10.0.0.1 }", "10.0.0.1", True),
    ("{ src 10.0.0.0/8 }", "::ffff:10.0.0.5", True),   # IPv4-mapped
    ("{ src 2001:db8::/32 }", "2001:db8::1", True),
    ("{ src 2001:db8::/32 }", "10.0.0.1", False),
    ("LOCALHOST", "127.0.0.1", True),
    ("LOCALHOST", "::1", True),
])
def test_ip_matching(text, src, expected):
    assert check(text, request(src=src)) is expected


def test_connection_fetches():
    msg = request(dst_port=8443, ssl=True, sni="api.example.com")
    assert check("{ ssl_fc }", msg)
    assert not check("!{ ssl_fc }", msg)
    assert check("{ dst_port 8443 }", msg)
    assert check("{ dst_port 8000:9000 }", msg)
    assert check("{ ssl_fc_sni api.example.com }", msg)
    assert check("{ ssl_fc_sni_end .example.com }", msg)
    assert not check("{ ssl_fc }", request())
    assert not check("{ ssl_fc_sni -m found }", request())


def test_boolean_logic_named_and_anonymous():
    acls = {"api": "path_beg /api", "internal": "src 10.0.0.0/8", "admin": "hdr(host) -i admin"}
    text = "api !internal or admin"
    assert check(text, request(b"/api/x", src="1.2.3.4"), acls)
    assert not check(text, request(b"/api/x", src="10.0.0.1"), acls)
    assert check(text, request(b"/x", b"Host: ADMIN\r\n", src="10.0.0.1"), acls)
    assert not check(text, request(b"/x", src="1.2.3.4"), acls)
    assert check("api || admin", request(b"/api"), acls)
    assert check("! api", request(b"/x"), acls)
    assert check("!{ path /x } or api", request(b"/api"), acls)
    # three terms side by side: all must hold
    assert check("api !internal { method GET }", request(b"/api", src="1.1.1.1"), acls)
    assert not check("api !internal { method POST }", request(b"/api", src="1.1.1.1"), acls)


def test_unless_negates_the_whole_condition():
    c = ctx()
    cond = compile_condition("{ path /a } { method GET }", AclTable({}, c), c, negate=True)
    assert cond(request(b"/a")) is False
    assert cond(request(b"/a", method=b"POST")) is True


def test_acl_with_several_definitions_matches_any():
    acls = {"static": ["path_end .css", "path_beg /static/"]}
    assert check("static", request(b"/x.css"), acls)
    assert check("static", request(b"/static/x"), acls)
    assert not check("static", request(b"/x"), acls)


def test_predefined_acls():
    assert check("TRUE", request())
    assert not check("FALSE", request())
    assert check("METH_GET", request(method=b"HEAD"))
    assert check("HTTP_1.1", request())
    assert check("HTTP_URL_ABS", request(b"http://h/x"))


def test_pattern_file(tmp_path):
    (tmp_path / "paths.lst").write_text("# blocked\n/admin\n\n/private\n")
    c = ctx(base_dir=str(tmp_path))
    assert check("{ path_beg -f paths.lst }", request(b"/private/x"), c=c)
    assert not check("{ path_beg -f paths.lst }", request(b"/public"), c=c)


def test_acl_without_patterns_never_matches_as_haproxy():
    assert not check("{ hdr(host) }", request())
    assert check("{ hdr(host) -m found }", request())


def test_response_fetches():
    c = ctx("http_response")
    resp = Response(request(), request().conn, 503, b"Server: x\r\nX-A: 1\r\n")
    cond = compile_condition("{ status 500:599 } { res.hdr(server) x } { hdr(x-a) 1 }", AclTable({}, c), c)
    assert cond(resp)
    resp.status = 200
    assert not cond(resp)


@pytest.mark.parametrize("text, error", [
    ("{ pathx /a }", "unknown fetch 'pathx'"),
    ("{ path_reg ( }", "invalid regex '('"),
    ("nope", "unknown ACL 'nope'"),
    ("{ path -m nope x }", "unknown match method 'nope'"),
    ("{ src 10.0.0.300 }", "invalid IP address or network '10.0.0.300'"),
    ("{ dst_port gt x }", "expected an integer pattern, got 'x'"),
    ("{ path /a", "'{' without a matching '}'"),
    ("path }", "unknown ACL 'path'"),
    ("}", "'}' without a matching '{'"),
    ("or { path /a }", "'or' without a condition before it"),
    ("{ path /a } or", "'or' without a condition after it"),
    ("!", "'!' at the end of the condition"),
    ("", "empty condition"),
    ("{ }", "empty ACL"),
    ("{ status 200 }", "fetch 'status' reads the response, which http_request rules cannot see"),
    ("{ hdr() x }", "fetch 'hdr' takes 1 to 2 argument(s), got 0"),
    ("{ path(x) /a }", "fetch 'path' takes no arguments"),
    ("{ path,frob /a }", "unknown converter 'frob'"),
    ("{ path -z /a }", "unknown ACL flag '-z'"),
    ("{ path_beg -f /nonexistent/file }", "pattern file not found: /nonexistent/file"),
    ("{ path 'a }", "unterminated ' quote"),
    ("{ hdr(host),map_str(/nonexistent.map) x }", "map file not found: /nonexistent.map"),
])
def test_bad_expressions_are_clear_errors(text, error):
    c = ctx()
    with pytest.raises(RuleError) as info:
        compile_condition(text, AclTable({}, c), c)
    assert error in str(info.value)


def test_tcp_request_sees_only_connection_fetches():
    c = ctx("tcp_request")
    with pytest.raises(RuleError, match="tcp_request rules cannot see"):
        compile_condition("{ path /a }", AclTable({}, c), c)
    with pytest.raises(RuleError, match="ACL 'api': fetch 'path'"):
        compile_condition("api", AclTable({"api": "path_beg /a"}, c), c)
    l4 = compile_condition("{ src 10.0.0.0/8 }", AclTable({}, c), c)
    assert l4(rules.message.Request(Connection("10.0.0.9"), b"", b"", b"", b""))


def test_no_expression_crashes_the_parser():
    """Every bad expression is a RuleError with a message, never another
    exception (a config typo must not take lbcore down with a traceback)."""
    import random
    words = ["{", "}", "!", "or", "||", "path", "path_beg", "hdr(host)", "hdr(", "hdr()", "-i", "-m", "beg",
             "reg", "int", "ip", "found", "-f", "--", "/a", "(", ")", "[", "'", '"', "\\", "gt", "10", "x:y",
             "10.0.0.0/33", "map_str(", "path,lower", "path,map_dom()", ",", "%[", "src", "url_param(a,b,c)",
             "status", "TRUE", "api", "!api", "!{", "{path", "-m", "dom", "len", "eq", ":", "::1", "a{2}"]
    rng = random.Random(9)
    c = ctx()
    table = AclTable({"api": "path_beg /api"}, c)
    for _ in range(3000):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 7)))
        try:
            check_ = compile_condition(text, table, c)
        except RuleError as exc:
            assert str(exc)
            continue
        check_(request(b"/api?x=1", b"Host: a\r\nX: 1, 2\r\n"))
