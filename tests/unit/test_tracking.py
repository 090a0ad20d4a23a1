"""track_sc* actions and sc_*/src_* fetches (lbcore/tracking.py) on the
rules engine's views, with the runtime's tables; time is driven."""

import textwrap

import pytest

from lbcore import config, model, rules, tracking
from lbcore.rules import Connection, Request


def runtime(frontend_yaml: str):
    text = textwrap.dedent("""
    frontends:
      fe:
        bind: "127.0.0.1:18080"
        backend: be
    """) + textwrap.indent(textwrap.dedent(frontend_yaml), "    ")
    text += "backends:\n  be:\n    servers: [{name: s1, address: \"127.0.0.1:9001\"}]\n"
    rt = model.Runtime.build(config.loads(text))
    return rt, rt.frontends["fe"].spec


@pytest.fixture
def clock(monkeypatch):
    now = [1_000_000]
    monkeypatch.setattr(tracking, "clock_ms", lambda: now[0])
    return now


def use_clock(rt, clock):
    for table in rt.stick_tables.values():
        table.clock = lambda: clock[0]


def request(conn, path=b"/"):
    tracking.request_started(conn)
    return Request(conn, b"GET", path, b"1.1", b"Host: x\r\n")


OSA = """
stick_table: {type: ip, size: 256k, expire: 10s, store: [http_req_rate(10s), http_err_rate(10s), conn_cur, http_req_cnt]}
http_request:
  - {track_sc0: src}
  - {deny: 429, if: "{ sc_http_req_rate(0) gt 10 }"}
"""


def test_the_eleventh_request_sees_eleven_and_is_denied(clock):
    rt, fe = runtime(OSA)
    use_clock(rt, clock)
    conn = Connection("10.0.0.1", 5000, "127.0.0.1", 18080)
    answers = []
    for i in range(11):
        req = request(conn)
        answers.append(rules.run(fe.http_request, req))
        tracking.request_done(req, 429 if answers[-1] else 200, error=answers[-1] is not None)
        clock[0] += 10
    assert answers[:10] == [None] * 10
    assert answers[10] is not None and answers[10].status == 429
    entry = rt.stick_tables["fe"].lookup("10.0.0.1")
    assert entry.http_req_cnt == 11
    assert entry.conn_cur == 0  # each request's tracking ended with it
    # Another client has its own counters.
    other = request(Connection("10.0.0.2", 1, "127.0.0.1", 18080))
    assert rules.run(fe.http_request, other) is None


def test_error_rate_counts_4xx_and_denials(clock):
    rt, fe = runtime("""
    stick_table: {type: ip, size: 1k, store: [http_err_rate(10s), http_err_cnt]}
    http_request:
      - {track_sc0: src}
      - {deny: 429, if: "{ sc_http_err_rate(0) gt 2 }"}
    """)
    use_clock(rt, clock)
    conn = Connection("10.0.0.1", 5000, "127.0.0.1", 18080)
    statuses = []
    for status in (404, 200, 401, 403, 200, 200):
        req = request(conn)
        answer = rules.run(fe.http_request, req)
        final = answer.status if answer is not None else status
        statuses.append(final)
        tracking.request_done(req, final, error=answer is not None)
    # 404, 401, 403 are errors; the 5th request sees 3 and is denied, which
    # counts as an error too, as HAProxy's deny does.
    assert statuses == [404, 200, 401, 403, 429, 429]
    assert rt.stick_tables["fe"].lookup("10.0.0.1").http_err_cnt == 5


def test_rates_slide_with_time(clock):
    rt, fe = runtime(OSA)
    use_clock(rt, clock)
    conn = Connection("10.0.0.1", 5000, "127.0.0.1", 18080)
    for _ in range(8):
        req = request(conn)
        rules.run(fe.http_request, req)
        tracking.request_done(req, 200)
    table = rt.stick_tables["fe"]
    entry = table.lookup("10.0.0.1")
    assert table.read(entry, "http_req_rate", clock[0]) == 8
    clock[0] += 15_000  # half the previous period still in the window
    assert table.read(entry, "http_req_rate", clock[0]) == 4


def test_connection_level_tracking_counts_each_request_and_conn_cur(clock):
    rt, fe = runtime("""
    stick_table: {type: ip, size: 1k, store: [conn_cur, conn_cnt, http_req_cnt]}
    tcp_request:
      - {track_sc1: src}
    http_request:
      - {deny: 429, if: "{ sc1_conn_cur gt 2 }"}
      - {track_sc1: src}
    """)
    use_clock(rt, clock)
    conns = [Connection("10.0.0.1", 5000 + i, "127.0.0.1", 18080) for i in range(3)]
    for c in conns:
        assert rules.run(fe.tcp_request, c) is None
    entry = rt.stick_tables["fe"].lookup("10.0.0.1")
    assert (entry.conn_cur, entry.conn_cnt) == (3, 3)
    req = request(conns[0])
    assert rules.run(fe.http_request, req).status == 429  # 3 > 2
    tracking.request_done(req, 429, error=True)
    assert entry.http_req_cnt == 1
    assert entry.conn_cur == 3  # the http track_sc1 was a no-op: sc1 is the connection's
    for c in conns:
        tracking.connection_done(c)
    assert entry.conn_cur == 0 and entry.refs == 0


def test_untracked_counters_give_no_sample_and_src_fetches_read_without_tracking(clock):
    rt, fe = runtime("""
    stick_table: {type: ip, size: 1k, store: [http_req_cnt]}
    http_request:
      - {deny: 403, if: "{ sc_http_req_cnt(0) ge 0 }"}
      - {deny: 404, if: "{ src_http_req_cnt gt 1 }"}
      - {track_sc0: src}
    """)
    use_clock(rt, clock)
    conn = Connection("10.0.0.9", 1, "127.0.0.1", 18080)
    seen = []
    for _ in range(4):
        req = request(conn)
        answer = rules.run(fe.http_request, req)
        seen.append(answer.status if answer else 200)
        tracking.request_done(req, seen[-1], error=answer is not None)
    # sc_* with nothing tracked is no sample (false); src_* reads the entry.
    assert seen == [200, 200, 404, 404]


def test_track_values_are_checked():
    with pytest.raises(config.ConfigError) as info:
        runtime("""
        stick_table: {type: ip, size: 1k}
        http_request:
          - {track_sc3: src}
          - {track_sc0: {key: src, tabel: x}}
          - {track_sc1: "nosuchfetch"}
          - {deny: 429, if: "{ sc_http_req_rate(5) gt 1 }"}
        """)
    text = "\n".join(info.value.problems)
    assert "unknown http_request action 'track_sc3'" in text
    assert "track_sc0 takes a sample (src) or {key: SAMPLE, table: NAME}" in text
    assert "unknown fetch 'nosuchfetch'" in text
    assert "counter must be 0, 1 or 2, got 5" in text
