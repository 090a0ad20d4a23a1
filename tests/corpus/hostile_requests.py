"""A corpus of hostile and malformed HTTP/1.1 requests.

Each `Case` is raw bytes sent on a fresh client connection, with what
RFC 9110/9112 say a server must do with them:

- `REFUSE`: the message is invalid; lbcore answers `status` (400 unless
  said otherwise) and closes the connection, and no part of it that could
  be read as a request reaches the server after the refusal.
- `ACCEPT`: valid; it is forwarded and answered 200.
- `EITHER`: the RFC leaves the choice (e.g. obs-fold, a list of identical
  Content-Length values); only compared with haproxy.

tests/integration/test_hostile_requests.py sends every case to lbcore and
to haproxy 2.6 in front of the same lenient backend (tests/lenient_backend.py)
and asserts that lbcore refuses everything haproxy refuses, every REFUSE
case, and that nothing reaches the backend as a request no client meant to
send. Smuggled payloads use the path `/smuggled` so the backend can tell.
"""

from __future__ import annotations

from dataclasses import dataclass, field

REFUSE, ACCEPT, EITHER = "refuse", "accept", "either"

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: evil\r\n\r\n"


@dataclass(frozen=True)
class Case:
    id: str
    raw: bytes
    rfc: str = REFUSE
    status: int = 400
    why: str = ""
    # The request lines of the further requests a client pipelined
    # behind the first, which the backend may see too.
    also: tuple = field(default=())
    # How many answers to wait for, if not one per request: bytes a proxy
    # may take for a further (invalid) message get an answer too.
    answers: int = 0

    @property
    def requests(self) -> int:
        return self.answers or 1 + len(self.also)

    @property
    def first_line(self) -> bytes:
        return self.raw.lstrip(b"\r\n").split(b"\n", 1)[0].rstrip(b"\r")


def get(head: bytes = b"", target: bytes = b"/", version: bytes = b"HTTP/1.1",
        method: bytes = b"GET", host: bytes = b"Host: a\r\n") -> bytes:
    return method + b" " + target + b" " + version + b"\r\n" + host + head + b"\r\n"


def post_cl(framing: bytes, body: bytes = SMUGGLED) -> bytes:
    return b"POST /post HTTP/1.1\r\nHost: a\r\n" + framing + b"\r\n" + body


def post_chunked(chunks: bytes, te: bytes = b"Transfer-Encoding: chunked\r\n") -> bytes:
    return b"POST /chunked HTTP/1.1\r\nHost: a\r\n" + te + b"\r\n" + chunks


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST = b"0\r\n\r\n"
SMUGGLE_CHUNKED = chunk(SMUGGLED) + LAST

