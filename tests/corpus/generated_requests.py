"""A generated corpus of hostile HTTP/1.1 requests, several times the
hand-written one (tests/corpus/hostile_requests.py).

Each family below varies one part of a request systematically (the request
line, field names and values byte by byte, Host, Content-Length,
Transfer-Encoding, Connection tokens, Expect and Upgrade, chunk lines,
trailers, pipelines) around a valid request, and says what RFC 9110/9112
ask of a server: REFUSE (with `status`, 0 for "any 4xx"), ACCEPT, or
EITHER (the RFC leaves the choice; only compared with haproxy).

Every request built here carries an `X-Case: <number>` field as its last
field line, so the recording backend can tell which case a forwarded
request came from even when the proxy reuses a server connection for
several clients. A request that reaches the backend without a tag of its
own is a smuggled one.

tests/integration/test_generated_requests.py runs the whole corpus through
lbcore and haproxy 2.6 side by side; `python -m tests.corpus.compare`
prints where they differ.
"""

from __future__ import annotations

from tests.corpus.hostile_requests import ACCEPT, EITHER, REFUSE, SMUGGLED, Case

ANY_4XX = 0

_cases: list[Case] = []


TAG = b"X-Case: @\r\n"  # the @ becomes the case's number in `_add`


def _tag() -> bytes:
    return TAG


def _add(cid: str, raw: bytes, rfc: str = REFUSE, status: int = 400, why: str = "",
         also: tuple = (), answers: int = 0) -> None:
    number = b"%d" % len(_cases)
    raw = raw.replace(TAG, TAG.replace(b"@", number)).replace(b"X-Case: @\n", b"X-Case: %s\n" % number)
    _cases.append(Case("g-" + cid, raw, rfc, status, why, also, answers))


def req(method: bytes = b"GET", target: bytes = b"/", version: bytes = b"HTTP/1.1",
        fields: bytes = b"Host: a\r\n", body: bytes = b"", line: bytes = b"") -> bytes:
    """A request with the case tag as its last field; `line` replaces the
    whole request line (with its line end) when given."""
    first = line or method + b" " + target + b" " + version + b"\r\n"
    return first + fields + _tag() + b"\r\n" + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST = b"0\r\n\r\n"
BODY = b"hello"
# A chunked body that, read by its Content-Length (4 bytes) or as an
# unframed body, leaves a whole request for the server to read next.
SMUGGLE_CHUNKED = chunk(SMUGGLED) + LAST
CTLS = [bytes([b]) for b in range(0x20) if b != 0x09] + [b"\x7f"]


def _name(b: bytes) -> str:
    return "%02x" % b[0]


# -- the request line ------------------------------------------------------------

def _request_line():
    for m in (b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"PROPFIND", b"M-SEARCH", b"FOO",
              b"get", b"Get", b"X!#$%&'*+.^_`|~1", b"PATCH", b"PURGE"):
        _add("method-ok-" + m.decode(errors="replace"), req(method=m), ACCEPT if m in (
            b"GET", b"HEAD", b"DELETE", b"OPTIONS") else EITHER,
            why="any token is a method; a server answers 501 to one it does not know")
    for m in (b"POST", b"PUT", b"PATCH"):
        _add("method-body-" + m.decode(), req(method=m, fields=b"Host: a\r\nContent-Length: 5\r\n",
                                              body=BODY), ACCEPT)
    _add("method-trace", req(method=b"TRACE"), EITHER)
    _add("method-connect-origin", req(method=b"CONNECT", target=b"/"),
         why="CONNECT takes the authority-form only")
    _add("method-connect-authority", req(method=b"CONNECT", target=b"a:443"), EITHER,
         why="a reverse proxy need not tunnel")
    for sep in b'()<>@,;:\\"/[]?={} ':
        s = bytes([sep])
        _add("method-sep-%02x" % sep, req(method=b"GE" + s + b"T"))
    for c in CTLS + [b"\t", b"\x80", b"\xff"]:
        _add("method-byte-" + _name(c), req(method=b"GE" + c + b"T"))
    _add("method-long-8k", req(method=b"G" * 8000), EITHER)
    _add("method-empty", req(line=b" / HTTP/1.1\r\n"))

    # the separators of the request line
    for cid, line in [
        ("line-2sp-before-target", b"GET  / HTTP/1.1\r\n"),
        ("line-2sp-before-version", b"GET /  HTTP/1.1\r\n"),
        ("line-tab-before-target", b"GET\t/ HTTP/1.1\r\n"),
        ("line-tab-before-version", b"GET /\tHTTP/1.1\r\n"),
        ("line-trailing-sp", b"GET / HTTP/1.1 \r\n"),
        ("line-trailing-tab", b"GET / HTTP/1.1\t\r\n"),
        ("line-leading-sp", b" GET / HTTP/1.1\r\n"),
        ("line-leading-tab", b"\tGET / HTTP/1.1\r\n"),
        ("line-vt-separator", b"GET\x0b/ HTTP/1.1\r\n"),
        ("line-ff-separator", b"GET\x0c/ HTTP/1.1\r\n"),
        ("line-nul-separator", b"GET\x00/ HTTP/1.1\r\n"),
        ("line-cr-separator", b"GET\r/ HTTP/1.1\r\n"),
        ("line-bare-cr-end", b"GET / HTTP/1.1\r"),
        ("line-cr-cr-lf", b"GET / HTTP/1.1\r\r\n"),
        ("line-no-target", b"GET HTTP/1.1\r\n"),
        ("line-only-method", b"GET\r\n"),
        ("line-four-parts", b"GET / HTTP/1.1 extra\r\n"),
        ("line-http09", b"GET /\r\n"),
    ]:
        _add(cid, req(line=line))
    _add("line-bare-lf-end", req(line=b"GET / HTTP/1.1\n"), EITHER,
         why="RFC 9112 2.2: a recipient MAY take a bare LF as a line end")
    for n in (1, 2, 3):
        _add("line-leading-crlf-%d" % n, b"\r\n" * n + req(), ACCEPT if n == 1 else EITHER,
             why="RFC 9112 2.2: SHOULD ignore at least one empty line before the request line")
    _add("line-leading-lf", b"\n" + req(), EITHER)
    _add("line-leading-cr", b"\r" + req())
    _add("line-leading-sp-crlf", b" \r\n" + req())
    _add("line-leading-nul", b"\x00" + req())

    # versions
    for v, rfc, status in [
        (b"HTTP/1.0", ACCEPT, 400), (b"HTTP/1.1", ACCEPT, 400),
        (b"HTTP/1.2", EITHER, 505), (b"HTTP/1.9", EITHER, 505),
        (b"HTTP/0.9", REFUSE, 505), (b"HTTP/2.0", REFUSE, 505), (b"HTTP/3.0", REFUSE, 505),
        (b"HTTP/9.9", REFUSE, 505), (b"HTTP/0.0", REFUSE, 505),
        (b"HTTP/1.10", REFUSE, 400), (b"HTTP/01.1", REFUSE, 400), (b"HTTP/1.01", REFUSE, 400),
        (b"HTTP/11", REFUSE, 400), (b"HTTP/1", REFUSE, 400), (b"HTTP/2", REFUSE, 400),
        (b"HTTP/", REFUSE, 400), (b"HTTP", REFUSE, 400), (b"HTTP1.1", REFUSE, 400),
        (b"http/1.1", REFUSE, 400), (b"Http/1.1", REFUSE, 400), (b"HTTP/1.x", REFUSE, 400),
        (b"HTTP/a.b", REFUSE, 400), (b"HTTP/1.1.1", REFUSE, 400), (b"HTTP/-1.1", REFUSE, 400),
        (b"HTTP/+1.1", REFUSE, 400), (b"HTTP/1.-1", REFUSE, 400), (b"HTTP/ 1.1", REFUSE, 400),
        (b"HTTP /1.1", REFUSE, 400), (b"HTTPS/1.1", REFUSE, 400), (b"HTTP/1,1", REFUSE, 400),
        (b"HTTP/\xd9\xa1.1", REFUSE, 400), (b"HTTP/1.1\x00", REFUSE, 400),
        (b"HTTP/1.1\x0b", REFUSE, 400), (b"HTTP/1.1\x7f", REFUSE, 400),
        (b"RTSP/1.0", REFUSE, 400), (b"ICE/1.0", REFUSE, 400),
    ]:
        _add("version-" + v.decode(errors="replace").replace(" ", "_"), req(version=v), rfc, status,
             why="HTTP-version = HTTP/DIGIT.DIGIT; 505 for a well-formed one not served")
    # a version with a body: a server that mis-reads the version mis-frames it
    for v in (b"HTTP/1.0", b"HTTP/1.1"):
        _add("version-body-cl-" + v.decode(), req(method=b"POST", version=v, fields=(
            b"Host: a\r\nContent-Length: 5\r\n"), body=BODY), ACCEPT)
    _add("version-http10-keepalive", req(version=b"HTTP/1.0", fields=(
        b"Host: a\r\nConnection: keep-alive\r\n")), ACCEPT)
    _add("version-http10-keepalive-pipelined", req(version=b"HTTP/1.0", fields=(
        b"Host: a\r\nConnection: keep-alive\r\n")) + req(target=b"/second"), ACCEPT,
        also=(b"GET /second HTTP/1.1",))


