"""Connections that outlive their worker (`global.workers` > 1).

A SIGKILLed worker takes every connection it had accepted with it: the
kernel closes its descriptors, and with the last one the connection. So
the master holds a second descriptor of every plain-http client
connection its workers accept, and each worker writes what the master
would need to carry a connection on without it into a table the two
share (a memfd): the bytes of the request it has read and not answered
yet. When a worker dies, the master hands each connection that can be
carried on to a surviving worker (or to the replacement, if none is
left), which takes it on as if it had just accepted it and read those
bytes: the request is sent to a server again and answered from there.

A connection's slot in the table says whether it can be carried on:

  IDLE    nothing read since the last response went out in full (a new
          connection, an idle keep-alive one): adopted as it is.
  READ    the bytes read since then, up to DATA bytes, none of them a
          request that may not be sent twice (lbcore.proxy.http's
          IDEMPOTENT, the cut-response replay's rule): adopted with them.
  UNSAFE  a response has started (the client holds some of it), a request
          that may not be repeated was read, the bytes outgrew the slot,
          or the connection became a tunnel: closed, as without all this.
  CLOSED  the worker is done with it.

TLS connections are never kept (their session keys live in the worker's
memory), nor tcp-mode ones (their bytes are relayed as they come).

Costs, worker side: per accepted connection a slot header write and one
sendmsg(2) of its descriptor (the ones that ended ride along), on a socket
the master reads every POLL_INTERVAL rather than on every message (the
descriptors in it are held by the kernel meanwhile); per closed
connection a shutdown(2), so that the master's descriptor does not hold
it open. Per request: one copy of the bytes read into the slot and a few
stores. The master reads the table only when a worker died.

The descriptor is sent as the connection is accepted, not batched to the
end of the loop turn: a connection the worker holds alone dies with it,
and with a turn's worth of accepts (up to ACCEPT_BATCH, set up one after
another) a SIGKILL under load found one often enough. What is left is
the stretch from accept(2) to that sendmsg(2) in the same callback, a
few microseconds; but a syscall's return is where a busy machine
preempts a process, so a kill timed just after connections arrive
still finds one now and then (tests/integration/test_worker_crash.py
--burst measures it). Only the master accepting and handing connections
out would close it, at a hop per new connection. The same holds from a
read(2) of request bytes to their copy into the slot: a kill in between
leaves the slot IDLE, and the connection is carried on without the
request the dead worker had read (the client waits for the answer until
a timeout); closing that one takes a peek before every read.

The slot of a connection is its descriptor number in the worker (unique
while it is open); a generation number, sent along with the descriptor,
tells a connection from the one before it on the same number.
"""

from __future__ import annotations

import base64
import logging
import mmap
import os
import resource
import socket
from typing import Optional

from .control import MAX_FDS, Channel

log = logging.getLogger("lbcore")

SLOT = 16384  # bytes per connection: header, then the bytes read
HEADER = 16  # generation, state, length, unused: four little-endian uint32
WORDS = SLOT // 4
DATA = SLOT - HEADER  # larger requests (head and body) are not carried on
MAX_SLOTS = 65536  # connections on descriptors above this are not kept
GONE_DELAY = 0.1  # ended connections are told to the master within this
POLL_INTERVAL = 0.05  # how often the master takes in the descriptors its workers sent
SEND_BUFFER = 4 << 20  # bytes: a worker's socket to the master (one message per accept)

IDLE, READ, UNSAFE, CLOSED = 1, 2, 3, 4


def table_slots() -> int:
    return max(1, min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], MAX_SLOTS))


# -- the worker's side ------------------------------------------------------------

