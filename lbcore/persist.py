"""Persistence: which server a client goes back to.

Two mechanisms, as HAProxy, consulted in HAProxy's order before the
balancer: a persistence cookie (`cookie`, http only), then the stick rules
(`stick_on`). A server named by either is used while it is not DOWN or in
maintenance (a draining or weight-0 server keeps its persistent clients,
as HAProxy's); otherwise the request is balanced as usual, and the server
it gets is stuck (stick rules store it, insert mode sets a new cookie).

No I/O: the proxies pass the samples (client and local addresses, the
request head) and the head of the response to rewrite.
"""

from __future__ import annotations

import re
from typing import Callable, Optional

from . import rules as rules_engine
from .config import CookieSpec, StickOnSpec
from .stick import StickTable

L4_SAMPLES = ("src", "dst")
COOKIE_DELIM = b"~"
KEY_CACHE_SIZE = 4096  # client addresses whose stick keys are kept  # prefix mode: "SERVER~application value"
# A cookie naming no server in insert mode: the client's copy is removed.
_EXPIRED = b"=; Expires=Thu, 01-Jan-1970 00:00:01 GMT; path=/"
_COOKIE_HEADER = re.compile(rb"\r\ncookie:[ \t]*([^\r\n]*)", re.I)
_SET_COOKIE_HEADER = re.compile(rb"\r\nset-cookie:[ \t]*([^\r\n]*)", re.I)
_AUTHORIZATION = re.compile(rb"\r\nauthorization:", re.I)
_CACHE_CONTROL = re.compile(rb"\r\ncache-control:[ \t]*([^\r\n]*)", re.I)
_PRAGMA_NO_CACHE = re.compile(rb"\r\npragma:[ \t]*no-cache[ \t]*(?=\r\n|$)", re.I)
# Freshness or a validator: without either HAProxy deems a response uncacheable.
_FRESHNESS = re.compile(rb"\r\n(expires|etag|last-modified):", re.I)
# RFC 7231's cacheable-by-default statuses and safe methods (HAProxy's TX_CACHEABLE).
_CACHEABLE_STATUS = frozenset((200, 203, 204, 206, 300, 301, 404, 405, 410, 414, 501))
_SAFE_METHODS = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE"))


def serves_persistent(server) -> bool:
    """HAProxy's `srv->cur_state != SRV_ST_STOPPED`: not DOWN, not in
    maintenance. Draining and weight-0 servers keep their clients."""
    return server.health == "UP" and server.admin != "MAINT" and server.has_room()


def l4_key(table: StickTable, address: str):
    """A table key for a client or local address from the kernel. Dotted
    IPv4 from a socket is already canonical: no parsing on the hot path."""
    if table.type == "ip" and ":" not in address:
        return address
    return table.key(address)


