"""Event and access logs.

Event lines (state changes, reloads, errors) go through the standard
`logging` module under the "lbcore" logger. Access lines are one per
request (http) or connection (tcp), HAProxy's httplog/tcplog layout or
JSON, and are written by `AccessLog` straight into a buffer flushed a few
times a second: the hot path never waits on the log target.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import sys
import time
from typing import Optional

from .config import SYSLOG_FACILITIES, LogSpec

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _stamp(now: float) -> str:
    t = time.localtime(now)
    return "%02d/%s/%04d:%02d:%02d:%02d.%03d" % (
        t.tm_mday, MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min, t.tm_sec,
        int((now % 1) * 1000))


def _ms(seconds: Optional[float]) -> int:
    return -1 if seconds is None else int(seconds * 1000)


def _peer(addr) -> str:
    if not addr:
        return "-"
    host, port = addr[0], addr[1]
    return f"{host}:{port}"


class _Sink:
    """Where lines go: a stream, a file, or syslog over UDP."""

    def __init__(self, spec: LogSpec) -> None:
        self.spec = spec
        self.udp: Optional[socket.socket] = None
        self.stream = None
        self.owned = False
        # <facility * 8 + severity info (6)>, RFC 3164
        self.priority = SYSLOG_FACILITIES.index(spec.facility) * 8 + 6
        if spec.syslog is not None:
            family = socket.AF_INET6 if ":" in spec.syslog.host else socket.AF_INET
            self.udp = socket.socket(family, socket.SOCK_DGRAM)
            self.udp.setblocking(False)
            self.udp_addr = (spec.syslog.host or "127.0.0.1", spec.syslog.port)
        elif spec.syslog_socket is not None:
            # /dev/log: opened once, before any chroot, as HAProxy does.
            self.udp = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.udp.setblocking(False)
            self.udp_addr = spec.syslog_socket
        elif spec.target == "stdout":
            self.stream = sys.stdout
        elif spec.target == "stderr":
            self.stream = sys.stderr
        else:
            self.stream = open(spec.target, "a", buffering=1 << 16)
            self.owned = True

    def write_lines(self, lines: list[str]) -> None:
        if self.udp is not None:
            tag = f"<{self.priority}>{time.strftime('%b %d %H:%M:%S')} lbcore[{os.getpid()}]: "
            for line in lines:
                try:
                    self.udp.sendto((tag + line).encode()[:8192], self.udp_addr)
                except OSError:
                    pass  # syslog is best effort, as in HAProxy
            return
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        if self.udp is not None:
            self.udp.close()
        if self.owned:
            self.stream.close()


class AccessLog:
    """Buffered access log; `flush()` is called by a periodic timer and at exit."""

    def __init__(self, spec: LogSpec) -> None:
        self.spec = spec
        self.enabled = spec.format != "none"
        self.json = spec.format == "json"
        self.pending: list[str] = []
        self.sink = _Sink(spec) if self.enabled else None

    def http(self, client, frontend: str, backend: str, server: str,
             t_request: float, t_queue: Optional[float], t_connect: Optional[float],
             t_response: Optional[float], t_active: float, status: int,
             bytes_out: int, termination: str, request_line: str,
             retries: int = 0, started: Optional[float] = None,
             conns: tuple = (0, 0, 0, 0), queues: tuple = (0, 0)) -> None:
        started = started or time.time()
        if self.json:
            self.pending.append(json.dumps({
                "time": started, "client": _peer(client), "frontend": frontend,
                "backend": backend, "server": server,
                "TR": _ms(t_request), "Tw": _ms(t_queue), "Tc": _ms(t_connect),
                "Tr": _ms(t_response), "Ta": _ms(t_active), "status": status,
                "bytes": bytes_out, "termination": termination, "retries": retries,
                "request": request_line}))
        else:
            self.pending.append(
                f"{_peer(client)} [{_stamp(started)}] {frontend} {backend}/{server} "
                f"{_ms(t_request)}/{_ms(t_queue)}/{_ms(t_connect)}/{_ms(t_response)}/{_ms(t_active)} "
                f"{status} {bytes_out} - - {termination or '--'}-- "
                f"{conns[0]}/{conns[1]}/{conns[2]}/{conns[3]}/{retries} {queues[0]}/{queues[1]} "
                f"\"{request_line}\"")
        if len(self.pending) >= 256:
            self.flush()

    def tcp(self, client, frontend: str, backend: str, server: str,
            t_queue: Optional[float], t_connect: Optional[float], t_total: float,
            bytes_out: int, bytes_in: int, termination: str, retries: int = 0,
            started: Optional[float] = None) -> None:
        started = started or time.time()
        if self.json:
            self.pending.append(json.dumps({
                "time": started, "client": _peer(client), "frontend": frontend,
                "backend": backend, "server": server, "Tw": _ms(t_queue),
                "Tc": _ms(t_connect), "Tt": _ms(t_total), "bytes_out": bytes_out,
                "bytes_in": bytes_in, "termination": termination, "retries": retries}))
        else:
            self.pending.append(
                f"{_peer(client)} [{_stamp(started)}] {frontend} {backend}/{server} "
                f"{_ms(t_queue)}/{_ms(t_connect)}/{_ms(t_total)} {bytes_out} "
                f"{termination or '--'} {retries}")
        if len(self.pending) >= 256:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            lines, self.pending = self.pending, []
            self.sink.write_lines(lines)

    def close(self) -> None:
        if self.sink is not None:
            self.flush()
            self.sink.close()


@functools.lru_cache(maxsize=None)
def _syslog_handler_class() -> type:
    """Made on first use: logging.handlers (and the pickle it imports) is
    for a config that logs to syslog, not for every start."""
    import logging.handlers

    class _SysLogHandler(logging.handlers.SysLogHandler):
        """Syslog is best effort, as HAProxy's: a daemon that is away (or a
        /dev/log that a chroot hides) loses lines, not the process's stderr.
        Its socket never blocks: a syslog daemon that stops reading fills a
        unix socket's queue (ten datagrams by default), and a blocking send
        would then stop the event loop, and every connection with it."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            if self.socket is not None:
                self.socket.setblocking(False)

        def _connect_unixsocket(self, address) -> None:
            super()._connect_unixsocket(address)  # also when emit() reconnects after an error
            self.socket.setblocking(False)

        def handleError(self, record: logging.LogRecord) -> None:
            pass
    return _SysLogHandler


def setup_event_log(spec: LogSpec) -> None:
    """State changes and reloads: always logged (even with format none)."""
    logger = logging.getLogger("lbcore")
    logger.handlers.clear()
    if spec.target in ("stdout", "stderr") or spec.syslog is not None or spec.syslog_socket is not None:
        handler: logging.Handler = logging.StreamHandler(
            sys.stdout if spec.target == "stdout" else sys.stderr)
        if spec.syslog is not None or spec.syslog_socket is not None:
            address = spec.syslog_socket or (spec.syslog.host or "127.0.0.1", spec.syslog.port)
            try:
                handler = _syslog_handler_class()(
                    address=address, facility=SYSLOG_FACILITIES.index(spec.facility))
            except OSError:
                # No /dev/log (yet): lines are dropped, as HAProxy's, not fatal.
                handler = logging.NullHandler()
    else:
        handler = logging.FileHandler(spec.target)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s lbcore[%(process)d] %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

