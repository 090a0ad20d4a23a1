"""Keep-alive connections to servers, pooled and reused across clients.

An `UpstreamConnection` carries one exchange at a time. It parses the
response with httptools, rewrites its head for the client and streams the
body to the client with back-pressure both ways. When the response is
complete and the server keeps the connection open it goes back to its
server's idle list (LIFO, so a few warm connections do most of the work).
Idle connections to a server that is no longer usable are closed at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Optional

import httptools

from lbcore_ext import scan_response

from .heap import without_traceback
from .hop_by_hop import named_headers
from .proxy.h1_checks import response_head_error, transfer_codings_chunked
from .model import DOWN, Server
from .server_tls import check_name

log = logging.getLogger("lbcore")

MAX_IDLE_PER_SERVER = 256  # when pool_max_conn is not set
IDLE_TIMEOUT = 30.0  # an idle pooled connection is closed after this
PURGE_TICK = 1.0  # seconds between looks at which servers are due a purge
MAX_RESPONSE_HEAD = 65536
SEND_NOW = 32768  # writes this large skip the batch (lbcore/batch.py): nothing to gain
QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only

# Response headers the proxy owns: hop-by-hop ones and the framing.
HOP_BY_HOP = frozenset((
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding",
    b"te", b"trailer", b"upgrade", b"proxy-authenticate",
))

REASONS = {
    100: b"Continue", 101: b"Switching Protocols", 200: b"OK", 201: b"Created",
    202: b"Accepted", 204: b"No Content", 206: b"Partial Content",
    301: b"Moved Permanently", 302: b"Found", 303: b"See Other", 304: b"Not Modified",
    307: b"Temporary Redirect", 308: b"Permanent Redirect", 400: b"Bad Request",
    401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed",
    408: b"Request Timeout", 409: b"Conflict", 413: b"Payload Too Large",
    429: b"Too Many Requests", 500: b"Internal Server Error", 502: b"Bad Gateway",
    503: b"Service Unavailable", 504: b"Gateway Timeout",
}


class UpstreamConnection:
    """asyncio Protocol for one connection to a server."""

    __slots__ = (
        "pool", "server", "transport", "parser", "exchange", "client",
        "deadline", "reused", "closed", "status", "reason", "head_parts",
        "head_size", "resp_chunked", "resp_length", "no_body", "keep_alive",
        "body_started", "private", "tunnel", "paused", "head_buf", "body_left", "slow",
        "conn_named", "te_value", "out", "sock", "acked", "interims",
    )

    def __init__(self, pool: "UpstreamPool", server: Server) -> None:
        self.pool = pool
        self.server = server
        self.transport = None
        self.parser = None
        self.exchange = None
        self.client = None
        self.deadline = 0.0
        self.reused = False
        self.closed = False
        self.private = False  # e.g. after a PROXY header: never shared
        self.tunnel = False
        self.paused = False
        self.out = None  # request bytes for the server, sent at the end of the loop's turn
        self.sock = None  # the transport's socket, for TCP_QUICKACK
        self._reset_response()

    def _reset_response(self) -> None:
        self.status = 0
        self.reason = b""
        self.head_parts = []
        self.head_size = 0
        self.resp_chunked = False
        self.resp_length = -1
        self.no_body = False
        self.keep_alive = True
        self.body_started = False
        self.head_buf = b""
        self.body_left = 0
        self.slow = False
        self.conn_named = None
        self.interims = 0  # 1xx responses relayed so far
        self.te_value = b"chunked"  # the server's codings, re-framed as chunked
        self.acked = False  # TCP_QUICKACK was set for this response

    # -- asyncio.Protocol ------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.parser = httptools.HttpResponseParser(self)
        if QUICKACK is not None:
            self.sock = transport.get_extra_info("socket")

    def data_received(self, data: bytes) -> None:
        if self.tunnel:
            self.client.tunnel_from_server(data)
            return
        client = self.client
        if client is None:
            # Bytes from an idle server: it is not speaking HTTP as we expect.
            self.close()
            return
        self.server.bytes_out += len(data)
        if not (self.body_left or self.body_started or self.slow or self.head_buf):
            # The common case, a whole small response in one read, in one go.
            end = data.find(b"\r\n\r\n")
            if 0 <= end < MAX_RESPONSE_HEAD:
                scanned = scan_response(data, end)
                if scanned is not None:
                    status, length, keep, head = scanned
                    no_body = status == 204 or status == 304 or self.exchange.method_head
                    if len(data) == end + 4 + (0 if no_body else length):
                        self.status = status
                        self.body_started = True
                        self.keep_alive = keep
                        self.resp_length = length
                        self.no_body = no_body
                        client.whole_response(self, head, data[end + 4:] if not no_body else b"")
                        return
        self.deadline = self.pool.sweeper.now + client.server_timeout
        if not self.acked:
            self._ack_now()
        if self.body_left:
            self._fast_body(client, data)
        elif self.slow or self.body_started:
            self._slow(client, data)
        else:
            self._fast_head(client, data)

    def _ack_now(self) -> None:
        """A response that takes more than one read: ACK what came at once,
        and keep ACKing while it comes. A server that writes its head and
        body apart with Nagle on (Python's http.server, many WSGI servers)
        holds the body until its head is ACKed; having just sent it a
        request, this connection's kernel is in its interactive mode and
        would delay that ACK up to 40 ms. TCP_QUICKACK leaves that mode
        (and sends the pending ACK); once per response is enough, as we
        send the server nothing more until it ends. Whole responses in one
        read, the common case, never get here."""
        self.acked = True
        sock = self.sock
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
            except OSError:
                self.sock = None  # not TCP after all (or gone): never again

    def _fast_head(self, client, data: bytes) -> None:
        """A plain response head (Content-Length framed) is rewritten with
        one scan (lbcore_ext) and its body counted here; anything else goes
        to httptools."""
        if self.head_buf:
            data = self.head_buf + data
            self.head_buf = b""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > MAX_RESPONSE_HEAD:
                self._bad_response("response head too large")
            elif b"\n\n" in data:
                self.slow = True  # a bare-LF head: llhttp judges it now
                self._slow(client, data)
            else:
                self.head_buf = data
            return
        scanned = scan_response(data, end) if end < MAX_RESPONSE_HEAD else None
        if scanned is None:
            self.slow = True
            self._slow(client, data)
            return
        status, length, keep, head = scanned
        self.status = status
        self.body_started = True
        self.keep_alive = keep
        self.resp_length = length
        if status in (204, 304) or self.exchange.method_head:
            self.no_body = True
            length = 0
        client.response_head(self, status, head)
        if length == 0:
            if len(data) > end + 4:
                self.keep_alive = False  # bytes after a bodiless response: not HTTP
            client.response_complete(self)
        else:
            self.body_left = length
            if len(data) > end + 4:
                self._fast_body(client, data[end + 4:])

    def _fast_body(self, client, data: bytes) -> None:
        left = self.body_left
        if len(data) > left:
            data = data[:left]
            self.keep_alive = False  # more than Content-Length announced
        self.body_left = left - len(data)
        client.response_body(data)
        if not self.body_left:
            client.response_complete(self)

    def _slow(self, client, data: bytes) -> None:
        try:
            if self.exchange.method_head and not self.body_started:
                self._feed_head_only(data)
            else:
                self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            rest = data[offset:]
            if self.status == 101:
                self.tunnel = True
                self.client.start_tunnel(self, rest)
            else:
                self._bad_response("unexpected upgrade")
        except httptools.HttpParserError as exc:
            self._bad_response(str(exc))

    def _feed_head_only(self, data: bytes) -> None:
        """Answers to HEAD have no body whatever their Content-Length says;
        httptools cannot be told so, so feed it only the head and take a
        fresh parser for the next response."""
        self.head_parts.append(data)
        blob = b"".join(self.head_parts) if len(self.head_parts) > 1 else data
        end = blob.find(b"\r\n\r\n")
        if end < 0:
            if len(blob) > MAX_RESPONSE_HEAD:
                self._bad_response("response head too large")
            else:
                self.head_parts = [blob]
            return
        self.head_parts = []
        self.no_body = True
        self.parser.feed_data(blob[:end + 4])
        if len(blob) > end + 4 and self.status >= 200:
            self.keep_alive = False  # a body after the head of an answer to HEAD: not reused
        if self.status and self.status < 200:
            # An interim response: the final one may follow in the rest.
            rest = blob[end + 4:]
            self.parser = httptools.HttpResponseParser(self)
            if rest:
                self._feed_head_only(rest)
            return
        self.parser = httptools.HttpResponseParser(self)
        if self.client is not None:
            self.on_message_complete()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.pool.forget(self)
        client = self.client
        try:
            if client is None:
                return
            if self.tunnel:
                client.tunnel_closed(self)
            elif self.status >= 200 and self.body_started and self.resp_length < 0 \
                    and not self.resp_chunked and not self.no_body:
                # A close-delimited body ends with the connection.
                self.keep_alive = False
                self.on_message_complete()
            else:
                client.upstream_lost(self, exc)
        finally:
            # The parser holds this connection's bound callbacks: a cycle
            # that reference counting cannot free. Left to the cyclic
            # collector, every closed connection (with its transport) waited
            # for a full collection, rare in a steady server, or was frozen
            # for good by the next reload (heap.settle_heap).
            self.parser = None

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause_reading_for(self)

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume_reading_for(self)

    def eof_received(self):
        if self.tunnel and self.client is not None:
            self.client.tunnel_eof_from_server()
            return True  # keep our write side open: half-close
        return None

    # -- httptools callbacks ----------------------------------------------

    def on_message_begin(self) -> None:
        if self.client is None:
            # More bytes after the end of the response: not HTTP as we expect
            # it, and never taken for the answer to another request.
            raise httptools.HttpParserError("data after the end of the response")

    def on_status(self, reason: bytes) -> None:
        self.reason += reason
        if len(self.reason) > MAX_RESPONSE_HEAD:
            raise httptools.HttpParserError("response head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.body_started:
            return  # trailers: dropped
        self.head_size += len(name) + len(value)
        if self.head_size > MAX_RESPONSE_HEAD:
            raise httptools.HttpParserError("response head too large")
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == b"transfer-encoding":
                if self.resp_chunked or not transfer_codings_chunked(value):
                    # A coded body running to the close would reach the client
                    # as if it were plain: HAProxy answers 502 too. And what
                    # llhttp reads as chunked must be what we think is
                    # (`xchunked`, `chunked, chunked` and a second field are
                    # not): a different reading of the end of an answer lets
                    # a server forge the answer to the next request.
                    raise httptools.HttpParserError(
                        "Transfer-Encoding without chunked as its one final coding")
                self.resp_chunked = True
                self.te_value = value
            elif lname == b"upgrade":
                self.head_parts.append(b"Upgrade: " + value + b"\r\n")
            elif lname == b"connection":
                named = named_headers(value)
                if named:
                    self.conn_named = (self.conn_named or set()) | named
            return
        if lname == b"content-length":
            self.resp_length = int(value)
            if self.parser.get_status_code() == 204:
                return  # RFC 9110 8.6: never in a 204; a client could frame by it
        self.head_parts.append(name + b": " + value + b"\r\n")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self.status = status
        why = response_head_error(self.parser.get_http_version(), status, self.interims,
                                  self.reason)
        if why:
            raise httptools.HttpParserError(why)
        if status < 200 and status != 101:
            # Interim (100 Continue, 103): relayed, then the final response.
            self.interims += 1
            self.client.send_interim(status, self.reason, self.head_parts)
            self.head_parts = []
            self.reason = b""
            self.head_size = 0
            return
        if status == 101 and self.exchange.upgrade is None:
            raise httptools.HttpParserError("101 Switching Protocols without an upgrade request")
        if self.conn_named:
            # Headers named in Connection are hop-by-hop too.
            self.head_parts = [p for p in self.head_parts
                               if p.split(b":", 1)[0].lower() not in self.conn_named]
        self.body_started = True
        if status in (204, 304) or self.exchange.method_head:
            self.no_body = True
        self.client.response_head(self, status, b"HTTP/1.1 %d %s\r\n%s" % (
            status, self.reason or REASONS.get(status, b"-"), b"".join(self.head_parts)))
        self.head_parts = []

    def on_body(self, body: bytes) -> None:
        self.client.response_body(body)

    def on_message_complete(self) -> None:
        if not self.body_started or self.status == 101:
            return  # an interim response, or a switch the upgrade handler takes over
        if not self.parser.should_keep_alive():
            self.keep_alive = False
        client = self.client
        if client is not None:
            client.response_complete(self)

    # -- used by the client side -------------------------------------------

    def attach(self, client, exchange, data: bytes) -> None:
        self.client = client
        self.exchange = exchange
        self._reset_response()
        self.deadline = self.pool.sweeper.now + client.server_timeout
        self.send(data)

    def send(self, data: bytes) -> None:
        """Bytes for the server, sent with the others at the end of this
        turn of the loop (lbcore/batch.py); bulk data at once, after what
        is ahead of it."""
        if len(data) >= SEND_NOW:
            self.flush()
            if not self.closed:
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
            if not self.closed:
                if len(out) == 1:
                    self.transport.write(out[0])
                else:
                    self.transport.writelines(out)  # one writev, no copy

    def release(self) -> None:
        """The exchange is over: back to the pool if still clean."""
        self.client = None
        self.exchange = None
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        if self.closed or not self.keep_alive or self.private or self.tunnel:
            self.close()
            return
        if self.slow:
            # httptools may hold more of this read after the response's end:
            # it is judged (and the connection closed) before anyone reuses it.
            self.pool.loop.call_soon(self.pool.put, self)
            return
        self.pool.put(self)

    def pause(self) -> None:
        if not self.paused and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def _bad_response(self, why: str) -> None:
        log.info("invalid response from %s/%s: %s", self.server.backend.name, self.server.name, why)
        self.keep_alive = False
        client = self.client
        self.close()
        if client is not None:
            client.upstream_invalid(self)

    def expire(self) -> None:
        """Sweeper: server timeout while an exchange waits, or pool idle time."""
        self.deadline = 0.0
        client = self.client
        if client is not None:
            client.upstream_timeout(self)
        else:
            self.close()

    def close(self) -> None:
        self.deadline = 0.0
        if not self.closed:
            self.flush()
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.client = None
        self.closed = True
        self.pool.forget(self)
        if self.transport is not None:
            self.transport.abort()


class UpstreamPool:
    """Idle keep-alive connections per server, for one process.

    Bounded and purged as HAProxy's `pool-max-conn` and `pool-purge-delay`
    (lb.yaml backend keys `pool_max_conn`, `pool_purge_delay`): a server
    keeps at most pool_max_conn idle connections, and every purge delay the
    idle ones beyond what the server needed lately (its peak of busy
    connections since the last purge, or a slowly decaying estimate of
    earlier peaks) are halved. A burst of 20k clients then leaves a handful
    of idle connections, not hundreds, within seconds."""

    def __init__(self, loop, sweeper, batch) -> None:
        self.loop = loop
        self.sweeper = sweeper
        self.batch = batch  # the proxies' end-of-turn writes (lbcore/batch.py)
        self.idle: dict[Server, list[UpstreamConnection]] = {}
        self.peak: dict[Server, int] = {}  # busy connections at most, since the last purge
        self.needed: dict[Server, int] = {}  # HAProxy's est_need_conns
        self.purged_at: dict[Server, float] = {}
        self.purge_handle = None

    def take(self, server: Server) -> Optional[UpstreamConnection]:
        self._busy(server)
        idle = self.idle.get(server)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    def _busy(self, server: Server) -> None:
        # Called as a request takes a connection: cur_sessions counts it.
        busy = server.cur_sessions
        if busy > self.peak.get(server, 0):
            self.peak[server] = busy

    def put(self, conn: UpstreamConnection) -> None:
        if conn.closed:
            return  # since its release was deferred (UpstreamConnection.release)
        server = conn.server
        if not server.usable:
            conn.close()
            return
        idle = self.idle.get(server)
        if idle is None:
            idle = self.idle[server] = []
            self.purged_at[server] = self.sweeper.now
        limit = server.backend.spec.pool_max_conn
        if len(idle) >= (MAX_IDLE_PER_SERVER if limit is None else limit):
            conn.close()
            return
        conn.deadline = self.sweeper.now + IDLE_TIMEOUT
        idle.append(conn)
        if self.purge_handle is None:
            self.purge_handle = self.loop.call_later(
                min(PURGE_TICK, server.backend.spec.pool_purge_delay), self._purge_tick)

    def _purge_tick(self) -> None:
        self.purge_handle = None
        now = self.sweeper.now
        tick = PURGE_TICK  # a purge delay below it is kept too
        for server, idle in list(self.idle.items()):
            delay = server.backend.spec.pool_purge_delay
            if now - self.purged_at.get(server, now) >= delay:
                self.purged_at[server] = now
                self.purge(server, idle)
            if idle and delay < tick:
                tick = delay
        if any(self.idle.values()):
            self.purge_handle = self.loop.call_later(tick, self._purge_tick)

    def purge(self, server: Server, idle: list) -> None:
        """HAProxy's srv_cleanup_idle_conns: close half of the idle
        connections beyond the server's recent need, the oldest first."""
        busy = server.cur_sessions
        peak = self.peak.get(server, 0)
        needed = max(peak, self.needed.get(server, 0))
        excess = busy + len(idle) - needed
        self.needed[server] = max((self.needed.get(server, 0) + peak) // 2, peak)
        self.peak[server] = busy
        if excess <= 0:
            return
        for conn in idle[:min(len(idle), (excess + 1) // 2)]:
            conn.close()  # forget() takes it off the list

    def forget(self, conn: UpstreamConnection) -> None:
        self.sweeper.watched.discard(conn)
        idle = self.idle.get(conn.server)
        if idle and conn in idle:
            idle.remove(conn)

    async def connect(self, server: Server, timeout: float, preamble: bytes = b"") -> UpstreamConnection:
        """A new connection to `server`, TLS if it has tls, within `timeout`
        (the handshake included: a failed one is a failed connect).
        `preamble` (a PROXY header) is sent first, before any TLS, and
        makes the connection private."""
        self._busy(server)
        conn = UpstreamConnection(self, server)
        tls = server.tls
        try:
            if tls is None:
                await asyncio.wait_for(
                    self.loop.create_connection(lambda: conn, server.host, server.port), timeout)
            else:
                await asyncio.wait_for(self._connect_tls(conn, tls, preamble), timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise without_traceback(exc)
        if preamble:
            conn.private = True
            if tls is None:
                conn.send(preamble)
        self.sweeper.watched.add(conn)
        return conn

    async def _connect_tls(self, conn: UpstreamConnection, tls, preamble: bytes) -> None:
        server = conn.server
        if preamble:
            # The PROXY header goes first, in clear, as HAProxy sends it.
            transport, _ = await self.loop.create_connection(asyncio.Protocol, server.host, server.port)
            try:
                transport.write(preamble)
                tls_transport = await self.loop.start_tls(transport, conn, tls.context,
                                                          server_hostname=tls.sni)
            except BaseException:
                transport.abort()
                raise
            conn.connection_made(tls_transport)  # start_tls leaves that to its caller
        else:
            await self.loop.create_connection(lambda: conn, server.host, server.port,
                                              ssl=tls.context, server_hostname=tls.sni)
        why = check_name(conn.transport.get_extra_info("ssl_object"), tls.verify_name)
        if why is not None:
            conn.abort()
            raise ssl.SSLCertVerificationError(why)

    def server_changed(self, server: Server) -> None:
        """Backend listener: a server that takes no new work keeps no idle
        connections; one marked DOWN (it hangs, or died) also gives up the
        requests still waiting on it, which are retried elsewhere when safe,
        instead of waiting for timeouts.server."""
        if not server.usable:
            self.close_idle(server)
        if server.health == DOWN:
            waiting = [conn for conn in self.sweeper.watched
                       if type(conn) is UpstreamConnection and conn.server is server
                       and conn.client is not None and not conn.tunnel]
            for conn in waiting:
                if conn.client is not None:
                    conn.client.server_went_down(conn)

    def close_idle(self, server: Server) -> None:
        for conn in self.idle.pop(server, []):
            conn.close()
        self.peak.pop(server, None)
        self.needed.pop(server, None)
        self.purged_at.pop(server, None)

    def prune(self, servers) -> None:
        """After a reload: drop idle connections to servers that are gone."""
        keep = set(servers)
        for server in [s for s in self.idle if s not in keep]:
            self.close_idle(server)

    def close_all(self) -> None:
        if self.purge_handle is not None:
            self.purge_handle.cancel()
            self.purge_handle = None
        for server in list(self.idle):
            self.close_idle(server)
