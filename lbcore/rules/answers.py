"""lbcore's own answers to a request (deny, return, redirect, auth), laid
out byte for byte as HAProxy 2.6 writes them."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Optional

from ..dataclass_code import dataclass
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


# errorfile: the statuses HAProxy 2.6 lets a file replace (http_err_codes).
ERROR_FILE_CODES = (200, 400, 401, 403, 404, 405, 407, 408, 410, 413, 425, 429, 500, 501, 502, 503, 504)
MAX_ERROR_FILE = 16384  # HAProxy's buffer: a larger file is refused at load
_STATUS_LINE = re.compile(rb"(HTTP/1\.[01]) ([1-5][0-9]{2})(?: ([^\r\n]*))?")
_HEADER = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*")


@dataclass(frozen=True)
class ErrorFile:
    """A response read from an errorfile, laid out as HAProxy 2.6 sends it:
    HAProxy parses the file and writes it again, so the status line and
    header values stay as written, header names go lowercase, Connection
    headers give way to its own, and a body without Content-Length ends
    at close (`connection: close` for an HTTP/1.1 status line)."""

    status: int
    head: bytes  # status line and headers, each ending in CRLF
    body: bytes
    close: bool  # no Content-Length: the body ends when the connection does
    http10: bool

    def answer(self, kind: str) -> Answer:
        answer = Answer(self.status, kind, self.head, self.body)
        if self.http10:
            answer.closing_head = self.head + b"\r\n"  # HTTP/1.0 closes without saying so
        answer.close = self.close
        return answer

    def closing(self) -> bytes:
        """The bytes sent when lbcore closes after its error."""
        return self.answer("error").render(True)


def parse_error_file(data: bytes) -> ErrorFile:
    """ValueError with the reason when `data` is not a whole HTTP/1.x
    response HAProxy would load."""
    if len(data) > MAX_ERROR_FILE:
        raise ValueError(f"the file is {len(data)} bytes; an error file holds at most {MAX_ERROR_FILE}")
    end = -1
    for sep in (b"\r\n\r\n", b"\n\n", b"\n\r\n", b"\r\n\n"):
        at = data.find(sep)
        if at >= 0 and (end < 0 or at < end):
            end, length = at, len(sep)
    if end < 0:
        raise ValueError("no empty line ends the response's headers")
    lines = data[:end].replace(b"\r\n", b"\n").split(b"\n")
    body = data[end + length:]
    match = _STATUS_LINE.fullmatch(lines[0])
    if not match:
        raise ValueError(f"the first line {lines[0][:60]!r} is not an HTTP/1.0 or 1.1 status line")
    version, status = match.group(1), int(match.group(2))
    head = lines[0] + b"\r\n"
    content_length = None
    for line in lines[1:]:
        header = _HEADER.fullmatch(line)
        if header is None or b"\r" in line:
            raise ValueError(f"invalid header line {line[:60]!r}")
        name, value = header.group(1).lower(), header.group(2)
        if name == b"transfer-encoding":
            raise ValueError("a chunked error file is not supported: give the body with Content-Length or none")
        if name == b"content-length":
            if not value.isdigit() or (content_length is not None and int(value) != content_length):
                raise ValueError(f"invalid Content-Length {value[:20]!r}")
            if content_length is not None:
                continue
            content_length = int(value)
        if name in (b"connection", b"keep-alive", b"proxy-connection"):
            continue  # the connection's fate is lbcore's, as HAProxy's
        head += name + b": " + value + b"\r\n"
    if content_length is not None and content_length != len(body):
        raise ValueError(f"Content-Length {content_length} does not match the body's {len(body)} bytes")
    return ErrorFile(status, head, body, content_length is None, version == b"HTTP/1.0")
