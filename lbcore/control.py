"""The master <-> worker channel: newline-delimited JSON messages over a
unix stream socket (one socketpair per worker), with file descriptors
(listening sockets, client connections) riding along as SCM_RIGHTS.

The socket is driven with add_reader/add_writer and recvmsg/sendmsg
rather than an asyncio transport, because transports cannot carry
ancillary data and a listening socket bound by the master on a reload
has to reach the workers. Every read uses recvmsg with room for
descriptors: a plain recv would silently drop (close) any that arrive.

Messages (`t` is the type):

    master -> worker
      hello     slot, config, sockets {address: [inherited fds: own, siblings']}, state:
                first, once
      server    one server's [backend, name, address, health, admin, weight]
      state     every server's row (after a reload)
      reload    config, addresses (of new binds), sizes (sockets per address; they ride
                along, each address's own first)
      fds       more sockets for the next reload (beyond one sendmsg's limit)
      snapshot  id: answer with the worker's stats snapshot
      sessions  id: answer with the worker's sessions (runtime API `show sess`)
      shutdown_sessions  server row: close that server's sessions
      clear_counters     all: the runtime API's `clear counters [all]`
      certificate        path, pem: a committed `set ssl cert` for new handshakes
      adopt     conns [[frontend, base64 bytes read]]: a dead worker's client
                connections, one descriptor each, to carry on (lbcore.adoption)
    worker -> master
      ready     the worker accepts connections
      observe   backend, server, address, reason: a passive failure
      snapshot  id, data
      sessions  id, data
    worker -> master, on a socket of their own (read by the master every
    lbcore.adoption.POLL_INTERVAL, not on every message)
      kept      add [[fd, generation, frontend]] (a descriptor each), gone
                [[fd, generation]]: client connections accepted and ended

Configs and addresses travel pickled (frozen dataclasses, exactly as the
master validated them); the socketpair only joins a master to the child it
started.
"""

from __future__ import annotations

import array
import base64
import dataclasses
import json
import logging
import os
import socket
from collections import deque
from typing import Any, Callable, Iterable, Optional

from .config import Config
from .model import Runtime, Server

log = logging.getLogger("lbcore")

READ_SIZE = 256 * 1024
MAX_FDS = 253  # Linux's SCM_MAX_FD: descriptors one sendmsg may carry

Message = dict[str, Any]


def _encode(message: Message) -> bytes:
    # json.dumps escapes every control character, so a line is one message.
    return json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"


