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
would have nothing to offer there.
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
from .. import model
from . import proxy_protocol
from .context import ProxyContext

log = logging.getLogger("lbcore")

# HAProxy's termination codes: cause (C client, S server, s server timeout,
# K killed by an admin/stop, D server marked DOWN, R local resource), then
# the state it happened in (Q queued, C connecting, D data).
NO_SERVER = "SC"
QUEUE_TIMEOUT = "sQ"
CONNECT_FAILED = "SC"
CONNECT_TIMEOUT = "sC"
LOCAL_FAILURE = "RC"
KILLED = "K"
SERVER_DOWN = "D"

NOSRV = "<NOSRV>"

# HAProxy's turn-around before retrying the same server after a fast
# failure: reconnecting at once to a port that just refused would fail the
# same way.
MAX_TURNAROUND = 1.0

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

    def accept(self, sock: socket.socket, peer) -> None:
        backend = self.frontend.backend  # read per connection: a reload swaps it
        if not any(b is backend for b in self._watched):
            backend.listeners.append(self._server_changed)
            self._watched.append(backend)
        session = TcpSession(self, backend, sock, peer)
        self.sessions.add(session)
        if self.ssl is not None:
            session.start_tls(self.ssl)
        else:
            session.start()

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
        backend = server.backend
        if backend.waiters and server.usable:
            wake_waiters(backend)  # a server came back or got room
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


