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
tree per algorithm; here roundrobin keeps its whole cycle (a binary heap
beyond CYCLE_LIMIT), leastconn a queue per weight and sessions count, the
hash algorithms a map or a sorted ring searched by bisection.
"""

from __future__ import annotations

import heapq
import zlib
from array import array
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


def _longs(n, fill=0):
    """n C integers (long long): what the compiled build indexes as C arrays."""
    return array("q", [fill]) * n


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
    """Fewest sessions relative to weight; among equals the server that
    moved (was picked, or changed load) longest ago, as in HAProxy's fwlc
    tree (an ebtree keyed by load whose equal keys keep their arrival
    order): ties take turns.

    Servers are grouped by weight (a pool has few distinct weights, most
    often one). Within a group, load order is sessions order, so each group
    keeps one FIFO queue per sessions count, found by index: the queues
    are doubly linked through per-server arrays, and a group knows its
    lowest non-empty queue. A pick compares the heads of the groups'
    lowest queues (one with equal weights); a session start or end moves
    one server between two neighbouring queues. Everything is a C array
    of integers in the compiled build (balance.pxd): O(1) per pick and per
    load change, O(groups) per pick, with no Python object made."""

    __slots__ = ("_index", "_sess", "_group", "_prev", "_next", "_stamp", "_clock",
                 "_weights", "_low", "_cap", "_head", "_tail", "_scale")

    def __init__(self, name: str = "leastconn") -> None:
        super().__init__(name)
        self._index = {}           # server -> index
        self._sess = _longs(0)     # index -> sessions when last seen
        self._group = _longs(0)    # index -> weight group
        self._prev = _longs(0)     # index -> previous index in its queue, -1 at the head
        self._next = _longs(0)     # index -> next index in its queue, -1 at the tail
        self._stamp = _longs(0)    # index -> when it last moved (ties across groups)
        self._clock = 0
        self._weights = _longs(0)  # group -> weight
        self._low = _longs(0)      # group -> lowest sessions with a non-empty queue, -1: none
        self._cap = 0              # queues per group (sessions 0 .. cap-1)
        self._head = _longs(0)     # group * cap + sessions -> first index of that queue, -1: empty
        self._tail = _longs(0)     # group * cap + sessions -> last index of that queue
        self._scale = LOAD_SCALE   # as a C value in the compiled build

    def update(self, servers: Sequence) -> None:
        self.servers = servers = list(servers)
        n = len(servers)
        self._index = {s: i for i, s in enumerate(servers)}
        groups = {}  # weight -> group, in order of first appearance
        group = _longs(n)
        sess = _longs(n)
        for i, server in enumerate(servers):
            group[i] = groups.setdefault(max(server.weight, 1), len(groups))
            sess[i] = max(server.cur_sessions, 0)
        self._group = group
        self._sess = sess
        self._prev = _longs(n, -1)
        self._next = _longs(n, -1)
        self._stamp = _longs(n)
        self._clock = 0
        self._weights = _longs(len(groups))
        for weight, g in groups.items():
            self._weights[g] = weight
        self._low = _longs(len(groups), -1)
        self._cap = max(sess, default=0) + 2
        self._head = _longs(len(groups) * self._cap, -1)
        self._tail = _longs(len(groups) * self._cap, -1)
        for i in range(n):  # declaration order within each queue
            self._append(i)

    def _grow(self, sessions) -> None:
        """Room for queues up to `sessions` (rare: capacity doubles)."""
        old = self._cap
        cap = max(2 * old, sessions + 2)
        groups = len(self._weights)
        head = _longs(groups * cap, -1)
        tail = _longs(groups * cap, -1)
        for g in range(groups):
            for s in range(old):
                head[g * cap + s] = self._head[g * old + s]
                tail[g * cap + s] = self._tail[g * old + s]
        self._head = head
        self._tail = tail
        self._cap = cap

    def _append(self, i) -> None:
        """Server i to the back of the queue of its group and sessions."""
        g = self._group[i]
        s = self._sess[i]
        at = g * self._cap + s
        tail = self._tail[at]
        self._prev[i] = tail
        self._next[i] = -1
        self._tail[at] = i
        if tail >= 0:
            self._next[tail] = i
        else:
            self._head[at] = i
        self._stamp[i] = self._clock
        self._clock += 1
        low = self._low[g]
        if low < 0 or s < low:
            self._low[g] = s

    def _unlink(self, i) -> bool:
        """Server i out of its queue; True if that queue is empty now."""
        at = self._group[i] * self._cap + self._sess[i]
        prev = self._prev[i]
        after = self._next[i]
        if prev >= 0:
            self._next[prev] = after
        else:
            self._head[at] = after
        if after >= 0:
            self._prev[after] = prev
        else:
            self._tail[at] = prev
        return prev < 0 and after < 0

    def _raise_low(self, g, s) -> None:
        """Group g's queue of `s` sessions emptied: if it was the lowest,
        the lowest is the next non-empty one up (queues move by one
        session at a time, so it is near)."""
        if self._low[g] != s:
            return
        cap = self._cap
        s += 1
        while s < cap:
            if self._head[g * cap + s] >= 0:
                self._low[g] = s
                return
            s += 1
        self._low[g] = -1

    def _load(self, i):
        return self._sess[i] * self._scale // self._weights[self._group[i]]

    def _before(self, i, j) -> bool:
        """Whether server i comes before server j: lighter, or as light and
        moved longer ago."""
        a = self._load(i)
        b = self._load(j)
        return a < b or (a == b and self._stamp[i] < self._stamp[j])

    def _lightest(self):
        """The first server of the lightest queue, -1 if none."""
        best = -1
        for g in range(len(self._low)):
            s = self._low[g]
            if s >= 0:
                i = self._head[g * self._cap + s]
                if best < 0 or self._before(i, best):
                    best = i
        return best

    def _lightest_acceptable(self, exclude, limited):
        """The first acceptable server in (load, moved) order, -1 if none:
        the slow path (retries, full servers), O(n)."""
        best = -1
        servers = self.servers
        for i in range(len(servers)):
            if (best < 0 or self._before(i, best)) and _acceptable(servers[i], exclude, limited):
                best = i
        return best

    def load_changed(self, server) -> None:
        i = self._index.get(server, -1)
        if i < 0:
            return  # not a candidate now (down, or gone in a reload)
        sessions = server.cur_sessions
        if sessions < 0:
            sessions = 0
        old = self._sess[i]
        if sessions == old:
            return
        if sessions >= self._cap:
            self._grow(sessions)
        emptied = self._unlink(i)
        self._sess[i] = sessions
        self._append(i)
        if emptied:
            self._raise_low(self._group[i], old)

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
            self._unlink(i)
            self._append(i)
        else:  # alone in its queue: still the last to have moved
            self._stamp[i] = self._clock
            self._clock += 1
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