class Persistence:
    """A backend's cookie and stick rules, with the tables they use."""

    __slots__ = ("backend", "cookie", "rules", "by_cookie", "cookie_name", "src_only", "fast",
                 "key_cache", "clock", "samples")

    def __init__(self, backend, cookie: Optional[CookieSpec],
                 rules: list[tuple[StickOnSpec, StickTable]]) -> None:
        self.backend = backend
        self.cookie = cookie
        self.cookie_name = cookie.name.encode() if cookie else b""
        self.rules = tuple(rules)
        # What each request reads, flattened: (match, store, table, its entries).
        self.fast = tuple((rule.match, rule.store, table, table.entries) for rule, table in rules)
        # Keys that depend on the client address alone are computed once per
        # address (a keep-alive client sends many requests).
        self.src_only = bool(rules) and all(rule.sample == "src" for rule, _ in rules)
        self.key_cache: dict = {}
        self.clock = rules[0][1].clock if rules else None
        # Samples other than src/dst (http: req.hdr(x), req.cook(x), ...),
        # compiled once with the rules engine, read on the request's view.
        ctx = rules_engine.context("http_request", ".", {}, {}, backend.name)
        self.samples = {rule.sample: rules_engine.compile_sample(rule.sample, ctx).one
                        for rule, _ in rules if rule.sample not in L4_SAMPLES}
        self.refresh()

    def refresh(self) -> None:
        """The servers changed (a reload): cookie values to servers."""
        self.by_cookie = {s.spec.cookie.encode(): s for s in self.backend.servers if s.spec.cookie}

    # -- stick rules -----------------------------------------------------------

    def keys(self, src: str, dst: Callable[[], str], view=None) -> list:
        """Each rule's key for this client, None where the sample is absent.
        `view`: the request as rules read it (lbcore.rules.Request), for
        samples other than src and dst."""
        if self.src_only:
            keys = self.key_cache.get(src)
            if keys is None:
                if len(self.key_cache) >= KEY_CACHE_SIZE:
                    self.key_cache.clear()
                keys = self.key_cache[src] = self._keys(src, dst, view)
            return keys
        return self._keys(src, dst, view)

    def _keys(self, src: str, dst: Callable[[], str], view) -> list:
        keys = []
        for rule, table in self.rules:
            sample = rule.sample
            if sample == "src":
                keys.append(l4_key(table, src))
            elif sample == "dst":
                keys.append(l4_key(table, dst()))
            else:
                value = self.samples[sample](view) if view is not None else None
                keys.append(table.key(value) if value is not None else None)
        return keys

    def matched(self, keys: list, exclude=None):
        """The server a stick rule names for these keys, if it may serve.
        (StickTable.lookup and serves_persistent, inlined: once per request.)"""
        by_id = self.backend.by_id
        now = self.clock()
        i = 0
        for match, _, table, entries in self.fast:
            key = keys[i]
            i += 1
            if key is None or not match:
                continue
            entry = entries.get(key)
            if entry is None:
                continue
            if table.expire_ms and entry.exp <= now and entry.refs == 0:
                del entries[key]
                continue
            server = by_id.get(entry.server_id)
            if (server is not None and server.health == "UP" and server.admin != "MAINT"
                    and (not server.maxconn or server.cur_sessions < server.maxconn)
                    and not (exclude and server in exclude)):
                entry.exp = now + table.expire_ms
                return server
        return None

    def store(self, keys: list, server) -> None:
        """Stick these keys to `server` (HAProxy stores the server a stream
        was given, overwriting what the entry said). An entry that already
        names it was touched by `matched`: nothing to do."""
        puid = server.puid
        i = 0
        for _, store, table, entries in self.fast:
            key = keys[i]
            i += 1
            if key is None or not store:
                continue
            entry = entries.get(key)
            if entry is None or entry.server_id != puid:
                table.stick(key, puid)

    # -- cookies ---------------------------------------------------------------

    def request_cookie(self, head: bytes):
        """(server, head): the usable server the request's cookie names
        (or None), and the head to forward (insert+indirect removes
        our cookie, prefix mode strips the server part)."""
        name = self.cookie_name
        if name not in head:
            return None, head
        spec = self.cookie
        server = None
        new_head = head
        for match in _COOKIE_HEADER.finditer(head):
            value = match.group(1)
            pairs = value.split(b";")
            kept = []
            changed = False
            for pair in pairs:
                attr, eq, val = pair.strip().partition(b"=")
                if attr != name or not eq:
                    kept.append(pair.strip())
                    continue
                if spec.mode == "prefix":
                    sid, delim, rest = val.partition(COOKIE_DELIM)
                    if delim:
                        kept.append(attr + b"=" + rest)
                        changed = True
                    else:
                        kept.append(pair.strip())
                        sid = b""
                else:
                    sid = val.split(b"|", 1)[0]
                    if spec.mode == "insert" and spec.indirect:
                        changed = True  # the server never sees it
                    else:
                        kept.append(pair.strip())
                if server is None and sid:
                    candidate = self.by_cookie.get(sid)
                    if candidate is not None and serves_persistent(candidate):
                        server = candidate
            if changed:
                old = match.group(0)
                if kept:
                    new = old[:match.start(1) - match.start(0)] + b"; ".join(kept)
                else:
                    new = b""  # our cookie was the only one: the header goes
                new_head = new_head.replace(old, new, 1)
        return server, new_head

    def response_cookie(self, head: bytes, server, direct: bool, method: bytes,
                        request_auth: bool, status: int) -> bytes:
        """The response head with the persistence cookie handled: the
        server's own Set-Cookie of our name rewritten (rewrite, prefix) or
        dropped (insert), ours inserted when the client did not come with a
        valid one, and `Cache-control: private` with nocache."""
        spec = self.cookie
        name = self.cookie_name
        found = False
        if name in head:
            value = server.spec.cookie.encode() if server is not None and server.spec.cookie else None
            for match in list(_SET_COOKIE_HEADER.finditer(head)):
                cookie = match.group(1)
                attr, eq, rest = cookie.partition(b"=")
                if attr.strip() != name or not eq:
                    continue
                found = True
                if spec.preserve:
                    continue
                old = match.group(0)
                prefix = old[:match.start(1) - match.start(0)]
                val, semi, attrs = rest.partition(b";")
                if (server is not None and spec.mode == "insert") or (direct and spec.indirect):
                    head = head.replace(old, b"", 1)
                elif value is not None and spec.mode == "rewrite":
                    head = head.replace(old, prefix + attr + b"=" + value + semi + attrs, 1)
                elif value is not None and spec.mode == "prefix":
                    head = head.replace(old, prefix + attr + b"=" + value + COOKIE_DELIM + val + semi + attrs, 1)
        if spec.mode != "insert" or (found and spec.preserve) or direct or server is None:
            return head
        if server.spec.cookie:
            cookie = name + b"=" + server.spec.cookie.encode() + b"; path=/"
        else:
            cookie = name + _EXPIRED
        for domain in spec.domain:
            cookie += b"; domain=" + domain.encode()
        if spec.httponly:
            cookie += b"; HttpOnly"
        if spec.secure:
            cookie += b"; Secure"
        # `head` is the status line and header lines, each ending in CRLF.
        head += b"Set-Cookie: " + cookie + b"\r\n"
        if spec.nocache and _cacheable(head, method, request_auth, status):
            head += b"Cache-control: private\r\n"
        return head

    @staticmethod
    def has_authorization(head: bytes) -> bool:
        return _AUTHORIZATION.search(head) is not None


