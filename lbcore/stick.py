"""Stick tables: keyed entries with stored counters, size-bounded, expiring.

HAProxy's stick tables, without I/O. A table maps a key (an IPv4 or IPv6
address, an integer or a string) to an `Entry` holding the data the table
was declared to store: the server a client is stuck to (`server_id`) and
counters (`conn_cur`, `conn_cnt`, `http_req_cnt`, ...) and rates over a
period (`http_req_rate(10s)`, ...).

Rates follow HAProxy's freq_ctr exactly: an event count for the current
period and one for the previous period; a rate read at time t is the
current count plus the previous count weighted by the part of the previous
period still inside the sliding window ending at t.

Expiry and eviction: an entry lives `expire` after it was last touched
(created, stuck, tracked); when the table is full the least recently
touched entry not in use goes to make room, as HAProxy's
stktable_trash_oldest. Lookups are one dict access. A FIFO (a deque of
the entries, in creation/requeue order) orders them for expiry and
eviction, and `touch` only moves a deadline, so the hot path never
reorders anything: when the oldest entry turns out to have been touched
since it was queued, it is requeued at the back then ("second chance").
An entry removed otherwise stays in the FIFO until it reaches the front,
where it is dropped. Eviction and expiry are amortised O(1).

Time is in integer milliseconds from `clock_ms()` (a monotonic clock), as
HAProxy's ticks; every method that needs it takes `now` so tests drive it.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections import deque
from typing import Callable, Iterator, Optional

__all__ = [
    "TABLE_TYPES", "DATA_TYPES", "RATE_TYPES", "FreqCtr", "Entry", "StickTable",
    "parse_store", "clock_ms", "normalize_key",
]

TABLE_TYPES = ("ip", "ipv6", "integer", "string")
STRING_KEY_LEN = 32  # HAProxy's default `len` for string tables

# Data a table may store. The counters are plain ints; the *_rate types take
# a period and are frequency counters.
COUNTER_TYPES = ("server_id", "conn_cur", "conn_cnt", "http_req_cnt", "http_err_cnt",
                 "bytes_in_cnt", "bytes_out_cnt")
RATE_TYPES = ("conn_rate", "http_req_rate", "http_err_rate", "bytes_in_rate", "bytes_out_rate")
DATA_TYPES = COUNTER_TYPES + RATE_TYPES

_STORE_ITEM = re.compile(r"([a-z_]+)(?:\(([^()]*)\))?")


def clock_ms(_ns=time.monotonic_ns) -> int:
    return _ns() // 1_000_000


def parse_store(text: str, parse_duration: Callable[[object], float]) -> tuple[str, Optional[int]]:
    """`http_req_rate(10s)` -> ("http_req_rate", 10000); `conn_cur` -> ("conn_cur", None).
    ValueError names what is wrong."""
    match = _STORE_ITEM.fullmatch(text.strip())
    if not match:
        raise ValueError(f"invalid data type {text!r} (expected a name like conn_cur or http_req_rate(10s))")
    name, arg = match.group(1), match.group(2)
    if name not in DATA_TYPES:
        import difflib
        close = difflib.get_close_matches(name, DATA_TYPES, n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown data type {name!r}{hint}: expected one of {', '.join(DATA_TYPES)}")
    if name in RATE_TYPES:
        if arg is None or not arg.strip():
            raise ValueError(f"{name} needs a period, e.g. {name}(10s)")
        period_ms = int(round(parse_duration(arg.strip()) * 1000))
        if period_ms < 1:
            raise ValueError(f"{name}: period must be at least 1ms")
        return name, period_ms
    if arg is not None:
        raise ValueError(f"{name} takes no argument")
    return name, None


def normalize_key(table_type: str, value, length: int = STRING_KEY_LEN):
    """The table's key for a sample, or None when the sample does not
    convert (HAProxy then neither tracks nor sticks). ip keys are dotted
    IPv4 text (an IPv4-mapped IPv6 address becomes its IPv4 form); ipv6
    keys are compressed IPv6 text (IPv4 becomes ::ffff:a.b.c.d); integers
    are ints; strings are str cut to the table's `len`."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if table_type == "string":
        return str(value)[:length]
    if table_type == "integer":
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    try:
        address = ipaddress.ip_address(str(value))
    except ValueError:
        return None
    if table_type == "ip":
        if address.version == 6:
            mapped = address.ipv4_mapped
            return str(mapped) if mapped is not None else None
        return str(address)
    if address.version == 4:
        return "::ffff:" + str(address)
    return str(address)