# -- targets -----------------------------------------------------------------------

def _targets():
    for t in (b"/", b"/a/b/c", b"/a?b=c", b"/a?b?c", b"/a?", b"/?", b"//a/x", b"/a/../b",
              b"/a/./b", b"/a;b=c", b"/~u", b"/a:b", b"/a@b", b"/!$&'()*+,;=", b"/%41%42",
              b"/a%2Fb", b"/%25", b"/a/b/?c=d/e", b"/" + b"a" * 4000, b"/?" + b"q" * 4000):
        _add("target-ok-" + t[:20].decode(), req(target=t), ACCEPT)
    for t in (b"/%", b"/%zz", b"/%0", b"/%00", b"/%0d%0aX:%20y", b"/a/%2e%2e/b"):
        _add("target-pct-" + t.decode(), req(target=t), EITHER,
             why="a bad or unusual percent-encoding is the origin server's to judge")
    for c in CTLS + [b"\t", b" ", b"\x80", b"\xc3\xa9", b"\xff", b"#"]:
        name = "frag" if c == b"#" else _name(c)
        _add("target-path-byte-" + name, req(target=b"/a" + c + b"b"))
        _add("target-query-byte-" + name, req(target=b"/a?b" + c + b"c"))
    for c in b'"<>\\^`{|}':
        _add("target-unwise-%02x" % c, req(target=b"/a" + bytes([c]) + b"b"), EITHER,
             why="not allowed by the URI grammar, commonly accepted and passed on")
    for t in (b"a/b", b"a", b"?a", b".", b"..", b"%2F"):
        _add("target-relative-" + t.decode(), req(target=t))
    _add("target-star-get", req(target=b"*"))
    _add("target-star-options", req(method=b"OPTIONS", target=b"*"), ACCEPT)
    _add("target-star-options-x", req(method=b"OPTIONS", target=b"*x"))
    _add("target-star-post", req(method=b"POST", target=b"*", fields=(
        b"Host: a\r\nContent-Length: 0\r\n")))
    _add("target-authority-get", req(target=b"a:80"))
    _add("target-authority-options", req(method=b"OPTIONS", target=b"a:80"))
    _add("target-long-12k", req(target=b"/" + b"a" * 12000), EITHER,
         why="within a 16 KiB head: a limit, not a rule")
    _add("target-long-20k", req(target=b"/" + b"a" * 20000), REFUSE, ANY_4XX,
         why="over the head limit: 414 or 431")
    _add("target-long-70k", req(target=b"/" + b"a" * 70000), REFUSE, ANY_4XX)

    # absolute-form (RFC 9112 3.2.2): the authority wins, Host must agree
    for cid, target, host, rfc in [
        ("plain", b"http://a/x", b"a", ACCEPT),
        ("port", b"http://a:8080/x", b"a:8080", ACCEPT),
        ("upper-scheme", b"HTTP://a/x", b"a", ACCEPT),
        ("upper-host", b"http://A/x", b"a", ACCEPT),
        ("ipv4", b"http://10.0.0.1/x", b"10.0.0.1", ACCEPT),
        ("ipv6", b"http://[::1]/x", b"[::1]", ACCEPT),
        ("ipv6-port", b"http://[::1]:81/x", b"[::1]:81", ACCEPT),
        ("query", b"http://a/x?y=z", b"a", ACCEPT),
        ("https", b"https://a/x", b"a", EITHER),
        ("no-path", b"http://a", b"a", EITHER),
        ("query-no-path", b"http://a?x", b"a", EITHER),
        ("default-port-vs-none", b"http://a:80/x", b"a", EITHER),
        ("none-vs-default-port", b"http://a/x", b"a:80", EITHER),
        ("empty-port", b"http://a:/x", b"a", EITHER),
        ("host-differs", b"http://a/x", b"b", REFUSE),
        ("host-differs-port", b"http://a:81/x", b"a:82", REFUSE),
        ("host-differs-ipv6", b"http://[::1]/x", b"[::2]", REFUSE),
        ("host-has-port-target-not", b"http://a/x", b"a:81", REFUSE),
        ("userinfo", b"http://u@a/x", b"a", REFUSE),
        ("userinfo-pass", b"http://u:p@a/x", b"a", REFUSE),
        ("userinfo-empty", b"http://@a/x", b"a", REFUSE),
        ("userinfo-host-trick", b"http://a@b/x", b"b", REFUSE),
        ("no-authority", b"http:///x", b"a", REFUSE),
        ("no-slashes", b"http:a/x", b"a", REFUSE),
        ("bad-port", b"http://a:x/x", b"a", REFUSE),
        ("port-overflow", b"http://a:99999/x", b"a", REFUSE),
        ("fragment", b"http://a/x#y", b"a", REFUSE),
        ("nul-authority", b"http://a\x00/x", b"a", REFUSE),
        ("backslash", b"http://a\\@b/x", b"b", REFUSE),
        ("scheme-ftp", b"ftp://a/x", b"a", EITHER),
        ("scheme-only", b"http://", b"a", REFUSE),
        ("ipv6-open", b"http://[::1/x", b"[::1", REFUSE),
    ]:
        _add("absolute-" + cid, req(target=target, fields=b"Host: " + host + b"\r\n"), rfc)
    _add("absolute-no-host", req(target=b"http://a/x", fields=b""),
         why="RFC 9112 3.2: a client MUST send Host; 400 if it is missing")
    _add("absolute-two-hosts", req(target=b"http://a/x", fields=b"Host: a\r\nHost: a\r\n"))
    _add("absolute-http10-no-host", req(target=b"http://a/x", version=b"HTTP/1.0", fields=b""),
         EITHER)