def _cacheable(head: bytes, method: bytes, request_auth: bool, status: int) -> bool:
    """HAProxy's TX_CACHEABLE for a response: a safe request without
    Authorization, a status cacheable by default, no Cache-Control or Pragma
    saying no, and freshness (max-age, Expires) or a validator (ETag,
    Last-Modified); `public` makes any response cacheable."""
    if status < 200 or _PRAGMA_NO_CACHE.search(head):
        return False
    cacheable = method in _SAFE_METHODS and not request_auth and status in _CACHEABLE_STATUS
    null_max_age = fresh = False
    for match in _CACHE_CONTROL.finditer(head):
        for value in match.group(1).split(b","):
            value = value.strip().lower()
            if value == b"public":
                cacheable = True
            elif value == b"max-age=0":
                null_max_age = True
            elif value == b'no-cache="set-cookie"':
                pass
            elif value in (b"private", b"no-cache", b"no-store", b"s-maxage=0") or \
                    value.startswith((b"private=", b"no-cache=", b"no-store=")):
                cacheable = False
            elif value.startswith(b"s-maxage"):
                fresh, null_max_age = True, False
            elif value.startswith(b"max-age"):
                fresh = True
    if null_max_age:
        return False
    return cacheable and (fresh or _FRESHNESS.search(head) is not None)
