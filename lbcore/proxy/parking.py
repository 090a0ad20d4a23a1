"""Idle keep-alive client connections, held off the event loop's transports.

An idle http client connection on a uvloop transport costs ~1.7 KB of the
process's memory, more than HAProxy's whole ~1.15 KB: uvloop's transport
(~700 B), its libuv handle (~250 B), its bound callbacks, its fd->transport
entry and socket object (~230 B), and lbcore's own ClientConnection with
what hangs off it (~600 B). Most OpenStack API clients (SDK pools, services'
keep-alive sessions) sit idle most of the time. So, like nginx freeing a
keep-alive connection's buffers while it waits, a plain-http connection
that has been idle for PARK_AFTER seconds leaves its transport: its socket
is duplicated (closing the transport's descriptor then sends nothing to the
client), and what is left of it is a `Parked` record (its descriptor, its
client address, its frontend's proxy, its keep-alive deadline, its rule
tracking and its adoption slot) in one epoll set for the whole process.

When it turns readable, a peek tells a new request from the client's close:
the close (or an error) ends it here; a request gets it a new transport and
a new ClientConnection carrying the same state, which reads the bytes as if
the connection had never left (`HttpProxy.unpark`). Timeouts go through the
same sweeper as every connection's; maxconn and the current-session counts
never see a parked connection leave; a graceful stop or a reload that
retires the frontend closes it as it would close an idle one.

What never parks (it stays as before, on its transport): TLS connections
(the session lives in the transport's SSL object), tcp-mode ones, and any
connection with a request, a response or bytes in flight (proxy/http.py's
`ClientConnection._parkable`). Busy keep-alive clients never wait PARK_AFTER
between requests, so they never pay the park and unpark (a few system calls
and a transport, ~40 us).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Optional

from ..health.poller import ERR, IN, ProbePoller
from ..heap import release_free_memory
from ..rules.frontend import connection_done

log = logging.getLogger("lbcore")

# Seconds idle before a connection parks, on the sweeper's tick (0.1 s): it
# parks after 0.1-0.2 s. A client sending requests back to back, or with
# under 0.1 s between them, stays on its transport; a crowd of clients going
# idle does not hold transports for long (whose memory the heap keeps).
PARK_AFTER = 0.2
# Seconds before a connection that found no free descriptor to park with
# tries again (proxy/http.py's `_park`).
PARK_RETRY = 0.5
# After this many connections parked, the memory their transports held goes
# back to the system (malloc_trim, ~0.3 ms), TRIM_DELAY later: glibc keeps
# freed pages otherwise, and the process's resident size would stay at the
# peak of connections on transports. A crowd arriving goes on parking after
# that trim: TRIM_DELAY after each trim, another if TRIM_TAIL more have
# parked since, until the crowd has settled (otherwise the last few hundred
# of a burst were never trimmed: up to ~70 B per client of 2,000 measured).
TRIM_AFTER = 256
TRIM_TAIL = 32
TRIM_DELAY = 0.5


class Parked:
    """One parked connection: what its next ClientConnection needs."""

    __slots__ = ("proxy", "fd", "peer", "deadline", "kept", "facts")

    def __init__(self, proxy, fd: int, peer, deadline: float, kept, facts) -> None:
        self.proxy = proxy  # the frontend's HttpProxy (reconfigured in place on a reload)
        self.fd = fd
        self.peer = peer
        self.deadline = deadline  # the keep-alive deadline, for the sweeper
        self.kept = kept  # its lbcore.adoption slot in a worker, or None
        self.facts = facts  # the connection as its frontend's rules tracked it, or None

    def ready(self, events: int) -> None:
        """Readable (or in error): the client's next request, or its close."""
        if events & ERR:
            self.close()
            return
        try:
            sock = socket.socket(fileno=self.fd)
        except OSError:
            self.close()
            return
        try:
            peeked = sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            sock.detach()
            return  # woken for nothing: still idle
        except OSError:
            peeked = b""  # reset: nothing more will come
        if not peeked:
            sock.detach()
            self.close()
            return
        parking = self.proxy.ctx.parking
        parking.leave(self)
        parking.unparks += 1
        self.fd = -1  # the descriptor is the new transport's now: close() must not touch it
        self.proxy.unpark(self, sock)

    def expire(self) -> None:
        """The sweeper: the keep-alive timeout (or a stop's grace) passed."""
        self.close()

    def close(self) -> None:
        """The connection ends while parked, as an idle one would: FIN, no log."""
        if self.fd < 0:
            return  # closed already
        ctx = self.proxy.ctx
        ctx.parking.leave(self)
        kept = self.kept
        if kept is not None:
            self.kept = None
            kept.release(True)  # shut down: the master's copy must not hold it open
        try:
            os.close(self.fd)
        except OSError:
            pass
        self.fd = -1
        ctx.closed(self.proxy.frontend)
        facts = self.facts
        if facts is not None:
            self.facts = None
            connection_done(facts)


class Parking:
    """The process's parked connections: one epoll set, watched by the loop
    as a single reader (health/poller.py's ProbePoller)."""

    __slots__ = ("loop", "sweeper", "poller", "parks", "unparks", "untrimmed", "trim", "trims")

    def __init__(self, loop, sweeper) -> None:
        self.loop = loop
        self.sweeper = sweeper
        self.poller = ProbePoller(loop)
        self.parks = 0  # connections parked, ever
        self.unparks = 0  # connections given a transport again, ever
        self.untrimmed = 0  # parked since the last malloc_trim
        self.trim = None  # its timer
        self.trims = 0  # malloc_trims done, ever

    def __len__(self) -> int:
        return len(self.poller)

    def park(self, proxy, sock: socket.socket, peer, deadline: float, facts) -> Optional[Parked]:
        """`sock` (our own descriptor of an idle connection) joins the set;
        None if it cannot (the epoll set is full: `sock` is closed)."""
        fd = sock.fileno()
        parked = Parked(proxy, fd, peer, deadline, None, facts)
        try:
            self.poller.watch(parked, fd, IN)
        except OSError as exc:  # ENOSPC: fs.epoll.max_user_watches; ENOMEM
            log.warning("an idle connection stays on its transport: %s", exc)
            sock.close()
            return None
        proxy.parked[fd] = parked
        proxy.frontend.parked += 1
        self.sweeper.watched.add(parked)
        self.parks += 1
        self.untrimmed += 1
        if self.untrimmed >= TRIM_AFTER and self.trim is None:
            self.trim = self.loop.call_later(TRIM_DELAY, self._trim)
        return parked

    def _trim(self) -> None:
        if self.untrimmed < TRIM_TAIL:
            self.trim = None  # the crowd has settled (the next trim after TRIM_AFTER more)
            return
        self.untrimmed = 0
        self.trims += 1
        release_free_memory()
        # Those still arriving park after this trim: look again later.
        self.trim = self.loop.call_later(TRIM_DELAY, self._trim)

    def leave(self, parked: Parked) -> None:
        """`parked` leaves the set (its descriptor stays open: it goes on to
        a transport, or is closed by the caller)."""
        proxy = parked.proxy
        if proxy.parked.pop(parked.fd, None) is None:
            return
        # Out of the epoll set explicitly: closing the descriptor would not
        # take it out while the master process holds a copy (lbcore.adoption).
        self.poller.release(parked.fd)
        proxy.frontend.parked -= 1
        self.sweeper.watched.discard(parked)

    def close(self) -> None:
        if self.trim is not None:
            self.trim.cancel()
            self.trim = None
        self.poller.close()