# -- field lines ---------------------------------------------------------------------

def _fields():
    for c in CTLS + [b" ", b"\x80", b"\xff"] + [bytes([s]) for s in b'(),/;<=>?@[\\]{}"']:
        _add("name-byte-" + _name(c), req(fields=b"Host: a\r\nX" + c + b"A: b\r\n"))
    for c in b"!#$%&'*+-.^_`|~":
        _add("name-tchar-%02x" % c, req(fields=b"Host: a\r\nX" + bytes([c]) + b"A: b\r\n"),
             ACCEPT)
    for cid, line in [("empty", b": b"), ("no-colon", b"X-A b"), ("only-colon", b":"),
                      ("double-colon", b"X-A:: b"), ("colon-in-name", b"X:A: b")]:
        _add("name-" + cid, req(fields=b"Host: a\r\n" + line + b"\r\n"),
             ACCEPT if cid in ("double-colon", "colon-in-name") else REFUSE,
             why="the value may hold a colon")
    _add("name-long-8k", req(fields=b"Host: a\r\n" + b"X" * 8000 + b": b\r\n"), EITHER)

    for where, tpl in (("start", b"%sab"), ("middle", b"a%sb"), ("end", b"ab%s")):
        for c in CTLS:
            if c == b"\n" and where == "end":
                continue  # a line end, not a byte in the value
            value = tpl % c
            rfc = REFUSE
            _add("value-%s-%s" % (where, _name(c)), req(fields=b"Host: a\r\nX-A: " + value + b"\r\n"),
                 rfc, why="RFC 9110 5.5: CR, LF and NUL MUST be refused or replaced; other CTLs "
                          "are not field-vchar")
        for c, cid in ((b"\t", "tab"), (b"\x80", "80"), (b"\xff", "ff"), (b" ", "sp")):
            _add("value-%s-%s" % (where, cid), req(fields=b"Host: a\r\nX-A: " + tpl % c + b"\r\n"),
                 ACCEPT)
    for name in (b"User-Agent", b"Cookie", b"Accept", b"Referer", b"Authorization"):
        n = name.decode()
        _add("value-nul-" + n, req(fields=b"Host: a\r\n" + name + b": a\x00b\r\n"))
        _add("value-bare-cr-" + n, req(fields=b"Host: a\r\n" + name + b": a\rb\r\n"))
        _add("value-ok-" + n, req(fields=b"Host: a\r\n" + name + b": a b\r\n"), ACCEPT)
    _add("value-empty", req(fields=b"Host: a\r\nX-A:\r\n"), ACCEPT)
    _add("value-only-ws", req(fields=b"Host: a\r\nX-A: \t \r\n"), ACCEPT)
    _add("value-long-12k", req(fields=b"Host: a\r\nX-A: " + b"v" * 12000 + b"\r\n"), EITHER)
    _add("value-long-20k", req(fields=b"Host: a\r\nX-A: " + b"v" * 20000 + b"\r\n"),
         REFUSE, ANY_4XX)
    _add("value-long-100k", req(fields=b"Host: a\r\nX-A: " + b"v" * 100000 + b"\r\n"),
         REFUSE, ANY_4XX)
    for n in (50, 99, 100, 101, 150, 1000):
        fields = b"Host: a\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(n))
        _add("many-fields-%d" % n, req(fields=fields), ACCEPT if n <= 90 else EITHER,
             why="a limit on the number of fields is the server's (haproxy: 101)")

    for name in (b"X-A", b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection",
                 b"Expect", b"Upgrade"):
        value = {b"Host": b"a", b"Content-Length": b"5", b"Transfer-Encoding": b"chunked",
                 b"Connection": b"close", b"Expect": b"100-continue",
                 b"Upgrade": b"h2c"}.get(name, b"b")
        body = {b"Content-Length": BODY, b"Transfer-Encoding": chunk(BODY) + LAST}.get(name, b"")
        other = b"" if name == b"Host" else b"Host: a\r\n"
        method = b"POST" if body else b"GET"
        n = name.decode()
        for cid, ws in (("sp", b" "), ("tab", b"\t"), ("2sp", b"  "), ("vt", b"\x0b")):
            _add("ws-before-colon-%s-%s" % (cid, n), req(method=method, fields=(
                other + name + ws + b": " + value + b"\r\n"), body=body),
                why="RFC 9112 5.1: whitespace between name and colon MUST be refused (400)")
        _add("obs-fold-" + n, req(method=method, fields=(
            other + name + b":\r\n " + value + b"\r\n"), body=body), EITHER,
            why="RFC 9112 5.2: refuse obs-fold, or replace it with SP")
        _add("obs-fold-tab-" + n, req(method=method, fields=(
            other + name + b": " + value + b"\r\n\tx\r\n"), body=body), EITHER)
        _add("first-line-ws-" + n, req(method=method, fields=(
            b" " + name + b": " + value + b"\r\n" + other), body=body),
            why="RFC 9112 2.2: whitespace before the first field line: refuse or consume")
        _add("first-line-tab-" + n, req(method=method, fields=(
            b"\t" + name + b": " + value + b"\r\n" + other), body=body))
        _add("value-bare-lf-" + n, req(method=method, fields=(
            other + name + b": " + value + b"\nX-B: c\r\n"), body=body), EITHER,
            why="a bare LF is a line end to some readers, a byte to others")
        _add("name-case-" + n, req(method=method, fields=(
            other + name.lower() + b": " + value + b"\r\n"), body=body),
            ACCEPT if name not in (b"Expect", b"Upgrade", b"Connection") else EITHER)
    _add("fields-bare-lf-all", b"GET / HTTP/1.1\nHost: a\n" + _tag().replace(b"\r\n", b"\n")
         + b"\n", EITHER)
    _add("fields-end-cr-only", b"GET / HTTP/1.1\r\nHost: a\r\n" + _tag() + b"\r", status=408,
         why="an incomplete head (its LF may come): timeouts.http_request answers")
    _add("fields-end-lf-cr-lf", b"GET / HTTP/1.1\r\nHost: a\r\n" + _tag() + b"\n\r\n", EITHER)
    _add("fields-line-only-ws", req(fields=b"Host: a\r\n \r\n"))
    _add("fields-line-only-tab", req(fields=b"Host: a\r\n\t\r\n"))


