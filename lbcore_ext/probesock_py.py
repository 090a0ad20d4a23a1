"""Health-probe sockets on raw descriptors, in pure Python.

A probe (lbcore/health/probes.py) needs a non-blocking TCP socket that
connects, is watched by the probes' epoll set, and is closed one to two
milliseconds later; thousands a second with a large config. These
functions do just that on plain descriptors, so a probe keeps no socket
object. probesock.pyx is the compiled twin (same functions, same results,
tests/unit/test_probesock.py checks both): it makes the system calls from
C, which matters most for SO_LINGER, whose setsockopt() through Python's
socket module formats and discards two TypeErrors before it takes bytes.

- `address(host, port)`: host (an IP address literal) and port in the form
  `connect` takes; computed once per server.
- `connect(addr, reset, delay_ack)`: a new non-blocking socket connecting to
  `addr`; returns its descriptor while the connect is under way (or done).
  `reset`: closed with a reset (SO_LINGER 0: no FIN exchange, no TIME_WAIT),
  as HAProxy closes its checks. `delay_ack`: the handshake's last ACK waits
  for data (TCP_QUICKACK 0): a probe closed with a reset before sending
  anything never completes a connection on the server. Raises OSError (the
  socket closed) when no socket could be made or the connect failed at once.
- `error(fd)`: the socket's pending error (SO_ERROR), 0 if none.
- `endpoints(fd)`: (local address, peer address) of a connected socket, as
  the socket module gives them (for a PROXY protocol header).
- `close(fd)`.
"""

from __future__ import annotations

import _socket
import errno
import functools
import os
import socket
import struct

IMPLEMENTATION = "python"

_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
_NO_LINGER = struct.pack("ii", 1, 0)
_UNDER_WAY = (0, errno.EINPROGRESS, errno.EAGAIN)


# Worked out once per server, and a start with a thousand backends asks for
# the same few addresses thousands of times: cached (an error is not).
@functools.lru_cache(maxsize=8192)
def address(host: str, port: int) -> tuple:
    if not 0 <= port <= 0xFFFF:
        raise OverflowError("port must be 0-65535.")
    if ":" not in host:
        # A dotted quad is already the form connect() takes: inet_pton only
        # checks it is one (OSError for anything else, a name included),
        # without the resolver's getaddrinfo.
        _socket.inet_pton(socket.AF_INET, host)
        return socket.AF_INET, (host, port)
    # A literal only (socket.gaierror, an OSError, for a name): the kernel's
    # form of it, with an IPv6 scope (fe80::1%eth0) made a scope id. The
    # _socket one: socket.getaddrinfo's enums cost more than the call.
    infos = _socket.getaddrinfo(host, port, socket.AF_INET6, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    return socket.AF_INET6, infos[0][4]


def connect(addr: tuple, reset: bool, delay_ack: bool) -> int:
    family, where = addr
    sock = _socket.socket(family, _STREAM)
    try:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _NO_LINGER)
        if delay_ack:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
        err = sock.connect_ex(where)
    except BaseException:
        sock.close()
        raise
    if err not in _UNDER_WAY:
        sock.close()
        raise OSError(err, os.strerror(err))
    return sock.detach()


def error(fd: int) -> int:
    sock = _socket.socket(fileno=fd)
    try:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    finally:
        sock.detach()


def endpoints(fd: int) -> tuple:
    sock = _socket.socket(fileno=fd)
    try:
        return sock.getsockname(), sock.getpeername()
    finally:
        sock.detach()


close = os.close