class FreqCtr:
    """HAProxy's freq_ctr over a period of `period` ms."""

    __slots__ = ("tick", "curr", "prev")

    def __init__(self) -> None:
        self.tick = 0
        self.curr = 0
        self.prev = 0

    def add(self, now: int, period: int, inc: int = 1) -> None:
        if now - self.tick < period:
            self.curr += inc
            return
        # Rotate: the current period becomes the previous one; two or more
        # periods without an event forget both.
        self.prev = self.curr
        self.curr = inc
        self.tick += period
        if now - self.tick >= period:
            self.prev = 0
            self.tick = now

    def read(self, now: int, period: int) -> int:
        """Events per period over the sliding window ending at `now`
        (read_freq_ctr_period, with its flapping correction)."""
        curr, past = self.curr, self.prev
        remain = self.tick + period - now
        if remain < 0:
            remain += period
            past = curr if remain >= 0 else 0
            curr = 0
        if not curr and past <= 1:
            return past
        return (past * remain + curr * period) // period

    def state(self, now: int, period: int) -> tuple[int, int, int]:
        """(ms since the current period began, curr, prev), for peers."""
        return now - self.tick, self.curr, self.prev

    def set_state(self, now: int, age: int, curr: int, prev: int) -> None:
        self.tick = now - age
        self.curr = curr
        self.prev = prev


class Entry:
    """One key's data. Each table makes a subclass with a slot for each
    datum it stores and none for the others (`entry_class`), so an entry
    costs only what its table keeps; reading an absent datum through
    `StickTable.read` gives None (HAProxy's sc_* fetches then find nothing)."""

    __slots__ = ("key", "exp", "queued_exp", "refs", "server_id")

    def __init__(self, key, exp: int) -> None:
        self.key = key
        self.exp = exp  # last touch + the table's expire (the last touch if it has none)
        self.queued_exp = exp  # exp when queued at the back of the table's order
        self.refs = 0  # streams tracking this entry: never evicted while > 0
        self.server_id = None


def entry_class(store) -> type:
    """An Entry subclass for a table storing `store` (data type names):
    counters start at 0, rates as empty FreqCtrs."""
    counters = tuple(name for name in COUNTER_TYPES if name in store and name != "server_id")
    rates = tuple(name for name in RATE_TYPES if name in store)

    def __init__(self, key, exp: int) -> None:
        Entry.__init__(self, key, exp)
        for name in counters:
            setattr(self, name, 0)
        for name in rates:
            setattr(self, name, FreqCtr())

    namespace = {"__slots__": counters + rates, "__init__": __init__}
    return type("Entry", (Entry,), namespace)