# -- Host (RFC 9112 3.2, RFC 9110 7.2) -----------------------------------------------

def _host():
    for h in (b"a", b"a.b.example", b"A.EXAMPLE", b"a-b", b"a_b", b"a.", b"a:80", b"a:0",
              b"a:65535", b"1.2.3.4", b"1.2.3.4:80", b"[::1]", b"[::1]:80",
              b"[2001:db8::1]:8080", b"xn--caf-dma.example", b"a!$&'()*+,;=b"):
        _add("host-ok-" + h.decode(), req(fields=b"Host: " + h + b"\r\n"),
             ACCEPT if h not in (b"a!$&'()*+,;=b", b"a:0") else EITHER)
    for cid, h, rfc in [
        ("ows", b"  a  ", ACCEPT), ("tab", b"\ta\t", ACCEPT),
        ("empty", b"", EITHER), ("empty-port", b"a:", EITHER), ("only-port", b":80", EITHER),
        ("pct", b"a%2eb", EITHER), ("ipv6-zone", b"[fe80::1%25eth0]", EITHER),
        ("ipvfuture", b"[v1.x]", EITHER), ("ipv4-octet-big", b"1.2.3.256", EITHER),
        ("star", b"*", EITHER), ("trailing-dot-port", b"a.:80", EITHER),
        ("userinfo", b"u@a", REFUSE), ("userinfo-pass", b"u:p@a", REFUSE),
        ("userinfo-empty", b"@a", REFUSE), ("userinfo-port", b"u@a:80", REFUSE),
        ("path", b"a/b", REFUSE), ("path-root", b"a/", REFUSE), ("query", b"a?b", REFUSE),
        ("fragment", b"a#b", REFUSE), ("list", b"a, b", REFUSE), ("list-same", b"a, a", REFUSE),
        ("list-comma", b"a,", REFUSE), ("space", b"a b", REFUSE), ("tab-inside", b"a\tb", REFUSE),
        ("port-alpha", b"a:http", REFUSE), ("port-sign", b"a:+80", REFUSE),
        ("port-minus", b"a:-80", REFUSE), ("port-big", b"a:65536", REFUSE),
        ("port-huge", b"a:99999999999999999999", REFUSE), ("port-two", b"a:80:81", REFUSE),
        ("port-space", b"a: 80", REFUSE), ("port-hex", b"a:0x50", REFUSE),
        ("ipv6-unclosed", b"[::1", REFUSE), ("ipv6-junk", b"[::1]x", REFUSE),
        ("ipv6-bad-port", b"[::1]:x", REFUSE), ("ipv6-bare", b"::1", REFUSE),
        ("ipv6-not-ip", b"[zz]", REFUSE), ("close-bracket", b"a]", REFUSE),
        ("backslash", b"a\\b", REFUSE), ("quote", b'"a"', REFUSE), ("lt", b"<a>", REFUSE),
        ("nul", b"a\x00b", REFUSE), ("ctl", b"a\x01b", REFUSE), ("del", b"a\x7fb", REFUSE),
        ("high", b"caf\xc3\xa9", REFUSE), ("high-ff", b"a\xff", REFUSE),
        ("semicolon-port", b"a;80", EITHER), ("crlf-injection", b"a%0d%0aX: y", EITHER),
    ]:
        _add("host-" + cid, req(fields=b"Host: " + h + b"\r\n"), rfc)
    for cid, fields in [
        ("missing", b""), ("dup-same", b"Host: a\r\nHost: a\r\n"),
        ("dup-differ", b"Host: a\r\nHost: b\r\n"), ("dup-case", b"Host: a\r\nhost: a\r\n"),
        ("dup-upper", b"HOST: a\r\nHost: b\r\n"), ("dup-empty", b"Host: a\r\nHost: \r\n"),
        ("dup-apart", b"Host: a\r\nX-A: b\r\nHost: b\r\n"),
        ("name-underscore-only", b"Ho_st: a\r\n"),
    ]:
        _add("host-" + cid, req(fields=fields),
             why="RFC 9112 3.2: 400 for a missing (HTTP/1.1) or repeated Host")
    _add("host-http10-missing", req(version=b"HTTP/1.0", fields=b""), ACCEPT)
    _add("host-http10-dup", req(version=b"HTTP/1.0", fields=b"Host: a\r\nHost: b\r\n"))
    _add("host-upper-name", req(fields=b"HOST: a\r\n"), ACCEPT)


# -- Content-Length (RFC 9110 8.6, RFC 9112 6.3) -------------------------------------