CASES: list[Case] = [
    # -- baselines: these must pass -------------------------------------------
    Case("ok-get", get(), ACCEPT),
    Case("ok-post-cl", post_cl(b"Content-Length: 5\r\n", b"hello"), ACCEPT),
    Case("ok-post-chunked", post_chunked(chunk(b"hello") + LAST), ACCEPT),
    Case("ok-chunk-ext", post_chunked(b"5;name=value\r\nhello\r\n" + LAST), ACCEPT),
    Case("ok-chunk-ext-quoted", post_chunked(b'5;n="a \\" b"\r\nhello\r\n' + LAST), ACCEPT),
    Case("ok-chunk-ext-bws", post_chunked(b"5 ; n = v\r\nhello\r\n" + LAST), EITHER,
         why="BWS around chunk-ext is allowed by the grammar, refused by many"),
    Case("ok-chunk-upper-hex", post_chunked(b"A\r\n0123456789\r\n" + LAST), ACCEPT),
    Case("ok-chunk-leading-zeros", post_chunked(b"0005\r\nhello\r\n" + LAST), ACCEPT),
    Case("ok-trailer", post_chunked(chunk(b"hello") + b"0\r\nX-Sum: 1\r\n\r\n"), ACCEPT),
    Case("ok-te-upper", post_chunked(chunk(b"hello") + LAST, b"Transfer-Encoding: CHUNKED\r\n"),
         ACCEPT),
    Case("ok-leading-crlf", b"\r\n" + get(), ACCEPT,
         why="RFC 9112 2.2: a server SHOULD ignore an empty line before the request line"),
    Case("ok-obs-text", get(b"X-Name: caf\xc3\xa9\r\n"), ACCEPT),
    Case("ok-host-port", get(host=b"Host: a.example:8080\r\n"), ACCEPT),
    Case("ok-host-ipv6", get(host=b"Host: [::1]:80\r\n"), ACCEPT),
    Case("ok-host-ipv4", get(host=b"Host: 10.0.0.1\r\n"), ACCEPT),
    Case("ok-host-empty-port", get(host=b"Host: a:\r\n"), EITHER,
         why="port = *DIGIT: an empty port is valid by the grammar"),
    Case("ok-absolute-form", get(target=b"http://a/x", host=b"Host: a\r\n"), ACCEPT),
    Case("ok-absolute-form-port", get(target=b"http://a:8080/x", host=b"Host: a:8080\r\n"),
         ACCEPT),
    Case("ok-absolute-form-case", get(target=b"HTTP://A/x", host=b"Host: a\r\n"), ACCEPT,
         why="scheme and host are case-insensitive"),
    Case("ok-options-star", get(method=b"OPTIONS", target=b"*"), ACCEPT),
    Case("ok-http10-no-host", get(version=b"HTTP/1.0", host=b""), ACCEPT),
    Case("ok-query", get(target=b"/a?b=c&d=%20e"), ACCEPT),
    Case("ok-cl-zero", post_cl(b"Content-Length: 0\r\n", b""), ACCEPT),
    Case("ok-pipelined", get() + get(target=b"/second"), ACCEPT, also=(b"GET /second HTTP/1.1",)),
    Case("ok-bare-lf", b"GET / HTTP/1.1\nHost: a\n\n", EITHER,
         why="RFC 9112 2.2: a recipient MAY recognize a bare LF as a line terminator"),

    # -- the request line -----------------------------------------------------
    Case("line-leading-space", b" " + get(), why="no whitespace before the method"),
    Case("line-leading-tab", b"\t" + get()),
    Case("line-double-space", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
    Case("line-tab-separator", b"GET\t/\tHTTP/1.1\r\nHost: a\r\n\r\n"),
    Case("line-trailing-space", b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n"),
    Case("line-no-version", b"GET /\r\nHost: a\r\n\r\n", why="HTTP/0.9 is not served"),
    Case("line-empty-target", b"GET  HTTP/1.1\r\nHost: a\r\n\r\n"),
    Case("line-bare-cr-end", b"GET / HTTP/1.1\rHost: a\r\n\r\n"),
    Case("line-method-at", get(method=b"G@T")),
    Case("line-method-nul", get(method=b"GE\x00T")),
    Case("line-method-colon", get(method=b"GET:")),
    Case("version-2.0", get(version=b"HTTP/2.0"), status=505,
         why="RFC 9110 15.6.6: a well-formed version the server does not support"),
    Case("version-0.9", get(version=b"HTTP/0.9"), status=505),
    Case("version-1.2", get(version=b"HTTP/1.2"), EITHER,
         why="RFC 9112 2.3: a higher minor version is served as 1.1"),
    Case("version-3", get(version=b"HTTP/3"), why="HTTP-version is HTTP/DIGIT.DIGIT"),
    Case("version-lower", get(version=b"http/1.1"), why="HTTP-name is case-sensitive"),
    Case("version-1.10", get(version=b"HTTP/1.10")),
    Case("version-01.1", get(version=b"HTTP/01.1")),
    Case("version-1", get(version=b"HTTP/1")),
    Case("version-space", get(version=b"HTTP/ 1.1")),
    Case("version-garbage", get(version=b"HTTP/1.1x")),
    Case("version-junk", get(version=b"FOO/1.1")),
    Case("version-nul", get(version=b"HTTP/1.1\x00")),
    Case("target-nul", get(target=b"/a\x00b")),
    Case("target-ctl-01", get(target=b"/a\x01b")),
    Case("target-ctl-7f", get(target=b"/a\x7fb")),
    Case("target-bare-cr", get(target=b"/a\rb")),
    Case("target-bare-lf", get(target=b"/a\nb")),
    Case("target-tab", get(target=b"/a\tb")),
    Case("target-space", get(target=b"/a b")),
    Case("target-high-byte", get(target=b"/caf\xc3\xa9")),
    Case("target-fragment", get(target=b"/a#frag"), why="a fragment is never sent (RFC 9112 3.2)"),
    Case("target-relative", get(target=b"a/b")),
    Case("target-star-get", get(target=b"*")),
    Case("target-authority-get", get(target=b"a:80"), why="authority-form is only for CONNECT"),
    Case("target-connect", get(method=b"CONNECT", target=b"a:443"), EITHER,
         why="CONNECT is not proxied: refused either way"),
    Case("target-backslash", get(target=b"/a\\b"), EITHER),
    Case("target-quote", get(target=b'/a"b'), EITHER),
    Case("target-brace", get(target=b"/a{b}"), EITHER),
    Case("target-lt", get(target=b"/a<b>"), EITHER),

    # -- absolute-form and Host (RFC 9112 3.2) ------------------------------------
    Case("absolute-host-differs", get(target=b"http://a/x", host=b"Host: b\r\n")),
    Case("absolute-host-port-differs", get(target=b"http://a:81/x", host=b"Host: a:82\r\n")),
    Case("absolute-no-host", get(target=b"http://a/x", host=b"")),
    Case("absolute-userinfo", get(target=b"http://u:p@a/x", host=b"Host: a\r\n")),
    Case("absolute-bad-scheme", get(target=b"ftp://a/x", host=b"Host: a\r\n"), EITHER),
    Case("absolute-no-authority", get(target=b"http:///x", host=b"Host: a\r\n")),
    Case("host-missing", get(host=b"")),
    Case("host-duplicate", get(host=b"Host: a\r\nHost: a\r\n")),
    Case("host-duplicate-differs", get(host=b"Host: a\r\nHost: b\r\n")),
    Case("host-userinfo", get(host=b"Host: user@a\r\n")),
    Case("host-userinfo-pass", get(host=b"Host: u:p@a\r\n")),
    Case("host-path", get(host=b"Host: a/b\r\n")),
    Case("host-query", get(host=b"Host: a?b\r\n")),
    Case("host-fragment", get(host=b"Host: a#b\r\n")),
    Case("host-list", get(host=b"Host: a, b\r\n")),
    Case("host-list-same", get(host=b"Host: a,a\r\n")),
    Case("host-space", get(host=b"Host: a b\r\n")),
    Case("host-port-alpha", get(host=b"Host: a:http\r\n")),
    Case("host-port-large", get(host=b"Host: a:99999\r\n")),
    Case("host-port-two", get(host=b"Host: a:80:81\r\n")),
    Case("host-port-sign", get(host=b"Host: a:+80\r\n")),
    Case("host-ipv6-open", get(host=b"Host: [::1\r\n")),
    Case("host-ipv6-junk", get(host=b"Host: [::1]x\r\n")),
    Case("host-backslash", get(host=b"Host: a\\b\r\n")),
    Case("host-nul", get(host=b"Host: a\x00b\r\n")),
    Case("host-high-byte", get(host=b"Host: caf\xc3\xa9\r\n")),
    Case("host-empty", get(host=b"Host: \r\n"), EITHER,
         why="RFC 9110 7.2: empty when the target has no authority; an origin-form has none"),
    Case("host-folded", get(host=b"Host: a\r\n b\r\n")),

    # -- header fields ------------------------------------------------------------
    Case("ws-before-first-header", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
         why="RFC 9112 2.2: whitespace before the first field line: reject or consume"),
    Case("ws-before-first-header-tab", b"GET / HTTP/1.1\r\n\tX: y\r\nHost: a\r\n\r\n"),
    Case("ws-before-colon", get(b"X-A : b\r\n"), why="RFC 9112 5.1: MUST be refused with 400"),
    Case("ws-before-colon-tab", get(b"X-A\t: b\r\n")),
    Case("ws-before-colon-cl", post_cl(b"Content-Length : 5\r\n", b"hello")),
    Case("ws-before-colon-te", post_chunked(SMUGGLE_CHUNKED, b"Transfer-Encoding : chunked\r\n")),
    Case("obs-fold", get(b"X-A: b\r\n c\r\n"), EITHER,
         why="RFC 9112 5.2: reject, or replace each obs-fold with SP"),
    Case("obs-fold-te", post_chunked(SMUGGLE_CHUNKED, b"Transfer-Encoding:\r\n chunked\r\n")),
    Case("obs-fold-cl", post_cl(b"Content-Length:\r\n 5\r\n", b"hello")),
    Case("name-empty", get(b": x\r\n")),
    Case("name-space", get(b"X A: b\r\n")),
    Case("name-paren", get(b"X(a): b\r\n")),
    Case("name-nul", get(b"X\x00A: b\r\n")),
    Case("name-high-byte", get(b"X\xc3\xa9: b\r\n")),
    Case("name-no-colon", get(b"X-No-Colon\r\n")),
    Case("value-nul", get(b"X-A: a\x00b\r\n")),
    Case("value-ctl-01", get(b"X-A: a\x01b\r\n")),
    Case("value-ctl-1f", get(b"X-A: a\x1fb\r\n")),
    Case("value-ctl-7f", get(b"X-A: a\x7fb\r\n")),
    Case("value-vt", get(b"X-A: a\x0bb\r\n")),
    Case("value-ff", get(b"X-A: a\x0cb\r\n")),
    Case("value-bare-cr", get(b"X-A: a\rb\r\n")),
    Case("value-bare-cr-end", get(b"X-A: a\r\r\n")),
    Case("value-bare-cr-smuggle", get(b"X-A: a\rGET /smuggled HTTP/1.1\r\n")),
    Case("value-bare-lf-smuggle", get(b"X-A: a\nTransfer-Encoding: chunked\r\n"), EITHER,
         why="bare LF is a line end: this is a chunked request with an empty body"),
    Case("value-nul-end", get(b"X-A: a\x00\r\n")),
    Case("header-too-many-crlf", b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n"),

    # -- Content-Length -----------------------------------------------------------
    Case("cl-negative", post_cl(b"Content-Length: -1\r\n")),
    Case("cl-plus", post_cl(b"Content-Length: +5\r\n", b"hello")),
    Case("cl-hex", post_cl(b"Content-Length: 0x5\r\n", b"hello")),
    Case("cl-alpha", post_cl(b"Content-Length: 5a\r\n", b"hello")),
    Case("cl-empty", post_cl(b"Content-Length: \r\n")),
    Case("cl-space-inside", post_cl(b"Content-Length: 1 0\r\n", b"0123456789")),
    Case("cl-decimal", post_cl(b"Content-Length: 5.0\r\n", b"hello")),
    Case("cl-overflow", post_cl(b"Content-Length: 99999999999999999999999\r\n")),
    Case("cl-two-differ", post_cl(b"Content-Length: 5\r\nContent-Length: %d\r\n" % len(SMUGGLED))),
    Case("cl-list-differ", post_cl(b"Content-Length: 5, %d\r\n" % len(SMUGGLED))),
    Case("cl-list-same", post_cl(b"Content-Length: 5, 5\r\n", b"hello"), EITHER,
         why="RFC 9110 8.6: MAY be taken as one value"),
    Case("cl-two-same", post_cl(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"), EITHER),
    Case("cl-list-empty-item", post_cl(b"Content-Length: 5,\r\n", b"hello"), EITHER),
    Case("cl-nul", post_cl(b"Content-Length: 5\x00\r\n", b"hello")),
    Case("cl-vt", post_cl(b"Content-Length: \x0b5\r\n", b"hello")),
    Case("cl-te-both", post_cl(b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
                               SMUGGLE_CHUNKED), EITHER,
         why="RFC 9112 6.1: MAY refuse; if not, TE wins and the connection closes after"),
    Case("te-cl-both", post_cl(b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                               SMUGGLE_CHUNKED), EITHER),
    Case("cl-on-get-body", b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s"
         % (len(SMUGGLED), SMUGGLED), ACCEPT, why="a GET body is framed like any other"),

    # -- Transfer-Encoding ----------------------------------------------------------
    Case("te-not-last", post_chunked(SMUGGLE_CHUNKED, b"Transfer-Encoding: chunked, gzip\r\n"),
         why="RFC 9112 6.3: chunked not final in a request: 400 and close"),
    Case("te-identity", post_chunked(SMUGGLE_CHUNKED, b"Transfer-Encoding: identity\r\n"),
         why="RFC 9112 6.3: chunked is not the final coding: the length is unknown, 400"),
    Case("te-xchunked", post_chunked(SMUGGLE_CHUNKED, b"Transfer-Encoding: xchunked\r\n")),
    Case("te-chunked-x", post_chunked(SMUGGLE_CHUNKED, b"Transfer-Encoding: chunkedx\r\n")),
    Case("te-gzip-chunked-501", post_chunked(chunk(b"hello") + LAST,
                                             b"Transfer-Encoding: gzip, chunked\r\n"), status=501,
         why="RFC 9112 6.1: a coding the proxy cannot frame: 501 (haproxy answers 422)"),
    Case("te-twice", post_chunked(SMUGGLE_CHUNKED, b"Transfer-Encoding: chunked, chunked\r\n"),
         why="RFC 9112 7: chunked MUST NOT be applied more than once"),
    Case("te-two-headers", post_chunked(
        SMUGGLE_CHUNKED, b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n")),
    Case("te-split", post_chunked(SMUGGLE_CHUNKED,
                                  b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"),
         EITHER),
    Case("te-empty", post_chunked(SMUGGLE_CHUNKED, b"Transfer-Encoding: \r\n")),
    Case("te-vt", post_chunked(SMUGGLE_CHUNKED, b"Transfer-Encoding: \x0bchunked\r\n")),
    Case("te-ff", post_chunked(SMUGGLE_CHUNKED, b"Transfer-Encoding: chunked\x0c\r\n")),
    Case("te-nul", post_chunked(SMUGGLE_CHUNKED, b"Transfer-Encoding: chunked\x00\r\n")),
    Case("te-quoted", post_chunked(SMUGGLE_CHUNKED, b'Transfer-Encoding: "chunked"\r\n')),
    Case("te-comma-only", post_chunked(SMUGGLE_CHUNKED, b"Transfer-Encoding: ,\r\n")),
    Case("te-semicolon", post_chunked(SMUGGLE_CHUNKED, b"Transfer-Encoding: chunked;q=1\r\n")),
    Case("te-http10", b"POST /chunked HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
         + SMUGGLE_CHUNKED, why="RFC 9112 6.1: TE in an HTTP/1.0 request is faulty framing"),
    Case("te-name-space", post_chunked(SMUGGLE_CHUNKED, b"Transfer-Encoding chunked\r\n")),
    Case("te-name-underscore", post_chunked(SMUGGLE_CHUNKED, b"Transfer_Encoding: chunked\r\n"),
         EITHER, why="a different header: no body, the chunks are read as a next request",
         answers=2),

    # -- chunk lines and extensions (RFC 9112 7.1) ---------------------------------------
    Case("chunk-size-alpha", post_chunked(b"5x\r\nhello\r\n" + LAST)),
    Case("chunk-size-negative", post_chunked(b"-5\r\nhello\r\n" + LAST)),
    Case("chunk-size-plus", post_chunked(b"+5\r\nhello\r\n" + LAST)),
    Case("chunk-size-0x", post_chunked(b"0x5\r\nhello\r\n" + LAST)),
    Case("chunk-size-empty", post_chunked(b"\r\nhello\r\n" + LAST)),
    Case("chunk-size-leading-space", post_chunked(b" 5\r\nhello\r\n" + LAST)),
    Case("chunk-size-trailing-space", post_chunked(b"5 \r\nhello\r\n" + LAST), EITHER,
         why="BWS before a chunk-ext that is not there: llhttp and haproxy accept"),
    Case("chunk-size-tab", post_chunked(b"5\t\r\nhello\r\n" + LAST), EITHER),
    Case("chunk-size-overflow", post_chunked(b"1" + b"0" * 20 + b"\r\nhello\r\n" + LAST)),
    Case("chunk-size-huge", post_chunked(b"ffffffffffffffff\r\nhello\r\n" + LAST)),
    Case("chunk-size-bare-lf", post_chunked(b"5\nhello\r\n" + LAST), EITHER),
    Case("chunk-size-bare-cr", post_chunked(b"5\rhello\r\n" + LAST)),
    Case("chunk-size-nul", post_chunked(b"5\x00\r\nhello\r\n" + LAST)),
    Case("chunk-data-overrun", post_chunked(b"3\r\nhello\r\n" + LAST)),
    Case("chunk-data-no-crlf", post_chunked(b"5\r\nhelloXX" + LAST)),
    Case("chunk-data-bare-lf", post_chunked(b"5\r\nhello\n" + LAST), EITHER),
    Case("chunk-data-bare-cr", post_chunked(b"5\r\nhello\r" + LAST)),
    Case("chunk-ext-nul", post_chunked(b"5;a\x00\r\nhello\r\n" + LAST)),
    Case("chunk-ext-ctl", post_chunked(b"5;a\x01b\r\nhello\r\n" + LAST)),
    Case("chunk-ext-bare-cr", post_chunked(b"5;a\rb\r\nhello\r\n" + LAST)),
    Case("chunk-ext-bare-lf-smuggle", post_chunked(b"5;a\n" + b"hello\r\n" + LAST), EITHER),
    Case("chunk-ext-no-name", post_chunked(b"5;=b\r\nhello\r\n" + LAST)),
    Case("chunk-ext-empty", post_chunked(b"5;\r\nhello\r\n" + LAST)),
    Case("chunk-ext-bad-name", post_chunked(b"5;a(b)=c\r\nhello\r\n" + LAST)),
    Case("chunk-ext-space-in-value", post_chunked(b"5;a=b c\r\nhello\r\n" + LAST)),
    Case("chunk-ext-unterminated-quote", post_chunked(b'5;a="b\r\nhello\r\n' + LAST)),
    Case("chunk-ext-high-byte", post_chunked(b"5;a=\xff\r\nhello\r\n" + LAST)),
    Case("chunk-ext-quoted-ctl", post_chunked(b'5;a="\x01"\r\nhello\r\n' + LAST)),
    Case("chunk-ext-last-bad", post_chunked(chunk(b"hello") + b"0;a\x00\r\n\r\n")),
    Case("chunk-missing-last", post_chunked(chunk(b"hello") + b"\r\n"), EITHER,
         why="an empty size line: the body never ends properly"),
    # The classic: a proxy reading the chunk size as decimal or ignoring a
    # bad line would forward the rest as a second request.
    Case("chunk-smuggle-after-bad-size", post_chunked(b"1;\x00\r\nx\r\n" + LAST + SMUGGLED)),
    Case("chunk-smuggle-lf-ext", post_chunked(b"2;\nxx\r\n" + LAST + SMUGGLED), EITHER),

    # -- trailers (RFC 9110 6.5.1: framing never comes from a trailer) ---------------
    Case("trailer-cl", post_chunked(chunk(b"hello") + b"0\r\nContent-Length: 5\r\n\r\n")),
    Case("trailer-te", post_chunked(chunk(b"hello") + b"0\r\nTransfer-Encoding: chunked\r\n\r\n")),
    Case("trailer-host", post_chunked(chunk(b"hello") + b"0\r\nHost: evil\r\n\r\n"), EITHER,
         why="dropped (never forwarded) or refused"),
    Case("trailer-bare-cr", post_chunked(chunk(b"hello") + b"0\r\nX-A: a\rb\r\n\r\n")),
    Case("trailer-nul", post_chunked(chunk(b"hello") + b"0\r\nX-A: a\x00b\r\n\r\n")),
    Case("trailer-no-colon", post_chunked(chunk(b"hello") + b"0\r\nX-No-Colon\r\n\r\n")),
    Case("trailer-ws-before-colon", post_chunked(chunk(b"hello") + b"0\r\nX-A : b\r\n\r\n")),
    Case("trailer-smuggle", post_chunked(chunk(b"hello") + b"0\r\n" + SMUGGLED), EITHER,
         why="a request line is not a trailer field: refused, or the trailers are dropped"),

    # -- pipelines: the first request is fine, the second is not -----------------------
    Case("pipeline-then-bad", get() + b"GET /a\x00 HTTP/1.1\r\nHost: a\r\n\r\n", EITHER,
         why="the first is answered (or not), the second refused; only one reaches the server",
         also=(b"GET /a\x00 HTTP/1.1",)),
    Case("pipeline-then-cl-te", get() + post_cl(
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", SMUGGLE_CHUNKED), EITHER,
         also=(b"POST /post HTTP/1.1",)),
]

# Cases where lbcore is known to answer something other than what the RFC
# asks, with the reason; the test reports them instead of failing on them.
KNOWN_LENIENT: dict[str, str] = {}


def by_id(case_id: str) -> Case:
    for case in CASES:
        if case.id == case_id:
            return case
    raise KeyError(case_id)
