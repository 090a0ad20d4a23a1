"""tcp mode: each client connection is balanced to one server and its bytes
are relayed both ways by `lbcore_ext.Relay` (splice for bulk in the Cython
build), with back-pressure, half-close and the tunnel inactivity timeout.

A session goes: pick a server -> non-blocking connect (timeouts.connect) ->
on failure retry (`retries`, moved to another server when `redispatch`
allows) -> optional PROXY protocol header -> relay -> one access log line.
Raw sockets are ours from accept to close: uvloop would keep the fd of a
transport, and splice needs the fd.

A frontend with `tls` terminates TLS: its clients are uvloop SSL transports,
so those sessions are relayed by `TransportRelay` (same interface, asyncio
flow control) instead; bytes are decrypted in user space anyway, so splice
would have nothing to offer there. The same goes for a server with `tls`
(lbcore/server_tls.py): its handshake follows the TCP connect (and the
PROXY header, sent in clear first, as HAProxy), and counts as part of the
connect: a failed one is retried like a refused connect.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import ssl
import time
from typing import Optional

import lbcore_ext
from lbcore_ext import Relay

from ..certificates import tls_context
from ..server_tls import check_name
from .. import model
from . import proxy_protocol
from ..rules import remember_sni
from ..rules.frontend import connection_done
from .context import ProxyContext
from .stream import NOSRV, Stream, client_key

log = logging.getLogger("lbcore")

# HAProxy's termination codes: cause (C client, S server, s server timeout,
# K killed by an admin/stop, D server marked DOWN, R local resource), then
# the state it happened in (Q queued, C connecting, D data). The stream
# sets those of the queue and of connect failures.
LOCAL_FAILURE = "RC"
KILLED = "K"
SERVER_DOWN = "D"

_CONNECT_PENDING = {errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK, errno.EINTR}
_DNS_TTL = 30.0

_announced = False


def _announce_relay() -> None:
    """Say once per process which relay moves the bytes: a missing build
    of the extension should be visible, not silently slower."""
    global _announced
    if not _announced:
        _announced = True
        log.info("tcp relay: %s%s", lbcore_ext.IMPLEMENTATION,
                 " (splice for large transfers)" if lbcore_ext.splice_available() else "")


class TcpProxy:
    """The tcp-mode handler of one frontend: `accept(sock, peer)` per
    connection (from the Acceptor), `close_all()` at the end of a stop's
    grace period."""

    def __init__(self, frontend: model.Frontend, ctx: ProxyContext) -> None:
        self.frontend = frontend
        self.ctx = ctx
        self.loop = ctx.loop
        self.sessions: set[TcpSession] = set()
        self._watched: list[model.Backend] = []
        self._resolved: dict[tuple[str, int], tuple[float, int, tuple]] = {}
        self.ssl: Optional[ssl.SSLContext] = None
        self.reconfigure()
        _announce_relay()

    def reconfigure(self) -> None:
        """(Re)load the frontend's TLS settings; called again on reload."""
        tls = self.frontend.spec.tls
        self.ssl = tls_context(tls) if tls is not None else None
        if self.ssl is not None:
            remember_sni(self.ssl)  # for ssl_fc_sni in rules

    def accept(self, sock: socket.socket, peer) -> None:
        backend = self.frontend.backend  # read per connection: a reload swaps it
        if not any(b is backend for b in self._watched):
            backend.listeners.append(self._server_changed)
            self._watched.append(backend)
        session = TcpSession(self, sock, peer)
        self.sessions.add(session)
        if self.ssl is not None:
            session.start_tls(self.ssl)
        else:
            session.start(backend)

    def close_all(self) -> None:
        """Hard-close every session (HAProxy's `K` termination)."""
        for session in list(self.sessions):
            try:
                session.kill(KILLED)
            except Exception:
                log.exception("tcp session close failed")

    def detach(self) -> None:
        """Stop listening to backends (the frontend is gone)."""
        for backend in self._watched:
            try:
                backend.listeners.remove(self._server_changed)
            except ValueError:
                pass
        self._watched.clear()

    def _server_changed(self, server: model.Server) -> None:
        # on_marked_down: shutdown_sessions -- a server that health checks
        # marked DOWN takes its established sessions with it, so clients
        # (Galera's, typically) reconnect to a live node instead of hanging.
        if server.health != model.DOWN:
            return
        if server.backend.spec.on_marked_down != "shutdown_sessions":
            return
        for session in list(self.sessions):
            if session.server is server and session.relay is not None:
                try:
                    session.kill(SERVER_DOWN)
                except Exception:
                    log.exception("tcp session shutdown failed")

    def sockaddr(self, server: model.Server):
        """(family, sockaddr) for a server, or None while a name resolves."""
        key = (server.host, server.port)
        cached = self._resolved.get(key)
        if cached is not None and (cached[0] == 0 or cached[0] > time.monotonic()):
            return cached[1], cached[2]
        try:
            ip = ipaddress.ip_address(server.host)
        except ValueError:
            return None
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        self._resolved[key] = (0, family, (server.host, server.port))  # literals never expire
        return family, (server.host, server.port)

    async def resolve(self, server: model.Server):
        infos = await self.loop.getaddrinfo(server.host, server.port, type=socket.SOCK_STREAM)
        family, _, _, _, sockaddr = infos[0]
        self._resolved[(server.host, server.port)] = (time.monotonic() + _DNS_TTL, family, sockaddr)
        return family, sockaddr