def _content_length():
    post = b"POST /cl HTTP/1.1\r\n"
    # A reading of 5 leaves a request behind: the next one the client sent
    # (tagged); a proxy that reads another length forwards something else.
    body = BODY + req(target=b"/next", fields=b"Host: evil\r\n")

    def cl(cid, fields, rfc, status=400, why="", b=body):
        _add("cl-" + cid, req(line=post, fields=b"Host: a\r\n" + fields, body=b), rfc, status,
             why, also=(b"GET /next HTTP/1.1",) if rfc != REFUSE and b is body else ())

    for cid, value, rfc in [
        ("plain", b"5", ACCEPT), ("leading-zero", b"05", ACCEPT), ("zeros", b"0000000005", ACCEPT),
        ("ows-after", b"5 ", ACCEPT), ("ows-before", b" 5", ACCEPT), ("tab-before", b"\t5", ACCEPT),
        ("tab-after", b"5\t", ACCEPT),
        ("plus", b"+5", REFUSE), ("minus", b"-5", REFUSE), ("minus-zero", b"-0", REFUSE),
        ("hex", b"0x5", REFUSE), ("hex-digit", b"a", REFUSE), ("decimal", b"5.0", REFUSE),
        ("exp", b"5e0", REFUSE), ("alpha-after", b"5a", REFUSE), ("alpha-before", b"a5", REFUSE),
        ("space-inside", b"5 5", REFUSE), ("empty", b"", REFUSE), ("only-ws", b"  ", REFUSE),
        ("list-same", b"5,5", EITHER), ("list-same-ows", b"5, 5", EITHER),
        ("list-same-3", b"5, 5, 5", EITHER), ("list-differ", b"5, 6", REFUSE),
        ("list-differ-big", b"5, %d" % len(body), REFUSE), ("list-leading-comma", b",5", EITHER),
        ("list-trailing-comma", b"5,", EITHER), ("list-double-comma", b"5,,5", EITHER),
        ("list-empty-items", b",,", REFUSE), ("list-zero-five", b"0, 5", REFUSE),
        ("list-leading-zero-same", b"5, 05", EITHER),
        ("unicode-digit", b"\xd9\xa5", REFUSE), ("fullwidth-digit", b"\xef\xbc\x95", REFUSE),
        ("nul", b"5\x00", REFUSE), ("vt", b"\x0b5", REFUSE), ("ff", b"5\x0c", REFUSE),
        ("bare-cr", b"5\r", REFUSE), ("quoted", b'"5"', REFUSE), ("semicolon", b"5;", REFUSE),
        ("underscore", b"0_5", REFUSE),
        ("2^64+5", b"18446744073709551621", REFUSE), ("2^63+5", b"9223372036854775813", REFUSE),
        ("2^32+5", b"4294967301", EITHER), ("2^31+5", b"2147483653", EITHER),
        ("huge", b"9" * 40, REFUSE),
    ]:
        big = cid.startswith("2^") or cid == "huge"
        cl(cid, b"Content-Length: " + value + b"\r\n", rfc, ANY_4XX if big else 400,
           why="a length past what the body holds waits, is refused (400/413), or overflows "
               "to 5 in a careless reader" if big else "")
    for cid, fields, rfc in [
        ("dup-same", b"Content-Length: 5\r\nContent-Length: 5\r\n", EITHER),
        ("dup-same-case", b"Content-Length: 5\r\ncontent-length: 5\r\n", EITHER),
        ("dup-differ", b"Content-Length: 5\r\nContent-Length: 0\r\n", REFUSE),
        ("dup-differ-rev", b"Content-Length: 0\r\nContent-Length: 5\r\n", REFUSE),
        ("dup-zero-pad", b"Content-Length: 5\r\nContent-Length: 05\r\n", EITHER),
        ("dup-one-empty", b"Content-Length: 5\r\nContent-Length: \r\n", REFUSE),
        ("dup-apart", b"Content-Length: 5\r\nX-A: b\r\nContent-Length: 6\r\n", REFUSE),
        ("name-upper", b"CONTENT-LENGTH: 5\r\n", ACCEPT),
        ("name-lower", b"content-length: 5\r\n", ACCEPT),
        ("name-underscore", b"Content_Length: 5\r\n", EITHER),
        ("name-ws-before-colon", b"Content-Length : 5\r\n", REFUSE),
        ("name-dot", b"Content.Length: 5\r\n", EITHER),
        ("obs-fold", b"Content-Length:\r\n 5\r\n", EITHER),
        ("obs-fold-after", b"Content-Length: 5\r\n 6\r\n", REFUSE),
    ]:
        # a field that is not Content-Length leaves no body: the bytes after
        # the head are the next request (answered or refused), never smuggled
        if cid in ("name-underscore", "name-dot"):
            cl(cid, fields, rfc, b=BODY)
        else:
            cl(cid, fields, rfc)
    for method in (b"GET", b"HEAD", b"DELETE", b"OPTIONS"):
        _add("cl-on-" + method.decode(), req(method=method, fields=(
            b"Host: a\r\nContent-Length: 5\r\n"), body=BODY), ACCEPT,
            why="a body on any method is framed like any other")
    _add("cl-zero-then-request", req(line=post, fields=b"Host: a\r\nContent-Length: 0\r\n")
         + req(target=b"/second"), ACCEPT, also=(b"GET /second HTTP/1.1",))
    _add("cl-body-then-request", req(line=post, fields=b"Host: a\r\nContent-Length: 5\r\n",
                                     body=BODY) + req(target=b"/second"), ACCEPT,
         also=(b"GET /second HTTP/1.1",))
    _add("cl-http10", req(line=b"POST /cl HTTP/1.0\r\n", fields=b"Content-Length: 5\r\n",
                          body=BODY), ACCEPT)


# -- Transfer-Encoding (RFC 9112 6.1, 7) ----------------------------------------------

