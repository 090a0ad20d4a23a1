"""What a successor takes on at a takeover (lbcore.takeover.Carry): server
states and the counters that are not zero, built a slice at a time, and a
final state of only the rows that changed; read back by the successor's
_apply exactly as a stats snapshot was."""

import asyncio
import json

from lbcore import takeover
from lbcore.config import loads
from lbcore.model import MAINT, Runtime
from lbcore.stats.snapshot import snapshot

TEXT = """
frontends:
  web: {bind: "127.0.0.1:8080", mode: http, backend: pool}
  other: {bind: "127.0.0.1:8081", mode: http, backend: spare}
backends:
  pool:
    mode: http
    health: {type: tcp}
    servers:
      - {name: a, address: "127.0.0.1:1"}
      - {name: b, address: "127.0.0.1:2"}
  spare:
    mode: http
    servers:
      - {name: c, address: "127.0.0.1:3"}
"""


def runtime() -> Runtime:
    return Runtime.build(loads(TEXT))


def traffic(rt: Runtime) -> None:
    web, pool = rt.frontends["web"], rt.backends["pool"]
    a = pool.by_name["a"]
    for target in (web, pool, a):
        target.total_sessions += 5
        target.http_requests += 4
        target.bytes_in += 1000
        target.max_sessions = 3
        target.http_responses[1] += 4
        target.timed_requests += 2
        target.time_total += 0.5
    a.set_admin(MAINT, source="test")
    pool.by_name["b"].set_weight(7, source="test")


def test_carry_holds_states_and_only_counters_not_zero():
    rt = runtime()
    traffic(rt)
    state = json.loads(takeover.Carry.now(rt).json())
    assert state["frontends"]["other"] == {}
    assert state["frontends"]["web"] == {
        "total_sessions": 5, "bytes_in": 1000, "http_requests": 4, "max_sessions": 3, "timed_requests": 2,
        "queue_time_avg_s": 0.0, "connect_time_avg_s": 0.0, "response_time_avg_s": 0.0,
        "total_time_avg_s": 0.25, "http_responses": {"1xx": 0, "2xx": 4, "3xx": 0, "4xx": 0, "5xx": 0, "other": 0}}
    a, b = state["backends"]["pool"]["servers"]
    assert (a["name"], a["address"], a["admin"], a["total_sessions"]) == ("a", "127.0.0.1:1", "MAINT", 5)
    assert (b["name"], b["weight"], b["health"]) == ("b", 7, "UP")
    assert "total_sessions" not in b


def test_built_in_slices_equals_built_at_once(monkeypatch):
    rt = runtime()
    traffic(rt)
    monkeypatch.setattr(takeover, "SLICE", 0.0)  # a yield after every row
    built = asyncio.run(takeover.Carry.build(rt))
    assert built.rows == takeover.Carry.now(rt).rows


def test_successor_takes_states_and_counters_as_from_a_snapshot():
    old = runtime()
    traffic(old)
    for state in (json.loads(takeover.Carry.now(old).json()), json.loads(json.dumps(snapshot(old)))):
        new = runtime()
        assert takeover._apply(new, state, {}, states=True) == 3
        web, pool = new.frontends["web"], new.backends["pool"]
        assert (web.total_sessions, web.http_requests, web.max_sessions, web.http_responses[1]) == (5, 4, 3, 4)
        assert (web.timed_requests, web.time_total) == (2, 0.5)
        assert pool.by_name["a"].admin == MAINT and pool.by_name["a"].total_sessions == 5
        assert pool.by_name["b"].weight == 7


def test_final_state_sends_the_changed_rows_and_adds_up():
    old = runtime()
    traffic(old)
    handed = takeover.Carry.now(old)
    base = json.loads(handed.json())
    new = runtime()
    takeover._apply(new, base, {}, states=True)
    # While draining the old process serves two more requests on web/pool/a.
    for target in (old.frontends["web"], old.backends["pool"], old.backends["pool"].by_name["a"]):
        target.http_requests += 2
        target.total_sessions += 2
    final = takeover.Carry.now(old).since(handed)
    assert set(final.rows) == {("frontends", "web"), ("backends", "pool")}
    takeover._apply(new, json.loads(final.json()), base, states=False)
    assert new.frontends["web"].http_requests == 6 and new.frontends["web"].total_sessions == 7
    assert new.backends["pool"].by_name["a"].http_requests == 6
    assert new.backends["spare"].total_sessions == 0
    assert takeover.Carry.now(old).since(takeover.Carry.now(old)).json() == '{"frontends":{},"backends":{}}'


def test_a_snapshot_carries_the_same_rows():
    """lbcore.workers' master hands the merge of its workers' snapshots:
    the same compact rows, so its final state is the changed rows too."""
    rt = runtime()
    traffic(rt)
    assert takeover.Carry.from_snapshot(json.loads(json.dumps(snapshot(rt)))).rows == takeover.Carry.now(rt).rows
