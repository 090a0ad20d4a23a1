"""http mode: parse each client request, balance it, stream it through a
pooled server connection, stream the response back.

One `ClientConnection` per client. Requests are parsed by httptools; the
head is rebuilt with only what the proxy owns changed (hop-by-hop headers,
framing, X-Forwarded-*); bodies stream as they arrive, re-framed when
chunked, with back-pressure in both directions. Pipelined requests are
served one after the other. A request that fails before any response byte
reached the client is retried on another server when that is safe.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import ssl
import time
from collections import deque
from typing import Optional

import httptools

from lbcore_ext import Relay, scan_request

from ..balance import request_key
from ..certificates import tls_context
from ..hop_by_hop import named_headers
from ..listeners import FD_EXHAUSTED
from ..model import Frontend, Server
from ..upstream import REASONS, SEND_NOW, UpstreamConnection, UpstreamPool
from ..rules import remember_sni
from ..rules.frontend import connection_done, request_done
from .context import ProxyContext
from .stream import NOSRV, Stream, client_key, end_tunnel
from . import errors, proxy_protocol
from .h1_checks import CheckedRequestParser, partial_head_invalid
from .parking import PARK_AFTER, PARK_RETRY, Parking

log = logging.getLogger("lbcore")

MAX_REQUEST_HEAD = 16384  # like HAProxy's tune.bufsize: larger heads get 431
MAX_BUFFERED_BODY = 256 * 1024  # body bytes held while no server connection is ready
MAX_REPLAY = 64 * 1024  # request bodies up to this size can be replayed on a retry
# Responses to replayable requests up to this size (head and body) are held
# until complete: a server that dies mid-response is then replayed on
# another, unseen by the client. Larger ones stream. 64 KiB holds the
# typical API answer (OpenStack's JSON) and costs nothing on the fast path,
# where a whole small response arrives in one read anyway.
MAX_HELD_RESPONSE = 64 * 1024
TUNNEL_STAYS = "tunnel stays on the event loop"
IDLE_CLOSE_DELAY = 0.5  # stopping: idle keep-alive connections close after this
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"))
SETTLE_RETRY = 0.05  # a response still in the transport's buffer: look again after this (lbcore.adoption)

# Request headers the proxy owns, by lower-case name.
H_HOST, H_CONNECTION, H_HOP, H_TE, H_CL, H_XFF, H_XFP, H_UPGRADE, H_EXPECT = range(9)
SPECIAL = {
    b"host": H_HOST,
    b"connection": H_CONNECTION,
    b"keep-alive": H_HOP,
    b"proxy-connection": H_HOP,
    b"te": H_HOP,
    b"trailer": H_HOP,
    b"upgrade": H_UPGRADE,
    b"transfer-encoding": H_TE,
    b"content-length": H_CL,
    b"x-forwarded-for": H_XFF,
    b"x-forwarded-proto": H_XFP,
    b"expect": H_EXPECT,
}

# Why reading from the client is paused (a bit each).
P_UPSTREAM, P_QUEUE, P_BUFFER, P_TUNNEL = 1, 2, 4, 8


class HeadTooLarge(Exception):
    pass


class Exchange(Stream):
    """One request/response pair as it goes through the proxy: a stream
    (proxy/stream.py: backend, server, queue, retries, counters, log) with
    the HTTP message state added."""

    __slots__ = (
        "url", "parts", "head", "head_size", "method", "version", "keep_alive",
        "host_count", "xff", "conn_tokens", "upgrade", "chunked", "has_te",
        "headers_done", "complete", "unsent", "unsent_size", "replay", "replay_size",
        "body_sent", "upstream", "response_started", "rechunk", "close_after", "local",
        "tunnel_pending", "method_head", "held", "held_size", "request", "tail", "answer",
        "cookie_state",
    )

    def __init__(self, client: "ClientConnection", now: float, parts=None) -> None:
        self.begin(client, client.frontend, client.key, now, True)
        self.url = b""
        self.parts = parts  # header lines, while httptools parses the head
        self.head = b""
        self.head_size = 0
        self.method = b""
        self.version = "1.1"
        self.keep_alive = True
        self.host_count = 0
        self.xff = None
        self.conn_tokens = None
        self.upgrade = None
        self.chunked = False
        self.has_te = False
        self.headers_done = False
        self.complete = False
        self.unsent = None  # body bytes waiting for a server connection
        self.unsent_size = 0
        self.replay = ()  # body bytes kept for a retry; None once too large to keep
        self.replay_size = 0
        self.body_sent = False
        self.upstream: Optional[UpstreamConnection] = None
        self.response_started = False
        self.rechunk = False
        self.close_after = False
        self.local = False
        self.tunnel_pending = None
        self.method_head = False
        # With rules only: the head as rules read and edit it, what follows
        # its header block when it leaves (X-Forwarded-*), a local answer.
        self.request = None
        self.tail = b""
        self.answer = None
        self.cookie_state = None  # cookie persistence: (server the client named, had Authorization)
        self.held = None  # the response so far, while held until complete
        self.held_size = 0

    def request_line(self) -> str:
        return "%s %s HTTP/%s" % (self.method.decode("latin-1"),
                                  self.url.decode("latin-1"), self.version)


class HttpSettings:
    """What a client connection reads from its frontend's settings on every
    request, copied out of the specs once per (re)load. One object per
    frontend, shared by its connections and updated in place on a reload,
    so a connection always sees the current values."""

    __slots__ = ("http_request", "client", "keep_alive", "park_after",
                 "forwarded_for", "forwarded_proto", "monitor_uri", "rules")

    def __init__(self, frontend: Frontend) -> None:
        self.load(frontend)

    def load(self, frontend: Frontend) -> None:
        spec = frontend.spec
        timeouts = spec.timeouts
        self.http_request = timeouts.http_request
        self.client = timeouts.client
        self.keep_alive = timeouts.http_keep_alive
        # Idle this long, a connection leaves its transport (proxy/parking.py);
        # 0: it never does (TLS, or a keep-alive timeout that ends it first).
        self.park_after = PARK_AFTER if spec.tls is None and self.keep_alive > PARK_AFTER else 0.0
        self.forwarded_for = spec.forwarded_for
        self.forwarded_proto = spec.forwarded_proto
        self.monitor_uri = spec.monitor_uri.encode() if spec.monitor_uri is not None else None
        # The frontend's rules (proxy/stream.py's Rules), None without any:
        # then no request view is built and the fast path stays as it is.
        self.rules = frontend.rules


class HttpProxy:
    """Accepts client connections for one http frontend."""

    def __init__(self, frontend: Frontend, ctx: ProxyContext, pool: UpstreamPool, sweeper) -> None:
        self.frontend = frontend
        self.ctx = ctx
        self.pool = pool
        self.sweeper = sweeper
        self.loop = ctx.loop
        self.clients: set[ClientConnection] = set()
        # Idle connections off their transports (proxy/parking.py), by
        # descriptor: a dict costs a third of a set per entry.
        self.parked: dict = {}
        self.draining = False
        self.ssl: Optional[ssl.SSLContext] = None
        self.settings = HttpSettings(frontend)
        # For clients in `forwarded_for_except`: the same, without X-Forwarded-For.
        self.settings_no_xff = HttpSettings(frontend)
        self.xff_except: tuple = ()
        # Precise time for the stream's timers (deadlines use the sweep's),
        # the clock proxy/stream.py reads too.
        self.clock = time.monotonic
        self.reconfigure()

    def reconfigure(self) -> None:
        self.settings.load(self.frontend)
        self.settings_no_xff.load(self.frontend)
        self.settings_no_xff.forwarded_for = False
        self.xff_except = tuple(ipaddress.ip_network(net) for net in self.frontend.spec.forwarded_for_except)
        tls = self.frontend.spec.tls
        self.ssl = tls_context(tls) if tls is not None else None
        if self.ssl is not None:
            remember_sni(self.ssl)  # for ssl_fc_sni in rules

    def settings_for(self, peer) -> HttpSettings:
        """A connection's settings, chosen once: a client in
        forwarded_for_except gets no X-Forwarded-For."""
        if self.xff_except and peer:
            try:
                ip = ipaddress.ip_address(peer[0])
            except ValueError:
                return self.settings
            if ip.version == 6 and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            if any(ip in net for net in self.xff_except):
                return self.settings_no_xff
        return self.settings

    def accept(self, sock, peer, pending: bytes = b"") -> None:
        # The master's copy first (lbcore.adoption): until keep() has sent
        # it, a SIGKILL of this worker would reset the connection.
        journal = self.ctx.journal
        kept = journal.keep(sock, self.frontend.name, pending) \
            if journal is not None and self.ssl is None else None
        self.ctx.opened(self.frontend)
        client = ClientConnection(self, peer)
        if kept is not None:
            client.kept = kept
            client.kept_open = True
        task = self.loop.create_task(
            self.loop.connect_accepted_socket(lambda: client, sock, ssl=self.ssl))
        task.add_done_callback(client.accepted)

    def adopt(self, sock, pending: bytes) -> bool:
        """A connection a dead worker was serving (lbcore.adoption): taken
        on as if accepted here, `pending` as if just read from it."""
        if self.ssl is not None or self.ctx.journal is None or self.ctx.stopping:
            return False
        try:
            peer = sock.getpeername()
        except OSError:
            return False  # the client is gone already
        if sock.fileno() >= self.ctx.journal.slots:
            return False
        sock.setblocking(False)
        self.accept(sock, peer, pending)
        return True

    def drain(self) -> None:
        """Stopping: close idle keep-alive connections, close the others
        after their current response."""
        self.draining = True
        for client in list(self.clients):
            client.stop_keep_alive()
        # Parked ones get the same moment: a request on its way is answered
        # (with Connection: close, see unpark) rather than cut off.
        close_at = self.sweeper.now + IDLE_CLOSE_DELAY
        for parked in list(self.parked.values()):
            if parked.deadline > close_at:
                parked.deadline = close_at

    def close_all(self) -> None:
        for client in list(self.clients):
            client.abort()
        for parked in list(self.parked.values()):
            parked.close()

    def park(self, client: "ClientConnection", sock: socket.socket) -> bool:
        """`client` is idle and leaves its transport; `sock` is our own
        descriptor of its connection (proxy/parking.py). False: it cannot
        (`sock` is closed, the client stays as it is)."""
        parking = self.ctx.parking
        if parking is None:
            parking = self.ctx.parking = Parking(self.loop, self.sweeper)
        parked = parking.park(self, sock, client.peer, client.idle_until, client.facts)
        if parked is None:
            return False
        kept = client.kept
        if kept is not None:
            # Its slot in the adoption table is its descriptor number, which
            # changes: the master gets the new descriptor (and drops the old).
            client.kept = None
            client.kept_open = False
            kept.release(False)
            parked.kept = self.ctx.journal.keep(sock, self.frontend.name)
        sock.detach()  # the descriptor is the Parked's now
        return True

    def unpark(self, parked, sock: socket.socket) -> None:
        """A parked connection's next request is there: a new transport and
        ClientConnection carry it on with the state it had."""
        client = ClientConnection(self, parked.peer)
        client.proto = b"http"  # a reload may have put TLS on the frontend since
        client.facts = parked.facts  # (its tcp_request rules ran once, at its accept)
        kept = client.kept = parked.kept
        client.kept_open = kept is not None  # IDLE in its slot since it parked
        parked.kept = parked.facts = None
        if self.draining or self.ctx.stopping:
            client.closing = True  # answered, then closed (stop_keep_alive)
        task = self.loop.create_task(self.loop.connect_accepted_socket(lambda: client, sock))
        task.add_done_callback(client.accepted)


class ClientConnection:
    """asyncio Protocol for one client connection in http mode."""

    __slots__ = (
        "proxy", "frontend", "ctx", "sweeper", "pool", "peer", "client_ip", "transport",
        "parser", "current", "active", "queue", "deadline", "pause_mask", "closing",
        "made", "gone", "tunnel", "proto", "server_timeout", "pending_error", "out",
        "clock", "head_buf", "body_left", "receiving", "settings", "refused", "relay", "key",
        "facts", "kept", "kept_open", "kept_settle", "idle_until",
    )

    def __init__(self, proxy: HttpProxy, peer) -> None:
        self.proxy = proxy
        self.frontend = proxy.frontend
        self.ctx = proxy.ctx
        self.sweeper = proxy.sweeper
        self.pool = proxy.pool
        self.peer = peer
        self.client_ip = peer[0].encode() if peer else b"unknown"
        self.key = client_key(peer)  # for hash balancing, as in tcp mode
        self.transport = None
        self.parser = None
        self.current: Optional[Exchange] = None
        self.active: Optional[Exchange] = None
        self.queue = None
        self.deadline = 0.0
        self.pause_mask = 0
        self.closing = False
        self.made = False
        self.gone = False
        self.tunnel: Optional[UpstreamConnection] = None
        self.proto = b"https" if proxy.ssl is not None else b"http"
        self.server_timeout = 60.0
        self.pending_error = 0
        self.out = None  # bytes for the client this turn of the loop (see _send)
        self.clock = proxy.clock
        self.refused = False  # after a malformed request or a switch to a tunnel: read no more
        self.relay = None  # a tunnel handed over to lbcore_ext.Relay
        self.head_buf = b""  # the start of a head not complete yet (fast path)
        self.body_left = 0  # Content-Length bytes still to come (fast path)
        self.receiving: Optional[Exchange] = None  # whose body they are
        self.settings = proxy.settings_for(peer)
        self.facts = None  # the connection as rules see it (frontends with rules)
        # In a worker process: the connection's slot in the table its master
        # reads if this process dies (lbcore.adoption); whether a successor
        # could carry the connection on now; whether it could once the last
        # response is out in full.
        self.kept = None
        self.kept_open = False
        self.kept_settle = False
        self.idle_until = 0.0  # idle between requests: the keep-alive deadline (deadline: when it parks)

    # -- connection life -----------------------------------------------------

    def accepted(self, task) -> None:
        """Done-callback of connect_accepted_socket: a failed TLS handshake
        or an early reset never reached connection_made."""
        if task.cancelled() or task.exception() is not None:
            if not self.made:
                self.gone = True
                self.ctx.closed(self.frontend)
                kept = self.kept
                if kept is not None:
                    self.kept = None
                    self.kept_open = self.kept_settle = False
                    kept.release(False)  # its descriptor is closed (and its number maybe reused)
                facts = self.facts
                if facts is not None:  # unparked (proxy/parking.py)
                    self.facts = None
                    connection_done(facts)

    def connection_made(self, transport) -> None:
        self.made = True
        self.transport = transport
        self.proxy.clients.add(self)
        self.sweeper.watched.add(self)
        self.deadline = self.sweeper.now + self.settings.http_request
        rules = self.settings.rules
        if rules is not None and self.facts is None:
            # tcp_request rules: once per connection, before any byte is read
            # (an unparked connection has its facts already).
            self.facts = rules.connection(self.peer, transport.get_extra_info("sockname"),
                                          transport.get_extra_info("ssl_object"))
            if not rules.tcp_request(self.facts):
                self.refused = True
                transport.abort()
        kept = self.kept
        if kept is not None and kept.pending:
            # Adopted from a dead worker: what it had read comes first.
            pending, kept.pending = kept.pending, b""
            if not self.refused:
                self.data_received(pending)

    def connection_lost(self, exc) -> None:
        kept = self.kept
        if kept is not None:
            # Called before the transport closes its descriptor: shut the
            # connection down, or the master's copy would keep it open. A
            # relay has its own descriptors and carries the connection on.
            self.kept = None
            self.kept_open = self.kept_settle = False
            kept.release(self.relay is None)
        if self.gone or self.relay is not None:
            return  # (a relay carries the connection on; see _hand_over)
        self.gone = True
        self.deadline = 0.0
        self.proxy.clients.discard(self)
        self.sweeper.watched.discard(self)
        self.ctx.closed(self.frontend)
        ex = self.active
        if ex is not None:
            ex.terminated = "CD" if ex.response_started else "CR"
            self.frontend.client_aborts += 1
            if ex.server is not None:
                ex.server.client_aborts += 1
            upstream = ex.upstream
            if upstream is not None:
                # The server connection is mid-exchange: its state is unknown.
                ex.upstream = None
                upstream.abort()
            self.active = None
            if ex.request is not None:
                request_done(ex.request, ex.status)  # its track_sc counters
            ex.finish()
        if self.facts is not None:
            connection_done(self.facts)  # the counters its tcp_request rules tracked
        tunnel = self.tunnel
        if tunnel is not None:
            self.tunnel = None
            tunnel.abort()
            end_tunnel(tunnel.server)

    def eof_received(self):
        if self.tunnel is not None:
            self.tunnel.transport.write_eof()
            return True  # half-close: keep relaying server -> client
        if self.active is not None or self.queue:
            # The client half-closed after its request: answer it, then close.
            self.closing = True
            return True
        # The transport closes now: answers this turn produced go out first
        # (they wait for the end of the turn, lbcore/batch.py).
        self.flush()
        return None

    def pause_writing(self) -> None:
        """The client is not reading: hold the server back. While we do, the
        server is not idle; the client's timeout governs."""
        if self.tunnel is not None:
            self.tunnel.pause()
            self.deadline = self.sweeper.now + self.tunnel_timeout()
            return
        ex = self.active
        if ex is not None and ex.upstream is not None:
            ex.upstream.pause()
            ex.upstream.deadline = 0.0
        self.deadline = self.sweeper.now + self.settings.client

    def resume_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.resume()
            return
        if self.kept_settle:
            self._settle()
        ex = self.active
        if ex is not None and ex.upstream is not None:
            ex.upstream.resume()
            ex.upstream.deadline = self.sweeper.now + self.server_timeout
            if ex.complete:
                self.deadline = 0.0

    def pause_reading_for(self, upstream) -> None:
        self._pause(P_UPSTREAM)

    def resume_reading_for(self, upstream) -> None:
        self._resume(P_UPSTREAM)

    def _pause(self, reason: int) -> None:
        if not self.pause_mask and self.transport is not None:
            self.transport.pause_reading()
        self.pause_mask |= reason

    def _resume(self, reason: int) -> None:
        if self.pause_mask & reason:
            self.pause_mask &= ~reason
            if not self.pause_mask and not self.gone:
                self.transport.resume_reading()

    def stop_keep_alive(self) -> None:
        """Stopping: the next response says `Connection: close`. An idle
        connection gets a moment first, so a request that is already on
        its way is answered rather than cut off."""
        self.closing = True
        if self.active is None and self.current is None and self.tunnel is None:
            self.deadline = self.sweeper.now + IDLE_CLOSE_DELAY

    def close(self) -> None:
        """What is still held goes out first, then the connection closes."""
        if self.transport is not None and not self.transport.is_closing():
            self.flush()
            self.transport.close()

    def abort(self) -> None:
        if self.relay is not None:
            self.relay.close("KD")
        elif self.transport is not None:
            self.out = None  # dropped with the connection, not written to a closed transport
            self.transport.abort()

    def _cut(self) -> None:
        """A response that cannot complete: what we have goes out, then the
        connection closes, so the client sees a short body, not silence."""
        self.close()

    def expire(self) -> None:
        """The sweeper found our deadline passed."""
        self.deadline = 0.0
        ex = self.active
        if self.tunnel is not None:
            self.abort()
        elif ex is not None and ex.queued_at:
            ex.queue_expired()
        elif ex is not None and ex.response_started:
            ex.terminated = "cD"
            self.abort()
        elif ex is not None or self.current is not None or self.head_buf:
            target = ex or self.current or self.receiving or Exchange(self, self.clock())
            target.terminated = "cR"
            self.frontend.request_errors += 1
            self._error(target, 408)
        elif self.idle_until > self.sweeper.now and not self.closing:
            # Idle for park_after: off the transport, or (when it cannot
            # leave it now) idle here until its keep-alive timeout, or
            # until a later sweep when no descriptor was free (_park).
            self.deadline = self.idle_until
            self._park()
        else:
            self.close()  # idle keep-alive

    def _parkable(self) -> bool:
        """Nothing in flight either way: no request begun, no response or
        bytes unsent, nothing the connection is waiting for."""
        transport = self.transport
        return (self.active is None and self.current is None and not self.queue and not self.head_buf
                and not self.body_left and self.receiving is None and self.tunnel is None
                and self.relay is None and self.out is None and not self.pause_mask
                and not self.refused and not self.gone and not self.pending_error
                and not self.kept_settle and self.proxy.ssl is None
                and transport is not None and not transport.is_closing()
                and not transport.get_write_buffer_size())

    def _park(self) -> bool:
        """Leave the transport for proxy/parking.py's epoll set; the
        connection itself stays open and counted."""
        if not self._parkable():
            return False
        sock = _own_socket(self.transport)
        if sock is None:
            # Out of descriptors. A crowd parking in one sweep holds two
            # per connection until uvloop closes the transports' own on its
            # next turn: at a few dozen below the limit, some of a crowd
            # found none (all 19,900 clients parked but 229-378 in the
            # idle bench). Again later, not never.
            self.deadline = min(self.idle_until, self.sweeper.now + PARK_RETRY)
            return False
        if not self.proxy.park(self, sock):  # (parked until idle_until)
            return False
        self.idle_until = 0.0
        # From here on this object is done with (connection_lost does nothing);
        # its parser's bound callbacks would keep it in a cycle (lbcore/heap.py).
        self.parser = None
        self.gone = True
        self.deadline = 0.0
        self.facts = None
        self.proxy.clients.discard(self)
        self.sweeper.watched.discard(self)
        self.transport.abort()  # closes its descriptor, not the connection (ours is a duplicate)
        return True

    # -- client bytes --------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.kept is not None:
            self._journal(data)
        self.frontend.bytes_in += len(data)
        if self.tunnel is not None:
            self.tunnel.server.bytes_in += len(data)
            self.tunnel.transport.write(data)
            self.deadline = self.sweeper.now + self.tunnel_timeout()
            return
        ex = self.active
        if ex is not None and ex.tunnel_pending is not None:
            ex.tunnel_pending.append(data)
            self._pause(P_TUNNEL)
            return
        while data:
            if self.body_left:
                data = self._fast_body(data)
            elif self.current is not None or self.refused:
                self._feed(data)  # a message on the strict slow path
                return
            else:
                data = self._fast_head(data)

    def _journal(self, data: bytes) -> None:
        """In a worker: the bytes read go to the table the master reads if
        this process dies (lbcore.adoption)."""
        if self.kept_settle:
            self._settle()
        if self.kept_open and not self.kept.consumed(data):
            self.kept_open = False

    def _unsafe(self) -> None:
        """A successor could no longer carry this connection on: a response
        has started, or a request that may not be sent twice was read."""
        self.kept_open = False
        self.kept.unsafe()

    def _settle(self) -> None:
        """After a response: once it is out in full (in the kernel's hands)
        and nothing else is pending, a successor could carry the connection
        on again, from whatever was read of the next request."""
        if (self.active is not None or self.current is not None or self.queue or self.body_left
                or self.tunnel is not None or self.relay is not None or self.closing or self.refused
                or self.gone or self.out is not None or self.transport is None):
            return
        kept = self.kept
        if self.transport.get_write_buffer_size():
            # Still in the transport's buffer, which tells us nothing when it
            # drains below its low-water mark: look again shortly.
            if kept.retry is None:
                kept.retry = self.proxy.loop.call_later(SETTLE_RETRY, self._settle_later)
            return
        self.kept_settle = False
        self.kept_open = kept.settled(self.head_buf)

    def _settle_later(self) -> None:
        kept = self.kept
        if kept is not None:
            kept.retry = None
            if self.kept_settle:
                self._settle()

    def _fast_head(self, data: bytes) -> bytes:
        """At a message boundary: a complete, plain head is handled with one
        scan (lbcore_ext); anything else goes to httptools. Returns the
        bytes left for the next step."""
        seen = len(self.head_buf)
        if seen:
            # Only the new bytes (and the last few before them) are searched:
            # a head trickled in byte by byte costs linear time.
            data = self.head_buf + data
            self.head_buf = b""
        elif self.active is None:
            self.deadline = self.sweeper.now + self.settings.http_request
        end = data.find(b"\r\n\r\n", seen - 3 if seen > 3 else 0)
        if end < 0:
            if len(data) > MAX_REQUEST_HEAD:
                self._reject(431)
            elif partial_head_invalid(data, seen):
                self._feed(data)  # a bare CR or LF: refused now, not at the timeout
            else:
                self.head_buf = data
            return b""
        settings = self.settings
        scanned = None
        if end < MAX_REQUEST_HEAD:
            scanned = scan_request(data, end, settings.forwarded_proto, settings.forwarded_for)
        if scanned is None or scanned[0] == b"CONNECT":
            self._feed(data)
            return b""
        method, target, minor, keep, length, lines = scanned
        ex = Exchange(self, self.clock())
        ex.method = method
        ex.url = target
        ex.version = "1.1" if minor else "1.0"
        ex.keep_alive = keep and not self.closing
        ex.method_head = method == b"HEAD"
        ex.headers_done = True
        self.frontend.http_requests += 1
        tail = b""
        if settings.forwarded_for:
            tail = b"X-Forwarded-For: " + self.client_ip + b"\r\n"
        if settings.forwarded_proto:
            tail += b"X-Forwarded-Proto: " + self.proto + b"\r\n"
        if minor == 0:
            # HTTP/1.0 stays 1.0 (it may lack Host), asking the server to
            # keep the connection for the pool.
            tail += b"Connection: keep-alive\r\n"
        rules = settings.rules
        if rules is not None:
            # The head is rendered once the rules ran (_request_rules).
            ex.request = rules.request(self.facts, method, target, b"1.1" if minor else b"1.0", lines)
            ex.tail = tail
        elif minor == 0:
            ex.head = b"".join((method, b" ", target, b" HTTP/1.0\r\n", lines, tail, b"\r\n"))
        else:
            ex.head = b"".join((method, b" ", target, b" HTTP/1.1\r\n", lines, tail, b"\r\n"))
        rest = data[end + 4:]
        if length:
            self.body_left = length
            self.receiving = ex
        else:
            ex.complete = True
        self._request_ready(ex)
        return rest

    def _fast_body(self, data: bytes) -> bytes:
        """Content-Length body bytes of the request being received."""
        ex = self.receiving
        left = self.body_left
        n = len(data)
        if n > left:
            data, rest = data[:left], data[left:]
            n = left
        else:
            rest = b""
        self.body_left = left - n
        if not ex.local:
            if ex is self.active:
                self.deadline = self.sweeper.now + self.settings.client
            self._send_body(ex, data)
        if not self.body_left:
            self.receiving = None
            self._request_complete(ex)
        return rest

    def _feed(self, data: bytes) -> None:
        if self.refused:
            return
        parser = self.parser
        if parser is None:
            # Made on the first message the fast path cannot take, not per
            # connection: idle keep-alive connections stay small.
            parser = self.parser = CheckedRequestParser(self, MAX_REQUEST_HEAD)
        try:
            held = parser.feed_data(data)
            if held:
                # A head begun, not ended: read on from it as the fast path
                # does (the parser takes heads whole, h1_checks).
                self.head_buf = held
                if self.active is None:
                    self.deadline = self.sweeper.now + self.settings.http_request
        except httptools.HttpParserUpgrade as exc:
            self._upgrade_requested(data[exc.args[0]:] if exc.args else b"")
        except HeadTooLarge:
            self._reject(431)
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, HeadTooLarge):
                self._reject(431)
            else:
                log.debug("bad request from %s: %s", self.peer, exc)
                self._reject(getattr(exc, "status", 400))

    def _reject(self, code: int) -> None:
        """A malformed request: answered, then the connection is closed."""
        self.frontend.request_errors += 1
        self.parser = None
        self.refused = True
        self._pause(P_QUEUE)
        target = self.current or Exchange(self, self.clock())
        target.terminated = "PR"
        self.current = None
        if self.active is not None and self.active is not target:
            # Another request is being answered: finish it, then refuse.
            self.pending_error = code
            return
        self.active = None
        self._error(target, code)

    # -- httptools callbacks -------------------------------------------------

    def on_message_begin(self) -> None:
        self.current = Exchange(self, self.clock(), [])
        if self.active is None:
            self.deadline = self.sweeper.now + self.settings.http_request

    def on_url(self, url: bytes) -> None:
        ex = self.current
        ex.url += url
        ex.head_size += len(url)
        if ex.head_size > MAX_REQUEST_HEAD:
            raise HeadTooLarge()

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.current
        if ex.headers_done:
            return  # trailers are not forwarded
        ex.head_size += len(name) + len(value) + 4
        if ex.head_size > MAX_REQUEST_HEAD:
            raise HeadTooLarge()
        kind = SPECIAL.get(name.lower())
        if kind is None:
            ex.parts.append(b"%s: %s\r\n" % (name, value))
        elif kind == H_HOST:
            ex.host_count += 1
            ex.parts.append(b"%s: %s\r\n" % (name, value))
        elif kind == H_CL:
            ex.parts.append(b"%s: %s\r\n" % (name, value))
        elif kind == H_TE:
            ex.has_te = True
            ex.parts.append(b"%s: %s\r\n" % (name, value))
        elif kind == H_CONNECTION:
            named = named_headers(value)
            if named:
                ex.conn_tokens = named if ex.conn_tokens is None else ex.conn_tokens | named
        elif kind == H_XFF:
            if self.settings.forwarded_for:
                ex.xff = value if ex.xff is None else ex.xff + b", " + value
            else:
                ex.parts.append(b"%s: %s\r\n" % (name, value))
        elif kind == H_XFP:
            if not self.settings.forwarded_proto:
                ex.parts.append(b"%s: %s\r\n" % (name, value))
        elif kind == H_UPGRADE:
            ex.upgrade = value
        elif kind == H_EXPECT:
            ex.parts.append(b"%s: %s\r\n" % (name, value))
        # H_HOP: dropped

    def on_headers_complete(self) -> None:
        ex = self.current
        parser = self.parser
        ex.headers_done = True
        ex.t_head = self.clock()
        ex.method = method = parser.get_method()
        ex.version = parser.get_http_version()
        ex.keep_alive = parser.should_keep_alive() and not self.closing
        ex.method_head = method == b"HEAD"
        ex.chunked = ex.has_te
        self.frontend.http_requests += 1
        if ex.host_count > 1 or (ex.host_count == 0 and ex.version == "1.1") or method == b"CONNECT":
            raise httptools.HttpParserError("invalid request: Host header or method")
        settings = self.settings
        parts = ex.parts
        if ex.conn_tokens:
            # Headers named in Connection are hop-by-hop too (never framing or Host).
            named = ex.conn_tokens
            parts = [p for p in parts if p.split(b":", 1)[0].lower() not in named]
        first = b"%s %s HTTP/%s\r\n" % (method, ex.url, ex.version.encode())
        tail = []
        if settings.forwarded_for:
            if ex.xff is None:
                tail.append(b"X-Forwarded-For: %s\r\n" % self.client_ip)
            else:
                tail.append(b"X-Forwarded-For: %s, %s\r\n" % (ex.xff, self.client_ip))
        if settings.forwarded_proto:
            tail.append(b"X-Forwarded-Proto: %s\r\n" % self.proto)
        if ex.upgrade is not None and parser.should_upgrade():
            tail.append(b"Connection: upgrade\r\nUpgrade: %s\r\n" % ex.upgrade)
        else:
            ex.upgrade = None
            if ex.version == "1.0":
                tail.append(b"Connection: keep-alive\r\n")
        block = b"".join(parts)
        tail = b"".join(tail)
        ex.head = first + block + tail + b"\r\n"
        ex.parts = None
        if settings.rules is not None:
            ex.request = settings.rules.request(self.facts, method, ex.url, ex.version.encode(), block)
            ex.tail = tail
        self._request_ready(ex)

    def _request_ready(self, ex: Exchange) -> None:
        """The head is in: answer, dispatch or queue behind the active one."""
        if self.kept_open and ex.method not in IDEMPOTENT:
            self._unsafe()
        settings = self.settings
        monitor = settings.monitor_uri
        if monitor is not None and ex.url.split(b"?", 1)[0] == monitor:
            ex.local = True
        if self.active is None:
            self.active = ex
            # While the body comes in the client timeout runs; after that the
            # server's, on the upstream side.
            self.deadline = 0.0 if ex.complete else self.sweeper.now + settings.client
            self._dispatch(ex)
        else:
            if self.queue is None:
                self.queue = deque()
            self.queue.append(ex)
            self._pause(P_QUEUE)

    def on_body(self, body: bytes) -> None:
        ex = self.current
        if ex.local:
            return
        if ex is self.active:
            self.deadline = self.sweeper.now + self.settings.client
        if ex.chunked:
            self._send_body(ex, b"%x\r\n%s\r\n" % (len(body), body))
        else:
            self._send_body(ex, body)

    def on_message_complete(self) -> None:
        ex = self.current
        self.current = None
        if ex is None:
            return
        if ex.chunked and not ex.local:
            self._send_body(ex, b"0\r\n\r\n")
        self._request_complete(ex)

    def _request_complete(self, ex: Exchange) -> None:
        ex.complete = True
        if ex is self.active:
            if ex.local:
                self._answer_local(ex)
            elif not ex.response_started:
                self.deadline = 0.0  # the server timeout now runs on the upstream side

    def _send_body(self, ex: Exchange, data: bytes) -> None:
        if ex.replay is not None:
            ex.replay_size += len(data)
            if ex.replay_size > MAX_REPLAY:
                ex.replay = None
            elif ex.replay:
                ex.replay.append(data)
            else:
                ex.replay = [data]
        upstream = ex.upstream
        if upstream is not None and ex.t_connect:
            ex.body_sent = True
            n = len(data)
            upstream.server.bytes_in += n
            ex.backend.bytes_in += n
            # The server cannot answer before it has the body: not idle.
            upstream.deadline = self.sweeper.now + self.server_timeout
            upstream.send(data)
            return
        if ex.unsent is None:
            ex.unsent = [data]
        else:
            ex.unsent.append(data)
        ex.unsent_size += len(data)
        if ex.unsent_size > MAX_BUFFERED_BODY:
            self._pause(P_BUFFER)

    # -- routing: the stream (proxy/stream.py) decides, we connect -------------

    def _dispatch(self, ex: Exchange) -> None:
        if ex.local:
            if ex.complete:
                self._answer_local(ex)
            return
        if ex.request is None:
            ex.choose_backend()
        elif not self._request_rules(ex):
            return  # answered by a rule
        ex.dispatch()

    def _request_rules(self, ex: Exchange) -> bool:
        """The http_request rules, then use_backend, on the request view
        (frontends with rules only). False when a rule answered (deny,
        return, redirect): the answer goes out once the request is in."""
        rules = self.settings.rules
        request = ex.request
        answer = rules.http_request(request)
        if answer is not None:
            ex.answer = answer
            ex.local = True
            if ex.complete:
                self._answer_local(ex)
            return False
        if request.is_changed() or not ex.head:
            ex.head = b"".join((request.method, b" ", request.target, b" HTTP/", request.version, b"\r\n",
                                request.headers.block, ex.tail, b"\r\n"))
        ex.choose_backend(rules.use_backend(request))
        return True

    def request_hash_key(self, ex: Exchange, hashed: tuple):
        """StreamOwner: under `balance uri|hdr(NAME)|url_param(NAME)` the
        part of the request it names; None when absent (then round robin)."""
        return request_key(hashed[0], hashed[1], ex.url, ex.head, ex.key)

    def persistent_server(self, ex: Exchange, persistence) -> Optional[Server]:
        """StreamOwner: the server a persistence cookie or a stick rule
        names, if it may serve (lbcore/persist.py); HAProxy's order: the
        cookie first."""
        server = None
        if persistence.cookie is not None:
            server, ex.head = persistence.request_cookie(ex.head)
            ex.cookie_state = (server, persistence.cookie.nocache and persistence.has_authorization(ex.head))
        if persistence.rules:
            view = None
            if persistence.samples:  # stick on req.hdr(x)...: the request as rules read it
                view = ex.request if ex.request is not None else self._request_view(ex)
            ex.stick_keys = persistence.keys(self.client_ip.decode(), self._local_ip, view)
            if server is None:
                server = persistence.matched(ex.stick_keys)
                if server is not None and ex.cookie_state is not None:
                    ex.cookie_state = (server, ex.cookie_state[1])  # direct: no new cookie
        return server

    def _request_view(self, ex: Exchange):
        """The request as rules read it, for a frontend without rules (a
        stick rule on a header or a cookie needs it)."""
        from ..rules import Connection, Request
        head = ex.head
        block = head[head.index(b"\r\n") + 2:-2]
        peer = self.peer or ("", 0)
        sockname = self.transport.get_extra_info("sockname") if self.transport is not None else None
        conn = Connection(peer[0], peer[1], *(sockname[:2] if sockname else ("", 0)))
        return Request(conn, ex.method, ex.url, ex.version.encode(), block)

    def _local_ip(self) -> str:
        sockname = self.transport.get_extra_info("sockname") if self.transport is not None else None
        return sockname[0] if sockname else ""

    def connect_server(self, ex: Exchange, server: Server) -> None:
        """StreamOwner: a pooled connection to `server` if one is idle
        (only for the first attempt: a retry gets a fresh one), else a
        new one."""
        if ex.stick_keys is not None:
            server.backend.persist.store(ex.stick_keys, server)
        self.server_timeout = server.backend.spec.timeouts.server
        upstream = None
        if server.send_proxy is None and ex.attempts == 0:
            upstream = self.pool.take(server)
        if upstream is not None:
            self._attach(ex, upstream)
        else:
            self.proxy.loop.create_task(self._connect(ex, server))

    async def _connect(self, ex: Exchange, server: Server) -> None:
        timeout = server.backend.spec.timeouts.connect
        started = self.clock()
        observe = self.ctx.observe_failure
        preamble = self._proxy_header(server.send_proxy) if server.send_proxy is not None else b""
        try:
            upstream = await self.pool.connect(server, timeout, preamble)
        except (OSError, asyncio.TimeoutError) as exc:
            reason = "L4TOUT" if isinstance(exc, asyncio.TimeoutError) else "L4CON"
            if getattr(exc, "errno", None) in FD_EXHAUSTED:
                observe = _not_observed  # lbcore's own shortage, not the server's failure
            if ex.ended or ex.server is not server:
                # The stream went on without us (the client left): still a
                # failed connect, for the server's counters and health.
                server.connection_errors += 1
                observe(server, reason)
            else:
                ex.connect_failed(reason, observe)
            return
        if ex.ended or ex.server is not server:
            upstream.release()
            return
        if upstream.closed:
            # Reset between the connect and now: a failed connect.
            ex.connect_failed("SOCKERR", observe)
            return
        ex.connected(self.clock() - started)
        self._attach(ex, upstream)

    def _attach(self, ex: Exchange, upstream: UpstreamConnection) -> None:
        ex.upstream = upstream
        if not ex.t_connect:
            ex.t_connect = 1e-6  # a reused connection: no connect time
        body = ex.replay if ex.attempts and ex.replay is not None else ex.unsent
        if body:
            ex.body_sent = True
            data = ex.head + b"".join(body)
            ex.unsent = None
            ex.unsent_size = 0
            if self.pause_mask & P_BUFFER:
                self._resume(P_BUFFER)
        else:
            data = ex.head
        n = len(data)
        upstream.server.bytes_in += n
        ex.backend.bytes_in += n
        upstream.attach(self, ex, data)

    def _retry(self, ex: Exchange, connect_failed: bool, reused: bool = False) -> None:
        """The server failed before any response byte reached the client:
        the stream retries if what was sent may be sent again. A pooled
        connection that dies before any answer was most likely closed by
        its server before our request reached it (the keep-alive race):
        any request is replayed then, as browsers do."""
        ex.upstream = None
        replayable = (not ex.body_sent) or (ex.replay is not None and (
            ex.method in IDEMPOTENT or connect_failed or reused))
        ex.retry(connect_failed=connect_failed, stale=reused, replayable=replayable)

    def stream_queued(self, ex: Exchange, timeout: float) -> None:
        """StreamOwner: every server is full; the client's deadline is the
        queue timeout meanwhile (expire() then fails the stream)."""
        self.deadline = self.sweeper.now + timeout

    def stream_failed(self, ex: Exchange, status: int) -> None:
        """StreamOwner: no server will answer; neither will we, but with an error."""
        self._error(ex, status)

    # -- the response (called by UpstreamConnection) ---------------------------

    def send_interim(self, status: int, reason: bytes, parts) -> None:
        if self.active is not None and self.active.version == "1.1":
            self._send(b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, reason, b"".join(parts)))

    def response_head(self, upstream: UpstreamConnection, status: int, head: bytes) -> None:
        """`head`: status line and the server's end-to-end headers; the
        framing and Connection header for the client are decided here."""
        ex = self.active
        if ex.request is not None:
            rules = self.settings.rules
            edited = rules.http_response(ex.request, head)
            if type(edited) is not bytes:
                # Denied: the server's response is read to its end and
                # dropped (see response_body), the rule's answer sent instead.
                ex.answer = edited
                ex.held = []
                ex.t_response = self.clock()
                if not ex.complete:
                    ex.close_after = True  # the rest of the request would be read as the next
                return
            head = edited
        ex.status = status
        if ex.cookie_state is not None:
            head = self._response_cookie(ex, status, head)
        ex.t_response = self.clock()
        if status == 101:
            head_end = b"Connection: upgrade\r\n\r\n"
        else:
            if not ex.complete or ex.upgrade is not None or self.closing:
                ex.close_after = True
            if upstream.no_body or upstream.resp_length >= 0:
                head_end = b""
            elif ex.version == "1.1":
                ex.rechunk = True
                head_end = b"Transfer-Encoding: %s\r\n" % upstream.te_value
            else:
                ex.close_after = True  # the body ends when the connection does
                head_end = b""
            if ex.close_after or not ex.keep_alive:
                head_end += b"Connection: close\r\n\r\n"
            elif ex.version == "1.0":
                head_end += b"Connection: keep-alive\r\n\r\n"
            else:
                head_end += b"\r\n"
        head += head_end
        ex.bytes_out += len(head)
        if status != 101 and not upstream.no_body and ex.complete and ex.replay is not None \
                and ex.method in IDEMPOTENT and (upstream.resp_chunked or
                                                 0 <= upstream.resp_length <= MAX_HELD_RESPONSE):
            # Small enough to hold until complete, and safe to replay if the
            # server dies before the end (see upstream_lost).
            ex.held = [head]
            ex.held_size = len(head)
            return
        ex.response_started = True
        self._send(head)

    def whole_response(self, upstream: UpstreamConnection, head: bytes, body: bytes) -> None:
        """A complete Content-Length response from one server read: head,
        body and the end of the exchange in one step (the common case)."""
        ex = self.active
        if ex.request is not None:
            rules = self.settings.rules
            edited = rules.http_response(ex.request, head)
            if type(edited) is not bytes:
                ex.t_response = self.clock()
                self._send_answer(ex, edited)  # denied: the rule's answer instead
                if not ex.complete:
                    ex.close_after = True
                    upstream.keep_alive = False
                upstream.release()
                ex.upstream = None
                self._finish(ex)
                return
            head = edited
        ex.status = upstream.status
        if ex.cookie_state is not None:
            head = self._response_cookie(ex, ex.status, head)
        ex.response_started = True
        ex.t_response = self.clock()
        if not ex.complete or ex.upgrade is not None or self.closing:
            ex.close_after = True
        if ex.close_after or not ex.keep_alive:
            data = head + b"Connection: close\r\n\r\n" + body
        elif ex.version == "1.0":
            data = head + b"Connection: keep-alive\r\n\r\n" + body
        else:
            data = head + b"\r\n" + body
        ex.bytes_out += len(data)
        self._send(data)
        if not ex.complete:
            upstream.keep_alive = False  # it would read the rest of our request
        upstream.release()
        ex.upstream = None
        self._finish(ex)

    def _response_cookie(self, ex: Exchange, status: int, head: bytes) -> bytes:
        named, auth = ex.cookie_state
        server = ex.server
        # Direct only if the server the client named is the one that answered
        # (a redispatch after its failure gets the client a new cookie).
        return server.backend.persist.response_cookie(
            head, server, named is server and named is not None, ex.method, auth, status)

    def response_body(self, body) -> None:
        ex = self.active
        n = len(body)
        ex.bytes_out += n
        held = ex.held
        if held is not None:
            if ex.answer is not None:
                return  # a denied response: dropped
            if ex.rechunk:
                held.append(b"%x\r\n" % n)
                held.append(body)
                held.append(b"\r\n")
            else:
                held.append(body)
            ex.held_size += n
            if ex.held_size > MAX_HELD_RESPONSE:
                self._release_held(ex)  # too large after all (chunked): stream on
            return
        if ex.rechunk:
            self._send(b"%x\r\n" % n)
            self.out += (body, b"\r\n")
        else:
            self._send(body)

    def _send(self, data: bytes) -> None:
        """Bytes for the client, sent with everything else this turn of the
        loop produced for it, in one write at the end of the turn
        (lbcore/batch.py). Bulk data goes at once, after what is ahead of
        it: batching buys it nothing, and holding it would grow the heap."""
        if len(data) >= SEND_NOW:
            self.flush()
            if not self.gone:
                if self.kept_open:
                    self._unsafe()  # before a byte reaches the client
                self.transport.write(data)
            return
        if self.out is None:
            self.out = [data]
            self.pool.batch.add(self)
        else:
            self.out.append(data)

    def flush(self) -> None:
        out = self.out
        if out is not None:
            self.out = None
            if not self.gone:
                if self.kept_open:
                    # Before a byte reaches the client: until then, what is
                    # held here dies with a killed worker and the request
                    # may be answered by another (lbcore.adoption).
                    self._unsafe()
                if len(out) == 1:
                    self.transport.write(out[0])
                else:
                    self.transport.writelines(out)  # one writev, no copy
        if self.kept_settle:
            self._settle()

    def _release_held(self, ex: Exchange) -> None:
        """The held response goes to the client: from now on it streams."""
        held = ex.held
        ex.held = None
        ex.response_started = True
        for data in held:
            self._send(data)

    def _drop_held(self, ex: Exchange) -> None:
        """A held response will never complete: forget it, as if the
        server had not answered, so the request can be replayed."""
        ex.held = None
        ex.held_size = 0
        ex.status = 0
        ex.bytes_out = 0
        ex.rechunk = False
        ex.t_response = 0.0

    def response_complete(self, upstream: UpstreamConnection) -> None:
        ex = self.active
        if ex.held is not None:
            if ex.answer is not None:
                ex.held = None
                self._send_answer(ex, ex.answer)
            else:
                self._release_held(ex)
        if ex.rechunk:
            self._send(b"0\r\n\r\n")
        if not ex.complete:
            upstream.keep_alive = False  # it would read the rest of our request
        upstream.release()
        ex.upstream = None
        self._finish(ex)

    def upstream_lost(self, upstream: UpstreamConnection, exc) -> None:
        ex = self.active
        if ex is None or ex.upstream is not upstream:
            return
        server = upstream.server
        if ex.response_started:
            # Mid-body: nothing can be repaired, the client must see it.
            ex.terminated = "SD"
            server.server_aborts += 1
            server.backend.server_aborts += 1
            ex.upstream = None
            self._finish(ex, aborted=True)
            self._cut()
            return
        if ex.held is not None and ex.answer is not None:
            # A denied response whose server died: the rule's answer stands.
            ex.held = None
            ex.upstream = None
            self._send_answer(ex, ex.answer)
            self._finish(ex)
            return
        if ex.held is not None:
            # The server died mid-response, none of which reached the
            # client: replay elsewhere. It answered, so this was no stale
            # pooled connection.
            self._drop_held(ex)
            server.server_aborts += 1
            server.backend.server_aborts += 1
            self._retry(ex, connect_failed=False)
            return
        if not upstream.reused:
            # A fresh connection failed before answering: the server is sick.
            server.response_errors += 1
            server.backend.response_errors += 1
            self.ctx.observe_failure(server, "SOCKERR")
        self._retry(ex, connect_failed=False, reused=upstream.reused)

    def server_went_down(self, upstream: UpstreamConnection) -> None:
        """Our request waits on a server just marked DOWN. Nothing reached
        the client yet: if the request can be replayed, do it elsewhere now."""
        ex = self.active
        if ex is None or ex.upstream is not upstream or ex.response_started:
            return
        if ex.body_sent and (ex.replay is None or ex.method not in IDEMPOTENT):
            return  # not safe to replay: let the server answer or time out
        upstream.abort()
        self._retry(ex, connect_failed=False)

    def upstream_invalid(self, upstream: UpstreamConnection) -> None:
        ex = self.active
        if ex is None:
            return
        upstream.server.response_errors += 1
        upstream.server.backend.response_errors += 1
        ex.upstream = None
        if ex.response_started:
            ex.terminated = "SD"
            self._finish(ex, aborted=True)
            self._cut()
        else:
            ex.terminated = "PH"
            self._error(ex, 502)

    def upstream_timeout(self, upstream: UpstreamConnection) -> None:
        ex = self.active
        upstream.abort()
        if ex is None:
            return
        ex.upstream = None
        if ex.response_started:
            ex.terminated = "sD"
            self._finish(ex, aborted=True)
            self._cut()
        else:
            ex.terminated = "sH"
            self._error(ex, 504)

    # -- tunnels (Upgrade: websocket) ------------------------------------------

    def _upgrade_requested(self, rest: bytes) -> None:
        """httptools stops at the end of an upgrade request: what follows is
        for the tunnel, held until the server agrees (101)."""
        ex = self.active
        if ex is None or ex.upgrade is None:
            self._reject(400)
            return
        ex.tunnel_pending = [rest] if rest else []
        self._pause(P_TUNNEL)

    def start_tunnel(self, upstream: UpstreamConnection, rest: bytes) -> None:
        """101: from now on bytes flow both ways untouched. `rest`: what the
        server sent right behind its 101."""
        if self.kept_open:
            self._unsafe()
        ex = self.active
        self.tunnel = upstream
        self.parser = None
        self.refused = True
        self.flush()
        to_server = b"".join(ex.tunnel_pending or ())
        ex.tunnel_pending = None
        ex.upstream = None
        self._finish(ex, keep_server_session=True)
        if self._hand_over(upstream, rest, to_server):
            return
        if rest:
            self.transport.write(rest)
        if to_server:
            upstream.send(to_server)
            upstream.flush()  # before the tunnel's own writes, which are direct
        upstream.deadline = 0.0
        self.deadline = self.sweeper.now + self.tunnel_timeout()
        self.pause_mask = 0
        self.transport.resume_reading()

    def _hand_over(self, upstream: UpstreamConnection, to_client: bytes, to_server: bytes) -> bool:
        """A plain TCP tunnel leaves the loop's transports for
        lbcore_ext.Relay, like a tcp-mode connection: splice(2) for bulk
        transfers, no Python per read. The relay gets its own duplicates of
        the two sockets, which outlive the transports' close. TLS stays on
        transports (its bytes are decrypted in user space anyway), and so
        does a tunnel whose transports still hold unsent bytes."""
        if self.proxy.ssl is not None or self.transport.get_write_buffer_size() \
                or upstream.transport.get_write_buffer_size():
            return False
        client = _own_socket(self.transport, TUNNEL_STAYS)
        if client is None:
            return False
        server_sock = _own_socket(upstream.transport, TUNNEL_STAYS)
        if server_sock is None:
            client.close()
            return False
        server = upstream.server
        self.relay = Relay(self.proxy.loop, client, server_sock, self._relay_closed,
                           counters=(self.frontend, server.backend, server),
                           timeout=self.tunnel_timeout(), preamble=to_server, to_client=to_client)
        self.tunnel = None
        self.deadline = 0.0
        self.sweeper.watched.discard(self)  # the relay keeps the tunnel timeout
        for transport in (self.transport, upstream.transport):
            if transport.is_reading():
                transport.pause_reading()  # no read may reach the old transports now
        upstream.abort()
        self.transport.abort()
        self.relay.start()
        return True

    def _relay_closed(self, relay) -> None:
        self.relay = None
        self.gone = True
        self.proxy.clients.discard(self)
        self.ctx.closed(self.frontend)
        end_tunnel(relay.counters[2])

    def tunnel_timeout(self) -> float:
        tunnel = self.tunnel
        backend = tunnel.server.backend if tunnel is not None else self.frontend.backend
        return backend.spec.timeouts.tunnel

    def tunnel_from_server(self, data: bytes) -> None:
        self.frontend.bytes_out += len(data)
        self.transport.write(data)
        self.deadline = self.sweeper.now + self.tunnel_timeout()

    def tunnel_eof_from_server(self) -> None:
        if self.transport.can_write_eof():
            self.transport.write_eof()

    def tunnel_closed(self, upstream: UpstreamConnection) -> None:
        self.tunnel = None
        self.close()
        end_tunnel(upstream.server)

    # -- endings ---------------------------------------------------------------

    def _finish(self, ex: Exchange, aborted: bool = False, keep_server_session: bool = False) -> None:
        """The exchange is over (its stream counts and logs it), then the
        next request."""
        if ex.request is not None:
            request_done(ex.request, ex.status)  # its track_sc counters
        ex.finish(keep_server_session)
        if aborted or keep_server_session:
            self.active = None
            return
        self.active = None
        if ex.close_after or not ex.keep_alive or self.closing:
            self.close()
            return
        if self.pending_error:
            self._error(Exchange(self, self.clock()), self.pending_error)
            return
        queue = self.queue
        if queue:
            nxt = queue.popleft()
            self.active = nxt
            if not queue:
                self._resume(P_QUEUE)
            self._dispatch(nxt)
            return
        if self.current is None and not self.head_buf:
            now = self.sweeper.now
            settings = self.settings
            self.idle_until = now + settings.keep_alive
            park = settings.park_after
            self.deadline = (now + park) if park else self.idle_until
        else:
            # The next request has begun (a head not ended is waiting in
            # head_buf): it is not idle, it has http_request to complete.
            self.deadline = self.sweeper.now + self.settings.http_request
        if self.kept is not None:
            self.kept_settle = True
            if self.out is None:
                self._settle()  # else once flush() sent the response

    def write_log(self, ex: Exchange) -> None:
        """StreamOwner: the access line, naming the backend and server the
        request really went to."""
        access = self.ctx.access_log
        # monitor_uri answers are not logged, as HAProxy: a load balancer
        # above probing every second would drown the access log.
        if not access.enabled or (ex.local and ex.answer is None):
            return
        server = ex.last_server
        backend = ex.backend
        now = self.clock()
        t_connect = ex.t_connect if ex.t_connect > 1e-5 else (0.0 if ex.t_connect else None)
        access.http(
            self.peer, self.frontend.name, backend.name if backend is not None else self.frontend.backend.name,
            server.name if server is not None else NOSRV,
            ex.t_head - ex.t_begin, ex.t_queue if ex.t_assigned else None,
            t_connect,
            (ex.t_response - ex.t_assigned - (t_connect or 0.0)) if ex.t_response and ex.t_assigned else None,
            now - ex.t_begin, ex.status, ex.bytes_out, ex.terminated,
            ex.request_line() if ex.method else "<BADREQ>", ex.attempts,
            # the wall clock when the head was in (not read per request: only logs need it)
            (time.time() - (now - ex.t_head)) if ex.method else None,
            (self.ctx.connections, self.frontend.cur_sessions,
             backend.cur_sessions if backend is not None else 0,
             server.cur_sessions if server is not None else 0),
            (0, backend.queue_cur if backend is not None else 0))

    def _error(self, ex: Exchange, code: int) -> None:
        """Answer with one of HAProxy's canned errors and close."""
        if self.kept_open:
            self._unsafe()
        if ex.upstream is not None:
            # The request already went to a server: its answer has no taker.
            ex.upstream.abort()
            ex.upstream = None
        # Our answer, not the server's: the slot goes back before the
        # stream is counted.
        ex.release_server()
        self.flush()
        ex.status = code
        body = self._error_page(ex, code)
        ex.bytes_out = len(body)
        ex.response_started = True
        if self.active is ex:
            self.active = None
        if ex.request is not None:
            request_done(ex.request, code)  # its track_sc counters, as _finish does
        ex.finish()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(body)
            self.transport.close()

    def _error_page(self, ex: Exchange, code: int) -> bytes:
        """HAProxy's page for `code`, or the errorfile that replaces it: the
        backend's if the request reached one, else the frontend's. Errors in
        reading the request (400, 408, 431, 501, 505) keep HAProxy's page:
        its HTTP/1 layer answers those before any errorfile applies."""
        if code not in errors.FILE_REPLACEABLE:
            return errors.page(code)
        backend = ex.backend
        error_file = backend.spec.error_files.get(code) if backend is not None else None
        if error_file is None:
            error_file = self.frontend.spec.error_files.get(code)
        if error_file is not None:
            return error_file.closing()
        return errors.page(code)

    def _answer_local(self, ex: Exchange) -> None:
        """A rule's answer, or monitor_uri: lbcore answers for itself
        (503 once stopping)."""
        if ex.answer is not None:
            self._send_answer(ex, ex.answer)
            self._finish(ex)
            return
        code = 503 if (self.ctx.stopping or self.ctx.withdrawn or self.closing) else 200
        error_file = self.frontend.spec.error_files.get(code)
        if error_file is not None:  # HAProxy answers monitor-uri with its 200 (or 503) errorfile
            self._send_answer(ex, error_file.answer("monitor"))
            self._finish(ex)
            return
        body = b"<html><body><h1>200 OK</h1>\nService ready.\n</body></html>\n" if code == 200 \
            else b"<html><body><h1>503 Service Unavailable</h1>\nStopping.\n</body></html>\n"
        keep = ex.keep_alive and code == 200
        head = (b"HTTP/1.1 %d %s\r\nContent-Type: text/html\r\nCache-Control: no-cache\r\n"
                b"Content-Length: %d\r\n%s\r\n") % (
            code, REASONS[code], len(body), b"" if keep else b"Connection: close\r\n")
        self._send(head if ex.method_head else head + body)
        ex.status = code
        ex.bytes_out = len(head) + len(body)
        ex.keep_alive = keep
        self._finish(ex)

    def _send_answer(self, ex: Exchange, answer) -> None:
        """A rule's answer (proxy/stream.py's Rules) goes out for `ex`."""
        ex.keep_alive = ex.keep_alive and not answer.close and not self.closing
        head = answer.head if ex.keep_alive else answer.closing_head
        self._send(head if ex.method_head else head + answer.body)
        ex.status = answer.status
        ex.bytes_out = len(head) + (0 if ex.method_head else len(answer.body))
        ex.response_started = True

    def _proxy_header(self, version: str) -> bytes:
        return proxy_protocol.header(version, self.peer, self.transport.get_extra_info("sockname"))


def _own_socket(transport, failing: Optional[str] = None) -> Optional[socket.socket]:
    """A socket of our own on a transport's connection (a duplicate of its
    fd): closing the transport leaves the connection open. None if the
    transport has no socket to share or the fd cannot be duplicated."""
    theirs = transport.get_extra_info("socket")
    if theirs is None:
        return None
    try:
        fd = os.dup(theirs.fileno())  # may fail: out of fds
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            raise
        sock.setblocking(False)
    except OSError as exc:
        if failing is not None:
            log.warning("%s: cannot take its socket over: %s", failing, exc)
        return None
    return sock


def _not_observed(server, reason) -> None:
    """A passive health hook that does nothing: for failures that are not
    the server's."""
