"""Message-head scanning for the http fast path, in pure Python.

`scan_request` / `scan_response` look at a complete head (up to and
including its blank line) and, when it is a plain one, return what the
proxy needs plus the head rewritten for the other side. Anything unusual
(chunked or upgrade framing, obs-fold, odd characters, duplicate
Content-Length, Expect, headers named in Connection, HTTP/1.0 responses…)
returns None: the caller then lets httptools (llhttp) parse the message
strictly, behind the strict checks of lbcore/proxy/h1_checks.py. So the
fast path only ever accepts a subset of what that path accepts, and never
decides an error itself (tests/unit/test_heads.py and tests/fuzz check it).

heads.pyx is the compiled twin of this module: same functions, same
results (tests/unit/test_heads.py checks them against each other).
"""

from __future__ import annotations

import re

IMPLEMENTATION = "python"

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# An origin-form target without a fragment; other forms go to the strict path.
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") (/[\x21\x22\x24-\x7e]*) HTTP/1\.([01])\r\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([2-5][0-9][0-9]) ([\t\x20-\x7e\x80-\xff]*)\r\n")
# A Host the fast path takes: a name or IPv4 address and a port up to 65535;
# anything else (IPv6 literals, empty, odd characters) is judged by the
# strict path (lbcore/proxy/h1_checks.py), which refuses what is invalid.
_PLAIN_HOST = re.compile(rb"[A-Za-z0-9.\-]+(?::([0-9]{1,5}))?")
_HEADER = re.compile(rb"(" + _TOKEN + rb"):[ \t]*([\t\x20-\x7e\x80-\xff]*?)[ \t]*\r\n")

# Methods llhttp knows: lbcore.proxy.h1_checks gives llhttp another in
# place of any other token.
METHODS = frozenset(
    b"DELETE GET HEAD POST PUT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND PROPPATCH "
    b"SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE M-SEARCH "
    b"NOTIFY SUBSCRIBE UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE QUERY".split())
# Methods llhttp gives a meaning of its own (a tunnel, the HTTP/2 preface):
# never on the fast path, never stood in for (lbcore.proxy.h1_checks).
# Any other token is a method (RFC 9110 9.1) and is passed on, as HAProxy
# does: one llhttp does not know goes the fast path, or to llhttp under
# another name.
STRICT_METHODS = frozenset((b"CONNECT", b"PRI"))

# HAProxy's limits on a request head (tune.http.maxhdr 101 with the request
# line, and 255-byte field names): beyond them it answers 400. The fast path
# leaves such a head to the strict checks (lbcore/proxy/h1_checks.py), which
# refuse it the same way.
MAX_FIELDS = 100
MAX_FIELD_NAME = 255

# What each plain head may carry; anything in UNUSUAL sends the message
# down the strict slow path.
_REQ_DROP = frozenset((b"connection", b"keep-alive", b"proxy-connection"))
_REQ_UNUSUAL = frozenset((b"transfer-encoding", b"upgrade", b"expect", b"te", b"trailer"))
_RESP_DROP = frozenset((b"connection", b"keep-alive", b"proxy-connection"))
_RESP_UNUSUAL = frozenset((b"transfer-encoding", b"upgrade", b"te", b"trailer",
                           b"proxy-authenticate"))


def _headers(buf: bytes, pos: int, end: int):
    """(name_lower, value, start, stop) per header line, or None if any
    line is not a plain `token: value`."""
    out = []
    while pos < end:
        m = _HEADER.match(buf, pos, end)
        if m is None:
            return None
        out.append((m.group(1).lower(), m.group(2), pos, m.end()))
        pos = m.end()
    return out


def _connection(value: bytes):
    """keep-alive/close from a Connection value; None for other tokens."""
    verdict = 0
    for token in value.split(b","):
        token = token.strip(b" \t").lower()
        if token == b"close":
            verdict = -1  # close wins over keep-alive
        elif token == b"keep-alive":
            verdict = 1 if verdict == 0 else verdict
        elif token:
            return None
    return verdict


def scan_request(buf: bytes, end: int, drop_xfp: bool, own_xff: bool):
    """`buf[:end + 4]` is a request head ending in CRLFCRLF.

    Returns (method, target, version_minor, keep_alive, content_length,
    kept_lines) or None. kept_lines are the header lines to forward
    (each with its CRLF), without hop-by-hop ones and, if `drop_xfp`,
    without X-Forwarded-Proto. With `own_xff`, a request that already
    carries X-Forwarded-For is left to the slow path (it merges them).
    """
    m = _REQUEST_LINE.match(buf, 0, end + 2)
    if m is None or m.group(1) in STRICT_METHODS:
        return None
    minor = int(m.group(3))
    headers = _headers(buf, m.end(), end + 2)
    if headers is None or len(headers) > MAX_FIELDS:
        return None
    keep = minor == 1
    length = 0
    seen_length = False
    hosts = 0
    kept = []
    for name, value, start, stop in headers:
        if len(name) > MAX_FIELD_NAME:
            return None
        if name in _REQ_DROP:
            if name == b"connection":
                verdict = _connection(value)
                if verdict is None:
                    return None
                if verdict < 0:
                    keep = False
                elif verdict > 0 and minor == 0:
                    keep = True
            continue
        if name in _REQ_UNUSUAL:
            return None
        if name == b"content-length":
            if seen_length or not value.isdigit() or len(value) > 15:
                return None
            seen_length = True
            length = int(value)
        elif name == b"host":
            hosts += 1
            plain = _PLAIN_HOST.fullmatch(value)
            if plain is None or (plain.group(1) and int(plain.group(1)) > 65535):
                return None
        elif name == b"x-forwarded-for":
            if own_xff:
                return None
        elif name == b"x-forwarded-proto":
            if drop_xfp:
                continue
        kept.append(buf[start:stop])
    if hosts > 1 or (hosts == 0 and minor == 1):
        return None
    return m.group(1), m.group(2), minor, keep, length, b"".join(kept)


def scan_response(buf: bytes, end: int):
    """`buf[:end + 4]` is a response head ending in CRLFCRLF.

    Returns (status, content_length, keep_alive, head) or None, where head
    is the status line and kept header lines (no blank line: the caller
    adds its own Connection header and the blank line). A response with
    neither Content-Length nor a bodiless status, or a 204 with one, is
    left to the slow path.
    """
    m = _STATUS_LINE.match(buf, 0, end + 2)
    if m is None:
        return None
    status = int(m.group(1))
    headers = _headers(buf, m.end(), end + 2)
    if headers is None:
        return None
    keep = True
    length = -1
    runs = [buf[0:m.end()]]
    for name, value, start, stop in headers:
        if name in _RESP_DROP:
            if name == b"connection":
                verdict = _connection(value)
                if verdict is None:
                    return None
                if verdict < 0:
                    keep = False
            continue
        if name in _RESP_UNUSUAL:
            return None
        if name == b"content-length":
            if length >= 0 or not value.isdigit() or len(value) > 15:
                return None
            length = int(value)
        runs.append(buf[start:stop])
    if length < 0 and status not in (204, 304):
        return None
    if length >= 0 and status == 204:
        return None  # the slow path drops the Content-Length a 204 must not have
    return status, length, keep, b"".join(runs)
