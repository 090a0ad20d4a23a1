"""Tracking: track_sc0/1/2 actions and the sc_*/src_* fetches.

HAProxy's stick counters. A `track_scN KEY [table T]` rule ties counter N
of a connection (tcp_request) or of a request (http_request) to the
table entry of KEY: the entry counts the connection (conn_cur, conn_cnt,
conn_rate), its HTTP requests (http_req_cnt, http_req_rate) and errors
(http_err_cnt, http_err_rate: 4xx answers from servers and requests lbcore
denied), until the request (or connection) ends. `sc_http_req_rate(N)`
and its kin read counter N's entry; `src_*` fetches read the entry of the
client address without tracking. A request tracked by http_request sees
itself counted (HAProxy's "the 11th request sees 11").

Pure logic: the proxies call `request_started`, `request_done` and
`connection_done`; rules call the actions and fetches. The tables are the
runtime's (`install`, on every (re)load), looked up by name when a rule
runs, so compiled rules survive a reload that keeps their table.
"""

from __future__ import annotations

from typing import Optional

from .rules import RuleError
from .rules.actions import HTTP_REQUEST_ACTIONS, TCP_REQUEST_ACTIONS
from .rules.samples import L4, compile_sample, fetch
from .stick import StickTable, clock_ms

COUNTERS = 3  # sc0, sc1, sc2 (HAProxy's default tune.stick-counters)

# The runtime's tables by name; replaced in place by `install` on a (re)load.
TABLES: dict[str, StickTable] = {}

# Table names rules referred to while a config loaded: (table, where, section).
# config.py checks them once every table is known.
REFS_KEY = ("stick-table", "refs")


def install(tables: dict) -> None:
    TABLES.clear()
    TABLES.update(tables)


def _refer(ctx, table: str) -> None:
    ctx.files.setdefault(REFS_KEY, []).append((table, ctx.where, ctx.section))


class Tracker:
    """One tracked counter: a table, an entry, and the level it was
    tracked at (a connection's trackers outlive its requests)."""

    __slots__ = ("table", "entry")

    def __init__(self, table: StickTable, entry) -> None:
        self.table = table
        self.entry = entry


def _start(table: StickTable, sample_value, now: int) -> Optional[Tracker]:
    if sample_value is None:
        return None
    key = table.key(sample_value)
    if key is None:
        return None
    entry = table.get(key, now)
    if entry is None:
        return None  # full of entries in use: HAProxy does not track either
    entry.refs += 1
    table.conn_start(entry, now)
    return Tracker(table, entry)


def _stop(tracker: Tracker, now: int) -> None:
    tracker.entry.refs -= 1
    tracker.table.conn_end(tracker.entry, now)


# -- actions ---------------------------------------------------------------------

def _track_parser(n: int, http: bool):
    def parse(value, ctx):
        if isinstance(value, dict):
            unknown = set(value) - {"key", "table"}
            if unknown or "key" not in value:
                raise RuleError(f"track_sc{n} takes a sample (src) or {{key: SAMPLE, table: NAME}}")
            text, table = value["key"], value.get("table")
        else:
            text, table = value, None
        if not isinstance(text, str) or not text.strip():
            raise RuleError(f"track_sc{n} needs a sample to track, e.g. src")
        if table is not None and (not isinstance(table, str) or not table):
            raise RuleError(f"track_sc{n}: table must be a stick table's name")
        sample = compile_sample(text, ctx).one
        name = table or ctx.section
        _refer(ctx, name)

        if http:
            def act(msg):
                trackers = msg.stick
                if trackers is None:
                    trackers = msg.stick = [None] * COUNTERS
                conn_trackers = msg.conn.stick
                if trackers[n] is not None or (conn_trackers is not None and conn_trackers[n] is not None):
                    return None
                table_ = TABLES.get(name)
                if table_ is not None:
                    now = table_.clock()
                    tracker = _start(table_, sample(msg), now)
                    if tracker is not None:
                        # The request was counted before the rule ran: count
                        # it now in the entry it is tracked in.
                        table_.http_request(tracker.entry, now)
                        trackers[n] = tracker
                return None
        else:
            def act(msg):
                trackers = msg.stick
                if trackers is None:
                    trackers = msg.stick = [None] * COUNTERS
                if trackers[n] is not None:
                    return None
                table_ = TABLES.get(name)
                if table_ is not None:
                    trackers[n] = _start(table_, sample(msg), table_.clock())
                return None
        return act
    return parse


for _n in range(COUNTERS):
    TCP_REQUEST_ACTIONS[f"track_sc{_n}"] = _track_parser(_n, http=False)
    HTTP_REQUEST_ACTIONS[f"track_sc{_n}"] = _track_parser(_n, http=True)


# -- proxy hooks -----------------------------------------------------------------

def request_started(conn) -> None:
    """A new HTTP request on a connection: the connection's trackers count it."""
    trackers = conn.stick
    if trackers is None:
        return
    now = clock_ms()
    for tracker in trackers:
        if tracker is not None:
            tracker.table.http_request(tracker.entry, now)


