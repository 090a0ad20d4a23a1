"""Balancing algorithms: a pure choice among a backend's candidate servers.

Each algorithm has the same small interface (like HAProxy's lb_ops):

- `update(servers)`: the candidates changed (a server came or went, a weight
  changed). Called on state changes only; builds the algorithm's structure.
- `pick(key, exclude, limited) -> server | None`: one choice, in O(1) or
  O(log n) however large the pool: `key` is the hash key (client address,
  path, header value; None or b"" when the request has none), `exclude` the
  servers already tried, `limited` whether full servers (maxconn) must be
  skipped.
- `load_changed(server)`: a server took or released a session (leastconn
  keeps its order by load; the others ignore it).

Servers need `.name`, `.weight`, `.cur_sessions` and `.has_room()`. A
balancer keeps only its own bookkeeping and does no I/O. HAProxy keeps a
tree per algorithm; here roundrobin keeps a binary heap, leastconn a queue
per load, the hash algorithms a map or a sorted ring searched by bisection.
"""

from __future__ import annotations

import heapq
import zlib
from bisect import bisect_left
from typing import Optional, Sequence

# leastconn compares sessions/weight as integers: two different ratios with
# weights <= 256 differ by at least 1/65536, far above this scale's step.
LOAD_SCALE = 1 << 20

# A weighted round robin whose cycle (sum of weights) is at most this long
# keeps the whole cycle as a list (8 bytes a turn) and picks by index; a
# longer one takes its turns from a heap as they come.
CYCLE_LIMIT = 4096

# Points on the consistent-hash ring per unit of weight (HAProxy uses a
# fixed count per weight unit too): more points, smoother balance, slower
# rebuilds on state changes.
RING_POINTS = 40

HASH_TYPES = ("map-based", "consistent")
PLAIN = ("roundrobin", "leastconn", "first")
HASHED = ("source", "uri")
HASHED_WITH_ARG = ("hdr", "url_param")
# In the order error messages list them.
ALGORITHMS = ("roundrobin", "leastconn", "source", "first", "uri", "hdr(NAME)", "url_param(NAME)")


def parse(text: str) -> tuple[str, Optional[str]]:
    """`roundrobin`, `hdr(X-Tenant)`... -> (algorithm, argument). ValueError
    with the accepted forms when it is none of them."""
    text = text.strip()
    if text in PLAIN or text in HASHED:
        return text, None
    head, sep, rest = text.partition("(")
    if sep and head in HASHED_WITH_ARG and rest.endswith(")") and rest[:-1].strip():
        return head, rest[:-1].strip()
    raise ValueError(f"invalid value {text!r}: expected one of {' | '.join(ALGORITHMS)}")


def request_key(algorithm: str, argument, url: bytes, head: bytes, client_ip: bytes):
    """The hash key of an http request for `algorithm` (see parse()): the
    client address, the path without its query, a header's value or a query
    parameter's. None when the request has none (then roundrobin decides,
    as HAProxy does)."""
    if algorithm == "source":
        return client_ip
    if algorithm == "uri":
        return url.split(b"?", 1)[0]
    if algorithm == "hdr":
        return header_value(head, argument)
    if algorithm == "url_param":
        return query_param(url, argument)
    return None


def header_value(head: bytes, name: str):
    """The first value of header `name` in a request head, or None."""
    needle = b"\r\n" + name.lower().encode("latin-1") + b":"
    start = head.lower().find(needle)
    if start < 0:
        return None
    start += len(needle)
    end = head.find(b"\r\n", start)
    value = head[start:end if end >= 0 else len(head)].strip()
    return value or None


def query_param(url: bytes, name: str):
    """The value of the first `name=` parameter of the query, or None."""
    query = url.partition(b"?")[2]
    if not query:
        return None
    wanted = name.encode("latin-1") + b"="
    for pair in query.split(b"&"):
        if pair.startswith(wanted):
            value = pair[len(wanted):].split(b"#", 1)[0]
            return value or None
    return None


