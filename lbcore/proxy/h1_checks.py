"""Strict HTTP/1.1 request checks (RFC 9110, RFC 9112), pure logic.

The http fast path (lbcore_ext heads) takes only plain heads; every other
request goes to httptools (llhttp). llhttp is strict about framing but
lets through things a proxy in front of many different servers should not
pass on: a request line with several spaces, HTTP/0.9 and HTTP/2.0 request
lines, fragments and odd target forms, Host values that are lists, carry
userinfo or a path, chunk sizes near 2^64, chunk extensions without a name,
framing fields in trailers. A server behind us may read any of those
differently from us, and a different reading of a message's end is
request smuggling.

`RequestChecker` reads the same bytes httptools is fed, keeps its own
account of where each message starts and ends (head, Content-Length body,
chunks, trailers; an upgrade ends the HTTP stream), and reports the first
violation with the status to answer. `CheckedRequestParser` puts it in
front of httptools: a request that fails is never parsed, and the requests
before it on the connection are still served.

What is refused, with its status (each has a case in
tests/corpus/hostile_requests.py):
- 400: a request line that is not exactly `method SP target SP HTTP/d.d`;
  a target with control bytes, spaces, non-ASCII or a fragment, a target
  form that does not fit its method, an absolute-form target with
  userinfo, without a host, or whose authority disagrees with Host; a
  missing (HTTP/1.1) or repeated Host, a Host value that is not
  `host[:port]` (userinfo, path, list, bad port); whitespace before the
  first field line or before a colon, obs-fold, a field name that is not a
  token, a bare CR or LF, NUL or other control bytes in a field value;
  a Content-Length that is not one plain number; Transfer-Encoding in an
  HTTP/1.0 request, with Content-Length, or without chunked as its only
  final coding; a malformed chunk line or extension, chunk data not
  followed by CRLF; Content-Length, Transfer-Encoding or Host in trailers.
- 501: a transfer coding other than chunked (a proxy cannot frame it).
- 505: a well-formed version other than HTTP/1.0 and HTTP/1.1.
- 431: a head (or trailer section) larger than the limit.
- 400 too for a WebSocket upgrade without a valid Sec-WebSocket-Key (RFC
  6455 4.2.1; HAProxy refuses it too), for an upgrade request with a body (HAProxy sends the body,
  then switches; llhttp would take the body for tunnel bytes), and for
  what HAProxy refuses by its limits: more than 100 field lines,
  a field name over 255 bytes.
"""

from __future__ import annotations

import ipaddress
import re
from collections import deque

import httptools

from lbcore_ext.heads_py import MAX_FIELD_NAME, MAX_FIELDS, METHODS, STRICT_METHODS

TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_TOKEN = re.compile(rb"[" + TCHAR + rb"]+")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
# A field line: name, colon, value of visible characters, obs-text, SP and
# HTAB only. Leading whitespace (obs-fold, or before the first line) and
# whitespace before the colon fail the match.
_FIELD = re.compile(rb"([" + TCHAR + rb"]+):[ \t]*([\t\x20-\x7e\x80-\xff]*)")
# Visible ASCII but `#`: a fragment is never sent (RFC 9112 3.2).
_TARGET = re.compile(rb"[\x21\x22\x24-\x7e]+")
# A chunk line without BWS (llhttp refuses it too): size, then extensions
# `;name` or `;name=token` or `;name="quoted"`.
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]+)((?:;[" + TCHAR + rb"]+(?:=(?:[" + TCHAR + rb"]+|"
    rb'"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"))?)*)')
# A bare LF, or a CR followed by anything but LF (a CR at the very end may
# still be followed by its LF).
_BARE_CR_LF = re.compile(rb"(?:^|[^\r])\n|\r[^\n]")
# reg-name without pct-encoding's `%` and without `,` (a list is not a host).
_REG_NAME = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+;=]*")
_PORT = re.compile(rb"[0-9]*")

# A Sec-WebSocket-Key: the base64 of 16 bytes (RFC 6455 4.1).
_WEBSOCKET_KEY = re.compile(rb"[A-Za-z0-9+/]{21}[AQgw]==")

MAX_CHUNK_SIZE_DIGITS = 13  # below 2^52, like haproxy; RFC 9112 7.1 warns of overflows
MAX_CHUNK_LINE = 4096

# Field names that never come from a trailer section (RFC 9110 6.5.1):
# framing, and the routing Host.
_NOT_IN_TRAILERS = frozenset((b"content-length", b"transfer-encoding", b"host"))

# What follows a request head.
BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_TUNNEL = range(4)


class Refused(httptools.HttpParserError):
    """A request refused by these checks; `status` is the answer."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def partial_head_invalid(data: bytes, seen: int = 0) -> bool:
    """An incomplete head that can already be refused (a bare CR or LF):
    no need to wait for more bytes that would never make it valid.
    `seen`: how many bytes at the start were looked at already, so a head
    trickled in byte by byte costs linear time, not quadratic."""
    return _BARE_CR_LF.search(data, seen - 1 if seen > 1 else 0) is not None


def _content_length(data: bytes) -> int:
    """The length of `data` without what may be the start of its
    terminating CRLF (or blank line), without copying it."""
    n = len(data)
    while n and (data[n - 1] == 13 or data[n - 1] == 10):
        n -= 1
    return n


def host_valid(value: bytes) -> bool:
    """RFC 9110 7.2 / RFC 3986: `uri-host [":" port]`, nothing else: no
    userinfo, path, query, list, space or non-ASCII; a port 0-65535."""
    if value.startswith(b"["):
        close = value.find(b"]")
        if close < 0:
            return False
        literal, rest = value[1:close], value[close + 1:]
        try:
            ipaddress.IPv6Address(literal.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return False
        if not rest:
            return True
        if not rest.startswith(b":"):
            return False
        port = rest[1:]
    else:
        host, colon, port = value.partition(b":")
        if _REG_NAME.fullmatch(host) is None:
            return False
        if not colon:
            return True
    return _PORT.fullmatch(port) is not None and (not port or int(port) <= 65535)


def _authority_of(target: bytes):
    """The authority of an absolute-form target (lower-case), or None if
    it has none, or userinfo (RFC 9110 4.2.4: treat as an error)."""
    scheme, sep, rest = target.partition(b"://")
    if not sep or not scheme or _TOKEN.fullmatch(scheme) is None:
        return None
    end = len(rest)
    for c in (b"/", b"?"):
        i = rest.find(c)
        if 0 <= i < end:
            end = i
    authority = rest[:end]
    if not authority or b"@" in authority or not host_valid(authority):
        return None
    if rest.startswith(b"?", end):
        return None  # a query without a path: haproxy refuses it, servers differ
    return authority.lower()


def check_head(head: bytes):
    """Check a whole request head (request line to the blank line, CRLFs
    included, no leading empty lines).

    Returns (status, why, body, length): status 0 when it passes, with
    what follows the head: BODY_NONE, BODY_LENGTH (`length` bytes),
    BODY_CHUNKED or BODY_TUNNEL (an upgrade: the rest is not HTTP).
    """
    if _BARE_CR_LF.search(head, 0, len(head) - 1) is not None:
        return 400, "bare CR or LF", 0, 0
    line_end = head.find(b"\r\n")
    parts = head[:line_end].split(b" ")
    if len(parts) != 3:
        return 400, "request line is not `method SP target SP version`", 0, 0
    method, target, version = parts
    if _TOKEN.fullmatch(method) is None:
        return 400, "method is not a token", 0, 0
    m = _VERSION.fullmatch(version)
    if m is None:
        return 400, "malformed HTTP version", 0, 0
    if m.group(1) != b"1" or m.group(2) not in (b"0", b"1"):
        return 505, "HTTP version not supported", 0, 0
    http10 = m.group(2) == b"0"
    if _TARGET.fullmatch(target) is None:
        return 400, "invalid character in the request target", 0, 0
    authority = None
    if target[0] == 0x2F:  # "/": origin-form
        pass
    elif target == b"*":
        if method != b"OPTIONS":
            return 400, "asterisk-form is only for OPTIONS", 0, 0
    elif method == b"CONNECT":
        return 400, "CONNECT is not proxied", 0, 0
    else:
        authority = _authority_of(target)
        if authority is None:
            return 400, "request target is neither origin- nor a valid absolute-form", 0, 0

    hosts = []
    length = -1
    codings = None
    conn_upgrade = False
    upgrade = False
    websocket = False
    keys = []
    lines = head[line_end + 2:-4].split(b"\r\n") if len(head) > line_end + 4 else ()
    if len(lines) > MAX_FIELDS:
        return 400, "more than %d field lines" % MAX_FIELDS, 0, 0
    for line in lines:
        f = _FIELD.fullmatch(line)
        if f is None:
            return 400, "malformed field line", 0, 0
        if f.end(1) > MAX_FIELD_NAME:
            return 400, "field name longer than %d bytes" % MAX_FIELD_NAME, 0, 0
        name = f.group(1).lower()
        if name == b"host":
            hosts.append(f.group(2).rstrip(b" \t"))
        elif name == b"content-length":
            value = f.group(2).rstrip(b" \t")
            if length >= 0 or not value.isdigit() or len(value) > 18:
                return 400, "Content-Length is not one plain number", 0, 0
            length = int(value)
        elif name == b"transfer-encoding":
            value = f.group(2).lower()
            codings = value if codings is None else codings + b"," + value
        elif name == b"connection":
            conn_upgrade = conn_upgrade or any(
                t.strip(b" \t") == b"upgrade" for t in f.group(2).lower().split(b","))
        elif name == b"upgrade":
            upgrade = True
            websocket = websocket or any(
                t.strip(b" \t") == b"websocket" for t in f.group(2).lower().split(b","))
        elif name == b"sec-websocket-key":
            keys.append(f.group(2).rstrip(b" \t"))
    if len(hosts) > 1:
        return 400, "more than one Host", 0, 0
    if not hosts:
        if not http10:
            return 400, "no Host", 0, 0
    elif not host_valid(hosts[0]):
        return 400, "invalid Host", 0, 0
    if authority is not None and hosts and hosts[0].lower() != authority:
        return 400, "Host disagrees with the absolute-form target", 0, 0
    if codings is not None:
        if http10:
            return 400, "Transfer-Encoding in an HTTP/1.0 request", 0, 0
        if length >= 0:
            return 400, "both Transfer-Encoding and Content-Length", 0, 0
        items = [c.strip(b" \t") for c in codings.split(b",")]
        if not items or items[-1] != b"chunked" or items.count(b"chunked") != 1:
            return 400, "chunked is not the only final transfer coding", 0, 0
        if len(items) > 1:
            return 501, "transfer coding other than chunked", 0, 0
    if conn_upgrade and websocket and (
            not keys or any(_WEBSOCKET_KEY.fullmatch(k) is None for k in keys)):
        # RFC 6455 4.2.1: 400 for a handshake the server cannot take; haproxy
        # refuses it too (a server behind might switch without a key).
        return 400, "WebSocket upgrade without a valid Sec-WebSocket-Key", 0, 0
    if conn_upgrade and upgrade:
        if codings is not None or length > 0:
            # llhttp (httptools) switches right after the head and would take
            # the body for tunnel bytes while the server waits for it.
            return 400, "Upgrade on a request with a body", 0, 0
        return 0, "", BODY_TUNNEL, 0
    if codings is not None:
        return 0, "", BODY_CHUNKED, 0
    if length > 0:
        return 0, "", BODY_LENGTH, length
    return 0, "", BODY_NONE, 0


def check_trailers(block: bytes):
    """A trailer section (field lines, each with its CRLF, without the
    final blank line): (status, why)."""
    if _BARE_CR_LF.search(block, 0, len(block) - 1) is not None:
        return 400, "bare CR or LF in trailers"
    for line in block[:-2].split(b"\r\n"):
        f = _FIELD.fullmatch(line)
        if f is None:
            return 400, "malformed trailer line"
        if f.group(1).lower() in _NOT_IN_TRAILERS:
            return 400, "framing or Host in trailers"
    return 0, ""


def check_chunk_line(line: bytes):
    """A chunk line without its CRLF: (status, why, size)."""
    m = _CHUNK_LINE.fullmatch(line)
    if m is None:
        return 400, "malformed chunk line", 0
    digits = m.group(1).lstrip(b"0")
    if len(digits) > MAX_CHUNK_SIZE_DIGITS:
        return 400, "chunk size too large", 0
    return 0, "", int(digits, 16) if digits else 0


# RequestChecker states
_HEAD, _BODY, _CHUNK_LINE_S, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _TUNNEL = range(7)


class RequestChecker:
    """Follows a stream of requests through their framing and checks each
    head, chunk line and trailer section (see the module docstring)."""

    __slots__ = ("state", "buf", "left", "max_head", "why", "messages", "heads")

    def __init__(self, max_head: int) -> None:
        self.state = _HEAD
        self.buf = b""
        self.left = 0
        self.max_head = max_head
        self.why = ""
        self.messages = 0  # messages read to their end (an upgrade's ends with its head)
        # The heads the last feed() passed: (offset of the method in its
        # data, offset of its end, the method); negative offsets for a head
        # begun in an earlier feed.
        self.heads: list = []

    def feed(self, data: bytes):
        """Returns (status, good): status 0 while all is well; else the
        answer, and `good`, how many bytes of `data` belong to the
        messages before the failing one (they may still be served)."""
        # The kept partial head, chunk line or trailers at the start of buf
        # was looked at already: searches resume near its end, so bytes
        # trickled in one at a time cost linear time.
        resume = len(self.buf)
        consumed = -resume  # offset in `data` of what buf starts with
        boundary = 0  # offset in `data` where the current message began
        buf = self.buf + data if self.buf else data
        self.buf = b""
        self.heads = []
        pos = 0
        n = len(buf)
        while pos < n:
            state = self.state
            if state == _TUNNEL:
                return 0, 0
            if state == _HEAD:
                while buf.startswith(b"\r\n", pos):
                    pos += 2  # empty lines before a request line are ignored
                if pos >= n:
                    break
                boundary = max(consumed + pos, 0)
                end = buf.find(b"\r\n\r\n", max(pos, resume - 3))
                if end < 0:
                    status = self._keep_partial(buf[pos:], resume - pos)
                    if status:
                        return self._fail(status, "bare CR or LF, or head too large", boundary)
                    break
                if end - pos > self.max_head:
                    return self._fail(431, "head too large", boundary)
                status, why, body, length = check_head(buf[pos:end + 4])
                if status:
                    return self._fail(status, why, boundary)
                space = buf.find(b" ", pos, end)  # (check_head found the method token)
                self.heads.append((consumed + pos, consumed + space, buf[pos:space]))
                pos = end + 4
                if body == BODY_LENGTH:
                    self.state, self.left = _BODY, length
                elif body == BODY_CHUNKED:
                    self.state = _CHUNK_LINE_S
                else:
                    self.messages += 1
                    if body == BODY_TUNNEL:
                        self.state = _TUNNEL
            elif state == _BODY or state == _CHUNK_DATA:
                take = min(self.left, n - pos)
                pos += take
                self.left -= take
                if not self.left:
                    if state == _BODY:
                        self.state = _HEAD
                        self.messages += 1
                    else:
                        self.state = _CHUNK_CRLF
            elif state == _CHUNK_CRLF:
                if n - pos < 2:
                    if buf[pos:] != b"\r":
                        return self._fail(400, "chunk data not followed by CRLF", boundary)
                    self.buf = buf[pos:]
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    return self._fail(400, "chunk data not followed by CRLF", boundary)
                pos += 2
                self.state = _CHUNK_LINE_S
            elif state == _CHUNK_LINE_S:
                end = buf.find(b"\r\n", max(pos, resume - 1))
                if end < 0:
                    rest = buf[pos:]
                    if (partial_head_invalid(rest, resume - pos)
                            or _content_length(rest) > MAX_CHUNK_LINE):
                        return self._fail(400, "malformed chunk line", boundary)
                    self.buf = rest
                    break
                if end - pos > MAX_CHUNK_LINE:
                    # the same verdict whether the line came in one read or many
                    return self._fail(400, "malformed chunk line", boundary)
                status, why, size = check_chunk_line(buf[pos:end])
                if status:
                    return self._fail(status, why, boundary)
                pos = end + 2
                if size:
                    self.state, self.left = _CHUNK_DATA, size
                else:
                    self.state = _TRAILERS
            else:  # _TRAILERS
                if buf.startswith(b"\r\n", pos):
                    pos += 2
                    self.state = _HEAD
                    self.messages += 1
                    continue
                end = buf.find(b"\r\n\r\n", max(pos, resume - 3))
                if end < 0:
                    status = self._keep_partial(buf[pos:], resume - pos)
                    if status:
                        return self._fail(status, "bare CR or LF, or trailers too large", boundary)
                    break
                if end - pos > self.max_head:
                    return self._fail(431, "trailers too large", boundary)
                status, why = check_trailers(buf[pos:end + 2])
                if status:
                    return self._fail(status, why, boundary)
                pos = end + 4
                self.state = _HEAD
                self.messages += 1
        return 0, 0

    def _keep_partial(self, rest: bytes, seen: int) -> int:
        """The start of a head or trailer section: kept for the next feed,
        unless it can already be refused (the status, else 0). The first
        `seen` bytes were looked at by an earlier feed."""
        if rest != b"\r":
            if partial_head_invalid(rest, seen):
                return 400
            # (what may be the start of the blank line does not count,
            # as when the whole head is here)
            if _content_length(rest) > self.max_head:
                return 431
        self.buf = rest
        return 0

    def _fail(self, status: int, why: str, good: int):
        self.why = why
        self.state = _TUNNEL  # nothing more is read after a refusal
        return status, good


# What llhttp is told in place of a method it does not know (any token is
# a method, RFC 9110 9.1; HAProxy passes them on, a server answers 501 to
# one it does not implement). Framing does not depend on the method.
STAND_IN = b"GET"


class CheckedRequestParser:
    """httptools' request parser behind a RequestChecker: bytes reach
    httptools only once checked. A failure raises `Refused` after the
    requests before it were parsed (and so answered).

    llhttp refuses methods it does not know, so httptools gets whole heads
    only, each with a method it knows: a head not ended in `data` is handed
    back to the caller (feed_data returns it) to come back whole, and an
    unknown method is replaced by STAND_IN, the real one kept for
    get_method()."""

    __slots__ = ("parser", "checker", "methods")

    def __init__(self, protocol, max_head: int) -> None:
        self.parser = httptools.HttpRequestParser(protocol)
        self.checker = RequestChecker(max_head)
        self.methods: deque = deque()  # of the heads fed, in order, till get_method()

    def feed_data(self, data: bytes) -> bytes:
        """Returns the start of a head that is not whole yet (not parsed):
        the caller reads on from it, as from the start of a request."""
        checker = self.checker
        status, good = checker.feed(data)
        held = b""
        if status:
            data = data[:good]
        elif checker.state == _HEAD and checker.buf and data.endswith(checker.buf):
            held, checker.buf = checker.buf, b""
            data = data[:len(data) - len(held)]
        shift = 0
        if checker.heads:
            pieces = []
            last = 0
            for start, stop, method in checker.heads:
                if start >= len(data):
                    break  # the refused message's
                self.methods.append(method)
                if start >= 0 and method not in METHODS and method not in STRICT_METHODS:
                    pieces.append(data[last:start])
                    pieces.append(STAND_IN)
                    last = stop
                    shift += len(STAND_IN) - (stop - start)
            if pieces:
                pieces.append(data[last:])
                data = b"".join(pieces)
        if data:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                if shift and exc.args:
                    # Where the tunnel's bytes begin, in the caller's bytes.
                    raise httptools.HttpParserUpgrade(exc.args[0] - shift) from None
                raise
        if status:
            raise Refused(status, checker.why)
        return held

    def get_method(self) -> bytes:
        """The method of the head being parsed, as the client sent it."""
        if self.methods:
            return self.methods.popleft()
        return self.parser.get_method()

    def get_http_version(self) -> str:
        return self.parser.get_http_version()

    def should_keep_alive(self) -> bool:
        return self.parser.should_keep_alive()

    def should_upgrade(self) -> bool:
        return self.parser.should_upgrade()


# -- responses ------------------------------------------------------------------

# Interim (1xx) responses relayed before a final one: a server sends one or
# two (100 Continue, 103 Early Hints); a flood of them is a broken or
# hostile server keeping a client busy.
MAX_INTERIM_RESPONSES = 16


# What a reason phrase may hold besides HTAB, SP, VCHAR and obs-text (RFC
# 9112 4): llhttp passes NUL and other control bytes through.
_REASON_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def transfer_codings_chunked(value: bytes) -> bool:
    """A Transfer-Encoding value whose codings end with chunked, applied
    once (RFC 9112 7): what llhttp frames as chunked."""
    items = [t.strip(b" \t") for t in value.lower().split(b",")]
    return items[-1] == b"chunked" and items.count(b"chunked") == 1


def response_head_error(version: str, status: int, interims: int, reason: bytes = b"") -> str:
    """Why a server's response head cannot be relayed ('' if it can):
    llhttp takes any three digits (099 too), HTTP/2.0 and control bytes
    in a status line."""
    if version != "1.1" and version != "1.0":
        return "response version is not HTTP/1.0 or HTTP/1.1"
    if status < 100 or status > 599:
        return "status code out of 100-599"  # RFC 9110 15: invalid
    if _REASON_BAD.search(reason) is not None:
        return "control bytes in the reason phrase"
    if status < 200 and interims >= MAX_INTERIM_RESPONSES:
        return "too many interim responses"
    return ""
