"""A frontend's rules as the proxy calls them (proxy/stream.py's `Rules`).

Built once per (re)load for each frontend that has rules, or whose
requests may reach a backend that has some; frontends without any get
None and the proxy's request path does not change for them. The proxy
calls, per connection: `connection()` then `tcp_request()` (and in tcp
mode `tcp_backend()`); per request:
`request()` to make the view rules read and edit, `http_request()` (the
frontend's rules, use_backend, then the chosen backend's rules),
`use_backend()` for the backend it chose; per server response:
`http_response()` (the backend's rules, then the frontend's, as HAProxy).
"""

from __future__ import annotations

from typing import Mapping, Optional, Union

from .engine import REJECT, choose_backend, run
from .answers import Answer
from .message import Connection, Request, Response, new_request


def _plain(rules) -> tuple:
    return tuple(tuple(rule) for rule in rules)


_NONE = ((), ())


def _tracking():
    # lbcore.tracking registers track_sc*/sc_* into the rules; imported
    # where it is used, as it imports the rules package itself.
    from .. import tracking
    return tracking


def request_done(request: Request, status: int, bytes_in: int = 0, bytes_out: int = 0) -> None:
    """The request ended (its answer written): its stick counters count it,
    an error for a 4xx (lbcore's denials included). A function: the proxy
    calls it for a request whose frontend's rules a reload replaced."""
    if request.stick is not None or request.conn.stick is not None:
        _tracking().request_done(request, status, False, bytes_in, bytes_out)


def connection_done(facts: Connection, bytes_in: int = 0, bytes_out: int = 0) -> None:
    """The connection closed: the counters its tcp_request rules tracked end."""
    if facts.stick is not None:
        _tracking().connection_done(facts, bytes_in, bytes_out)


class FrontendRules:
    __slots__ = ("frontend", "backends", "tcp_rules", "request_rules", "response_rules", "switching",
                 "backend_rules")

    def __init__(self, frontend, backends: Mapping[str, object]) -> None:
        spec = frontend.spec
        self.frontend = frontend  # its `backend` is read per request: a reload swaps it
        self.backends = backends  # name -> model Backend, for use_backend
        # Plain tuples: the compiled rule loop reads them without lookups.
        self.tcp_rules = _plain(spec.tcp_request)
        self.request_rules = _plain(spec.http_request)
        self.response_rules = _plain(spec.http_response)
        self.switching = _plain(spec.use_backend)
        # Each backend's own rules ((request, response) by backend object),
        # taken once per load: a reload builds a new FrontendRules. Only
        # backends that have some are listed (none: no lookup per request).
        self.backend_rules = {id(b): (_plain(b.spec.http_request), _plain(b.spec.http_response))
                              for b in backends.values() if b.spec.http_request or b.spec.http_response}

    @classmethod
    def build(cls, frontend, backends: Mapping[str, object]) -> Optional["FrontendRules"]:
        """The frontend's rules, or None when no rule can touch its traffic."""
        spec = frontend.spec
        if spec.tcp_request or spec.http_request or spec.http_response or spec.use_backend:
            return cls(frontend, backends)
        # No rule of its own and no switching: only its default backend's
        # rules can apply to its requests.
        backend = frontend.backend
        if spec.mode == "http" and (backend.spec.http_request or backend.spec.http_response):
            return cls(frontend, backends)
        return None

    # -- per connection ------------------------------------------------------

    @staticmethod
    def connection(peer, sockname, ssl_object) -> Connection:
        src, src_port = (peer[0], peer[1]) if peer else ("", 0)
        dst, dst_port = (sockname[0], sockname[1]) if isinstance(sockname, tuple) else ("", 0)
        sni = getattr(ssl_object, "lbcore_sni", None) if ssl_object is not None else None
        return Connection(src, src_port, dst, dst_port, ssl_object is not None, sni)

    def tcp_request(self, facts: Connection) -> bool:
        """False: reject the connection."""
        rules = self.tcp_rules
        return not rules or run(rules, facts) != REJECT

    def tcp_backend(self, facts: Connection):
        """tcp mode's use_backend, once per connection (None: the default)."""
        if not self.switching:
            return None
        name = choose_backend(self.switching, facts)
        backend = self.backends.get(name) if name is not None else None
        return backend if backend is not None and backend.mode == "tcp" else None

    # -- per request -----------------------------------------------------------

    def request(self, facts: Connection, method: bytes, target: bytes, version: bytes, block: bytes) -> Request:
        if facts.stick is not None:
            _tracking().request_started(facts)  # counted by the connection's track_sc
        return new_request(facts, method, target, version, block)

    def request_done(self, request: Request, status: int, bytes_in: int = 0, bytes_out: int = 0) -> None:
        request_done(request, status, bytes_in, bytes_out)

    def connection_done(self, facts: Connection, bytes_in: int = 0, bytes_out: int = 0) -> None:
        connection_done(facts, bytes_in, bytes_out)

    def http_request(self, request: Request) -> Optional[Answer]:
        """None to go on (the request may have been edited; its backend
        chosen), or the answer the client gets."""
        result = run(self.request_rules, request)
        if result is not None and type(result) is Answer:
            return result
        backend = None
        if self.switching:
            name = choose_backend(self.switching, request)
            if name is not None:
                backend = self.backends.get(name)
                if backend is not None and backend.mode != "http":
                    backend = None  # a dynamic name that names a tcp backend: the default
            request.backend = backend
        if not self.backend_rules:
            return None
        target = backend if backend is not None else self.frontend.backend
        backend_rules = self.backend_rules.get(id(target), _NONE)[0]
        if backend_rules:
            result = run(backend_rules, request)
            if result is not None and type(result) is Answer:
                return result
        return None

    def use_backend(self, request: Request):
        """The backend http_request chose for `request` (None: the default)."""
        return request.backend

    def http_response(self, request: Request, head: bytes) -> Union[bytes, Answer]:
        """The response head (status line and headers) after the backend's
        and the frontend's http_response rules; an Answer when one denied
        the response (the client gets that instead)."""
        backend_rules = ()
        if self.backend_rules:
            backend = request.backend if request.backend is not None else self.frontend.backend
            backend_rules = self.backend_rules.get(id(backend), _NONE)[1]
        frontend_rules = self.response_rules
        if not backend_rules and not frontend_rules:
            return head
        line_end = head.find(b"\r\n") + 2
        status = int(head[9:12]) if head[9:12].isdigit() else 0
        response = Response(request, request.conn, status, head[line_end:])
        if backend_rules:
            result = run(backend_rules, response)
            if result is not None and type(result) is Answer:
                return result
        if frontend_rules:
            result = run(frontend_rules, response)
            if result is not None and type(result) is Answer:
                return result
        if response.changed:
            return head[:line_end] + response.headers.block
        return head