class TcpSession(Stream):
    """One client connection: its stream (proxy/stream.py: server choice,
    queue, retries, counters, log) and, once connected, its relay. The
    session is its own StreamOwner: it connects and relays."""

    __slots__ = (
        "proxy", "ctx", "loop", "client", "peer", "upstream", "relay",
        "started", "t_attempt", "timer", "connecting", "tls_side", "facts", "server_side",
    )

    def __init__(self, proxy: TcpProxy, client: socket.socket, peer) -> None:
        Stream.__init__(self, self, proxy.frontend, client_key(peer), time.monotonic(), False)
        self.proxy = proxy
        self.ctx = proxy.ctx
        self.loop = proxy.loop
        self.client = client
        self.peer = peer
        self.upstream: Optional[socket.socket] = None  # the server socket while connecting
        self.relay = None
        self.started = time.time()
        self.t_attempt = self.t_begin
        self.timer = None  # the queue or connect timeout
        self.connecting = False  # a writer is registered on upstream
        self.tls_side: Optional[_Side] = None  # the client's SSL transport, if TLS
        self.facts = None  # the connection as rules see it (frontends with rules)
        self.server_side: Optional[_Side] = None  # a TLS server's transport, from its handshake on

    # -- start -----------------------------------------------------------------

    def start(self, backend: model.Backend) -> None:
        self.ctx.opened(self.frontend)
        facts = self._facts(None)
        if facts is not None and not self.frontend.rules.tcp_request(facts):
            self._finish("PR")
            return
        self.choose_backend(backend if facts is None else self.frontend.rules.tcp_backend(facts) or backend)
        self._dispatch()

    def start_tls(self, context: ssl.SSLContext) -> None:
        """Handshake first; the server is chosen once the client is in."""
        self.ctx.opened(self.frontend)
        side = self.tls_side = _Side(upstream=False)
        side.on_made = self._handshake_done
        side.on_lost = self._client_gone_early
        try:
            task = self.loop.create_task(self.loop.connect_accepted_socket(
                lambda: side, self.client, ssl=context,
                ssl_handshake_timeout=self.frontend.spec.timeouts.client))
        except Exception:
            log.exception("tcp TLS accept failed")
            self._finish("IR")
            return
        task.add_done_callback(self._handshake_failed)

    def _handshake_done(self) -> None:
        # The client waits (not read) until its server is connected.
        transport = self.tls_side.transport
        transport.pause_reading()
        if self.ended:
            transport.abort()
            return
        facts = self._facts(transport.get_extra_info("ssl_object"))
        if facts is None:
            self.choose_backend()  # the frontend's, read now: a reload may have swapped it
        elif not self.frontend.rules.tcp_request(facts):
            self._finish("PR")
            return
        else:
            self.choose_backend(self.frontend.rules.tcp_backend(facts))
        self._dispatch()

    def _facts(self, ssl_object):
        """The connection as the frontend's rules see it; None without rules."""
        rules = self.frontend.rules
        if rules is None:
            return None
        self.facts = rules.connection(self.peer, self.client.getsockname(), ssl_object)
        return self.facts

    def _client_gone_early(self) -> None:
        """The TLS client left while its server was being chosen or
        connected (HAProxy: CC)."""
        self.frontend.client_aborts += 1
        self.kill("C")

    def _handshake_failed(self, task) -> None:
        """Done-callback of the accept: a failed or timed-out handshake never
        reached connection_made (HAProxy logs these as CR)."""
        if task.cancelled() or task.exception() is not None:
            if self.tls_side.transport is None and not self.ended:
                self.frontend.request_errors += 1
                self._finish("CR")

    def _dispatch(self) -> None:
        try:
            self.dispatch()
        except Exception:
            log.exception("tcp session start failed")
            self._finish("IC")

    # -- StreamOwner ---------------------------------------------------------------

    def persistent_server(self, stream: Stream, persistence) -> Optional[model.Server]:
        """Stick rules (lbcore/persist.py): the server this client (src) or
        this address (dst) was given, while it may serve."""
        if not persistence.rules:
            return None
        self.stick_keys = persistence.keys(self.peer[0], self._local_ip)
        return persistence.matched(self.stick_keys)

    def stream_queued(self, stream: Stream, timeout: float) -> None:
        self.timer = self.loop.call_later(timeout, self._on_queue_timeout)

    def _on_queue_timeout(self) -> None:
        self.timer = None
        try:
            self.queue_expired()
        except Exception:
            log.exception("tcp queue timeout handler failed")

    def stream_failed(self, stream: Stream, status: int) -> None:
        self._finish(self.terminated)

    def connect_server(self, stream: Stream, server: model.Server) -> None:
        if self.timer is not None:  # the queue timeout, when woken from the queue
            self.timer.cancel()
            self.timer = None
        if self.ended:
            return
        self.t_attempt = time.monotonic()
        target = self.proxy.sockaddr(server)
        if target is None:
            self.loop.create_task(self._resolve_then_connect(server))
            return
        self._connect_to(*target)

    def write_log(self, stream: Stream) -> None:
        access_log = self.ctx.access_log
        if not access_log.enabled:
            return
        relay = self.relay
        server = self.last_server
        try:
            backend = self.backend or self.frontend.backend
            access_log.tcp(
                self.peer, self.frontend.name, backend.name,
                server.name if server is not None else NOSRV,
                self.t_queue, self.t_connect or None, time.monotonic() - self.t_begin,
                relay.bytes_out if relay is not None else 0,
                relay.bytes_in if relay is not None else 0,
                self.terminated, retries=self.attempts, started=self.started)
        except Exception:
            log.exception("tcp access log failed")

    # -- connect -------------------------------------------------------------

    async def _resolve_then_connect(self, server: model.Server) -> None:
        try:
            target = await self.proxy.resolve(server)
        except (OSError, IndexError) as exc:
            log.warning("tcp %s: cannot resolve %s: %s", self.frontend.name, server.host, exc)
            if not self.ended:
                self._connect_failed(timed_out=False)
            return
        if not self.ended:
            self._connect_to(*target)

    def _connect_to(self, family: int, sockaddr) -> None:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:  # out of fds: our problem, not the server's
            log.error("tcp %s: cannot create a socket: %s", self.frontend.name, exc)
            self.release_server()
            self._finish(LOCAL_FAILURE)
            return
        self.upstream = sock
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(sockaddr)
        if err == 0:
            self._established()
        elif err in _CONNECT_PENDING:
            self.loop.add_writer(sock.fileno(), self._on_connect)
            self.connecting = True
            self.timer = self.loop.call_later(self.backend.spec.timeouts.connect, self._on_connect_timeout)
        else:
            self._connect_failed(timed_out=False)

    def _stop_connecting(self) -> None:
        if self.connecting:
            self.connecting = False
            self.loop.remove_writer(self.upstream.fileno())
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_connect(self) -> None:
        try:
            self._stop_connecting()
            err = self.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._connect_failed(timed_out=False)
            else:
                self._established()
        except Exception:
            log.exception("tcp connect handler failed")
            self.kill("I")

    def _on_connect_timeout(self) -> None:
        self.timer = None
        try:
            self._stop_connecting()
            self._connect_failed(timed_out=True)
        except Exception:
            log.exception("tcp connect timeout handler failed")
            self.kill("I")

    def _connect_failed(self, timed_out: bool) -> None:
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None
        self.connect_failed("L4TOUT" if timed_out else "L4CON", self.ctx.observe_failure)

    # -- relay ---------------------------------------------------------------

    def _local_ip(self) -> str:
        try:
            return self.client.getsockname()[0]
        except OSError:
            return ""

    def _established(self) -> None:
        server = self.server
        preamble = b""
        if server.spec.send_proxy:
            preamble = proxy_protocol.header(server.spec.send_proxy, self.peer, self.client.getsockname())
        if server.tls is not None:
            # Connected once the handshake is done too: it may fail, and retry.
            self.loop.create_task(self._server_handshake(server, preamble))
            return
        self.connected(time.monotonic() - self.t_attempt)
        if self.stick_keys is not None:
            self.backend.persist.store(self.stick_keys, server)
        if self.tls_side is not None:
            self.loop.create_task(self._relay_tls(preamble))
            return
        relay = Relay(self.loop, self.client, self.upstream, self._relay_closed,
                      counters=(self.frontend, self.backend, server),
                      timeout=self.backend.spec.timeouts.tunnel, preamble=preamble)
        self.upstream = None  # the relay owns both sockets now
        self.relay = relay
        relay.start()

    async def _relay_tls(self, preamble: bytes) -> None:
        upstream, self.upstream = self.upstream, None
        server_side = _Side(upstream=True)
        try:
            await self.loop.create_connection(lambda: server_side, sock=upstream)
        except Exception as exc:
            log.warning("tcp %s: cannot take over the server connection: %s", self.frontend.name, exc)
            upstream.close()
            self.kill("I")
            return
        if self.ended:  # killed meanwhile
            server_side.transport.abort()
            return
        relay = TransportRelay(self.loop, self.tls_side, server_side, self._relay_closed,
                               counters=(self.frontend, self.backend, self.server),
                               timeout=self.backend.spec.timeouts.tunnel, preamble=preamble)
        self.relay = relay
        relay.start()

    async def _server_handshake(self, server: model.Server, preamble: bytes) -> None:
        """TLS to the server (its `tls`) on the connected socket: the PROXY
        header first, in clear, as HAProxy; a failed handshake or name
        check is a failed connect (retried, counted, seen by passive
        health), bounded by what is left of timeouts.connect."""
        tls = server.tls
        upstream, self.upstream = self.upstream, None
        side = self.server_side = _Side(upstream=True)
        left = self.backend.spec.timeouts.connect - (time.monotonic() - self.t_attempt)
        try:
            if preamble:
                upstream.send(preamble)  # a few bytes into a fresh socket's empty buffer
            await asyncio.wait_for(self.loop.create_connection(
                lambda: side, sock=upstream, ssl=tls.context, server_hostname=tls.sni), max(left, 0.001))
            why = check_name(side.transport.get_extra_info("ssl_object"), tls.verify_name)
            if why is not None:
                raise ssl.SSLCertVerificationError(why)
        except (OSError, asyncio.TimeoutError) as exc:
            self.server_side = None
            if side.transport is not None:
                side.transport.abort()
            else:
                upstream.close()
            if not self.ended and self.server is server:
                log.info("tcp %s: TLS to %s/%s failed: %s", self.frontend.name, self.backend.name,
                         server.name, exc or "timeout")
                timed_out = isinstance(exc, asyncio.TimeoutError)
                self.connect_failed("L4TOUT" if timed_out else "L4CON", self.ctx.observe_failure)
            return
        if self.ended:  # killed meanwhile
            self.server_side = None
            side.transport.abort()
            return
        self.connected(time.monotonic() - self.t_attempt)
        if self.stick_keys is not None:
            self.backend.persist.store(self.stick_keys, server)
        client = self.tls_side
        if client is None:
            # A plain client meets a TLS server: both ends become transports.
            client = _Side(upstream=False)
            try:
                await self.loop.connect_accepted_socket(lambda: client, sock=self.client)
            except Exception as exc:
                log.warning("tcp %s: cannot take over the client connection: %s", self.frontend.name, exc)
                self.kill("I")
                return
            self.tls_side = client  # from now on the transport owns the client socket
            if self.ended:
                return
        self.server_side = None
        relay = TransportRelay(self.loop, client, side, self._relay_closed,
                               counters=(self.frontend, self.backend, server),
                               timeout=self.backend.spec.timeouts.tunnel)
        self.relay = relay
        relay.start()

    def _relay_closed(self, relay) -> None:
        self._finish(relay.termination)

    def kill(self, cause: str) -> None:
        """Close now; `cause` is the first letter of the termination code."""
        if self.ended:
            return
        if self.relay is not None:
            self.relay.close(cause + "D")  # calls _finish through _relay_closed
            return
        self._finish(cause + ("Q" if self.server is None else "C"))

    def _finish(self, termination: str) -> None:
        if self.ended:
            return
        self.terminated = termination
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.connecting:
            self.connecting = False
            try:
                self.loop.remove_writer(self.upstream.fileno())
            except Exception:  # the loop may be closing
                pass
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None
        server_side = self.server_side
        if server_side is not None and server_side.transport is not None:
            self.server_side = None
            server_side.transport.abort()
        if self.relay is None:
            tls_side = self.tls_side
            if tls_side is not None and tls_side.transport is not None:
                tls_side.transport.abort()  # it owns the socket now
            self.client.close()  # the relay closes it otherwise
        self.proxy.sessions.discard(self)
        try:
            self.ctx.closed(self.frontend)
            if self.facts is not None:
                # the counters its tcp_request rules tracked, with its bytes
                connection_done(self.facts, self.bytes_in, self.bytes_out)
        finally:
            self.finish()  # counters, timers, the server slot, the log line


