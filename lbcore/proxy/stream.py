"""The stream: one request's life in http mode, one connection's in tcp
mode, from "the client asked" to "the log line is written".

This is the one place that decides, for both modes:

- which backend serves the stream: `choose_backend()` (the frontend's
  `backend` today; `use_backend` rules plug in there),
- which server: `dispatch()`: the one persistence names (a cookie, a
  stick table: lbcore/persist.py, read by the owner), else `pick()` (the
  backend's balancer, with the client's key for hash-based balancing),
  taking a server slot (`assign`), or waiting
  in the backend's queue when every server is at its `maxconn`
  (`enqueue`, and `wake_waiters` when a slot opens or a server returns),
- what happens when the server fails before answering: `retry()` (the
  `retries` cap, `redispatch`, the turn-around before reconnecting to a
  server that just refused),
- the counters, the timers (queue, connect, response, total) and the
  access line: `finish()`.

The connection that owns a stream does the I/O and speaks to it through
`StreamOwner` below: the stream asks it to connect a server, to arm the
queue timeout, or to answer an error; the owner tells the stream what
happened (`connected`, `connect_failed`, `retry`, `finish`). The http
client connection (proxy/http.py) owns one stream per request (its
`Exchange` is a Stream with the HTTP message state added), a tcp session
(proxy/tcp.py) is itself the stream of its connection.

Hook points for rules: `choose_backend()` per stream; the http client
connection runs the http_request rules right before it (`Rules` below),
the http_response rules on the response head, and tcp sessions and http
connections run tcp_request rules once per connection.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Optional, Protocol

from ..model import Backend, Frontend, Server

# HAProxy's turn-around before retrying the same server after a fast
# failure: reconnecting at once to a port that just refused would fail the
# same way.
MAX_TURNAROUND = 1.0

# Balancing without a hash: any server with room is as good as another, so
# a full server is skipped. With a hash (source, uri, hdr...) the key's
# server is the answer, and a request waits for it when it is full, as in
# HAProxy (it queues on that server).
UNHASHED = ("roundrobin", "leastconn", "first")

NOSRV = "<NOSRV>"

monotonic = time.monotonic


class StreamOwner(Protocol):
    """What a stream asks of the connection that owns it."""

    def persistent_server(self, stream: "Stream", persistence) -> Optional[Server]:
        """The server the backend's persistence (cookie, stick rules) names
        for this stream, if it may serve; None lets the balancer choose.
        Setting `stream.stick_keys` has the owner store the server given."""

    def request_hash_key(self, stream: "Stream", hashed: tuple):
        """Under `balance uri|hdr(NAME)|url_param(NAME)` (http mode only):
        the part of the request `hashed` (algorithm, argument) names."""

    def connect_server(self, stream: "Stream", server: Server) -> None:
        """Open (or take from the pool) a connection to `server` and send
        the stream's request; report `stream.connected()` once connected,
        `stream.connect_failed(reason)` if that fails."""

    def stream_queued(self, stream: "Stream", timeout: float) -> None:
        """The stream waits for a server slot: call `stream.queue_expired()`
        after `timeout` unless it was assigned a server by then."""

    def stream_failed(self, stream: "Stream", status: int) -> None:
        """No server will serve the stream (`stream.terminated` says why):
        answer `status` (http) or close (tcp), then `stream.finish()`."""

    def write_log(self, stream: "Stream") -> None:
        """Write the stream's access line (its format is the mode's)."""


class Rules(Protocol):
    """What the rules engine (lbcore/rules) offers a frontend, as
    `Frontend.rules` (None without rules: then the proxies build no views
    and their fast paths stay as they are)."""

    def connection(self, peer, sockname, ssl_object) -> object:
        """The facts of one client connection that rules read (src, dst,
        ssl_fc, ssl_fc_sni), made once per connection."""

    def tcp_request(self, connection) -> bool:
        """The tcp_request rules, once per connection: False rejects it."""

    def request(self, connection, method: bytes, target: bytes, version: bytes,
                header_block: bytes) -> object:
        """The view of a parsed request head that the http rules read and
        edit: `method`, `target`, `version` (b"1.1"), `headers.block` (the
        header lines, each ending in CRLF) and `changed` (set by an edit:
        the proxy then forwards the edited head)."""

    def tcp_backend(self, connection) -> Optional[Backend]:
        """tcp mode's use_backend, once per connection (None: the default)."""

    def http_request(self, request):
        """The http_request rules (the frontend's, use_backend, the chosen
        backend's): None to go on, or the answer of a deny, return or
        redirect: an object with `status`, `head` (status line to the
        empty line), `closing_head` (the same saying `connection: close`),
        `body` and `close` (close the connection after it)."""

    def use_backend(self, request) -> Optional[Backend]:
        """The backend http_request chose for the request, None for the default."""

    def http_response(self, request, head: bytes):
        """The http_response rules on a server's response head (status line
        and header lines, without the framing headers and the final CRLF):
        the head to send on, or an answer (as http_request's) to send
        instead of the server's response (deny)."""


