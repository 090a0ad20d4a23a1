"""What rules look at: the connection, the request head, the response head.

The proxy builds these only for frontends that have rules, from the bytes
it already holds: the header block is kept as the raw lines
(`Name: value\\r\\n` each) and searched in place, so a rule that reads one
header does not cost a parse of all of them. Edits (set/add/del/replace)
rewrite the block; the proxy forwards `Request.head_lines()` afterwards.
"""

from __future__ import annotations

from typing import Optional

from . import bytesearch
from .matching import parse_ip

OWS = b" \t"


class Connection:
    """Layer-4 facts of one client connection (tcp_request and every later
    rule may read them). `sni` is the TLS server name the client sent."""

    __slots__ = ("src", "src_port", "dst", "dst_port", "ssl", "sni", "_src_text", "_dst_text",
                 "_src_ip", "_dst_ip", "_dst_port_text", "stick")

    def __init__(self, src: str = "", src_port: int = 0, dst: str = "", dst_port: int = 0,
                 ssl: bool = False, sni: Optional[str] = None) -> None:
        self.src = src
        self.src_port = src_port
        self.dst = dst
        self.dst_port = dst_port
        self.ssl = ssl
        self.sni = sni.encode() if isinstance(sni, str) else sni
        self._src_text = None
        self._dst_text = None
        self._src_ip = None  # (version, int), parsed on first use for the connection's life
        self._dst_ip = None
        self._dst_port_text = None
        self.stick = None  # stick counters tracked by tcp_request rules (lbcore/tracking.py)

    @property
    def conn(self) -> "Connection":
        """tcp_request rules read the facts through `msg.conn`, as later
        rules do through the request's."""
        return self

    def src_bytes(self) -> bytes:
        if self._src_text is None:
            self._src_text = self.src.encode()
        return self._src_text

    def dst_bytes(self) -> bytes:
        if self._dst_text is None:
            self._dst_text = self.dst.encode()
        return self._dst_text

    def dst_port_bytes(self) -> bytes:
        if self._dst_port_text is None:
            self._dst_port_text = str(self.dst_port).encode()
        return self._dst_port_text

    def src_ip(self):
        if self._src_ip is None:
            self._src_ip = parse_ip(self.src) or (0, 0)
        return self._src_ip

    def dst_ip(self):
        if self._dst_ip is None:
            self._dst_ip = parse_ip(self.dst) or (0, 0)
        return self._dst_ip


