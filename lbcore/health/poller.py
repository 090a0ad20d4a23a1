"""One epoll set for the probes in flight, watched by the event loop as a
single reader.

Through the loop's add_writer/remove_writer, every probe cost uvloop a poll
handle, callback handles, a descriptor lookup and three to six epoll_ctl
calls (strace: 6 per tcp probe, half of them failing). Here a probe's socket
joins this set with one epoll_ctl, and leaves it by being closed (the kernel
drops a closed descriptor from every epoll set it was in); when any probes
are ready, the loop makes one call that serves them all, as HAProxy's
poller does for its checks.

A probe is anything with `ready(events)`: the EPOLL* bits of its socket.
"""

from __future__ import annotations

import logging
import select

log = logging.getLogger("lbcore")

IN = select.EPOLLIN
OUT = select.EPOLLOUT
ERR = select.EPOLLERR | select.EPOLLHUP  # always reported, even when not asked for


class ProbePoller:
    __slots__ = ("loop", "_epoll", "_probes")

    def __init__(self, loop) -> None:
        self.loop = loop
        self._epoll = select.epoll()
        self._probes: dict = {}  # descriptor -> probe
        loop.add_reader(self._epoll.fileno(), self._ready)

    def __len__(self) -> int:
        return len(self._probes)

    def watch(self, probe, fd: int, events: int) -> None:
        """Call `probe.ready(events)` when its socket `fd` is ready for
        `events` (IN or OUT), level-triggered, until `forget(fd)` (or another
        `watch` of the same descriptor, which replaces the events)."""
        if fd in self._probes:
            self._epoll.modify(fd, events)
        else:
            self._epoll.register(fd, events)
        self._probes[fd] = probe

    def release(self, fd: int) -> None:
        """Stop watching `fd`, which stays open: handed on to another
        poller, or shared with another process (then closing it would not
        take it out of the set). One epoll_ctl."""
        if self._probes.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def forget(self, fd: int) -> None:
        """The probe closes `fd` right after this, which takes it out of the
        epoll set: no system call here."""
        self._probes.pop(fd, None)

    def _ready(self) -> None:
        probes = self._probes
        for fd, events in self._epoll.poll(0):
            # Looked up as each event comes: what an earlier probe's verdict
            # set off (a state flip and its listeners) may have aborted one.
            probe = probes.get(fd)
            if probe is None:
                continue
            try:
                probe.ready(events)
            except Exception:  # one probe's bug must not strand the others of the batch
                log.exception("poller callback failed")

    def close(self) -> None:
        """Stop watching; probes still in flight must be aborted first."""
        if self._epoll.closed:
            return
        if not self.loop.is_closed():
            self.loop.remove_reader(self._epoll.fileno())
        self._epoll.close()
        self._probes.clear()