class Channel:
    """One end of a master<->worker socketpair.

    `send(message, fds)` queues a message (a JSON-able dict) and the
    descriptors that go with it; `take_fds(n)` hands the receiver the
    descriptors that arrived with the messages it has been given, in
    order. `on_message(message)` is called for each message received,
    `on_close()` once when the peer is gone (EOF or an error)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = None
        self.on_message: Callable[[Message], None] = lambda message: None
        self.on_close: Callable[[], None] = lambda: None
        self.closed = False
        self._inbox = bytearray()
        self._fds: deque[int] = deque()
        self._outbox: deque[list] = deque()  # [memoryview, fds not yet sent, ours to close]
        self._writing = False
        self._reading = False
        self.fds_lost = False  # see _take_in

    # -- lifecycle -------------------------------------------------------------

    def start(self, loop, on_message: Callable[[Message], None], on_close: Callable[[], None],
              watch: bool = True) -> None:
        """Deliver messages from now on; those already buffered (read by
        receive_blocking) are delivered at once, before this returns.
        `watch=False`: read only when drain() is called (the reader is not
        woken by every message)."""
        self.loop = loop
        self.on_message = on_message
        self.on_close = on_close
        self.sock.setblocking(False)
        if self.closed:
            return
        if watch:
            loop.add_reader(self.sock.fileno(), self._readable)
            self._reading = True
        self._deliver()
        if self._outbox:
            self._flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.loop is not None and self.sock.fileno() >= 0:
            if self._reading:
                self.loop.remove_reader(self.sock.fileno())
            if self._writing:
                self.loop.remove_writer(self.sock.fileno())
        self._reading = self._writing = False
        for _, fds, owned in self._outbox:
            if owned:
                for fd in fds:
                    _close_fd(fd)
        self._outbox.clear()
        while self._fds:
            _close_fd(self._fds.popleft())
        self.sock.close()

    # -- receiving -------------------------------------------------------------

    def receive_blocking(self, timeout: Optional[float] = None) -> Message:
        """The first message, read before any event loop runs (a worker's
        hello). Later messages read along with it stay buffered for start()."""
        self.sock.settimeout(timeout)
        while True:
            message = self._next_message()
            if message is not None:
                return message
            data, fds, _, _ = socket.recv_fds(self.sock, READ_SIZE, MAX_FDS)
            self._fds.extend(fds)
            if not data:
                raise ConnectionError("control channel closed before the first message")
            self._inbox += data

    def _take_in(self, fds: list[int], flags: int) -> None:
        self._fds.extend(fds)
        if flags & socket.MSG_CTRUNC and not self.fds_lost:
            # Out of descriptors: the kernel dropped some that came with a
            # message, so which descriptor goes with which message is lost.
            log.error("control channel: descriptors were dropped (out of descriptors?); "
                      "the descriptors that came with messages can no longer be trusted")
            self.fds_lost = True

    def pending_fds(self) -> int:
        return len(self._fds)

    def take_fds(self, count: int) -> list[int]:
        if count > len(self._fds):
            raise ValueError(f"expected {count} descriptors, {len(self._fds)} received")
        return [self._fds.popleft() for _ in range(count)]

    def _readable(self) -> None:
        try:
            data, fds, flags, _ = socket.recv_fds(self.sock, READ_SIZE, MAX_FDS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("control channel read failed: %s", exc)
            self._lost()
            return
        self._take_in(fds, flags)
        if not data:
            self._lost()
            return
        self._inbox += data
        self._deliver()

    def _next_message(self) -> Optional[Message]:
        while True:
            end = self._inbox.find(b"\n")
            if end < 0:
                return None
            line = bytes(self._inbox[:end])
            del self._inbox[:end + 1]
            try:
                message = json.loads(line)
            except ValueError as exc:
                log.error("control channel: dropping a message that is not JSON (%s)", exc)
                continue
            if not isinstance(message, dict) or not isinstance(message.get("t"), str):
                log.error("control channel: dropping a message without a type")
                continue
            return message

    def _deliver(self) -> None:
        while not self.closed:
            message = self._next_message()
            if message is None:
                return
            try:
                self.on_message(message)
            except Exception:  # one bad message must not end the channel
                log.exception("control channel: handling a %r message failed", message.get("t"))

    def _lost(self) -> None:
        if self.closed:
            return
        self.close()
        self.on_close()

    # -- sending ---------------------------------------------------------------

    def send(self, message: Message, fds: Iterable[int] = (), owned: bool = False) -> bool:
        """Queue `message`; False if the channel is closed. The descriptors
        are duplicated into the peer on sending: the caller keeps its own,
        unless `owned`: then the channel closes them once sent (or dropped).
        Descriptors that cannot go at once are duplicated, so that what is
        sent later is what the caller meant even if it closed its own."""
        fds = list(fds)
        if self.closed:
            if owned:
                for fd in fds:
                    _close_fd(fd)
            return False
        if len(fds) > MAX_FDS:
            raise ValueError(f"at most {MAX_FDS} descriptors per message")
        entry = [memoryview(_encode(message)), fds, owned]
        self._outbox.append(entry)
        if self.loop is not None and not self._writing:
            self._flush()
        if entry[1] and not entry[2]:
            copies: list[int] = []
            try:
                for fd in entry[1]:
                    copies.append(os.dup(fd))
            except OSError:  # out of descriptors: the caller's must do
                for fd in copies:
                    _close_fd(fd)
            else:
                entry[1], entry[2] = copies, True
        return True

    def drain(self) -> None:
        """Deliver every message the peer sent that is still unread."""
        while not self.closed and self.loop is not None:
            try:
                data, fds, flags, _ = socket.recv_fds(self.sock, READ_SIZE, MAX_FDS)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._lost()
                return
            self._take_in(fds, flags)
            if not data:
                self._lost()
                return
            self._inbox += data
            self._deliver()

    def _flush(self) -> None:
        while self._outbox:
            entry = self._outbox[0]
            view, fds, owned = entry
            try:
                if fds:
                    sent = self.sock.sendmsg(
                        [view], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
                else:
                    sent = self.sock.send(view)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.debug("control channel write failed: %s", exc)
                self._lost()
                return
            if owned:
                for fd in fds:
                    _close_fd(fd)
            entry[1] = []  # the descriptors went with the first byte
            if sent < len(view):
                entry[0] = view[sent:]
                break
            self._outbox.popleft()
        want = bool(self._outbox)
        if want and not self._writing:
            self.loop.add_writer(self.sock.fileno(), self._flush)
            self._writing = True
        elif not want and self._writing:
            self.loop.remove_writer(self.sock.fileno())
            self._writing = False


def _close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


# -- what travels on the channel ----------------------------------------------

# spec_pickle (and pickle) imported when something travels: with workers
# only, while every start imports this module (the http core's adoption).

def pack(obj: Any) -> str:
    from . import spec_pickle
    return base64.b64encode(spec_pickle.dumps(obj)).decode("ascii")


def unpack(text: str) -> Any:
    from . import spec_pickle
    return spec_pickle.loads(base64.b64decode(text))


def worker_config(config: Config) -> Config:
    """The config a worker runs: the master alone serves stats and writes
    the state file and pidfile."""
    global_ = dataclasses.replace(config.global_, state_file=None, pidfile=None)
    return dataclasses.replace(config, global_=global_, stats=None)


def server_state(server: Server) -> list:
    return [server.backend.name, server.name, str(server.address), server.health, server.admin, server.weight]


def state_rows(runtime: Runtime) -> list[list]:
    return [server_state(s) for s in runtime.servers()]


def find_server(runtime: Runtime, backend: Any, name: Any, address: Any) -> Optional[Server]:
    """The server with this backend, name and address; None if it is not
    (or no longer, or not yet: a reload in flight) in `runtime`."""
    pool = runtime.backends.get(backend) if isinstance(backend, str) else None
    server = pool.by_name.get(name) if pool is not None and isinstance(name, str) else None
    if server is None or str(server.address) != address:
        return None
    return server