class Headers:
    """A header block as raw lines, searched case-insensitively in place."""

    __slots__ = ("block", "_lower", "edited")

    def __init__(self, block: bytes = b"") -> None:
        self._start(block)

    def _start(self, block: bytes) -> None:
        """The fields, set by __init__ and by new_headers."""
        self.block = block
        self._lower = None  # bytesearch.lowered(block), made on the first lookup
        self.edited = False  # the block changed (the proxy re-renders the head)

    def _index(self) -> bytes:
        lower = self._lower
        if lower is None:
            lower = self._lower = bytesearch.lowered(self.block)
        return lower

    def _spans(self, lname: bytes):
        """(line start, value start, line end) of each `lname` line, in order."""
        lower = self._index()
        key = b"\n" + lname + b":"
        block = self.block
        spans = []
        pos = bytesearch.find(lower, key, 0)
        while pos >= 0:
            start = pos  # lower has one extra leading byte: pos is the line start in block
            value = start + len(key) - 1
            end = bytesearch.find(block, b"\n", value)
            end = len(block) if end < 0 else end + 1
            spans.append((start, value, end))
            pos = bytesearch.find(lower, key, end)
        return spans

    def full_values(self, lname: bytes) -> list:
        """Every `lname` line's whole value (HAProxy's fhdr), in order."""
        block = self.block
        return [block[v:e].strip(b" \t\r\n") for _, v, e in self._spans(lname)]

    def last_full(self, lname: bytes) -> Optional[bytes]:
        lower = self._index()
        pos = lower.rfind(b"\n" + lname + b":")
        if pos < 0:
            return None
        block = self.block
        value = pos + len(lname) + 1
        end = bytesearch.find(block, b"\n", value)
        return block[value:end if end >= 0 else len(block)].strip(b" \t\r\n")

    def values_at(self, key: bytes) -> list:
        """values() for key = b"\\n" + lname + b":" (fetches precompute it):
        one plain line, the usual case, costs one search."""
        lower = self._lower
        if lower is None:
            lower = self._lower = bytesearch.lowered(self.block)
        pos = bytesearch.find(lower, key, 0)
        if pos < 0:
            return []
        if bytesearch.find(lower, key, pos + 1) < 0:
            block = self.block
            start = pos + len(key) - 1
            end = bytesearch.find(block, b"\n", start)
            value = block[start:end if end >= 0 else len(block)].strip(b" \t\r\n")
            if bytesearch.find(value, b",", 0) < 0:
                return [value]
        return self.values(key[1:-1])

    def lower_values_at(self, key: bytes) -> list:
        """values_at(), lower-cased: read from the lower-cased index (for
        -i matching), so no value is lower-cased again."""
        lower = self._lower
        if lower is None:
            lower = self._lower = bytesearch.lowered(self.block)
        pos = bytesearch.find(lower, key, 0)
        if pos < 0:
            return []
        if bytesearch.find(lower, key, pos + 1) < 0:
            start = pos + len(key)
            end = bytesearch.find(lower, b"\n", start)
            value = lower[start:end if end >= 0 else len(lower)].strip(b" \t\r\n")
            if bytesearch.find(value, b",", 0) < 0:
                return [value]
        return [value.lower() for value in self.values(key[1:-1])]

    def last_at(self, key: bytes) -> Optional[bytes]:
        """last() for key = b"\\n" + lname + b":"."""
        lower = self._lower
        if lower is None:
            lower = self._lower = bytesearch.lowered(self.block)
        pos = lower.rfind(key)
        if pos < 0:
            return None
        block = self.block
        start = pos + len(key) - 1
        end = bytesearch.find(block, b"\n", start)
        value = block[start:end if end >= 0 else len(block)].strip(b" \t\r\n")
        if bytesearch.find(value, b",", 0) >= 0:
            return value.rpartition(b",")[2].strip(OWS)
        return value

    def values(self, lname: bytes) -> list:
        """Comma-separated values of every `lname` line (HAProxy's hdr)."""
        out = []
        for full in self.full_values(lname):
            if b"," in full:
                out.extend(part.strip(OWS) for part in full.split(b","))
            else:
                out.append(full)
        return out

    def last(self, lname: bytes) -> Optional[bytes]:
        full = self.last_full(lname)
        if full is not None and b"," in full:
            return full.rpartition(b",")[2].strip(OWS)
        return full

    def has(self, lname: bytes) -> bool:
        return bytesearch.find(self._index(), b"\n" + lname + b":", 0) >= 0

    # -- edits ---------------------------------------------------------------

    def _set_block(self, block: bytes) -> None:
        self.block = block
        self._lower = None
        self.edited = True

    def delete(self, lname: bytes) -> None:
        spans = self._spans(lname)
        if not spans:
            return
        block = self.block
        kept = []
        last = 0
        for start, _, end in spans:
            kept.append(block[last:start])
            last = end
        kept.append(block[last:])
        self._set_block(b"".join(kept))

    def add(self, name: bytes, value: bytes) -> None:
        self.block = b"".join((self.block, name, b": ", value, b"\r\n"))
        self.edited = True
        self._lower = None  # the next lookup lowers the block again (in C when compiled)

    def has_at(self, key: bytes) -> bool:
        """has() for key = b"\\n" + lname + b":"."""
        lower = self._lower
        if lower is None:
            lower = self._lower = bytesearch.lowered(self.block)
        return bytesearch.find(lower, key, 0) >= 0

    def set(self, name: bytes, value: bytes) -> None:
        self.delete(name.lower())
        self.add(name, value)

    def rewrite(self, lname: bytes, rewrite_value) -> None:
        """Each `lname` line's value becomes rewrite_value(value) (None keeps it)."""
        spans = self._spans(lname)
        if not spans:
            return
        block = self.block
        out = []
        last = 0
        changed = False
        for _, value_at, end in spans:
            value = block[value_at:end].strip(b" \t\r\n")
            new = rewrite_value(value)
            if new is None or new == value:
                continue
            changed = True
            out.append(block[last:value_at])
            out.append(b" " + new + b"\r\n")
            last = end
        if changed:
            out.append(block[last:])
            self._set_block(b"".join(out))


