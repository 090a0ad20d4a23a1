"""Balancing algorithms: a pure choice over candidate servers.

Each algorithm has the same small interface (like HAProxy's lb_ops):
`pick(candidates, client_key) -> server`. Candidates are the servers that
may take new work right now (usable, not full), in declaration order; they
need only `.weight` and `.cur_sessions`. A balancer keeps only its own
bookkeeping (round-robin position, smooth weights); it does no I/O.
"""

from __future__ import annotations

import zlib
from typing import Protocol, Sequence


class Candidate(Protocol):
    weight: int
    cur_sessions: int


class Balancer:
    """What every algorithm provides."""

    __slots__ = ()
    name = ""

    def pick(self, candidates: Sequence[Candidate], client_key: bytes = b""):
        raise NotImplementedError


class RoundRobin(Balancer):
    """Smooth weighted round robin (nginx's algorithm): with weights 5,1,1
    the order is a a b a c a a, never a burst of five a's."""

    __slots__ = ("_current", "_next")
    name = "roundrobin"

    def __init__(self) -> None:
        self._current: dict[int, int] = {}
        self._next = 0

    def pick(self, candidates: Sequence[Candidate], client_key: bytes = b""):
        first = candidates[0]
        uniform = True
        for server in candidates:
            if server.weight != first.weight:
                uniform = False
                break
        if uniform:
            # Equal weights: a plain rotation, the common case, O(1).
            self._next += 1
            return candidates[self._next % len(candidates)]
        current = self._current
        total = 0
        best = None
        best_value = 0
        for server in candidates:
            key = id(server)
            value = current.get(key, 0) + server.weight
            current[key] = value
            total += server.weight
            if best is None or value > best_value:
                best, best_value = server, value
        current[id(best)] = best_value - total
        if len(current) > 4 * len(candidates) + 16:
            # Servers came and went (reloads): forget the departed.
            live = {id(s) for s in candidates}
            for key in [k for k in current if k not in live]:
                del current[key]
        return best


class LeastConn(Balancer):
    """Fewest active sessions relative to weight; round robin among ties."""

    __slots__ = ("_next",)
    name = "leastconn"

    def __init__(self) -> None:
        self._next = 0

    def pick(self, candidates: Sequence[Candidate], client_key: bytes = b""):
        best = []
        best_load = None
        for server in candidates:
            # cur/weight compared without division: a/b < c/d <=> a*d < c*b
            if best_load is None:
                best, best_load = [server], server
                continue
            lhs = server.cur_sessions * best_load.weight
            rhs = best_load.cur_sessions * server.weight
            if lhs < rhs:
                best, best_load = [server], server
            elif lhs == rhs:
                best.append(server)
        if len(best) == 1:
            return best[0]
        self._next += 1
        return best[self._next % len(best)]


class Source(Balancer):
    """Hash of the client address over the weighted candidate list: a client
    keeps its server while the pool is unchanged (HAProxy's map-based
    `balance source`)."""

    __slots__ = ("_slots_for", "_slots")
    name = "source"

    def __init__(self) -> None:
        self._slots_for: tuple = ()
        self._slots: list = []

    def pick(self, candidates: Sequence[Candidate], client_key: bytes = b""):
        signature = tuple([(id(s), s.weight) for s in candidates])
        if signature != self._slots_for:
            self._slots = [s for s in candidates for _ in range(s.weight)]
            self._slots_for = signature
        return self._slots[zlib.crc32(client_key) % len(self._slots)]


class First(Balancer):
    """The first server in declaration order that has room (candidates are
    already filtered on maxconn): fills servers one after the other."""

    __slots__ = ()
    name = "first"

    def pick(self, candidates: Sequence[Candidate], client_key: bytes = b""):
        return candidates[0]


ALGORITHMS = {cls.name: cls for cls in (RoundRobin, LeastConn, Source, First)}


def make(name: str) -> Balancer:
    return ALGORITHMS[name]()