class Kept:
    """One kept client connection in its worker: its slot in the table.
    Compiled with the http core (adoption.pxd): its methods run per
    request, and the slot's words are C stores there."""

    __slots__ = ("journal", "table", "words", "fd", "gen", "word", "base", "pending", "retry")

    def __init__(self, journal: "Journal", fd: int, gen: int, pending: bytes) -> None:
        self.journal = journal
        self.table = journal.table
        self.words = journal.words
        self.fd = fd
        self.gen = gen
        self.word = fd * WORDS
        self.base = fd * SLOT + HEADER
        self.pending = pending  # adopted: bytes to process as if just read
        self.retry = None  # a SETTLE_RETRY timer

    def consumed(self, data: bytes) -> bool:
        """Bytes just read; False once the slot cannot hold them (UNSAFE)."""
        word = self.word
        length = self.words[word + 2]
        end = length + len(data)
        if end > DATA:
            self.words[word + 1] = UNSAFE
            return False
        self.table[self.base + length:self.base + end] = data
        self.words[word + 2] = end
        self.words[word + 1] = READ
        return True

    def unsafe(self) -> None:
        self.words[self.word + 1] = UNSAFE

    def settled(self, pending: bytes) -> bool:
        """The last response is out: from now on the slot holds what is
        read next, starting with `pending` (a head begun already)."""
        word = self.word
        n = len(pending)
        if n > DATA:
            return False
        if n:
            self.table[self.base:self.base + n] = pending
        self.words[word + 2] = n
        self.words[word + 1] = READ if n else IDLE
        return True

    def release(self, shutdown: bool) -> None:
        """The connection ends here. `shutdown`: its descriptor is still
        open, so end the connection now rather than when the master lets
        go of its own descriptor."""
        journal = self.journal
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None
        if self.words[self.word] == self.gen:
            self.words[self.word + 1] = CLOSED
        if shutdown:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, self.fd)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # reset or gone already
            finally:
                sock.detach()
        journal.gone.append([self.fd, self.gen])
        journal.schedule_gone()


class Journal:
    """A worker's side: the shared table, and the descriptors (and ends)
    of the connections it keeps, each sent to the master as it comes."""

    def __init__(self, loop, table_fd: int, slots: int, channel_fd: int) -> None:
        self.loop = loop
        # Its own socket to the master, which reads it only now and then
        # (Keeper.poll): the descriptors wait in it, held by the kernel,
        # and sending one wakes nobody.
        self.channel = Channel(socket.socket(fileno=channel_fd))
        self.channel.start(loop, lambda message: None, lambda: None, watch=False)
        self.slots = slots
        try:
            self.table = mmap.mmap(table_fd, slots * SLOT)
        finally:
            os.close(table_fd)
        self.words = memoryview(self.table).cast("I")
        self.gen = 0
        self.added: list = []  # [fd, gen, frontend], in order
        self.gone: list = []  # [fd, gen]
        self.gone_timer = None

    def keep(self, sock: socket.socket, frontend: str, pending: bytes = b"") -> Optional[Kept]:
        """A connection just accepted (or adopted, with `pending`): its slot,
        and its descriptor for the master before anything is read from it."""
        fd = sock.fileno()
        if fd >= self.slots:
            return None
        self.gen = gen = (self.gen + 1) & 0xFFFFFFFF or 1
        words = self.words
        word = fd * WORDS
        words[word] = gen
        words[word + 1] = IDLE
        words[word + 2] = 0
        self.added.append([fd, gen, frontend])
        # Sent now, not at the end of the loop turn: until the master holds
        # its copy, a SIGKILL here takes the connection (and the request the
        # client sent with it) down with this process. Once sendmsg(2) has
        # returned, the descriptor is in flight, held by the kernel.
        self.flush()
        return Kept(self, fd, gen, pending)

    def schedule_gone(self) -> None:
        """Ended connections are no hurry (each was shut down already): they
        ride with the next accepted one, or go after GONE_DELAY. Under a
        new-connection load that halves the master's wake-ups."""
        if self.gone_timer is None:
            self.gone_timer = self.loop.call_later(GONE_DELAY, self.flush)

    def flush(self) -> None:
        if self.gone_timer is not None:
            self.gone_timer.cancel()
            self.gone_timer = None
        added, gone = self.added, self.gone
        self.added, self.gone = [], []
        while len(added) > MAX_FDS:
            batch, added = added[:MAX_FDS], added[MAX_FDS:]
            self.channel.send({"t": "kept", "add": batch, "gone": []}, [row[0] for row in batch])
        if added or gone:
            self.channel.send({"t": "kept", "add": added, "gone": gone}, [row[0] for row in added])


# -- the master's side ------------------------------------------------------------

