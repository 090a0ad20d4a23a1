# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Byte relay between two connected non-blocking sockets, in Cython.

The same state machine and API as relay_py.py (read its docstring for the
contract: back-pressure, half-close, errors, idle timeout, on_close once),
with two differences that make it fast:

- syscalls are made directly from C on raw fds (recv/send with a shared
  scratch buffer; no Python objects per transfer besides the counters);
- a direction whose reads keep coming back large switches to splice(2)
  through a pipe: socket -> pipe -> socket moves page references instead of
  copying bytes through user space. Small transfers stay on recv/send,
  which costs the same two syscalls without the pipe bookkeeping
  (HAProxy splices only large transfers for the same reason). If the kernel
  refuses splice (EINVAL: a socket type it cannot splice; ENOSYS: no splice
  at all) the direction falls back to recv/send without losing a byte.
"""

import logging
import os

from libc.errno cimport errno, EAGAIN, EINTR, EINVAL, ENOSYS
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy

cdef extern from *:
    """
    #include <sys/types.h>
    #include <sys/socket.h>
    #include <fcntl.h>
    #include <unistd.h>
    #include <time.h>
    #include <errno.h>
    #if defined(__linux__) && defined(SPLICE_F_MOVE)
    #define LB_HAVE_SPLICE 1
    static ssize_t lb_splice(int fd_in, int fd_out, size_t len) {
        return splice(fd_in, NULL, fd_out, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    }
    static int lb_pipe(int *fds) { return pipe2(fds, O_NONBLOCK | O_CLOEXEC); }
    static int lb_pipe_resize(int fd, int size) { return fcntl(fd, F_SETPIPE_SZ, size); }
    static int lb_pipe_size(int fd) { return fcntl(fd, F_GETPIPE_SZ); }
    #else
    #define LB_HAVE_SPLICE 0
    static ssize_t lb_splice(int fd_in, int fd_out, size_t len) { errno = ENOSYS; return -1; }
    static int lb_pipe(int *fds) { errno = ENOSYS; return -1; }
    static int lb_pipe_resize(int fd, int size) { errno = ENOSYS; return -1; }
    static int lb_pipe_size(int fd) { errno = ENOSYS; return -1; }
    #endif
    #ifndef MSG_NOSIGNAL
    #define MSG_NOSIGNAL 0
    #endif
    static double lb_now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    }
    static int lb_reset_on_close(int fd) {
        struct linger l = {1, 0};
        return setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    """
    int LB_HAVE_SPLICE
    int EWOULDBLOCK
    int MSG_NOSIGNAL
    int SHUT_WR
    ssize_t lb_splice(int fd_in, int fd_out, size_t len)
    int lb_pipe(int *fds)
    int lb_pipe_resize(int fd, int size)
    int lb_pipe_size(int fd)
    double lb_now()
    int lb_reset_on_close(int fd)
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    ssize_t read(int fd, void *buf, size_t n)
    int close(int fd)
    int shutdown(int fd, int how)

log = logging.getLogger("lbcore")

IMPLEMENTATION = "cython"

NORMAL = "--"
CLIENT_ERROR = "CD"
SERVER_ERROR = "SD"
IDLE_TIMEOUT = "cD"
INTERNAL_ERROR = "ID"

# Shared by every relay: a read is sent on at once and only an unsent tail
# is copied aside, so an idle connection holds no buffer.
cdef enum:
    SCRATCH_SIZE = 262144
cdef char _scratch[SCRATCH_SIZE]

# One read per readiness event, looping only while reads fill the buffer (a
# short read means the socket is drained; asking again costs an EAGAIN).
cdef enum:
    MAX_READS_PER_EVENT = 8

# When to splice. Measured here (2 shared vCPUs, loopback, kernel 6.18) with
# `python -m lbcore_ext.measure_splice`: N bytes queued on a loopback TCP
# socket moved to another by recv+send or by splice+splice, best of 3, on a
# quiet machine (noisy runs scatter by +-40% but keep the order):
#     N      1K   4K   8K  16K  32K  64K 128K 256K 512K
#   copy us 7.8  8.0  8.2  9.1  9.5 11.5 46.2 39.1 71.0
#   splice  8.1  8.2  8.2  8.3  8.3  8.8 24.0 25.1 56.9
# Up to 8 KiB the two cost the same (syscalls dominate) and the pipe only
# adds bookkeeping; from 16-32 KiB splice wins and the gap grows with N.
# Whole-relay check (256-512 MiB through one Relay on uvloop, 1 MiB writes):
# recv/send 0.38 s of relay CPU per GiB, splice with a 1 MiB pipe 0.22,
# with a 256 KiB pipe 0.28, with the default 64 KiB pipe 0.42.
# So a direction switches after SPLICE_AFTER reads in a row of at least
# SPLICE_MIN bytes: bulk transfers switch within their first 64 KiB, and
# request/response traffic with small messages never does.
cdef Py_ssize_t _splice_min = 32768
cdef int _splice_after = 2
# LBCORE_NO_SPLICE=1 keeps every transfer on recv/send (HAProxy's `nosplice`),
# for kernels or sockets where splice misbehaves, and for comparisons.
cdef bint _splice_enabled = LB_HAVE_SPLICE and os.environ.get("LBCORE_NO_SPLICE", "").strip() in ("", "0")
# 1 MiB pipes let one splice move what a loopback socket buffer holds;
# F_SETPIPE_SZ may be refused (pipe-max-size, pipe-user-pages-*): the pipe
# then keeps its default size and works the same, in smaller steps.
cdef int _pipe_size = 1 << 20
try:  # LBCORE_PIPE_SIZE=bytes, like HAProxy's tune.pipesize
    _pipe_size = int(os.environ.get("LBCORE_PIPE_SIZE") or _pipe_size)
except ValueError:
    log.warning("LBCORE_PIPE_SIZE=%r is not a number of bytes; using %d",
                os.environ.get("LBCORE_PIPE_SIZE"), _pipe_size)
cdef enum:
    PIPE_POOL_MAX = 64
cdef list _pipe_pool = []  # (read fd, write fd, capacity) of empty pipes


def configure(splice=None, splice_min=None, splice_after=None, pipe_size=None):
    """Tune or disable splicing (benchmarks, tests); None keeps a setting."""
    global _splice_enabled, _splice_min, _splice_after, _pipe_size
    if splice is not None:
        _splice_enabled = bool(splice) and LB_HAVE_SPLICE
    if splice_min is not None:
        _splice_min = max(0, int(splice_min))
    if splice_after is not None:
        _splice_after = max(0, int(splice_after))
    if pipe_size is not None:
        _pipe_size = int(pipe_size)
        _drain_pool()


def splice_available():
    return bool(_splice_enabled)


cdef _drain_pool():
    while _pipe_pool:
        r, w, cap = _pipe_pool.pop()
        close(r)
        close(w)


cdef tuple _acquire_pipe():
    """An empty pipe from the pool or a new one; None if none can be had."""
    cdef int fds[2]
    cdef int cap
    if _pipe_pool:
        return _pipe_pool.pop()
    if lb_pipe(fds) < 0:
        return None
    lb_pipe_resize(fds[1], _pipe_size)  # best effort, see _pipe_size
    cap = lb_pipe_size(fds[1])
    if cap <= 0:
        cap = 65536
    return (fds[0], fds[1], cap)


cdef _release_pipe(int r, int w, Py_ssize_t cap, bint empty):
    if empty and len(_pipe_pool) < PIPE_POOL_MAX:
        _pipe_pool.append((r, w, cap))
    else:
        close(r)
        close(w)


cdef class _Flow:
    """One direction: bytes read from `src` are written to `dst`."""

    cdef Relay relay
    cdef int src, dst
    cdef str src_side, dst_side
    cdef bint upstream
    # Bytes read but not yet written, in buffer mode: pbuf[pstart:pend].
    cdef char *pbuf
    cdef Py_ssize_t pstart, pend
    # Splice mode: bytes sit in the pipe instead.
    cdef bint splicing, no_splice
    cdef int pipe_r, pipe_w
    cdef Py_ssize_t pipe_cap, pipe_bytes
    cdef int large_reads
    cdef bint eof, done, reading, writing
    cdef readonly unsigned long long nbytes, spliced
    cdef object cb_read, cb_write

    def __cinit__(self):
        self.pbuf = NULL
        self.pipe_r = -1
        self.pipe_w = -1

    def __dealloc__(self):
        if self.pbuf != NULL:
            free(self.pbuf)
            self.pbuf = NULL

    cdef _setup(self, Relay relay, int src, int dst, str src_side, str dst_side, bint upstream):
        self.relay = relay
        self.src = src
        self.dst = dst
        self.src_side = src_side
        self.dst_side = dst_side
        self.upstream = upstream
        # Bound once: add_reader/add_writer run on every pause/resume.
        self.cb_read = self._on_readable
        self.cb_write = self._on_writable

    # -- loop registration ---------------------------------------------------

    cdef int _want_read(self) except -1:
        if not self.reading:
            self.relay.loop.add_reader(self.src, self.cb_read)
            self.reading = True
        return 0

    cdef int _stop_read(self) except -1:
        if self.reading:
            self.reading = False
            self.relay.loop.remove_reader(self.src)
        return 0

    cdef int _want_write(self) except -1:
        if not self.writing:
            self.relay.loop.add_writer(self.dst, self.cb_write)
            self.writing = True
        return 0

    cdef int _stop_write(self) except -1:
        if self.writing:
            self.writing = False
            self.relay.loop.remove_writer(self.dst)
        return 0

    cdef int _block(self) except -1:
        """The peer cannot take more: stop reading until it has."""
        self._stop_read()
        self._want_write()
        return 0

    cdef bint _has_pending(self):
        return self.pend > self.pstart or self.pipe_bytes > 0

    cdef int _start(self) except -1:
        if self._has_pending():
            self._want_write()
        else:
            self._want_read()
        return 0

    cdef _teardown(self):
        """Called once by Relay.close: leave the loop, free, return the pipe."""
        try:
            self._stop_read()
        except Exception:  # the loop may already be closed at shutdown
            pass
        try:
            self._stop_write()
        except Exception:
            pass
        if self.pbuf != NULL:
            free(self.pbuf)
            self.pbuf = NULL
        self.pstart = self.pend = 0
        if self.pipe_r >= 0:
            _release_pipe(self.pipe_r, self.pipe_w, self.pipe_cap, self.pipe_bytes == 0)
            self.pipe_r = self.pipe_w = -1
        self.cb_read = self.cb_write = None  # break the flow <-> method cycle

    # -- accounting ----------------------------------------------------------

    cdef int _count(self, Py_ssize_t n) except -1:
        self.nbytes += n
        if self.upstream:
            for counters in self.relay.counters:
                counters.bytes_in += n
        else:
            for counters in self.relay.counters:
                counters.bytes_out += n
        return 0

    cdef int _keep(self, const char *data, Py_ssize_t n) except -1:
        """Copy an unsent tail out of the shared scratch buffer."""
        cdef char *buf = <char *>malloc(n)
        if buf == NULL:
            raise MemoryError()
        memcpy(buf, data, n)
        if self.pbuf != NULL:
            free(self.pbuf)
        self.pbuf = buf
        self.pstart = 0
        self.pend = n
        return 0

    # -- reading -------------------------------------------------------------

    def _on_readable(self):
        try:
            self._read()
        except Exception:
            log.exception("tcp relay read failed")
            if self.relay is not None:
                self.relay.close(INTERNAL_ERROR)

    cdef int _read(self) except -1:
        cdef Relay relay = self.relay
        cdef Py_ssize_t n, sent
        cdef int i, e, more
        for i in range(MAX_READS_PER_EVENT):
            if relay.closed or not self.reading:
                return 0
            if self.splicing:
                more = self._splice_in()
                if more:
                    continue
                return 0
            n = recv(self.src, _scratch, SCRATCH_SIZE, 0)
            if n < 0:
                e = errno
                if e == EINTR:
                    continue
                if e == EAGAIN or e == EWOULDBLOCK:
                    return 0
                relay._fail(self.src_side, self.dst)
                return 0
            if n == 0:
                self._on_eof()
                return 0
            relay.last_activity = lb_now()
            self._count(n)
            sent = self._send(_scratch, n)
            if sent < 0:
                return 0
            if sent < n:
                self._keep(_scratch + sent, n - sent)
                self._block()
                return 0
            if n >= _splice_min:
                self.large_reads += 1
                if (self.large_reads >= _splice_after and _splice_enabled
                        and not self.no_splice):
                    self._start_splice()
            else:
                self.large_reads = 0
            if n < SCRATCH_SIZE:
                return 0
        return 0

    cdef Py_ssize_t _send(self, const char *data, Py_ssize_t n) except -2:
        """Bytes sent (0 if the peer is full), or -1 after failing the relay."""
        cdef Py_ssize_t r
        cdef int e
        while True:
            r = send(self.dst, data, n, MSG_NOSIGNAL)
            if r >= 0:
                return r
            e = errno
            if e == EINTR:
                continue
            if e == EAGAIN or e == EWOULDBLOCK:
                return 0
            self.relay._fail(self.dst_side, self.src)
            return -1

    cdef int _start_splice(self) except -1:
        pipe = _acquire_pipe()
        if pipe is None:
            self.no_splice = True  # out of fds or no pipes: stay on recv/send
            return 0
        self.pipe_r, self.pipe_w, self.pipe_cap = pipe
        self.pipe_bytes = 0
        self.splicing = True
        return 0

    cdef int _stop_splice(self, int e) except -1:
        """The kernel refused splice here: back to recv/send for good."""
        global _splice_enabled
        if e == ENOSYS:
            _splice_enabled = False
        self.no_splice = True
        self.splicing = False
        if self.pipe_r >= 0 and self.pipe_bytes == 0:
            _release_pipe(self.pipe_r, self.pipe_w, self.pipe_cap, True)
            self.pipe_r = self.pipe_w = -1
        return 0

    cdef int _splice_in(self) except -1:
        """One splice src -> pipe -> dst. Returns 1 if more may be waiting."""
        cdef Relay relay = self.relay
        cdef Py_ssize_t n
        cdef int e
        n = lb_splice(self.src, self.pipe_w, self.pipe_cap)
        if n < 0:
            e = errno
            if e == EINTR:
                return 1
            if e == EAGAIN or e == EWOULDBLOCK:
                return 0
            if e == EINVAL or e == ENOSYS:
                self._stop_splice(e)
                return 1  # read again, with recv
            relay._fail(self.src_side, self.dst)
            return 0
        if n == 0:
            self._on_eof()
            return 0
        relay.last_activity = lb_now()
        self._count(n)
        self.spliced += n
        self.pipe_bytes = n
        if self._flush_pipe() < 0:
            return 0
        if self._has_pending():
            self._block()
            return 0
        return 1 if n >= self.pipe_cap else 0

    cdef int _flush_pipe(self) except -2:
        """Move pipe -> dst; 0 when done or the peer is full, -1 on failure."""
        cdef Py_ssize_t m
        cdef int e
        while self.pipe_bytes > 0:
            m = lb_splice(self.pipe_r, self.dst, self.pipe_bytes)
            if m < 0:
                e = errno
                if e == EINTR:
                    continue
                if e == EAGAIN or e == EWOULDBLOCK:
                    return 0
                if e == EINVAL or e == ENOSYS:
                    return self._pipe_to_buffer(e)
                self.relay._fail(self.dst_side, self.src)
                return -1
            self.pipe_bytes -= m
            if self.pipe_bytes > 0:
                return 0  # a partial write: the socket is full
        return 0

    cdef int _pipe_to_buffer(self, int e) except -2:
        """splice out refused: take the pipe's bytes back into user space."""
        cdef Py_ssize_t want = self.pipe_bytes, got = 0, r
        cdef char *buf = <char *>malloc(want)
        if buf == NULL:
            raise MemoryError()
        while got < want:
            r = read(self.pipe_r, buf + got, want - got)
            if r <= 0:
                if r < 0 and errno == EINTR:
                    continue
                break
            got += r
        if self.pbuf != NULL:
            free(self.pbuf)
        self.pbuf = buf
        self.pstart = 0
        self.pend = got
        self.pipe_bytes = 0
        self._stop_splice(e)
        return 0

    # -- writing -------------------------------------------------------------

    def _on_writable(self):
        try:
            self._write()
        except Exception:
            log.exception("tcp relay write failed")
            if self.relay is not None:
                self.relay.close(INTERNAL_ERROR)

    cdef int _write(self) except -1:
        cdef Relay relay = self.relay
        cdef Py_ssize_t sent, before
        if relay.closed:
            return 0
        if self.pipe_bytes > 0:
            before = self.pipe_bytes
            if self._flush_pipe() < 0:
                return 0
            if self.pipe_bytes < before:
                relay.last_activity = lb_now()
        if self.pipe_bytes == 0 and self.pend > self.pstart:
            sent = self._send(self.pbuf + self.pstart, self.pend - self.pstart)
            if sent < 0:
                return 0
            if sent > 0:
                relay.last_activity = lb_now()
            self.pstart += sent
            if self.pstart == self.pend:
                free(self.pbuf)
                self.pbuf = NULL
                self.pstart = self.pend = 0
        if self._has_pending():
            return 0
        self._stop_write()
        if self.eof:
            self._end()
        else:
            self._want_read()
        return 0

    # -- end of stream -------------------------------------------------------

    cdef int _on_eof(self) except -1:
        self.eof = True
        self._stop_read()
        if not self._has_pending():
            self._end()
        return 0

    cdef int _end(self) except -1:
        """Everything from src is written: pass the FIN on (half-close)."""
        shutdown(self.dst, SHUT_WR)  # ENOTCONN: the peer is gone already; fine
        self.done = True
        self.relay._flow_done()
        return 0


cdef class Relay:
    """Relays bytes between `client` and `server`, connected non-blocking
    sockets that the relay now owns and closes. Same API as relay_py.Relay:

    counters: objects whose `bytes_in` (client -> server) and `bytes_out`
    (server -> client) grow as bytes are read.
    timeout: seconds without a byte moving either way before both sides are
    closed; 0 disables it.
    preamble: bytes sent to the server before anything from the client
    (a PROXY protocol header, or what a client sent ahead of a tunnel).
    to_client: bytes sent to the client before anything from the server
    (what a server sent right behind its 101 Switching Protocols).
    """

    cdef readonly object loop, client, server
    cdef object on_close
    cdef readonly tuple counters
    cdef readonly double timeout
    cdef public double last_activity
    cdef readonly bint closed
    cdef readonly str termination
    cdef object _timer
    cdef readonly _Flow upstream, downstream

    def __init__(self, loop, client, server, on_close, counters=(), timeout=0.0, preamble=b"",
                 to_client=b""):
        cdef const unsigned char[:] pre
        self.loop = loop
        self.client = client
        self.server = server
        self.on_close = on_close
        self.counters = tuple(counters)
        self.timeout = timeout
        self.closed = False
        self.termination = ""
        self.last_activity = lb_now()
        self._timer = None
        cfd = client.fileno()
        sfd = server.fileno()
        self.upstream = _Flow()
        self.upstream._setup(self, cfd, sfd, CLIENT_ERROR, SERVER_ERROR, True)
        self.downstream = _Flow()
        self.downstream._setup(self, sfd, cfd, SERVER_ERROR, CLIENT_ERROR, False)
        if preamble:
            pre = bytes(preamble)
            self.upstream._keep(<const char *>&pre[0], pre.shape[0])
        if to_client:
            pre = bytes(to_client)
            self.downstream._keep(<const char *>&pre[0], pre.shape[0])

    @property
    def bytes_in(self):
        return self.upstream.nbytes

    @property
    def bytes_out(self):
        return self.downstream.nbytes

    @property
    def spliced_in(self):
        return self.upstream.spliced

    @property
    def spliced_out(self):
        return self.downstream.spliced

    def start(self):
        self.last_activity = lb_now()
        self.upstream._start()
        self.downstream._start()
        if self.timeout > 0:
            self._timer = self.loop.call_later(self.timeout, self._check_idle)

    def _check_idle(self):
        # One timer per relay, re-armed only when it fires: moving a deadline
        # on every read would cost more than the read.
        cdef double idle
        self._timer = None
        if self.closed:
            return
        idle = lb_now() - self.last_activity
        if idle >= self.timeout:
            self.close(IDLE_TIMEOUT)
        else:
            self._timer = self.loop.call_later(self.timeout - idle, self._check_idle)

    cdef _flow_done(self):
        if self.upstream.done and self.downstream.done:
            self.close(NORMAL)

    cdef _fail(self, str termination, int other_fd):
        """A peer failed (reset, broken pipe): reset the other one too, so a
        client never mistakes a broken stream for a complete one."""
        lb_reset_on_close(other_fd)
        self.close(termination)

    def close(self, termination=NORMAL):
        """End the relay: close both sockets; idempotent."""
        if self.closed:
            return
        self.closed = True
        self.termination = termination
        self.upstream._teardown()
        self.downstream._teardown()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # Fds leave the loop (teardown) before they are closed: a reused fd
        # number must never inherit a stale registration.
        self.client.close()
        self.server.close()
        on_close, self.on_close = self.on_close, None
        try:
            on_close(self)
        except Exception:
            log.exception("tcp relay close callback failed")
