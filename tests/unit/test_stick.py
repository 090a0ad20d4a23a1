"""Stick tables (lbcore/stick.py): keys, expiry, eviction, HAProxy's rates."""

import pytest

from lbcore import config
from lbcore.stick import FreqCtr, StickTable, normalize_key, parse_store


def table(**kw):
    kw.setdefault("size", 100)
    return StickTable("t", kw.pop("type", "ip"), **kw)


# -- keys ---------------------------------------------------------------------

@pytest.mark.parametrize("table_type,sample,key", [
    ("ip", b"10.0.0.1", "10.0.0.1"),
    ("ip", "::ffff:10.0.0.1", "10.0.0.1"),
    ("ip", "2001:db8::1", None),       # HAProxy cannot put a real IPv6 in an ip table
    ("ip", "not an address", None),
    ("ipv6", "10.0.0.1", "::ffff:10.0.0.1"),
    ("ipv6", "2001:DB8:0::1", "2001:db8::1"),
    ("integer", "42", 42),
    ("integer", "x", None),
    ("string", b"abc", "abc"),
    ("string", "x" * 40, "x" * 32),
])
def test_keys_normalise_as_haproxy_converts_samples(table_type, sample, key):
    assert normalize_key(table_type, sample) == key


# -- rates --------------------------------------------------------------------

def test_rate_counts_events_in_the_current_period():
    ctr, period = FreqCtr(), 10_000
    for i in range(5):
        ctr.add(100_000 + i, period)
    assert ctr.read(100_010, period) == 5


def test_rate_weights_the_previous_period_by_what_remains_of_the_window():
    ctr, period = FreqCtr(), 10_000
    start = 1_000_000
    for _ in range(10):
        ctr.add(start, period)        # 10 events in the first period
    # A quarter into the next period: 3/4 of the previous period still counts.
    ctr.add(start + 12_500, period)
    assert ctr.read(start + 12_500, period) == 1 + 10 * 7_500 // 10_000
    # After two whole periods without events both are forgotten.
    assert ctr.read(start + 30_001, period) == 0


def test_rate_reads_the_previous_period_without_new_events():
    ctr, period = FreqCtr(), 1_000
    for _ in range(4):
        ctr.add(5_000, period)
    # Half a period after the first one ended: 4 * 1/2.
    assert ctr.read(6_500, period) == 2
    # Flapping correction: a lone past event reads 1 while in the window.
    lone = FreqCtr()
    lone.add(5_000, period)
    assert lone.read(6_900, period) == 1


def test_rate_forgets_after_two_idle_periods_on_update():
    ctr, period = FreqCtr(), 1_000
    for _ in range(7):
        ctr.add(5_000, period)
    ctr.add(9_000, period)
    assert (ctr.curr, ctr.prev) == (1, 0)
    assert ctr.read(9_000, period) == 1


def test_parse_store():
    assert parse_store("http_req_rate(10s)", config.parse_duration) == ("http_req_rate", 10_000)
    assert parse_store("conn_cur", config.parse_duration) == ("conn_cur", None)
    with pytest.raises(ValueError, match="needs a period"):
        parse_store("conn_rate", config.parse_duration)
    with pytest.raises(ValueError, match="did you mean 'conn_cur'"):
        parse_store("conn_curr", config.parse_duration)
    with pytest.raises(ValueError, match="takes no argument"):
        parse_store("conn_cnt(1s)", config.parse_duration)


# -- entries ------------------------------------------------------------------

def test_counters_only_for_stored_types():
    t = table(store={"http_req_cnt": None, "http_req_rate": 10_000})
    e = t.get("10.0.0.1", now=1000)
    t.http_request(e, 1000)
    t.http_request(e, 1001)
    t.http_error(e, 1001)
    assert t.read(e, "http_req_cnt") == 2
    assert t.read(e, "http_req_rate", now=1002) == 2
    assert t.read(e, "http_err_cnt") is None
    assert t.read(e, "conn_cur") is None


