"""Pure-Python byte relay between two connected non-blocking sockets.

The reference implementation of `lbcore_ext.Relay`; relay.pyx is the same
state machine in Cython with splice(2) for large transfers. Both are driven
by the event loop's add_reader/add_writer on raw fds (uvloop accepts them on
fds it does not own) and share one contract:

- back-pressure: a direction reads only when everything it read before has
  been written, so at most one buffer per direction is ever held;
- half-close: EOF from one side becomes shutdown(SHUT_WR) on the other once
  the pending bytes are out, and the other direction keeps flowing;
- the relay ends when both directions have ended, on an error from either
  peer (the other peer is then reset so it sees the failure too), on
  `timeout` seconds without traffic, or on `close()`; `on_close(relay)` is
  called exactly once and nothing raises out of a loop callback.

Reads go into one scratch buffer shared by every relay in the process and
are sent straight on; only the unsent tail of a read is copied aside. An
idle connection therefore holds no buffer at all.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from typing import Callable, Optional, Sequence

log = logging.getLogger("lbcore")

IMPLEMENTATION = "python"

# One read per readiness event, looping only while reads fill the buffer:
# a short read means the socket is drained, and asking again would only
# cost a recv that fails with EAGAIN.
SCRATCH_SIZE = 256 * 1024
MAX_READS_PER_EVENT = 8  # fairness between connections under a flood

_scratch = bytearray(SCRATCH_SIZE)
_scratch_view = memoryview(_scratch)

# HAProxy's termination codes: first the side/cause, then the session state
# (D = data phase).
NORMAL = "--"
CLIENT_ERROR = "CD"
SERVER_ERROR = "SD"
IDLE_TIMEOUT = "cD"
INTERNAL_ERROR = "ID"

_LINGER_RESET = struct.pack("ii", 1, 0)


def configure(splice: Optional[bool] = None, splice_after: Optional[int] = None) -> None:
    """Accepted for API parity with the Cython relay; this one never splices."""


def splice_available() -> bool:
    return False


class _Flow:
    """One direction: bytes read from `src` are written to `dst`."""

    __slots__ = (
        "relay", "src", "dst", "src_fd", "dst_fd", "src_side", "dst_side",
        "counter_attr", "pending", "eof", "done", "reading", "writing",
        "nbytes", "on_readable", "on_writable",
    )

    def __init__(self, relay: "Relay", src: socket.socket, dst: socket.socket,
                 src_side: str, dst_side: str, counter_attr: str) -> None:
        self.relay = relay
        self.src = src
        self.dst = dst
        self.src_fd = src.fileno()
        self.dst_fd = dst.fileno()
        self.src_side = src_side  # termination code if reading src fails
        self.dst_side = dst_side
        self.counter_attr = counter_attr
        self.pending: Optional[memoryview] = None  # read but not yet written
        self.eof = False
        self.done = False
        self.reading = False
        self.writing = False
        self.nbytes = 0
        # Bound once: add_reader/add_writer are called on every pause/resume.
        self.on_readable = self._on_readable
        self.on_writable = self._on_writable

    # -- loop registration ---------------------------------------------------

    def _want_read(self) -> None:
        if not self.reading:
            self.relay.loop.add_reader(self.src_fd, self.on_readable)
            self.reading = True

    def _stop_read(self) -> None:
        if self.reading:
            self.relay.loop.remove_reader(self.src_fd)
            self.reading = False

    def _want_write(self) -> None:
        if not self.writing:
            self.relay.loop.add_writer(self.dst_fd, self.on_writable)
            self.writing = True

    def _stop_write(self) -> None:
        if self.writing:
            self.relay.loop.remove_writer(self.dst_fd)
            self.writing = False

    def start(self) -> None:
        if self.pending is not None:
            self._want_write()
        else:
            self._want_read()

    def stop(self) -> None:
        self._stop_read()
        self._stop_write()

    # -- data ----------------------------------------------------------------

    def _count(self, n: int) -> None:
        self.nbytes += n
        attr = self.counter_attr
        for counters in self.relay.counters:
            setattr(counters, attr, getattr(counters, attr) + n)

    def _on_readable(self) -> None:
        relay = self.relay
        try:
            for _ in range(MAX_READS_PER_EVENT):
                try:
                    n = self.src.recv_into(_scratch)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    relay._fail(self.src_side, self.dst)
                    return
                if n == 0:
                    self._on_eof()
                    return
                relay.last_activity = time.monotonic()
                self._count(n)
                try:
                    sent = self.dst.send(_scratch_view[:n])
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    relay._fail(self.dst_side, self.src)
                    return
                if sent < n:
                    # The scratch buffer is shared: keep a private copy of the
                    # tail and stop reading until the peer has taken it.
                    self.pending = memoryview(bytes(_scratch_view[sent:n]))
                    self._stop_read()
                    self._want_write()
                    return
                if n < SCRATCH_SIZE:
                    return
        except Exception:
            log.exception("tcp relay read failed")
            relay.close(INTERNAL_ERROR)

    def _on_writable(self) -> None:
        relay = self.relay
        try:
            pending = self.pending
            if pending is None:  # spurious wake-up
                self._stop_write()
                return
            try:
                sent = self.dst.send(pending)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                relay._fail(self.dst_side, self.src)
                return
            relay.last_activity = time.monotonic()
            if sent < len(pending):
                self.pending = pending[sent:]
                return
            self.pending = None
            self._stop_write()
            if self.eof:
                self._end()
            else:
                self._want_read()
        except Exception:
            log.exception("tcp relay write failed")
            relay.close(INTERNAL_ERROR)

    def _on_eof(self) -> None:
        self.eof = True
        self._stop_read()
        if self.pending is None:
            self._end()

    def _end(self) -> None:
        """Everything from src is written: pass the FIN on (half-close)."""
        try:
            self.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the peer is already gone; the other direction will tell
        self.done = True
        self.relay._flow_done()


class Relay:
    """Relays bytes between `client` and `server` (connected, non-blocking
    sockets that the relay now owns and closes).

    counters: objects whose `bytes_in` (client -> server) and `bytes_out`
    (server -> client) are increased as bytes are read.
    timeout: seconds of inactivity (no byte moving either way) after which
    both sides are closed; 0 disables it.
    preamble: bytes sent to the server before anything from the client
    (a PROXY protocol header, or what a client sent ahead of a tunnel).
    to_client: bytes sent to the client before anything from the server
    (what a server sent right behind its 101 Switching Protocols).
    """

    def __init__(self, loop, client: socket.socket, server: socket.socket,
                 on_close: Callable[["Relay"], None], counters: Sequence = (),
                 timeout: float = 0.0, preamble: bytes = b"", to_client: bytes = b"") -> None:
        self.loop = loop
        self.client = client
        self.server = server
        self.on_close = on_close
        self.counters = tuple(counters)
        self.timeout = timeout
        self.closed = False
        self.termination = ""
        self.last_activity = time.monotonic()
        self._timer = None
        self.upstream = _Flow(self, client, server, CLIENT_ERROR, SERVER_ERROR, "bytes_in")
        self.downstream = _Flow(self, server, client, SERVER_ERROR, CLIENT_ERROR, "bytes_out")
        if preamble:
            self.upstream.pending = memoryview(bytes(preamble))
        if to_client:
            self.downstream.pending = memoryview(bytes(to_client))

    @property
    def bytes_in(self) -> int:
        return self.upstream.nbytes

    @property
    def bytes_out(self) -> int:
        return self.downstream.nbytes

    @property
    def spliced_in(self) -> int:
        return 0

    @property
    def spliced_out(self) -> int:
        return 0

    def start(self) -> None:
        self.last_activity = time.monotonic()
        self.upstream.start()
        self.downstream.start()
        if self.timeout > 0:
            self._timer = self.loop.call_later(self.timeout, self._check_idle)

    def _check_idle(self) -> None:
        # One timer per relay, re-armed only when it fires: moving the
        # deadline on every read would cost more than the read.
        self._timer = None
        if self.closed:
            return
        idle = time.monotonic() - self.last_activity
        if idle >= self.timeout:
            self.close(IDLE_TIMEOUT)
        else:
            self._timer = self.loop.call_later(self.timeout - idle, self._check_idle)

    def _flow_done(self) -> None:
        if self.upstream.done and self.downstream.done:
            self.close(NORMAL)

    def _fail(self, termination: str, other: socket.socket) -> None:
        """A peer failed (reset, broken pipe): reset the other one too, so a
        client never mistakes a broken stream for a complete one."""
        try:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass
        self.close(termination)

    def close(self, termination: str = NORMAL) -> None:
        """End the relay: close both sockets; idempotent."""
        if self.closed:
            return
        self.closed = True
        self.termination = termination
        for flow in (self.upstream, self.downstream):
            try:
                flow.stop()
            except Exception:  # the loop may already be closed at shutdown
                pass
            flow.pending = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # Fds leave the loop before they are closed: a reused fd number must
        # never inherit a stale registration.
        self.client.close()
        self.server.close()
        try:
            self.on_close(self)
        except Exception:
            log.exception("tcp relay close callback failed")
