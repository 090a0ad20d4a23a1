"""Writes gathered during one turn of the event loop, sent at its end.

Writing to a socket on loopback wakes its reader (the server, the client)
at once, and on a busy machine the woken process may preempt the proxy
right there, in the middle of the events it still has to handle. HAProxy
reads everything that is ready first and sends afterwards. The http proxy
does the same: a connection with bytes to send joins the batch, and the
batch is flushed by a callback the loop runs after the current round of I/O
callbacks (`call_soon` runs on the loop's next turn, before it polls again).
That also turns several writes to one connection in one turn into one
send(). Measured in bench/README.md ("Where the time goes").

A member needs `flush()`, which sends what it holds (nothing if it was
flushed early, e.g. before a close).
"""

from __future__ import annotations

import logging

log = logging.getLogger("lbcore")


class WriteBatch:
    __slots__ = ("loop", "members", "scheduled")

    def __init__(self, loop) -> None:
        self.loop = loop
        self.members: list = []
        self.scheduled = False

    def add(self, member) -> None:
        """`member` has started holding bytes: flush it at the end of the turn."""
        self.members.append(member)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        members = self.members
        if members:
            self.members = []
            for member in members:
                try:
                    member.flush()
                except Exception:  # one connection's failure must not strand the others
                    log.exception("flushing a connection's output failed")