class TcpSession:
    """One client connection and, once connected, its relay."""

    __slots__ = (
        "proxy", "ctx", "loop", "frontend", "backend", "client", "peer",
        "client_key", "server", "upstream", "relay", "tried", "retries",
        "started", "t0", "t_queue", "t_attempt", "t_connect", "timer",
        "queued", "connecting", "server_counted", "finished", "tls_side", "stick_keys",
    )

    def __init__(self, proxy: TcpProxy, backend: model.Backend, client: socket.socket, peer) -> None:
        self.proxy = proxy
        self.ctx = proxy.ctx
        self.loop = proxy.loop
        self.frontend = proxy.frontend
        self.backend = backend
        self.client = client
        self.peer = peer
        self.client_key = _client_key(peer)
        self.server: Optional[model.Server] = None
        self.upstream: Optional[socket.socket] = None  # the server socket while connecting
        self.relay = None
        self.tried: list[model.Server] = []
        self.retries = 0
        self.started = time.time()
        self.t0 = time.monotonic()
        self.t_queue = 0.0
        self.t_attempt = self.t0
        self.t_connect: Optional[float] = None
        self.timer = None
        self.queued = False  # waiting in backend.waiters for a server slot
        self.connecting = False  # a writer is registered on upstream
        self.server_counted = False  # server.session_start() not yet matched
        self.finished = False
        self.tls_side: Optional[_Side] = None  # the client's SSL transport, if TLS
        self.stick_keys = None  # the backend's stick rules' keys, stored once connected

    # -- connect -------------------------------------------------------------

    def start(self) -> None:
        self.ctx.opened(self.frontend)
        self.backend.session_start()
        self._dispatch()

    def start_tls(self, context: ssl.SSLContext) -> None:
        """Handshake first; the server is chosen once the client is in."""
        self.ctx.opened(self.frontend)
        self.backend.session_start()
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
        self.tls_side.transport.pause_reading()
        if self.finished:
            self.tls_side.transport.abort()
            return
        self._dispatch()

    def _client_gone_early(self) -> None:
        """The TLS client left while its server was being chosen or
        connected (HAProxy: CC)."""
        self.frontend.client_aborts += 1
        self.kill("C")

    def _handshake_failed(self, task) -> None:
        """Done-callback of the accept: a failed or timed-out handshake never
        reached connection_made (HAProxy logs these as CR)."""
        if task.cancelled() or task.exception() is not None:
            if self.tls_side.transport is None and not self.finished:
                self.frontend.request_errors += 1
                self._finish("CR")

    def _dispatch(self) -> None:
        try:
            backend = self.backend
            server = None
            persistence = backend.persist
            if persistence is not None and persistence.rules:
                # Stick rules (lbcore/persist.py): the server this client
                # (src) or this address (dst) was given, while it may serve.
                self.stick_keys = persistence.keys(self.peer[0], self._local_ip)
                server = persistence.matched(self.stick_keys)
            if server is None:
                server = backend.pick(client_key=self.client_key)
            if server is None:
                if backend.candidates and backend.spec.timeouts.queue > 0:
                    self._enqueue()  # every usable server is at its maxconn
                    return
                # HAProxy counts a connection that found no server as a
                # backend connection error.
                backend.connection_errors += 1
                self._finish(NO_SERVER)
                return
            self._connect(server)
        except Exception:
            log.exception("tcp session start failed")
            self._finish("IC")

    # -- queue (per-server maxconn) -------------------------------------------

    def _enqueue(self) -> None:
        backend = self.backend
        backend.waiters.append(self)
        self.queued = True
        backend.queue_cur += 1
        if backend.queue_cur > backend.queue_max:
            backend.queue_max = backend.queue_cur
        self.timer = self.loop.call_later(backend.spec.timeouts.queue, self._on_queue_timeout)

    def _unqueue(self) -> None:
        if self.queued:
            self.queued = False
            self.t_queue = time.monotonic() - self.t0
            try:
                self.backend.waiters.remove(self)
            except ValueError:
                pass  # already taken off by wake_waiters
            self.backend.queue_cur -= 1

    def dequeued(self, server: model.Server) -> None:
        """A slot opened on `server` (called by wake_waiters)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._unqueue()
        try:
            self._connect(server)
        except Exception:
            log.exception("tcp connect after queue failed")
            self.kill("I")

    def _on_queue_timeout(self) -> None:
        self.timer = None
        self._unqueue()
        self.backend.connection_errors += 1
        try:
            self._finish(QUEUE_TIMEOUT)
        except Exception:
            log.exception("tcp queue timeout handler failed")

    # -- connect -------------------------------------------------------------

    def _connect(self, server: model.Server) -> None:
        self.timer = None
        if self.finished:
            return
        self.server = server
        server.session_start()
        self.server_counted = True
        self.t_attempt = time.monotonic()
        target = self.proxy.sockaddr(server)
        if target is None:
            self.loop.create_task(self._resolve_then_connect(server))
            return
        self._connect_to(*target)

    async def _resolve_then_connect(self, server: model.Server) -> None:
        try:
            target = await self.proxy.resolve(server)
        except (OSError, IndexError) as exc:
            log.warning("tcp %s: cannot resolve %s: %s", self.frontend.name, server.host, exc)
            if not self.finished:
                self._connect_failed(timed_out=False)
            return
        if not self.finished:
            self._connect_to(*target)

    def _connect_to(self, family: int, sockaddr) -> None:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:  # out of fds: our problem, not the server's
            log.error("tcp %s: cannot create a socket: %s", self.frontend.name, exc)
            self._end_server_session()
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

    def _end_server_session(self) -> None:
        if self.server_counted:
            self.server_counted = False
            self.server.session_end()
            if self.backend.waiters:
                wake_waiters(self.backend)

    def _connect_failed(self, timed_out: bool) -> None:
        server = self.server
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None
        self._end_server_session()
        server.connection_errors += 1
        try:
            self.ctx.observe_failure(server, "L4TOUT" if timed_out else "L4CON")
        except Exception:
            log.exception("passive health hook failed")
        if server not in self.tried:
            self.tried.append(server)
        backend = self.backend
        if self.retries >= backend.spec.retries:
            backend.connection_errors += 1
            self._finish(CONNECT_TIMEOUT if timed_out else CONNECT_FAILED)
            return
        self.retries += 1
        backend.retries += 1
        server.retries += 1
        target = self._retry_target(server)
        if target is None:
            backend.connection_errors += 1
            self._finish(CONNECT_TIMEOUT if timed_out else CONNECT_FAILED)
            return
        if target is not server:
            backend.redispatches += 1
            server.redispatches += 1
            self._connect(target)
        elif timed_out:
            self._connect(server)  # the timeout was the wait already
        else:
            delay = min(MAX_TURNAROUND, backend.spec.timeouts.connect)
            self.timer = self.loop.call_later(delay, self._retry, server)

    def _retry(self, server: model.Server) -> None:
        try:
            self._connect(server)
        except Exception:
            log.exception("tcp connect retry failed")
            self.kill("I")

    def _retry_target(self, failed: model.Server) -> Optional[model.Server]:
        """Where the next attempt goes. As in HAProxy, with redispatch a
        retry moves to another server, except under `balance source`, where
        only the last retry moves: the hash pins a client to its server."""
        backend = self.backend
        spec = backend.spec
        last = self.retries >= spec.retries
        if spec.redispatch and (spec.balance != "source" or last):
            key = self.client_key
            other = backend.pick(client_key=key, exclude=self.tried)
            if other is None or other in self.tried:
                # Everyone failed once: go around again, avoiding the last.
                other = backend.pick(client_key=key, exclude=failed)
            if other is not None:
                return other
        return failed if failed.usable or not spec.redispatch else None

    # -- relay ---------------------------------------------------------------

    def _local_ip(self) -> str:
        try:
            return self.client.getsockname()[0]
        except OSError:
            return ""

    def _established(self) -> None:
        now = time.monotonic()
        self.t_connect = now - self.t_attempt
        server = self.server
        if self.stick_keys is not None:
            self.backend.persist.store(self.stick_keys, server)
        preamble = b""
        if server.spec.send_proxy:
            preamble = proxy_protocol.header(server.spec.send_proxy, self.peer, self.client.getsockname())
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
        if self.finished:  # killed meanwhile
            server_side.transport.abort()
            return
        relay = TransportRelay(self.loop, self.tls_side, server_side, self._relay_closed,
                               counters=(self.frontend, self.backend, self.server),
                               timeout=self.backend.spec.timeouts.tunnel, preamble=preamble)
        self.relay = relay
        relay.start()

    def _relay_closed(self, relay) -> None:
        self._finish(relay.termination)

    def kill(self, cause: str) -> None:
        """Close now; `cause` is the first letter of the termination code."""
        if self.finished:
            return
        if self.relay is not None:
            self.relay.close(cause + "D")  # calls _finish through _relay_closed
            return
        self._finish(cause + ("Q" if self.server is None else "C"))

    def _finish(self, termination: str) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._unqueue()
        if self.connecting:
            self.connecting = False
            try:
                self.loop.remove_writer(self.upstream.fileno())
            except Exception:  # the loop may be closing
                pass
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None
        if self.relay is None:
            tls_side = self.tls_side
            if tls_side is not None and tls_side.transport is not None:
                tls_side.transport.abort()  # it owns the socket now
            self.client.close()  # the relay closes it otherwise
        self._end_server_session()
        self.backend.session_end()
        self.proxy.sessions.discard(self)
        try:
            self.ctx.closed(self.frontend)
        finally:
            self._log(termination)

    def _log(self, termination: str) -> None:
        access_log = self.ctx.access_log
        if not access_log.enabled:
            return
        relay = self.relay
        try:
            access_log.tcp(
                self.peer, self.frontend.name, self.backend.name,
                self.server.name if self.server is not None else NOSRV,
                self.t_queue, self.t_connect, time.monotonic() - self.t0,
                relay.bytes_out if relay is not None else 0,
                relay.bytes_in if relay is not None else 0,
                termination, retries=self.retries, started=self.started)
        except Exception:
            log.exception("tcp access log failed")


# -- TLS clients -----------------------------------------------------------------

class _Side(asyncio.Protocol):
    """One end of a TransportRelay; the relay is attached once both exist."""

    __slots__ = ("upstream", "transport", "relay", "on_made", "on_lost", "eof")

    def __init__(self, upstream: bool) -> None:
        self.upstream = upstream
        self.transport = None
        self.relay: Optional[TransportRelay] = None
        self.on_made = None  # before the relay exists: the session's hooks
        self.on_lost = None
        self.eof = False

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
    half-close, so an EOF towards the TLS client ends the session once the
    pending bytes are flushed."""

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
        side.eof = True
        other = self.other(side)
        if other.transport.can_write_eof():
            other.transport.write_eof()
        if self.client.eof and self.server.eof:
            self.close("--")
            return False
        if side is self.server:
            # The TLS client cannot be half-closed: flush and end.
            self.close("--")
            return False
        return True  # keep the server's direction flowing (a no-op for SSL)

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


# -- helpers -----------------------------------------------------------------

_waking: set[int] = set()


def wake_waiters(backend: model.Backend) -> None:
    """Server slots opened: hand them to the oldest queued connections.
    (A backend's waiters are all tcp sessions: its mode is tcp.)"""
    if id(backend) in _waking:
        return  # a connect that failed at once, inside the loop below: it goes on
    _waking.add(id(backend))
    try:
        waiters = backend.waiters
        while waiters:
            session = waiters[0]
            server = backend.pick(client_key=session.client_key)
            if server is None:
                return
            waiters.pop(0)
            session.dequeued(server)
    finally:
        _waking.discard(id(backend))

def _client_key(peer) -> bytes:
    """The client address as bytes, for `balance source`."""
    host = peer[0]
    try:
        if ":" in host:
            return socket.inet_pton(socket.AF_INET6, host.split("%")[0])
        return socket.inet_pton(socket.AF_INET, host)
    except (OSError, TypeError):
        return str(host).encode()