# The proxy makes a request view per request: these make one without a
# Python-level constructor call (compiled: an allocation and C stores).
def new_headers(block: bytes) -> Headers:
    headers = Headers.__new__(Headers)
    headers._start(block)
    return headers


def new_request(conn: Connection, method: bytes, target: bytes, version: bytes,
                header_block: bytes) -> "Request":
    request = Request.__new__(Request)
    request._start(conn, method, target, version, header_block)
    return request


class Message:
    """What a request and a response share: the connection's facts and the
    header block (one type, so compiled checks read both as C fields)."""

    __slots__ = ("conn", "headers")


def conn_of(msg) -> Connection:
    """The connection facts a rule reads: the message's, or the connection
    itself for tcp_request rules."""
    if type(msg) is Connection:
        return msg
    message = msg
    return message.conn


class Request(Message):
    """One request head as rules see and change it.

    `target` is the request-target as received (origin form `/p?q`, or
    absolute form `http://host/p?q`); `path` and `query` are read from it.
    `stick` is free for per-request state of stick-table tracking."""

    __slots__ = ("method", "target", "version", "_path", "_query", "_edited", "stick", "backend")

    def __init__(self, conn: Connection, method: bytes, target: bytes, version: bytes,
                 header_block: bytes) -> None:
        self._start(conn, method, target, version, header_block)

    def _start(self, conn: Connection, method: bytes, target: bytes, version: bytes,
               header_block: bytes) -> None:
        """The fields, set by __init__ and by new_request."""
        self.conn = conn
        self.method = method
        self.target = target
        self.version = version  # b"1.1" or b"1.0"
        self.headers = new_headers(header_block)
        self._path = None
        self._query = None
        self._edited = False  # the target changed
        self.stick = None
        self.backend = None  # the backend use_backend chose (None: the default)

    def _split(self) -> None:
        target = self.target
        if not target.startswith(b"/"):
            scheme = bytesearch.find(target, b"://", 0)
            if scheme >= 0:
                # absolute form: the path starts after the authority
                slash = bytesearch.find(target, b"/", scheme + 3)
                target = target[slash:] if slash >= 0 else b""
        mark = bytesearch.find(target, b"?", 0)
        if mark < 0:
            self._path = target
            self._query = None
        else:
            self._path = target[:mark]
            self._query = target[mark + 1:]

    def path(self) -> bytes:
        if self._path is None:
            self._split()
        return self._path

    def query(self) -> Optional[bytes]:
        if self._path is None:
            self._split()
        return self._query

    def uri(self) -> bytes:
        """Path and query, as a redirect prefix or scheme keeps them."""
        query = self.query()
        return self.path() + b"?" + query if query is not None else self.path()

    def set_path(self, path: bytes) -> None:
        query = self.query()
        self.target = path + b"?" + query if query is not None else path
        self._path = path
        self._edited = True

    def set_query(self, query: Optional[bytes]) -> None:
        path = self.path()
        self.target = path + b"?" + query if query else path
        self._query = query if query else None
        self._edited = True

    def set_target(self, target: bytes) -> None:
        self.target = target
        self._path = None
        self._edited = True

    def is_changed(self) -> bool:
        """Any edit (target or headers): the proxy re-renders the head."""
        return self._edited or self.headers.edited

    @property
    def changed(self) -> bool:
        return self.is_changed()

    @changed.setter
    def changed(self, value: bool) -> None:
        self._edited = value

    def head_lines(self) -> bytes:
        return self.headers.block


class Response(Message):
    """A server's response head as http_response rules see and change it;
    `request` is the request it answers (its connection facts stay readable)."""

    __slots__ = ("request", "status", "_edited")

    def __init__(self, request: Optional[Request], conn: Connection, status: int,
                 header_block: bytes) -> None:
        self.request = request
        self.conn = conn
        self.status = status
        self.headers = Headers(header_block)
        self._edited = False

    @property
    def changed(self) -> bool:
        return self._edited or self.headers.edited

    @changed.setter
    def changed(self, value: bool) -> None:
        self._edited = value