class Stream:
    """One request (http) or connection (tcp) on its way to a server."""

    __slots__ = (
        "owner", "frontend", "backend", "server", "last_server", "key",
        "attempts", "retries", "tried", "queued_at",
        "t_begin", "t_head", "t_queue", "t_assigned", "t_connect", "t_response",
        "status", "bytes_in", "bytes_out", "terminated", "ended", "http", "stick_keys",
    )

    def __init__(self, owner, frontend: Frontend, key: bytes, now: float, http: bool) -> None:
        self.begin(owner, frontend, key, now, http)

    def begin(self, owner, frontend: Frontend, key: bytes, now: float, http: bool) -> None:
        """__init__'s work, callable from a subclass's __init__ as a C call."""
        self.owner = owner
        self.http = http  # a request (counted as one, with its status) or a tcp connection
        self.frontend = frontend
        self.backend: Optional[Backend] = None
        self.server: Optional[Server] = None  # while it holds a slot there
        self.last_server: Optional[Server] = None  # the last one tried, for the log
        self.key = key  # the balancing key (the client address, packed)
        self.attempts = 0  # connections tried after the first
        self.retries = 0  # of which counted against `retries`
        self.tried = None  # servers that failed this stream
        self.queued_at = 0.0
        self.t_begin = now  # the first byte of the request (tcp: the accept)
        self.t_head = now  # the request head complete (tcp: the accept)
        self.t_queue = 0.0  # seconds waited in the queue
        self.t_assigned = 0.0
        self.t_connect = 0.0  # seconds to connect; 1e-6 for a pooled connection
        self.t_response = 0.0  # when the response head came
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.terminated = "--"
        self.ended = False
        self.stick_keys = None  # the backend's stick rules' keys, stored once a server is given

    # -- which backend, which server -------------------------------------------

    def choose_backend(self, backend: Optional[Backend] = None) -> None:
        """The backend this stream goes to: `backend` when rules chose one
        (use_backend), else the frontend's. Counted as a backend session
        until finish()."""
        if backend is None:
            backend = self.frontend.backend  # read per stream: a reload swaps it
        self.backend = backend
        backend.session_start()

    def balance_key(self, backend: Backend):
        """What a hash balancer hashes: the client address, or under
        `balance uri|hdr(NAME)|url_param(NAME)` (http only) the part of the
        request it names, which the owner reads."""
        hashed = backend.request_hash
        if hashed is None:
            return self.key
        return self.owner.request_hash_key(self, hashed)

    def pick(self, exclude=None) -> Optional[Server]:
        """The one place a server is chosen. Under hash balancing the key's
        server even when it is full (dispatch() then waits for it)."""
        backend = self.backend
        key = self.balance_key(backend)
        if backend.limited and backend.spec.balance not in UNHASHED:
            return backend.pick(key, exclude, True)
        return backend.pick(key, exclude)

    def dispatch(self) -> None:
        """Give the stream a server: assign one, queue for one, or fail."""
        backend = self.backend
        if backend.persist is not None:
            server = self.owner.persistent_server(self, backend.persist)
            if server is not None:
                self.assign(server)
                return
        server = self.pick()
        if server is not None and (not backend.limited or server.has_room()):
            self.assign(server)
            return
        if backend.candidates and backend.spec.timeouts.queue > 0:
            self.enqueue()  # every usable server (or the key's) is at its maxconn
            return
        # HAProxy counts a stream that found no server as a connection error.
        backend.connection_errors += 1
        self.terminated = "SC"
        self.owner.stream_failed(self, 503)

    def assign(self, server: Server) -> None:
        """Take a slot on `server` and connect to it."""
        self.server = self.last_server = server
        self.t_assigned = monotonic()
        self.t_connect = 0.0
        server.session_start()
        self.owner.connect_server(self, server)

    def release_server(self) -> None:
        """Give the server slot back (once), and it to a waiting stream."""
        server = self.server
        if server is not None:
            self.server = None
            release_slot(server)

    # -- the queue ---------------------------------------------------------------

    def enqueue(self) -> None:
        backend = self.backend
        self.queued_at = monotonic()
        backend.waiters.append(self)
        backend.queue_cur += 1
        if backend.queue_cur > backend.queue_max:
            backend.queue_max = backend.queue_cur
        self.owner.stream_queued(self, backend.spec.timeouts.queue)

    def unqueue(self) -> None:
        if self.queued_at:
            self.t_queue = monotonic() - self.queued_at
            self.queued_at = 0.0
            backend = self.backend
            try:
                backend.waiters.remove(self)
            except ValueError:
                pass  # already taken off by wake_waiters
            backend.queue_cur -= 1

    def queue_expired(self) -> None:
        """timeouts.queue passed without a free slot: 503, as HAProxy."""
        self.unqueue()
        self.backend.connection_errors += 1
        self.terminated = "sQ"
        self.owner.stream_failed(self, 503)

    # -- connect, fail, retry ------------------------------------------------------

    def connected(self, seconds: float) -> None:
        self.t_connect = seconds or 1e-6

    def connect_failed(self, reason: str, observe) -> None:
        """The connection to our server could not be made (`reason`:
        L4CON refused, L4TOUT timed out, SOCKERR reset at once)."""
        server = self.server
        server.connection_errors += 1
        observe(server, reason)
        self.retry(connect_failed=True, timed_out=reason == "L4TOUT")

    def retry(self, connect_failed: bool = True, timed_out: bool = False, stale: bool = False,
              replayable: bool = True) -> None:
        """The server failed before any answer reached the client: try
        again, or fail the stream. `stale`: a pooled connection died before
        answering, most likely closed by its server just before our
        request came (the keep-alive race): the same server again on a
        fresh connection, not counted against `retries`. `replayable`:
        whether what was sent may be sent again (http decides)."""
        failed = self.server
        self.release_server()
        self.t_connect = 0.0
        backend = self.backend
        spec = backend.spec
        if replayable and stale and failed.usable:
            self.attempts += 1
            self.assign(failed)
            return
        if not replayable or self.retries >= spec.retries:
            self._give_up(connect_failed, timed_out)
            return
        self.attempts += 1
        self.retries += 1
        backend.retries += 1
        failed.retries += 1
        server = self._retry_target(failed)
        if server is None:
            self._give_up(connect_failed, timed_out)
            return
        if server is not failed:
            backend.redispatches += 1
            failed.redispatches += 1
            self.assign(server)
        elif timed_out or not connect_failed:
            self.assign(server)  # the timeout was the wait already
        else:
            delay = min(MAX_TURNAROUND, spec.timeouts.connect)
            asyncio.get_running_loop().call_later(delay, self._retry_now, server)

    def _retry_now(self, server: Server) -> None:
        if not self.ended:
            self.assign(server)

    def _retry_target(self, failed: Server) -> Optional[Server]:
        """Where the next attempt goes. With redispatch a retry moves to
        another server, except under hash balancing, where only the last
        retry moves: the hash pins a client to its server (HAProxy)."""
        backend = self.backend
        spec = backend.spec
        if self.tried is None:
            self.tried = set()
        self.tried.add(failed)
        last = self.retries >= spec.retries
        if spec.redispatch and (spec.balance in UNHASHED or last):
            # An untried server first; with every candidate tried, any
            # usable one but the last again: it answers, or its failure
            # takes it out and lets the next candidates (backups) in.
            key = self.balance_key(backend)
            other = backend.pick(key, self.tried) or backend.pick(key, (failed,))
            if other is not None:
                return other
        return failed if failed.usable or not spec.redispatch else None

    def _give_up(self, connect_failed: bool, timed_out: bool) -> None:
        if connect_failed:
            self.backend.connection_errors += 1
            self.terminated = "sC" if timed_out else "SC"
            self.owner.stream_failed(self, 503)
        else:
            self.terminated = "SH"
            self.owner.stream_failed(self, 502)

    # -- the end -------------------------------------------------------------------

    def finish(self, keep_server: bool = False) -> None:
        """The stream is over: counters, timers and the access line, once.
        `keep_server`: the server slot and backend session live on in a
        tunnel (101), ended by `end_tunnel()`."""
        if self.ended:
            return
        self.ended = True
        if self.queued_at:
            self.unqueue()
        backend = self.backend
        server = self.server or self.last_server
        status = self.status
        idx = status // 100 - 1 if 100 <= status < 600 else 5
        if self.http:
            # tcp streams' bytes are counted by their relay as they pass.
            frontend = self.frontend
            frontend.bytes_out += self.bytes_out
            if status:
                frontend.http_responses[idx] += 1
        if backend is not None:
            if server is not None:
                t_total = monotonic() - self.t_head
                t_resp = (self.t_response - self.t_assigned) if self.t_response else 0.0
                server.add_timers(self.t_queue, self.t_connect, t_resp, t_total)
                backend.add_timers(self.t_queue, self.t_connect, t_resp, t_total)
            if self.http:
                backend.http_requests += 1
                backend.bytes_out += self.bytes_out
                if status:
                    backend.http_responses[idx] += 1
                if server is not None:
                    server.http_requests += 1
                    if status:
                        server.http_responses[idx] += 1
            if not keep_server:
                self.release_server()
                backend.session_end()
        self.owner.write_log(self)