def request_done(request, status: int, error: bool = False, bytes_in: int = 0, bytes_out: int = 0) -> None:
    """A request ended with `status`. A 4xx from a server or a request
    lbcore refused (`error`: deny, a bad request) counts as an HTTP error
    in every counter tracking it (HAProxy's stream_inc_http_err_ctr);
    the request's own trackers end."""
    own = request.stick
    conn_trackers = request.conn.stick
    if own is None and conn_trackers is None:
        return
    now = clock_ms()
    failed = error or 400 <= status < 500
    for n in range(COUNTERS):
        tracker = own[n] if own is not None else None
        if tracker is None and conn_trackers is not None:
            tracker = conn_trackers[n]
        if tracker is None:
            continue
        if failed:
            tracker.table.http_error(tracker.entry, now)
        if bytes_in or bytes_out:
            tracker.table.bytes(tracker.entry, now, bytes_in, bytes_out)
    if own is not None:
        request.stick = None
        for tracker in own:
            if tracker is not None:
                _stop(tracker, now)


def connection_done(conn, bytes_in: int = 0, bytes_out: int = 0) -> None:
    """A connection closed: its trackers end (tcp mode counts its bytes)."""
    trackers = conn.stick
    if trackers is None:
        return
    conn.stick = None
    now = clock_ms()
    for tracker in trackers:
        if tracker is not None:
            if bytes_in or bytes_out:
                tracker.table.bytes(tracker.entry, now, bytes_in, bytes_out)
            _stop(tracker, now)


# -- fetches ---------------------------------------------------------------------

# sc_*/src_* data fetches: fetch suffix -> stored data type.
_DATA = {
    "conn_cur": "conn_cur", "conn_cnt": "conn_cnt", "conn_rate": "conn_rate",
    "http_req_cnt": "http_req_cnt", "http_req_rate": "http_req_rate",
    "http_err_cnt": "http_err_cnt", "http_err_rate": "http_err_rate",
    "bytes_in_rate": "bytes_in_rate", "bytes_out_rate": "bytes_out_rate",
    "kbytes_in": "bytes_in_cnt", "kbytes_out": "bytes_out_cnt",
    "server_id": "server_id",
}


def _read(table: StickTable, entry, data: str):
    value = table.read(entry, data)
    if value is not None and data in ("bytes_in_cnt", "bytes_out_cnt"):
        value >>= 10  # kbytes_in/out count KiB, as HAProxy
    return value


def _tracked(msg, n: int) -> Optional[Tracker]:
    request_trackers = getattr(msg, "stick", None)
    if request_trackers is not None and request_trackers[n] is not None:
        return request_trackers[n]
    request = getattr(msg, "request", None)  # a response: its request's trackers
    if request is not None and request.stick is not None and request.stick[n] is not None:
        return request.stick[n]
    conn_trackers = msg.conn.stick
    return conn_trackers[n] if conn_trackers is not None else None


def _counter_arg(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise RuleError(f"counter must be 0, 1 or 2, got {text!r}") from None
    if not 0 <= n < COUNTERS:
        raise RuleError(f"counter must be 0, 1 or 2, got {n}")
    return n


def _sc_fetch(data: str, fixed: Optional[int]):
    """sc_X(N[,table]) when fixed is None, scN_X([table]) otherwise."""
    def build(args, ctx):
        if fixed is None:
            n = _counter_arg(args[0])
            table_name = args[1] if len(args) > 1 and args[1] else None
        else:
            n = fixed
            table_name = args[0] if args and args[0] else None
        if table_name is not None:
            _refer(ctx, table_name)

        def one(msg):
            tracker = _tracked(msg, n)
            if tracker is None:
                return None  # not tracked: no sample, as HAProxy (a comparison is false)
            table = tracker.table
            entry = tracker.entry
            if table_name is not None and table.name != table_name:
                other = TABLES.get(table_name)
                if other is None:
                    return None
                entry = other.lookup(entry.key)
                if entry is None:
                    return 0
                table = other
            return _read(table, entry, data)  # None when the table does not store it
        return one, None
    return build


def _src_fetch(data: str):
    def build(args, ctx):
        table_name = args[0] if args and args[0] else ctx.section
        _refer(ctx, table_name)

        def one(msg):
            table = TABLES.get(table_name)
            if table is None:
                return None
            key = table.key(msg.conn.src)
            entry = table.lookup(key) if key is not None else None
            if entry is None:
                return 0  # no entry yet: 0, as HAProxy
            return _read(table, entry, data)
        return one, None
    return build


for _suffix, _data in _DATA.items():
    fetch(f"sc_{_suffix}", "int", L4, 1, 2)(_sc_fetch(_data, None))
    for _n in range(COUNTERS):
        fetch(f"sc{_n}_{_suffix}", "int", L4, 0, 1)(_sc_fetch(_data, _n))
    fetch(f"src_{_suffix}", "int", L4, 0, 1)(_src_fetch(_data))


@fetch("sc_tracked", "bool", L4, 1, 2)
def _sc_tracked(args, ctx):
    n = _counter_arg(args[0])
    return (lambda msg: _tracked(msg, n) is not None), None


for _n in range(COUNTERS):
    fetch(f"sc{_n}_tracked", "bool", L4, 0, 1)(
        (lambda n: (lambda args, ctx: ((lambda msg: _tracked(msg, n) is not None), None)))(_n))
