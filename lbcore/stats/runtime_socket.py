"""The runtime API's listening socket (`stats.socket`): a unix socket with
its mode and group, or TCP from `ipv4@HOST:PORT`.

This module only moves bytes: cli_parser.LineReader turns them into
requests, runtime_api.execute answers each command. Framing is HAProxy's:
outside prompt mode the connection is closed once every line received so
far has been answered (Ansible's module and `socat` read until the close);
in prompt mode it stays open, every answer ends with `> `, and it is
closed after `timeout cli` of silence, or on `quit`.
"""

from __future__ import annotations

import asyncio
import errno
import grp
import logging
import os
import socket
import stat
from typing import Optional

from ..config import SocketSpec
from ..listeners import inherited
from .cli_parser import LineReader
from .runtime_api import Service, Session, empty_line_answer, execute
from .. import takeover

log = logging.getLogger("lbcore.stats")

MAX_CLIENTS = 64  # a runtime socket serves scripts and a few operators
READ_SIZE = 64 * 1024


def _unix_socket(spec: SocketSpec) -> socket.socket:
    path = spec.path
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, f"stats.socket {path}: exists and is not a socket")
    # An existing socket is replaced by the rename below, as HAProxy does: a
    # process taking over from another (-sf) serves the path at once, the
    # old one keeps answering the connections it already has.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Bind under a temporary name and rename, so the socket never
        # exists with the wrong mode or group.
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        sock.bind(tmp)
        os.chmod(tmp, spec.mode)
        if spec.group is not None:
            gid = int(spec.group) if spec.group.isdigit() else grp.getgrnam(spec.group).gr_gid
            os.chown(tmp, -1, gid)
        os.rename(tmp, path)
        sock.listen(64)
        sock.setblocking(False)
    except (OSError, KeyError) as exc:
        sock.close()
        try:
            os.unlink(tmp)
        except OSError:
            pass
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise OSError(getattr(exc, "errno", None) or errno.EINVAL, f"stats.socket {path}: {detail}") from None
    return sock


def _tcp_socket(spec: SocketSpec) -> socket.socket:
    address = spec.address
    handed = inherited.take(address)  # from the lbcore this one replaces (-sf)
    if handed:
        for extra in handed[1:]:
            extra.close()
        return handed[0]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address.host or "0.0.0.0", address.port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"stats.socket {spec}: {exc.strerror}") from None
    return sock


class RuntimeSocket:
    """`start()` binds and serves; `close()` stops and removes the unix socket."""

    def __init__(self, spec: SocketSpec, service: Service) -> None:
        self.spec = spec
        self.service = service
        self._server: Optional[asyncio.base_events.Server] = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._inode: Optional[int] = None

    async def start(self) -> None:
        if self.spec.path is not None:
            sock = _unix_socket(self.spec)
            self._inode = os.stat(self.spec.path).st_ino
            self._server = await asyncio.start_unix_server(self._serve, sock=sock)
        else:
            sock = _tcp_socket(self.spec)
            self._server = await asyncio.start_server(self._serve, sock=sock)
        log.info("runtime API listening on %s (level %s)", self.address, self.spec.level)

    def listening_fds(self) -> list[int]:
        return [sock.fileno() for sock in self._server.sockets] if self._server is not None else []

    @property
    def address(self) -> str:
        if self.spec.path is not None or self._server is None:
            return str(self.spec)
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"ipv4@{host}:{port}"

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        path = self.spec.path
        if path is not None and self._inode is not None:
            try:
                # Only our own socket: a new process may already have bound its own.
                if os.stat(path).st_ino == self._inode:
                    os.unlink(path)
            except OSError:
                pass
            self._inode = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= MAX_CLIENTS:
            writer.close()
            return
        self._writers.add(writer)
        peer = writer.get_extra_info("peername")
        who = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else f"unix socket {self.spec.path}"
        session = Session(level=self.spec.level, peer=who)
        lines = LineReader()
        try:
            while not session.quit:
                try:
                    data = await asyncio.wait_for(reader.read(READ_SIZE), session.timeout)
                except asyncio.TimeoutError:
                    break
                requests = lines.feed(data) if data else []
                for request in requests:
                    await self._answer(request, session, writer)
                    if session.quit:
                        break
                await writer.drain()
                if not data:
                    break
                # Outside prompt mode, a connection lives for the lines sent on it:
                # close once they are answered, unless more bytes are already
                # buffered (StreamReader has no public peek; _buffer is stable).
                if requests and not session.prompt and not lines.in_payload and not reader._buffer:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # one client must never take the socket down
            log.exception("runtime API: connection from %s failed", who)
        finally:
            self._writers.discard(writer)
            try:
                writer.close()
            except Exception:
                pass

    async def _answer(self, request, session: Session, writer: asyncio.StreamWriter) -> None:
        if request.error is not None:
            writer.write(f"{request.error}\n\n{'> ' if session.prompt else ''}".encode())
            return
        if request.empty:
            writer.write(empty_line_answer(session).encode())
            return
        for command in request.commands:
            answer = await execute(command, session, self.service)
            if answer:
                writer.write(answer.encode("utf-8"))
            if session.quit:
                return