# -- TLS clients -----------------------------------------------------------------

class _Side(asyncio.Protocol):
    """One end of a TransportRelay; the relay is attached once both exist."""

    __slots__ = ("upstream", "transport", "relay", "on_made", "on_lost", "eof", "early")

    def __init__(self, upstream: bool) -> None:
        self.upstream = upstream
        self.transport = None
        self.relay: Optional[TransportRelay] = None
        self.on_made = None  # before the relay exists: the session's hooks
        self.on_lost = None
        self.eof = False
        # Bytes that came before the relay was attached: pause_reading() does
        # not hold back what TLS already decrypted, and a server may speak
        # first (MySQL's greeting) before the relay exists. At most one read's
        # worth per side, since reading is paused or not yet resumed.
        self.early: list = []

    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.on_made is not None:
            try:
                self.on_made()
            except Exception:
                log.exception("tcp TLS session start failed")
                transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.relay is not None:
            self.relay.data(self, data)
        else:
            self.early.append(data)

    def eof_received(self):
        if self.relay is not None:
            return self.relay.eof(self)
        return False

    def pause_writing(self) -> None:
        if self.relay is not None:
            self.relay.other(self).transport.pause_reading()

    def resume_writing(self) -> None:
        if self.relay is not None:
            self.relay.other(self).transport.resume_reading()

    def connection_lost(self, exc) -> None:
        if self.relay is not None:
            self.relay.lost(self, exc)
        elif self.on_lost is not None:
            try:
                self.on_lost()
            except Exception:
                log.exception("tcp TLS session abort failed")


