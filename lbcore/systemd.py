"""systemd's two protocols, without a dependency: readiness notification
(sd_notify: READY=1, RELOADING=1, STOPPING=1 as datagrams to
$NOTIFY_SOCKET) and socket activation (sd_listen_fds: listening sockets
inherited from fd 3 on, for this pid only).

Both are no-ops outside systemd. See conf/systemd/lbcore.service."""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Awaitable

log = logging.getLogger("lbcore")

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START
_ENV = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def notify(*fields: str) -> bool:
    """Send `fields` (e.g. "READY=1") in one datagram to $NOTIFY_SOCKET;
    False when not under systemd or the send failed (never raises: a
    supervisor's socket must not take the load balancer down)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):  # abstract namespace
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall("\n".join(fields).encode())
        return True
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False


def ready(status: str = "") -> bool:
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def reloading() -> bool:
    # systemd (Type=notify-reload) wants the monotonic clock with RELOADING=1.
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")


async def reload_notified(reload: Awaitable[None]) -> None:
    """RELOADING=1 while `reload` runs, READY=1 once it is over (applied or refused)."""
    reloading()
    try:
        await reload
    finally:
        ready()


def stopping() -> bool:
    return notify("STOPPING=1")


def listen_fds() -> list[socket.socket]:
    """The listening sockets systemd passed to this process (none if the
    variables are absent or name another pid). The variables are removed,
    so a child never takes them for its own."""
    pid, count = os.environ.get("LISTEN_PID"), os.environ.get("LISTEN_FDS")
    for name in _ENV:
        os.environ.pop(name, None)
    if not pid or not count:
        return []
    try:
        if int(pid) != os.getpid():
            return []
        count = int(count)
    except ValueError:
        log.warning("ignoring malformed LISTEN_PID=%r LISTEN_FDS=%r", pid, count)
        return []
    sockets = []
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + count):
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            log.warning("socket activation: fd %d is not a socket: %s", fd, exc)
            continue
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            log.warning("socket activation: fd %d is not a TCP socket; ignored", fd)
            sock.detach()
            continue
        os.set_inheritable(fd, False)
        sockets.append(sock)
    return sockets