def _transfer_encoding():
    post = b"POST /te HTTP/1.1\r\n"
    good = chunk(BODY) + LAST

    def te(cid, fields, rfc, status=400, why="", body=SMUGGLE_CHUNKED, line=post, host=True):
        _add("te-" + cid, req(line=line, fields=(b"Host: a\r\n" if host else b"") + fields,
                              body=body), rfc, status, why)

    for cid, value, rfc, status in [
        ("plain", b"chunked", ACCEPT, 400), ("upper", b"CHUNKED", ACCEPT, 400),
        ("mixed", b"ChUnKeD", ACCEPT, 400), ("ows", b"  chunked  ", ACCEPT, 400),
        ("tab", b"\tchunked\t", EITHER, 400),  # valid OWS; llhttp refuses a trailing tab
        ("gzip-chunked", b"gzip, chunked", REFUSE, 501),
        ("deflate-chunked", b"deflate, chunked", REFUSE, 501),
        ("x-custom-chunked", b"x-custom, chunked", REFUSE, 501),
        ("identity-chunked", b"identity, chunked", EITHER, 501),
        ("trailing-comma", b"chunked,", EITHER, 400), ("leading-comma", b",chunked", EITHER, 400),
        ("two-commas", b"chunked,,", EITHER, 400),
        ("chunked-gzip", b"chunked, gzip", REFUSE, 400),
        ("chunked-identity", b"chunked, identity", REFUSE, 400),
        ("chunked-chunked", b"chunked, chunked", REFUSE, 400),
        ("chunked-chunked-nows", b"chunked,chunked", REFUSE, 400),
        ("identity", b"identity", REFUSE, ANY_4XX), ("gzip", b"gzip", REFUSE, ANY_4XX),
        ("empty", b"", REFUSE, 400), ("comma", b",", REFUSE, 400),
        ("xchunked", b"xchunked", REFUSE, ANY_4XX), ("chunkedx", b"chunkedx", REFUSE, ANY_4XX),
        ("chunk", b"chunk", REFUSE, ANY_4XX), ("ch-unked", b"ch unked", REFUSE, 400),
        ("quoted", b'"chunked"', REFUSE, 400), ("param", b"chunked;q=1", REFUSE, 400),
        ("param-empty", b"chunked;", REFUSE, 400), ("param-gzip", b"gzip;q=1, chunked", EITHER, 501),
        ("nul", b"chunked\x00", REFUSE, 400), ("vt", b"\x0bchunked", REFUSE, 400),
        ("ff", b"chunked\x0c", REFUSE, 400), ("bare-cr", b"chunked\r", REFUSE, 400),
        ("high", b"chunked\xff", REFUSE, 400), ("unicode-k", b"chun\xe2\x84\xaaed", REFUSE, 400),
        ("cr-lf-inside", b"chun\r\nked", REFUSE, 400),
    ]:
        te(cid, b"Transfer-Encoding: " + value + b"\r\n", rfc, status,
           body=good if rfc == ACCEPT else SMUGGLE_CHUNKED)
    for cid, fields, rfc, status in [
        ("two-fields", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", REFUSE, 400),
        ("gzip-then-chunked", b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
         EITHER, 501),
        ("chunked-then-gzip", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
         REFUSE, 400),
        ("chunked-then-empty", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: \r\n",
         EITHER, 400),
        ("with-cl", b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", EITHER, 400),
        ("cl-first", b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", EITHER, 400),
        ("with-cl-zero", b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", EITHER, 400),
        ("with-cl-bad", b"Content-Length: x\r\nTransfer-Encoding: chunked\r\n", REFUSE, 400),
        ("with-cl-list", b"Content-Length: 4, 5\r\nTransfer-Encoding: chunked\r\n", REFUSE, 400),
        ("name-lower", b"transfer-encoding: chunked\r\n", ACCEPT, 400),
        ("name-upper", b"TRANSFER-ENCODING: chunked\r\n", ACCEPT, 400),
        ("name-underscore", b"Transfer_Encoding: chunked\r\n", EITHER, 400),
        ("name-space", b"Transfer Encoding: chunked\r\n", REFUSE, 400),
        ("name-ws-colon", b"Transfer-Encoding : chunked\r\n", REFUSE, 400),
        ("name-tab-colon", b"Transfer-Encoding\t: chunked\r\n", REFUSE, 400),
        ("name-no-colon", b"Transfer-Encoding chunked\r\n", REFUSE, 400),
        ("obs-fold", b"Transfer-Encoding:\r\n chunked\r\n", EITHER, 400),
        ("obs-fold-gzip", b"Transfer-Encoding: chunked\r\n , gzip\r\n", REFUSE, 400),
        ("first-field", b"Transfer-Encoding: chunked\r\n", ACCEPT, 400),
    ]:
        body = good if rfc == ACCEPT else SMUGGLE_CHUNKED
        if cid == "name-underscore":
            body = b""  # not framing: the chunks would be the next request
        te(cid, fields, rfc, status, body=body)
    _add("te-http10", req(line=b"POST /te HTTP/1.0\r\n", fields=b"Transfer-Encoding: chunked\r\n",
                          body=SMUGGLE_CHUNKED),
         why="RFC 9112 6.1: Transfer-Encoding in HTTP/1.0: faulty framing, close")
    _add("te-http10-cl", req(line=b"POST /te HTTP/1.0\r\n", fields=(
        b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n"), body=SMUGGLE_CHUNKED))
    for method in (b"GET", b"HEAD", b"DELETE"):
        _add("te-on-" + method.decode(), req(method=method, fields=(
            b"Host: a\r\nTransfer-Encoding: chunked\r\n"), body=good), ACCEPT)
    _add("te-then-request", req(line=post, fields=b"Host: a\r\nTransfer-Encoding: chunked\r\n",
                                body=good) + req(target=b"/second"), ACCEPT,
         also=(b"GET /second HTTP/1.1",))


# -- Connection, Expect, Upgrade --------------------------------------------------------

def _connection():
    # the client pipelines a second request behind the body: a proxy that
    # drops the framing field lets the server read the body as a request
    second = req(target=b"/second")
    framings = {
        "cl": (b"Content-Length: 5\r\n", BODY + second),
        "te": (b"Transfer-Encoding: chunked\r\n", chunk(BODY) + LAST + second),
        "get": (b"", second),
    }
    for token in (b"Content-Length", b"Transfer-Encoding", b"Host", b"content-length",
                  b"TRANSFER-ENCODING", b"close, Content-Length", b"Transfer-Encoding, close",
                  b"keep-alive, Host", b" Content-Length ", b"Content-Length,Transfer-Encoding",
                  b"Connection", b"TE", b"Keep-Alive", b"Upgrade", b"X-Private",
                  b"Content-Type", b"Expect", b"Trailer"):
        for fid, (framing, body) in framings.items():
            name = token.decode().replace(" ", "_").replace(",", "+")
            _add("connection-%s-%s" % (fid, name), req(
                method=b"GET" if fid == "get" else b"POST",
                fields=b"Host: a\r\nConnection: " + token + b"\r\n" + framing, body=body),
                EITHER, why="framing and Host are never hop-by-hop: the token is ignored or "
                            "refused; the body stays framed either way",
                also=(b"GET /second HTTP/1.1",), answers=1 if b"close" in token else 2)
    for cid, fields, rfc in [
        ("two-fields", b"Connection: keep-alive\r\nConnection: Content-Length\r\n", EITHER),
        ("close", b"Connection: close\r\n", ACCEPT),
        ("empty", b"Connection: \r\n", ACCEPT),
        ("comma", b"Connection: ,\r\n", EITHER),
        ("bad-token", b"Connection: a b\r\n", EITHER),
        ("nul", b"Connection: close\x00\r\n", REFUSE),
    ]:
        _add("connection-" + cid, req(fields=b"Host: a\r\n" + fields), rfc)
    # close, then more requests: nothing after a close is read
    _add("connection-close-then-request", req(fields=b"Host: a\r\nConnection: close\r\n")
         + req(target=b"/second"), EITHER, answers=1)

    # Expect (RFC 9110 10.1.1)
    for cid, fields, body, rfc in [
        ("100-cl", b"Expect: 100-continue\r\nContent-Length: 5\r\n", BODY, ACCEPT),
        ("100-te", b"Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n",
         chunk(BODY) + LAST, ACCEPT),
        ("100-upper", b"Expect: 100-Continue\r\nContent-Length: 5\r\n", BODY, EITHER),
        ("100-no-body", b"Expect: 100-continue\r\n", b"", EITHER),
        ("unknown", b"Expect: foo\r\nContent-Length: 5\r\n", BODY, EITHER),
        ("twice", b"Expect: 100-continue\r\nExpect: 100-continue\r\nContent-Length: 5\r\n",
         BODY, EITHER),
        ("100-then-request", b"Expect: 100-continue\r\nContent-Length: 5\r\n",
         BODY + req(target=b"/next"), EITHER),
    ]:
        _add("expect-" + cid, req(method=b"POST", fields=b"Host: a\r\n" + fields, body=body), rfc,
             ANY_4XX, also=(b"GET /next HTTP/1.1",) if cid.endswith("then-request") else (),
             answers=1)

    # Upgrade: the lenient backend never switches, so the bytes after a
    # refused upgrade are either the next request or nothing
    for cid, fields in [
        ("h2c", b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"),
        ("websocket", b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"),
        ("no-connection", b"Upgrade: websocket\r\n"),
        ("connection-only", b"Connection: upgrade\r\n"),
        ("tls", b"Connection: Upgrade\r\nUpgrade: TLS/1.0\r\n"),
        ("empty", b"Connection: Upgrade\r\nUpgrade: \r\n"),
        ("h2c-with-cl", b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nContent-Length: 5\r\n"),
    ]:
        body = BODY if b"Content-Length" in fields else b""
        _add("upgrade-" + cid, req(method=b"POST" if body else b"GET",
                                   fields=b"Host: a\r\n" + fields, body=body), EITHER, answers=1)
    # WebSocket handshakes (RFC 6455 4.1): an upgrade to websocket needs a
    # Sec-WebSocket-Key, the base64 of 16 bytes; 400 otherwise (4.2.1)
    key = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    version = b"Sec-WebSocket-Version: 13\r\n"
    for cid, conn, up, extra, rfc in [
        ("ok", b"Upgrade", b"websocket", key + version, ACCEPT),
        ("key-only", b"Upgrade", b"websocket", key, ACCEPT),
        ("key-twice", b"Upgrade", b"websocket", key + key + version, EITHER),
        ("upper", b"Upgrade", b"WebSocket", key + version, ACCEPT),
        ("no-key", b"Upgrade", b"websocket", version, REFUSE),
        ("empty-key", b"Upgrade", b"websocket", b"Sec-WebSocket-Key: \r\n" + version, REFUSE),
        ("short-key", b"Upgrade", b"websocket", b"Sec-WebSocket-Key: x\r\n" + version, REFUSE),
        ("key-not-base64", b"Upgrade", b"websocket",
         b"Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==\r\n" + version, REFUSE),
        ("key-25", b"Upgrade", b"websocket", b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==x\r\n"
         + version, REFUSE),
        ("list-no-key", b"Upgrade", b"foo, websocket", b"", REFUSE),
        ("list-key", b"Upgrade", b"foo, websocket", key, ACCEPT),
        ("close-upgrade-no-key", b"close, Upgrade", b"websocket", b"", REFUSE),
        ("no-connection-token", b"keep-alive", b"websocket", b"", EITHER),
        ("key-without-upgrade", b"keep-alive", b"", key, ACCEPT),
    ]:
        fields = b"Host: a\r\nConnection: " + conn + b"\r\n"
        if up:
            fields += b"Upgrade: " + up + b"\r\n"
        _add("websocket-" + cid, req(fields=fields + extra), rfc, answers=1,
             why="RFC 6455 4.2.1: a handshake without a valid key gets 400")
    _add("websocket-http10-no-key", req(version=b"HTTP/1.0", fields=(
        b"Host: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n")), REFUSE)
    _add("websocket-two-upgrade-fields-no-key", req(fields=(
        b"Host: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nUpgrade: websocket\r\n")), REFUSE)
    _add("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", REFUSE, ANY_4XX,
         why="HTTP/2 prior knowledge is not served on an HTTP/1 listener")


# -- chunked bodies (RFC 9112 7.1) -------------------------------------------------------

def _chunks():
    post = b"POST /chunks HTTP/1.1\r\n"
    te = b"Host: a\r\nTransfer-Encoding: chunked\r\n"

    def ch(cid, body, rfc=REFUSE, status=400, why="", also=(), answers=0):
        _add("chunk-" + cid, req(line=post, fields=te, body=body), rfc, status, why, also,
             answers)

    for cid, size, rfc in [
        ("size-lower", b"a", ACCEPT), ("size-upper", b"A", ACCEPT), ("size-zeros", b"000a", ACCEPT),
        ("size-many-zeros", b"0" * 30 + b"a", EITHER),
        ("size-plus", b"+a", REFUSE), ("size-minus", b"-a", REFUSE), ("size-0x", b"0xa", REFUSE),
        ("size-0X", b"0Xa", REFUSE), ("size-empty", b"", REFUSE), ("size-g", b"g", REFUSE),
        ("size-lead-sp", b" a", REFUSE), ("size-lead-tab", b"\ta", REFUSE),
        ("size-trail-sp", b"a ", EITHER), ("size-trail-tab", b"a\t", EITHER),
        ("size-inner-sp", b"0 a", REFUSE), ("size-underscore", b"0_a", REFUSE),
        ("size-nul", b"a\x00", REFUSE), ("size-vt", b"a\x0b", REFUSE),
        ("size-high", b"a\xff", REFUSE), ("size-unicode", b"\xef\xbc\xa1", REFUSE),
        ("size-2^64+a", b"1000000000000000a", REFUSE), ("size-2^63+a", b"800000000000000a", REFUSE),
        ("size-2^32+a", b"10000000a", EITHER), ("size-huge", b"f" * 40, REFUSE),
    ]:
        # the size line, then ten bytes of data: a reader that wraps or
        # ignores the bad size reads the rest as a next request
        status = ANY_4XX if cid in ("size-2^32+a",) else 400
        ch(cid, size + b"\r\n0123456789\r\n" + LAST + req(target=b"/next"), rfc, status,
           also=(b"GET /next HTTP/1.1",) if rfc != REFUSE else ())
    for cid, ext, rfc in [
        ("ext-name", b";a", ACCEPT), ("ext-value", b";a=b", ACCEPT), ("ext-quoted", b';a="b c"', ACCEPT),
        ("ext-quoted-escape", b';a="b\\"c"', ACCEPT), ("ext-two", b";a=b;c=d", ACCEPT),
        ("ext-quoted-semicolon", b';a="b;c"', ACCEPT),
        ("ext-bws", b" ; a = b", EITHER), ("ext-bws-tab", b"\t;a", EITHER),
        ("ext-empty", b";", REFUSE), ("ext-no-name", b";=b", REFUSE), ("ext-empty-value", b";a=", REFUSE),
        ("ext-bad-name", b";a(b)", REFUSE), ("ext-space-value", b";a=b c", REFUSE),
        ("ext-unterminated", b';a="b', REFUSE), ("ext-quote-in-token", b';a=b"c"', REFUSE),
        ("ext-high", b";a=\xff", REFUSE), ("ext-long-8k", b";a=" + b"b" * 8000, EITHER),
        ("ext-long-70k", b";a=" + b"b" * 70000, REFUSE),
    ]:
        ch(cid, b"5" + ext + b"\r\nhello\r\n" + LAST, rfc, ANY_4XX if "long" in cid else 400)
    for c in CTLS:
        if c in (b"\r", b"\n"):
            continue
        ch("ext-byte-" + _name(c), b"5;a" + c + b"\r\nhello\r\n" + LAST)
        ch("ext-quoted-byte-" + _name(c), b'5;a="' + c + b'"\r\nhello\r\n' + LAST)
    for cid, body, rfc in [
        ("line-bare-lf", b"5\nhello\r\n" + LAST, EITHER),
        ("line-bare-cr", b"5\rhello\r\n" + LAST, REFUSE),
        ("line-cr-cr-lf", b"5\r\r\nhello\r\n" + LAST, REFUSE),
        ("ext-bare-cr", b"5;a\rb\r\nhello\r\n" + LAST, REFUSE),
        ("ext-bare-lf", b"5;a\nhello\r\n" + LAST, EITHER),
        ("data-lf", b"5\r\nhello\n" + LAST, EITHER),
        ("data-cr", b"5\r\nhello\r" + LAST, REFUSE),
        ("data-none", b"5\r\nhello" + LAST, REFUSE),
        ("data-xx", b"5\r\nhelloXX" + LAST, REFUSE),
        ("data-short", b"7\r\nhello\r\n" + LAST + b"\r\n", REFUSE),
        ("data-long", b"3\r\nhello\r\n" + LAST, REFUSE),
        ("data-crlf-crlf", b"5\r\nhello\r\n\r\n" + LAST, REFUSE),
        ("last-00", chunk(BODY) + b"00\r\n\r\n", ACCEPT),
        ("last-ext", chunk(BODY) + b"0;a=b\r\n\r\n", ACCEPT),
        ("last-trail-sp", chunk(BODY) + b"0 \r\n\r\n", EITHER),
        ("last-bare-lf", chunk(BODY) + b"0\n\n", EITHER),
        ("last-no-final-crlf", chunk(BODY) + b"0\r\n" + req(target=b"/second"), REFUSE),
        ("last-bad-ext", chunk(BODY) + b"0;\x00\r\n\r\n", REFUSE),
        ("many-chunks", b"".join(chunk(b"x") for _ in range(500)) + LAST, ACCEPT),
        ("empty-data-chunk-missing", b"\r\n" + LAST, REFUSE),
        ("then-request", chunk(BODY) + LAST + req(target=b"/second"), ACCEPT),
    ]:
        ch(cid, body, rfc, also=(b"GET /second HTTP/1.1",) if cid == "then-request" else (),
           answers=1 if cid == "last-no-final-crlf" else 0)

    # trailers (RFC 9110 6.5: framing never comes from a trailer)
    for cid, trailer, rfc in [
        ("ok", b"X-Sum: 1\r\n", ACCEPT), ("two", b"X-A: 1\r\nX-B: 2\r\n", ACCEPT),
        ("cl", b"Content-Length: 5\r\n", REFUSE), ("te", b"Transfer-Encoding: chunked\r\n", REFUSE),
        ("cl-lower", b"content-length: 0\r\n", REFUSE),
        ("host", b"Host: evil\r\n", EITHER), ("connection", b"Connection: close\r\n", EITHER),
        ("trailer", b"Trailer: X\r\n", EITHER), ("authorization", b"Authorization: x\r\n", EITHER),
        ("nul", b"X-A: a\x00b\r\n", REFUSE), ("bare-cr", b"X-A: a\rb\r\n", REFUSE),
        ("ctl", b"X-A: a\x01b\r\n", REFUSE), ("no-colon", b"X-A\r\n", REFUSE),
        ("ws-before-colon", b"X-A : b\r\n", REFUSE), ("obs-fold", b"X-A: b\r\n c\r\n", EITHER),
        ("first-line-ws", b" X-A: b\r\n", REFUSE), ("bad-name", b"X(A): b\r\n", REFUSE),
        ("request-line", SMUGGLED[:-2], REFUSE),
        ("long-8k", b"X-A: " + b"v" * 8000 + b"\r\n", EITHER),
        ("long-70k", b"X-A: " + b"v" * 70000 + b"\r\n", REFUSE),
    ]:
        ch("trailer-" + cid, chunk(BODY) + b"0\r\n" + trailer + b"\r\n", rfc,
           ANY_4XX if "long" in cid else 400)
    # the body ends at the last chunk: a request after it is the next one
    ch("trailer-then-request", chunk(BODY) + b"0\r\nX-Sum: 1\r\n\r\n" + req(target=b"/second"),
       ACCEPT, also=(b"GET /second HTTP/1.1",))


# -- pipelines ------------------------------------------------------------------------------

def _pipelines():
    for cid, second, rfc in [
        ("nul-target", req(target=b"/a\x00"), REFUSE),
        ("bad-version", req(version=b"HTTP/1.10"), REFUSE),
        ("cl-te", req(method=b"POST", fields=b"Host: a\r\nContent-Length: 4\r\n"
                      b"Transfer-Encoding: chunked\r\n", body=SMUGGLE_CHUNKED), EITHER),
        ("obs-fold", req(fields=b"Host: a\r\nX-A: b\r\n c\r\n"), EITHER),
        ("bad-chunk", req(method=b"POST", fields=b"Host: a\r\nTransfer-Encoding: chunked\r\n",
                          body=b"1;\x00\r\nx\r\n" + LAST + SMUGGLED), REFUSE),
        ("no-host", req(fields=b""), REFUSE),
        ("leading-space", b" " + req(), REFUSE),
    ]:
        first = req(method=b"POST", fields=b"Host: a\r\nContent-Length: 5\r\n", body=BODY)
        _add("pipeline-" + cid, first + second, rfc,
             also=(second.split(b"\r\n", 1)[0].lstrip(),), answers=2)
    for n in (2, 10, 50):
        body = b"".join(req(target=b"/p%d" % i) for i in range(n - 1))
        _add("pipeline-%d-gets" % n, req() + body, ACCEPT,
             also=tuple(b"GET /p%d HTTP/1.1" % i for i in range(n - 1)))


for _family in (_request_line, _targets, _fields, _host, _content_length, _transfer_encoding,
                _connection, _chunks, _pipelines):
    _family()

CASES: list[Case] = _cases


def _check_unique() -> None:
    seen = set()
    for c in CASES:
        assert c.id not in seen, c.id
        seen.add(c.id)


_check_unique()

# Valid requests whose body never comes in full (a length of 2^31 or 2^32
# bytes): waiting for it until a timeout is right.
WAITS = frozenset(("g-cl-2^32+5", "g-cl-2^31+5", "g-chunk-size-2^32+a"))

# Cases where lbcore passes on what haproxy refuses, or forwards them
# differently, with the reason it is not a hole.
DIVERGENCES: dict[str, str] = {}