def release_slot(server: Server) -> None:
    """A server slot is free: it goes to a waiting stream, if any."""
    server.session_end()
    backend = server.backend
    if backend.waiters:
        wake_waiters(backend)


def end_tunnel(server: Server) -> None:
    """A tunnel that carried on after its stream's finish(keep_server=True)
    closed: its server slot and backend session end."""
    release_slot(server)
    server.backend.session_end()


def wake_waiters(backend: Backend) -> None:
    """Server slots opened (a stream ended, a server came back): hand them
    to the oldest queued streams that can use them, each picking with its
    own key."""
    if backend in _waking:
        return  # a connect that failed at once, inside the loop below: it goes on
    _waking.add(backend)
    try:
        waiters = backend.waiters
        hashed = backend.spec.balance not in UNHASHED
        i = 0
        while i < len(waiters):
            stream = waiters[i]
            server = stream.pick()
            if server is None or (backend.limited and not server.has_room()):
                if not hashed:
                    return  # every server is full: nobody further on gets one either
                i += 1  # this stream's server is full; another's may not be
                continue
            del waiters[i]
            stream.unqueue()
            stream.assign(server)
    finally:
        _waking.discard(backend)


_waking: set = set()


def server_changed(server: Server) -> None:
    """Backend listener: a server that came back or got room may take
    queued streams at once."""
    backend = server.backend
    if backend.waiters and server.usable:
        wake_waiters(backend)


def client_key(peer) -> bytes:
    """The client address as packed bytes, the key of `balance source`
    (the same in both modes)."""
    if not peer:
        return b""
    host = peer[0]
    try:
        if ":" in host:
            return socket.inet_pton(socket.AF_INET6, host.split("%")[0])
        return socket.inet_pton(socket.AF_INET, host)
    except (OSError, TypeError):
        return str(host).encode()