class StickTable:
    """A named table. `store` maps each stored data type to its period in
    ms (None for plain counters); `server_id` is always stored (stickiness
    needs it, as HAProxy adds it for any `stick` rule)."""

    def __init__(self, name: str, type: str, size: int, expire_ms: Optional[int] = None,
                 store: Optional[dict] = None, length: int = STRING_KEY_LEN,
                 peers: Optional[str] = None, clock: Callable[[], int] = clock_ms) -> None:
        if type not in TABLE_TYPES:
            raise ValueError(f"unknown table type {type!r}")
        self.name = name
        self.type = type
        self.size = size
        self.expire_ms = expire_ms or 0
        self.store = dict(store or {})
        self.store.setdefault("server_id", None)
        self.length = length
        self.peers = peers
        self.spec = None  # the StickTableSpec it was built from (reloads compare it)
        self.sticky = False  # a stick rule stores servers here (dumps show server_id, server_key)
        self.clock = clock
        self.entries: dict = {}
        self.order: deque = deque()  # the entries, oldest first (see the module's docstring)
        # Periods read on the hot path, as attributes.
        self.conn_rate_period = self.store.get("conn_rate") or 0
        self.http_req_rate_period = self.store.get("http_req_rate") or 0
        self.http_err_rate_period = self.store.get("http_err_rate") or 0
        self.bytes_in_rate_period = self.store.get("bytes_in_rate") or 0
        self.bytes_out_rate_period = self.store.get("bytes_out_rate") or 0
        # Called with each entry whose data changed locally (peers push it).
        self.on_update: Optional[Callable[[Entry], None]] = None
        self.entry_class = entry_class(self.store)
        # Which counters the entries have, read per event.
        store = self.store
        self.has_conn_cur = "conn_cur" in store
        self.has_conn_cnt = "conn_cnt" in store
        self.has_http_req_cnt = "http_req_cnt" in store
        self.has_http_err_cnt = "http_err_cnt" in store
        self.has_bytes_in_cnt = "bytes_in_cnt" in store
        self.has_bytes_out_cnt = "bytes_out_cnt" in store

    # -- lookups -------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def used(self) -> int:
        return len(self.entries)

    def key(self, sample):
        """The key for a fetched sample, or None when it does not convert."""
        return normalize_key(self.type, sample, self.length)

    def lookup(self, key, now: Optional[int] = None) -> Optional[Entry]:
        """The live entry for `key`, or None (an expired one is dropped)."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        if self.expire_ms and entry.refs == 0:
            if now is None:
                now = self.clock()
            if entry.exp <= now:
                del self.entries[key]
                return None
        return entry

    def get(self, key, now: Optional[int] = None) -> Optional[Entry]:
        """The entry for `key`, created if absent, touched. None only when
        the table is full of entries in use (HAProxy then fails the track)."""
        if now is None:
            now = self.clock()
        entry = self.lookup(key, now)
        if entry is not None:
            self.touch(entry, now)
            return entry
        if len(self.entries) >= self.size:
            self.purge(now)
            if len(self.entries) >= self.size and not self._evict_oldest(now):
                return None
        entry = self.entry_class(key, now + self.expire_ms)
        self.entries[key] = entry
        self.order.append(entry)
        return entry

    def touch(self, entry: Entry, now: int) -> None:
        # Without `expire` the deadline still orders entries by last use,
        # so a full table evicts the least recently used one.
        entry.exp = now + self.expire_ms

    def remove(self, key) -> bool:
        return self.entries.pop(key, None) is not None

    def clear(self) -> int:
        """Removes every entry not in use; returns how many were removed."""
        removed = [k for k, e in self.entries.items() if e.refs == 0]
        for key in removed:
            del self.entries[key]
        self.order = deque(e for e in self.order if self.entries.get(e.key) is e)
        return len(removed)

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self.entries.values()))

    # -- expiry and eviction -------------------------------------------------

    def purge(self, now: Optional[int] = None, budget: int = 1000) -> int:
        """Drops expired entries from the front of the order, at most
        `budget` looked at (a periodic sweep calls this). Returns drops."""
        if not self.expire_ms:
            return 0
        if now is None:
            now = self.clock()
        entries, order = self.entries, self.order
        dropped = 0
        while order and budget > 0:
            budget -= 1
            entry = order[0]
            if entries.get(entry.key) is not entry:
                order.popleft()  # removed since it was queued
                continue
            if entry.exp > now and entry.exp == entry.queued_exp:
                break  # the front is the oldest deadline and still alive
            order.popleft()
            if entry.exp <= now and entry.refs == 0:
                del entries[entry.key]
                dropped += 1
            else:
                self._requeue(entry)
        return dropped

    def _evict_oldest(self, now: int) -> bool:
        """Removes the least recently touched entry not in use."""
        entries, order = self.entries, self.order
        for _ in range(len(order)):
            entry = order.popleft()
            if entries.get(entry.key) is not entry:
                continue
            if entry.refs == 0 and entry.exp == entry.queued_exp:
                del entries[entry.key]
                return True
            self._requeue(entry)
        return False

    def _requeue(self, entry: Entry) -> None:
        entry.queued_exp = entry.exp
        self.order.append(entry)

    # -- data ----------------------------------------------------------------

    def stick(self, key, server_id: int, now: Optional[int] = None) -> Optional[Entry]:
        """Remember that `key` goes to the server numbered `server_id`."""
        entry = self.get(key, now)
        if entry is not None and entry.server_id != server_id:
            entry.server_id = server_id
            if self.on_update is not None:
                self.on_update(entry)
        return entry

    def conn_start(self, entry: Entry, now: int) -> None:
        """A tracked connection begins (track-sc at connection level)."""
        if self.has_conn_cnt:
            entry.conn_cnt += 1
        if self.conn_rate_period:
            entry.conn_rate.add(now, self.conn_rate_period)
        if self.has_conn_cur:
            entry.conn_cur += 1
        if self.on_update is not None:
            self.on_update(entry)

    def conn_end(self, entry: Entry, now: int) -> None:
        if self.has_conn_cur and entry.conn_cur > 0:
            entry.conn_cur -= 1
        self.touch(entry, now)
        if self.on_update is not None:
            self.on_update(entry)

    def http_request(self, entry: Entry, now: int) -> None:
        if self.has_http_req_cnt:
            entry.http_req_cnt += 1
        if self.http_req_rate_period:
            entry.http_req_rate.add(now, self.http_req_rate_period)
        if self.on_update is not None:
            self.on_update(entry)

    def http_error(self, entry: Entry, now: int) -> None:
        if self.has_http_err_cnt:
            entry.http_err_cnt += 1
        if self.http_err_rate_period:
            entry.http_err_rate.add(now, self.http_err_rate_period)
        if self.on_update is not None:
            self.on_update(entry)

    def bytes(self, entry: Entry, now: int, bytes_in: int, bytes_out: int) -> None:
        if bytes_in:
            if self.has_bytes_in_cnt:
                entry.bytes_in_cnt += bytes_in
            if self.bytes_in_rate_period:
                entry.bytes_in_rate.add(now, self.bytes_in_rate_period, bytes_in)
        if bytes_out:
            if self.has_bytes_out_cnt:
                entry.bytes_out_cnt += bytes_out
            if self.bytes_out_rate_period:
                entry.bytes_out_rate.add(now, self.bytes_out_rate_period, bytes_out)

    def read(self, entry: Entry, name: str, now: Optional[int] = None) -> Optional[int]:
        """A stored datum by its HAProxy name (rates read at `now`), or None
        when the table does not store it."""
        value = getattr(entry, name, None) if name in DATA_TYPES else None
        if value is None or name not in RATE_TYPES:
            return value
        if now is None:
            now = self.clock()
        return value.read(now, self.store[name])

    def set(self, entry: Entry, name: str, value: int, now: Optional[int] = None) -> None:
        """`set table ... data.NAME V`: a counter takes V; a rate restarts
        at V events in the current period."""
        if name not in self.store:
            raise KeyError(name)
        if name in RATE_TYPES:
            if now is None:
                now = self.clock()
            ctr = FreqCtr()
            ctr.set_state(now, 0, value, 0)
            setattr(entry, name, ctr)
        else:
            setattr(entry, name, value)
        if self.on_update is not None:
            self.on_update(entry)

    def expires_in(self, entry: Entry, now: Optional[int] = None) -> int:
        """ms until the entry expires (HAProxy's `exp=`); 0 if it never does."""
        if not self.expire_ms:
            return 0
        if now is None:
            now = self.clock()
        return max(0, entry.exp - now)