def test_conn_cur_follows_tracked_connections():
    t = table(store={"conn_cur": None, "conn_cnt": None, "conn_rate": 1000})
    e = t.get("10.0.0.1", now=0)
    t.conn_start(e, 0)
    t.conn_start(e, 1)
    t.conn_end(e, 2)
    assert (e.conn_cur, e.conn_cnt, t.read(e, "conn_rate", 3)) == (1, 2, 2)


def test_entries_expire_after_their_last_touch():
    t = table(expire_ms=1000)
    t.stick("10.0.0.1", 1, now=0)
    assert t.lookup("10.0.0.1", now=999).server_id == 1
    t.get("10.0.0.1", now=900)  # touched: lives until 1900
    assert t.lookup("10.0.0.1", now=1500) is not None
    assert t.lookup("10.0.0.1", now=1900) is None
    assert len(t) == 0


def test_entries_in_use_never_expire():
    t = table(expire_ms=10)
    e = t.get("a", now=0)
    e.refs = 1
    assert t.lookup("a", now=1000) is e


def test_a_full_table_evicts_the_least_recently_touched():
    t = table(size=3, expire_ms=60_000)
    for i, key in enumerate(("a", "b", "c")):
        t.get(key, now=i)
    t.get("a", now=10)        # a is now the most recent
    t.get("d", now=11)        # evicts b
    assert sorted(e.key for e in t) == ["a", "c", "d"]
    t.get("e", now=12)        # evicts c
    assert sorted(e.key for e in t) == ["a", "d", "e"]


def test_a_full_table_without_expire_evicts_the_least_recently_used():
    t = table(size=2)
    t.get("a", now=1)
    t.get("b", now=2)
    t.get("a", now=3)
    t.get("c", now=4)
    assert sorted(e.key for e in t) == ["a", "c"]


def test_a_table_full_of_entries_in_use_refuses_new_ones():
    t = table(size=2)
    for key in ("a", "b"):
        t.get(key, now=0).refs = 1
    assert t.get("c", now=1) is None
    assert len(t) == 2


def test_purge_drops_expired_entries_and_keeps_touched_ones():
    t = table(size=10, expire_ms=100)
    for i in range(5):
        t.get(str(i), now=i)
    t.get("0", now=90)
    assert t.purge(now=150) == 4
    assert [e.key for e in t] == ["0"]
    assert t.purge(now=190) == 1
    assert len(t) == 0


def test_eviction_stays_cheap_at_scale():
    # 200k inserts into a 1000-entry table, touching half: amortised O(1),
    # so this runs in well under a second even in the pure-Python build.
    t = table(size=1000, expire_ms=1_000_000)
    for i in range(200_000):
        e = t.get(i, now=i)
        if i % 2:
            t.get(i - 1, now=i)
    assert len(t) == 1000
    assert e.key in t.entries


def test_eviction_of_a_full_large_table_stays_linear():
    # Every insert into a full table evicts: 300k of them into a 100k table
    # must not rescan what was evicted before (seconds, not hours).
    import time
    t = table(size=100_000, expire_ms=10_000_000)
    started = time.monotonic()
    for i in range(300_000):
        t.get(i, now=i)
    assert len(t) == 100_000 and t.lookup(299_999, now=300_000) is not None
    assert t.lookup(0, now=300_000) is None
    assert time.monotonic() - started < 10


def test_set_and_clear():
    t = table(store={"http_req_rate": 10_000, "conn_cnt": None})
    e = t.get("10.0.0.1", now=0)
    t.set(e, "conn_cnt", 7)
    t.set(e, "http_req_rate", 30, now=0)
    assert t.read(e, "conn_cnt") == 7
    assert t.read(e, "http_req_rate", now=5) == 30
    with pytest.raises(KeyError):
        t.set(e, "conn_cur", 1)
    t.get("10.0.0.2", now=0).refs = 1
    assert t.clear() == 1
    assert [x.key for x in t] == ["10.0.0.2"]


def test_updates_are_reported_for_peers():
    seen = []
    t = table(store={"http_req_cnt": None})
    t.on_update = seen.append
    e = t.stick("10.0.0.1", 2, now=0)
    t.stick("10.0.0.1", 2, now=1)  # unchanged: nothing to push
    t.http_request(e, 2)
    assert seen == [e, e]