class Keeper:
    """The master's side for one worker process: the table it writes, the
    socket its descriptors come on, and a descriptor of every connection
    it keeps (worker fd -> [gen, our fd, frontend name])."""

    def __init__(self, loop, slots: Optional[int] = None) -> None:
        self.slots = slots or table_slots()
        self.fd = os.memfd_create("lbcore-connections", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, self.slots * SLOT)  # sparse: pages are used as slots are
            ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            # Room for what a busy worker sends between two polls: a send
            # that has to wait is a descriptor the master does not hold yet.
            # (Capped by net.core.wmem_max.)
            self.theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        except OSError:
            os.close(self.fd)
            raise
        self.their_fd = self.theirs.fileno()  # for the worker's hello
        self.channel = Channel(ours)
        self.channel.start(loop, self._on_message, lambda: None, watch=False)
        self.entries: dict[int, list] = {}

    def given(self) -> None:
        """The worker has its end of the socket (its process was started)."""
        self.theirs.close()

    def poll(self) -> None:
        """Take in what the worker sent since the last poll (POLL_INTERVAL),
        and everything before its death, before orphans()."""
        self.channel.drain()

    def _on_message(self, message: dict) -> None:
        channel = self.channel
        if message.get("t") != "kept":
            log.error("master: unexpected %r message on a worker's connection channel", message.get("t"))
            return
        fds = channel.take_fds(min(len(message.get("add") or ()), channel.pending_fds()))
        if channel.fds_lost:
            self.close()  # which descriptor is which connection is no longer known
        self.kept(message, fds)

    def kept(self, message: dict, fds: list[int]) -> None:
        """A worker's `kept` message with the descriptors that came with it.
        Additions first: a connection accepted and closed in the same turn
        is then gone, not left behind."""
        added = message.get("add") or []
        if self.fd < 0:  # closed: its worker is gone, or the descriptors cannot be trusted
            for fd in fds:
                _close(fd)
            return
        for row, fd in zip(added, fds):
            try:
                number, gen, frontend = row
                number, gen, frontend = int(number), int(gen), str(frontend)
            except (TypeError, ValueError):
                log.error("master: bad kept connection %r from a worker", row)
                _close(fd)
                continue
            old = self.entries.get(number)
            if old is not None:
                _close(old[1])  # its number was reused: that connection is over
            self.entries[number] = [gen, fd, frontend]
        for fd in fds[len(added):]:
            _close(fd)
        for row in message.get("gone") or []:
            try:
                number, gen = int(row[0]), int(row[1])
            except (TypeError, ValueError, IndexError):
                log.error("master: bad ended connection %r from a worker", row)
                continue
            entry = self.entries.get(number)
            if entry is not None and entry[0] == gen:
                del self.entries[number]
                _close(entry[1])

    def orphans(self) -> tuple[list[tuple[str, int, bytes]], int]:
        """The dead worker's connections that can be carried on, as
        (frontend, descriptor, bytes read), and how many could not (those
        are closed now)."""
        carried: list[tuple[str, int, bytes]] = []
        closed = 0
        entries, self.entries = self.entries, {}
        if not entries or self.fd < 0:
            return carried, closed
        with mmap.mmap(self.fd, self.slots * SLOT, prot=mmap.PROT_READ) as table:
            words = memoryview(table).cast("I")
            try:
                for number, (gen, fd, frontend) in entries.items():
                    word = number * WORDS
                    state = words[word + 1] if number < self.slots and words[word] == gen else CLOSED
                    length = words[word + 2] if state == READ else 0
                    if state in (IDLE, READ) and length <= DATA:
                        base = number * SLOT + HEADER
                        carried.append((frontend, fd, bytes(table[base:base + length])))
                    else:
                        _close(fd)
                        if state != CLOSED:
                            closed += 1
            finally:
                words.release()
        return carried, closed

    def close(self) -> None:
        for _, fd, _ in self.entries.values():
            _close(fd)
        self.entries = {}
        self.channel.close()
        self.theirs.close()
        if self.fd >= 0:
            _close(self.fd)
            self.fd = -1


def adopt_message(batch: list[tuple[str, int, bytes]]) -> dict:
    return {"t": "adopt", "conns": [[frontend, base64.b64encode(data).decode("ascii")]
                                    for frontend, _, data in batch]}


def adopted(message: dict, fds: list[int]) -> list[tuple[str, socket.socket, bytes]]:
    """An `adopt` message's connections: (frontend, socket, bytes read)."""
    result = []
    conns = message.get("conns") or []
    for row, fd in zip(conns, fds):
        sock = socket.socket(fileno=fd)
        try:
            frontend, data = str(row[0]), base64.b64decode(row[1])
        except (TypeError, ValueError, IndexError):
            log.error("worker: bad adopted connection %r", row)
            sock.close()
            continue
        result.append((frontend, sock, data))
    for fd in fds[len(conns):]:
        _close(fd)
    return result


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
