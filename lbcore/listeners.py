"""Listening sockets and the accept loop.

lbcore accepts connections itself (add_reader on the listening socket)
rather than through `loop.create_server`, for two reasons: maxconn is
enforced by simply not accepting (excess connections wait in the kernel's
backlog, as in HAProxy), and the tcp relay needs to own raw sockets from
accept on (uvloop keeps the fd of every transport it creates).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import resource
import socket
from typing import Callable, Optional, Sequence

from .config import Address

log = logging.getLogger("lbcore")

BACKLOG = 4096
ACCEPT_BATCH = 64  # connections accepted per readiness event
STEAL_INTERVAL = 0.05  # how often a worker empties its siblings' queues
FD_RETRY = 0.1  # out of descriptors: try accepting again after this (or when a connection ends)
FD_QUIET = 1.0  # a shortage is over once accepts went this long without one

# accept() errors that concern one connection, not the listener.
TRANSIENT = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENOBUFS, errno.ENOMEM}
FD_EXHAUSTED = {errno.EMFILE, errno.ENFILE}


def _address_key(host: str, port: int) -> tuple[str, int]:
    if host in ("", "*"):
        host = "0.0.0.0"
    try:
        return ipaddress.ip_address(host).compressed, port
    except ValueError:
        try:
            return socket.gethostbyname(host), port
        except OSError:
            return host, port


class BindError(Exception):
    """A config that loads but cannot be put in place: an address that
    cannot be bound, a certificate that cannot be loaded."""


class InheritedSockets:
    """Listening sockets this process was given instead of binding them: by
    systemd (socket activation) or by the lbcore it replaces (-sf). A bind
    takes the ones whose local address it names, so an address keeps its
    accept queue, and the connections waiting in it, across a restart.
    Also those this process bound itself before importing the server
    (lbcore.bind_first), by the Address they were bound for."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, int], list[socket.socket]] = {}
        self.bound: dict[Address, socket.socket] = {}

    def add(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        name = sock.getsockname()
        self.groups.setdefault(_address_key(name[0], name[1]), []).append(sock)

    def waiting(self, address: Address) -> bool:
        """Whether take(address) has a socket to give."""
        return address in self.bound or bool(self.groups) and _address_key(address.host, address.port) in self.groups

    def take(self, address: Address) -> list[socket.socket]:
        sock = self.bound.pop(address, None)
        if sock is not None:
            return [sock]
        if not self.groups:  # the usual start: no parsing of every bind's address
            return []
        return self.groups.pop(_address_key(address.host, address.port), [])

    def __bool__(self) -> bool:
        return bool(self.groups) or bool(self.bound)


inherited = InheritedSockets()


# <linux/in.h>, <linux/in6.h>: not all are in Python's socket module.
IP_FREEBIND, IP_TRANSPARENT, IPV6_TRANSPARENT, IPV6_FREEBIND = 15, 19, 75, 78


def _allow_foreign_address(sock: socket.socket, family: int) -> None:
    """Let `sock` bind an address this host does not hold (yet): the VIP
    of an active/passive pair, held by the peer until a failover. FREEBIND
    needs no privilege; TRANSPARENT (HAProxy's `bind ... transparent`)
    needs CAP_NET_ADMIN and is only added when allowed."""
    level = socket.IPPROTO_IPV6 if family == socket.AF_INET6 else socket.IPPROTO_IP
    freebind, transparent = (IPV6_FREEBIND, IPV6_TRANSPARENT) if family == socket.AF_INET6 \
        else (IP_FREEBIND, IP_TRANSPARENT)
    sock.setsockopt(level, freebind, 1)
    try:
        sock.setsockopt(level, transparent, 1)
    except PermissionError:
        pass


def bind_socket(address: Address, reuse_port: bool = False, transparent: bool = False,
                interface: Optional[str] = None) -> socket.socket:
    """A listening socket on `address`; `interface` limits it to packets
    that arrive on that network interface (SO_BINDTODEVICE, HAProxy's
    `bind ... interface`)."""
    host = address.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if host == "":
        host = "0.0.0.0"
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if transparent:
            _allow_foreign_address(sock, family)
        if interface:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
            except OSError as exc:
                # As HAProxy: a warning, and the address is bound on every
                # interface rather than not at all (a renamed NIC must not
                # take the VIP's listener down).
                log.warning("cannot bind %s to interface %s (%s): listening on every interface",
                            address, interface, exc.strerror or exc)
        sock.bind((host, address.port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Acceptor:
    """Accepts on one listening socket and hands each connection, as a
    non-blocking raw socket, to `on_accept(sock, peer)`.

    `siblings` are the other sockets of a worker's SO_REUSEPORT group
    (lbcore.workers): every STEAL_INTERVAL they are emptied too, so a
    connection the kernel put in the queue of a sibling that died or hangs
    is served here instead of waiting for it. A healthy sibling's queue is
    empty, and looking costs one accept() that says EAGAIN."""

    def __init__(self, loop, sock: socket.socket, on_accept: Callable, may_accept: Callable[[], bool],
                 siblings: Sequence[socket.socket] = (), paused: Optional[set] = None) -> None:
        self.loop = loop
        self.sock = sock
        self.siblings = list(siblings)
        self.on_accept = on_accept
        self.may_accept = may_accept
        self.reading = False
        # The owner's set of the acceptors that stopped reading (a limit, no
        # descriptors), to resume them without looking at every one
        # (ProxyContext.closed, at each connection's end).
        self.paused = paused
        # What accept() makes of a descriptor, read at the first connection
        # (2 us, 2 ms at a start of 1,000 frontends) and kept: socket.accept
        # looks up the listener's family and type (enum conversions) at every one.
        self._kind = None
        self._address = None
        self._steal_timer = None
        self._fd_timer = None
        self.starved_since = 0.0  # when the current shortage of descriptors began (0: none)
        self.starved_last = 0.0  # when accept() last failed for want of one

    @property
    def address(self):
        """The listening address, as getsockname() says (for the logs)."""
        if self._address is None:
            try:
                self._address = self.sock.getsockname()
            except OSError:
                return "?"
        return self._address

    def start(self) -> None:
        fd = self.sock.fileno()
        if not self.reading and fd >= 0:
            self.loop.add_reader(fd, self._ready)
            self.reading = True
            if self.siblings and self._steal_timer is None:
                self._steal_timer = self.loop.call_later(STEAL_INTERVAL, self._steal)
        if self.paused is not None:
            self.paused.discard(self)  # reading, or closed

    def pause(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.sock.fileno())
            self.reading = False
            if self.paused is not None:
                self.paused.add(self)
        if self._steal_timer is not None:
            self._steal_timer.cancel()
            self._steal_timer = None

    def _ready(self) -> None:
        self._accept(self.sock)

    def _steal(self) -> None:
        self._steal_timer = None
        more = False
        for sock in self.siblings:
            if not self.reading:
                return  # paused (maxconn, no descriptors): start() resumes stealing
            more = self._accept(sock) or more
        if self.reading:
            # A full batch means a backlog: come back at once, not next tick.
            self._steal_timer = (self.loop.call_soon(self._steal) if more
                                 else self.loop.call_later(STEAL_INTERVAL, self._steal))

    def _accept(self, listener: socket.socket) -> bool:
        """Up to ACCEPT_BATCH connections from `listener`; True if there may be more."""
        if self._kind is None:
            self._kind = (self.sock.family, self.sock.type, self.sock.proto)
        family, kind, proto = self._kind
        for _ in range(ACCEPT_BATCH):
            if not self.may_accept():
                self.pause()  # resumed by the context when a connection ends
                return False
            try:
                fd, peer = listener._accept()
            except BlockingIOError:
                return False
            except OSError as exc:
                if exc.errno in TRANSIENT:
                    continue
                if exc.errno in FD_EXHAUSTED:
                    self._out_of_descriptors(exc)
                    return False
                log.error("accept on %s failed: %s", self.address, exc)
                return False
            if self.starved_since and self.loop.time() - self.starved_last >= FD_QUIET:
                log.warning("accept on %s: descriptors free again after %.1fs; accepting",
                            self.address, self.starved_last - self.starved_since)
                self.starved_since = 0.0
            conn = socket.socket(family, kind, proto, fd)
            conn.setblocking(False)
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            try:
                self.on_accept(conn, peer)
            except Exception:
                log.exception("connection handler failed")
                conn.close()
        return True

    def _out_of_descriptors(self, exc: OSError) -> None:
        """No descriptor for a new connection: stop accepting rather than
        spin on a listener that stays readable. Connections wait in the
        backlog; accepting resumes when a connection ends (ProxyContext)
        or after FD_RETRY, whichever comes first. Logged once per shortage:
        while a freed descriptor is taken at once by the next waiting
        connection, it is the same shortage."""
        self.starved_last = self.loop.time()
        if not self.starved_since:
            self.starved_since = self.starved_last
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            log.error("accept on %s: %s (descriptor limit %d): accepting paused until descriptors "
                      "are free; new connections wait in the backlog", self.address,
                      exc.strerror or exc, limit)
        self.pause()
        if self._fd_timer is None:
            self._fd_timer = self.loop.call_later(FD_RETRY, self._retry_after_shortage)

    def _retry_after_shortage(self) -> None:
        self._fd_timer = None
        self.start()

    def close(self) -> None:
        if self._fd_timer is not None:
            self._fd_timer.cancel()
            self._fd_timer = None
        self.pause()
        if self.paused is not None:
            self.paused.discard(self)
        self.sock.close()
        for sock in self.siblings:
            sock.close()
        self.siblings = []