class TransportRelay:
    """Relays between two asyncio transports (a TLS client and its server)
    with the interface of lbcore_ext.Relay: back-pressure through
    pause_writing -> pause_reading on the other side, the idle timeout,
    close(termination) and on_close(relay) once. An SSL transport cannot
    half-close, so an EOF towards a TLS peer (the client, or a server over
    TLS) ends the session once the pending bytes are flushed."""

    def __init__(self, loop, client: _Side, server: _Side, on_close, counters=(),
                 timeout: float = 0.0, preamble: bytes = b"") -> None:
        self.loop = loop
        self.client = client
        self.server = server
        self.on_close = on_close
        self.counters = tuple(counters)
        self.timeout = timeout
        self.preamble = preamble
        self.bytes_in = 0
        self.bytes_out = 0
        self.spliced_in = self.spliced_out = 0
        self.closed = False
        self.termination = ""
        self.last_activity = time.monotonic()
        self._timer = None

    def other(self, side: _Side) -> _Side:
        return self.server if side is self.client else self.client

    def start(self) -> None:
        self.client.relay = self.server.relay = self
        if self.preamble:
            self.server.transport.write(self.preamble)
        for side in (self.client, self.server):
            early, side.early = side.early, []
            for data in early:
                self.data(side, data)
        self.client.transport.resume_reading()
        if self.timeout > 0:
            self._timer = self.loop.call_later(self.timeout, self._check_idle)

    def _check_idle(self) -> None:
        self._timer = None
        if self.closed:
            return
        idle = time.monotonic() - self.last_activity
        if idle >= self.timeout:
            self.close("cD")
        else:
            self._timer = self.loop.call_later(self.timeout - idle, self._check_idle)

    def data(self, side: _Side, data: bytes) -> None:
        if self.closed:
            return
        n = len(data)
        self.last_activity = time.monotonic()
        if side is self.client:
            self.bytes_in += n
            for counters in self.counters:
                counters.bytes_in += n
        else:
            self.bytes_out += n
            for counters in self.counters:
                counters.bytes_out += n
        self.other(side).transport.write(data)

    def eof(self, side: _Side) -> bool:
        if self.closed:
            return False  # a TLS server's close_notify, answering our close
        side.eof = True
        other = self.other(side)
        if not other.transport.can_write_eof():
            # A TLS peer (a TLS client, or a server over TLS) cannot be
            # half-closed through asyncio's SSL transport: flush and end.
            self.close("--")
            return False
        other.transport.write_eof()
        if self.client.eof and self.server.eof:
            self.close("--")
            return False
        return True  # keep the other direction flowing

    def lost(self, side: _Side, exc) -> None:
        if self.closed:
            return
        if exc is None:
            self.close("--")
        else:
            self.close("CD" if side is self.client else "SD")

    def close(self, termination: str = "--") -> None:
        if self.closed:
            return
        self.closed = True
        self.termination = termination
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        graceful = termination[0] in "-c"
        for side in (self.client, self.server):
            transport = side.transport
            if transport is not None and not transport.is_closing():
                if graceful:
                    transport.close()  # flushes what is buffered
                else:
                    transport.abort()
        try:
            self.on_close(self)
        except Exception:
            log.exception("tcp relay close callback failed")