def mix32(a: int) -> int:
    """Bob Jenkins' 32-bit integer hash (HAProxy's full_hash): spreads the
    bits of a CRC so that close keys land far apart."""
    a = (a + 0x7ed55d16 + (a << 12)) & 0xFFFFFFFF
    a = (a ^ 0xc761c23c ^ (a >> 19)) & 0xFFFFFFFF
    a = (a + 0x165667b1 + (a << 5)) & 0xFFFFFFFF
    a = ((a + 0xd3a2646c) ^ (a << 9)) & 0xFFFFFFFF
    a = (a + 0xfd7046c5 + (a << 3)) & 0xFFFFFFFF
    a = (a ^ 0xb55a4f09 ^ (a >> 16)) & 0xFFFFFFFF
    return a


def key_hash(key: bytes) -> int:
    return mix32(zlib.crc32(key))


def _acceptable(server, exclude, limited) -> bool:
    if exclude is not None and server in exclude:
        return False
    return not limited or server.has_room()


def _first_acceptable(servers, start, exclude, limited):
    """The first acceptable server from `start` on, wrapping: the slow path
    once the algorithm's own order gave only refused servers."""
    n = len(servers)
    for step in range(n):
        server = servers[(start + step) % n]
        if _acceptable(server, exclude, limited):
            return server
    return None


class Balancer:
    """What every algorithm provides."""

    __slots__ = ("name", "servers", "_given")

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.servers = []
        self._given = None

    def update(self, servers: Sequence) -> None:
        self.servers = list(servers)

    def pick(self, key=None, exclude=None, limited=False):
        raise NotImplementedError

    def load_changed(self, server) -> None:
        pass

    def pick_from(self, candidates: list, client_key=b""):
        """The first interface, kept for callers that pass the candidates
        with every pick (`pick(candidates, client_key)` lands here): the
        structure is rebuilt when they differ from the last ones, and loads
        are read again. O(n): not for the request path."""
        given = [(id(s), s.weight) for s in candidates]
        if given != self._given:
            self._given = given
            self.update(candidates)
        else:
            for server in self.servers:
                self.load_changed(server)
        return self.pick(client_key or None)


class RoundRobin(Balancer):
    """Weighted round robin, smooth: each server's n-th turn in a cycle falls
    at (n + 1/2) / weight, and turns are served in that order (earliest
    deadline first, ties in declaration order). With weights 5,1,1 a cycle
    is a a a b c a a, never a burst of five; every cycle of sum(weights)
    picks gives each server exactly its weight. Equal weights are a plain
    rotation. The cycle is worked out once per pool change and then read by
    index, O(1) per pick; a cycle longer than CYCLE_LIMIT turns comes from
    the heap as it goes, O(log n) per pick."""

    __slots__ = ("_cycle", "_next", "_heap", "_turns")

    def __init__(self, name: str = "roundrobin") -> None:
        super().__init__(name)
        self._cycle = []  # one whole cycle of turns, or None: the heap's
        self._next = 0
        self._heap = []
        self._turns = []

    def update(self, servers: Sequence) -> None:
        self.servers = servers = list(servers)
        self._next = 0
        if len({s.weight for s in servers}) <= 1:
            self._cycle = servers  # equal weights: the servers in turn
            return
        self._cycle = None
        self._new_cycle()
        total = sum(s.weight for s in servers)
        if total <= CYCLE_LIMIT:
            self._cycle = [self._next_server() for _ in range(total)]

    def _new_cycle(self) -> None:
        servers = self.servers
        self._turns = [0] * len(servers)
        self._heap = [(0.5 / s.weight, i) for i, s in enumerate(servers)]
        heapq.heapify(self._heap)

    def _next_server(self):
        cycle = self._cycle
        if cycle is not None:
            i = self._next
            self._next = i + 1 if i + 1 < len(cycle) else 0
            return cycle[i]
        servers = self.servers
        heap = self._heap
        i = heap[0][1]
        turn = self._turns[i] + 1
        self._turns[i] = turn
        heapq.heapreplace(heap, ((turn + 0.5) / servers[i].weight, i))
        if heap[0][0] >= 1.0:
            self._new_cycle()  # every server had exactly its weight's turns
        return servers[i]

    def pick(self, key=None, exclude=None, limited=False):
        if type(key) is list:
            return self.pick_from(key, exclude)
        servers = self.servers
        if not servers:
            return None
        server = self._next_server()
        if exclude is None and not limited:
            return server
        for _ in range(len(servers)):
            if _acceptable(server, exclude, limited):
                return server
            server = self._next_server()
        return _first_acceptable(servers, 0, exclude, limited)


