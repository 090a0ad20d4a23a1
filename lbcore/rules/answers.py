"""lbcore's own answers to a request (deny, return, redirect, auth), laid
out byte for byte as HAProxy 2.6 writes them."""

from __future__ import annotations

from http import HTTPStatus
from typing import Optional

from ..proxy.errors import MESSAGES

# deny_status may only name a code HAProxy has a page for.
DENY_CODES = (200, 400, 401, 403, 404, 405, 407, 408, 410, 413, 425, 429, 500, 501, 502, 503, 504)
REDIRECT_CODES = (301, 302, 303, 307, 308)


class Answer:
    """A complete response lbcore writes itself. `kind` says which rule made
    it (deny, return, redirect, auth), for counters and the log. HAProxy
    keeps the client connection after these (`close` is False); when the
    client asked to close, `closing_head` says so."""

    __slots__ = ("status", "kind", "head", "body", "close", "closing_head")

    def __init__(self, status: int, kind: str, head: bytes, body: bytes) -> None:
        self.status = status
        self.kind = kind
        # the status line and headers, then the empty line
        self.head = head + b"\r\n"
        self.closing_head = head + b"connection: close\r\n\r\n"
        self.body = body
        self.close = False

    def render(self, close: bool) -> bytes:
        return (self.closing_head if close else self.head) + self.body


def reason(status: int) -> bytes:
    if status in MESSAGES:
        return MESSAGES[status][0]
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


def error_page(status: int, kind: str, extra: bytes = b"") -> Answer:
    """HAProxy's page for `status` (deny, auth): html body, no-cache."""
    title, text = MESSAGES[status]
    body = b"<html><body><h1>%d %s</h1>\n%s\n</body></html>\n" % (status, title, text)
    head = (b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\ncache-control: no-cache\r\n"
            b"content-type: text/html\r\n%s") % (status, title, len(body), extra)
    return Answer(status, kind, head, body)


def custom(status: int, kind: str, headers: bytes, content_type: Optional[bytes], body: bytes) -> Answer:
    """`return` (and deny with a body): given headers first, then the framing."""
    head = b"HTTP/1.1 %d %s\r\n%scontent-length: %d\r\n" % (status, reason(status), headers, len(body))
    if content_type is not None:
        head += b"content-type: " + content_type + b"\r\n"
    return Answer(status, kind, head, body)


def redirect(status: int, location: bytes, extra: bytes = b"") -> Answer:
    # HAProxy marks temporary redirects uncacheable, not the permanent ones.
    cache = b"" if status in (301, 308) else b"cache-control: no-cache\r\n"
    head = b"HTTP/1.1 %d %s\r\ncontent-length: 0\r\nlocation: %s\r\n%s%s" % (
        status, reason(status), location, cache, extra)
    return Answer(status, "redirect", head, b"")