class LeastConn(Balancer):
    """Fewest sessions relative to weight; round robin among ties, as in
    HAProxy's fwlc tree (an ebtree keyed by load, equal keys in arrival
    order). Here each load value (sessions * LOAD_SCALE // weight) that
    some server has is a queue, doubly linked through two arrays indexed
    by server; a heap of those load values finds the lightest queue. A
    server that is picked or whose load changes goes to the back of its
    load's queue. A pick and a session start or end touch a few array
    slots and two dicts: O(1) while the loads involved already have a
    queue (a pool has few distinct loads), O(log loads) when one appears."""

    __slots__ = ("_index", "_load", "_prev", "_next", "_head", "_tail", "_loads", "_queued")

    def __init__(self, name: str = "leastconn") -> None:
        super().__init__(name)
        self._index = {}   # server -> index
        self._load = []    # index -> load key
        self._prev = []    # index -> previous index in its load's queue, -1 at the head
        self._next = []    # index -> next index in its load's queue, -1 at the tail
        self._head = {}    # load -> first index of its queue (present iff the queue is not empty)
        self._tail = {}    # load -> last index of its queue
        self._loads = []   # heap of loads; may hold loads whose queue emptied since
        self._queued = set()  # the loads in that heap, each at most once

    def update(self, servers: Sequence) -> None:
        self.servers = servers = list(servers)
        n = len(servers)
        self._index = {s: i for i, s in enumerate(servers)}
        self._load = [s.cur_sessions * LOAD_SCALE // max(s.weight, 1) for s in servers]
        self._prev = [-1] * n
        self._next = [-1] * n
        self._head = {}
        self._tail = {}
        self._loads = []
        self._queued = set()
        for i in range(n):  # declaration order within each load
            self._append(i, self._load[i])

    def _append(self, i: int, load) -> None:
        """Put server i at the back of the queue of `load`."""
        tail = self._tail.get(load, -1)
        self._next[i] = -1
        self._prev[i] = tail
        self._tail[load] = i
        if tail >= 0:
            self._next[tail] = i
            return
        self._head[load] = i
        if load not in self._queued:
            self._queued.add(load)
            heapq.heappush(self._loads, load)

    def _unlink(self, i: int, load) -> None:
        """Take server i out of the queue of `load`."""
        prev = self._prev[i]
        after = self._next[i]
        if prev >= 0:
            self._next[prev] = after
        elif after >= 0:
            self._head[load] = after
        else:  # its queue is empty now (the heap forgets the load lazily)
            del self._head[load]
            del self._tail[load]
            return
        if after >= 0:
            self._prev[after] = prev
        else:
            self._tail[load] = prev

    def _lightest(self) -> int:
        """The index at the front of the lightest queue, -1 if none."""
        loads = self._loads
        head = self._head
        while loads:
            i = head.get(loads[0], -1)
            if i >= 0:
                return i
            self._queued.discard(heapq.heappop(loads))
        return -1

    def _lightest_acceptable(self, exclude, limited) -> int:
        """The first acceptable server in (load, queue) order, -1 if none:
        the slow path (retries, saturated pools), O(n)."""
        servers = self.servers
        following = self._next
        for load in sorted(self._head):
            i = self._head[load]
            while i >= 0:
                if _acceptable(servers[i], exclude, limited):
                    return i
                i = following[i]
        return -1

    def load_changed(self, server) -> None:
        i = self._index.get(server, -1)
        if i < 0:
            return  # not a candidate now (down, or gone in a reload)
        load = server.cur_sessions * LOAD_SCALE // max(server.weight, 1)
        old = self._load[i]
        if load != old:
            self._unlink(i, old)
            self._load[i] = load
            self._append(i, load)

    def pick(self, key=None, exclude=None, limited=False):
        if type(key) is list:
            return self.pick_from(key, exclude)
        i = self._lightest()
        if i < 0:
            return None
        server = self.servers[i]
        if (exclude is not None or limited) and not _acceptable(server, exclude, limited):
            # The lightest is refused (already tried, or full).
            i = self._lightest_acceptable(exclude, limited)
            if i < 0:
                return None
            server = self.servers[i]
        if self._next[i] >= 0:  # behind its equals: round robin among ties
            load = self._load[i]
            self._unlink(i, load)
            self._append(i, load)
        return server


class First(Balancer):
    """The first server in declaration order that has room: fills servers
    one after the other. O(1) unless the first ones are full."""

    __slots__ = ()

    def __init__(self, name: str = "first") -> None:
        super().__init__(name)

    def pick(self, key=None, exclude=None, limited=False):
        if type(key) is list:
            return self.pick_from(key, exclude)
        servers = self.servers
        if not servers:
            return None
        if exclude is None and not limited:
            return servers[0]
        return _first_acceptable(servers, 0, exclude, limited)


class Hash(Balancer):
    """A hash of the request's key (client address, path, header, query
    parameter) chooses the server, so equal keys go to the same server.

    map-based (HAProxy's default): a table of sum(weights) slots in the
    weighted round-robin order; the key's hash modulo its size. Any change
    to the pool remaps most keys.
    consistent: each server owns RING_POINTS * weight points on a 32-bit
    ring placed by hashing its name; a key goes to the first point at or
    after its hash. A server that leaves takes only its own keys with it;
    the others keep theirs. O(log n) by bisection.

    A request without a key (no such header or parameter) is balanced by
    round robin, as HAProxy does."""

    __slots__ = ("consistent", "_table", "_ring", "_points", "_fallback")

    def __init__(self, name: str, consistent: bool = False) -> None:
        super().__init__(name)
        self.consistent = consistent
        self._table = []
        self._ring = []
        self._points = {}  # (name, weight) -> hashes << 16, kept across updates
        self._fallback = RoundRobin(name)

    def update(self, servers: Sequence) -> None:
        self.servers = servers = list(servers)
        self._fallback.update(servers)
        if self.consistent:
            self._build_ring(servers)
        else:
            self._build_table(servers)

    def _build_table(self, servers) -> None:
        if not servers:
            self._table = []
            return
        order = RoundRobin()
        order.update(servers)
        total = sum(s.weight for s in servers)
        self._table = [order.pick() for _ in range(total)]

    def _build_ring(self, servers) -> None:
        if len(servers) > 0xFFFF:
            raise ValueError("too many servers for one consistent-hash ring")
        points = self._points
        ring = []
        live = set()
        for i, server in enumerate(servers):
            ident = (str(server.name), server.weight)
            live.add(ident)
            mine = points.get(ident)
            if mine is None:
                base = ident[0].encode()
                mine = points[ident] = [
                    key_hash(b"%s#%d" % (base, n)) << 16
                    for n in range(RING_POINTS * server.weight)]
            ring.extend([p | i for p in mine])
        ring.sort()
        self._ring = ring
        if len(points) > 2 * len(live) + 16:  # servers gone for good: forget them
            for ident in [k for k in points if k not in live]:
                del points[ident]

    def pick(self, key=None, exclude=None, limited=False):
        if type(key) is list:
            return self.pick_from(key, exclude)
        servers = self.servers
        if not servers:
            return None
        if not key:
            return self._fallback.pick(None, exclude, limited)
        if self.consistent:
            h = key_hash(key)
            ring = self._ring
            n = len(ring)
            at = bisect_left(ring, h << 16)  # the first point at or after the key
            server = servers[ring[at % n] & 0xFFFF]
            if exclude is None and not limited:
                return server
            for step in range(n):  # walk on around the ring
                server = servers[ring[(at + step) % n] & 0xFFFF]
                if _acceptable(server, exclude, limited):
                    return server
            return None
        table = self._table
        n = len(table)
        at = zlib.crc32(key) % n  # CRC32 spreads keys evenly over a modulo
        server = table[at]
        if exclude is None and not limited:
            return server
        for step in range(n):  # the next slots, as a probe sequence
            server = table[(at + step) % n]
            if _acceptable(server, exclude, limited):
                return server
        return None


def make(balance: str = "roundrobin", hash_type: str = "map-based") -> Balancer:
    """The balancer for a backend's `balance` and `hash` settings. KeyError
    for an unknown algorithm (config validation gives the friendly error)."""
    try:
        algorithm, _ = parse(balance)
    except ValueError:
        raise KeyError(balance) from None
    if algorithm == "roundrobin":
        return RoundRobin()
    if algorithm == "leastconn":
        return LeastConn()
    if algorithm == "first":
        return First()
    if hash_type not in HASH_TYPES:
        raise KeyError(hash_type)
    return Hash(balance, hash_type == "consistent")
