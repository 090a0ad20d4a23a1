"""snapshot(): what the stats endpoint reads from the runtime, and merge()
of several worker processes' snapshots."""

import json
import time

import pytest

from lbcore.config import (
    Address, BackendSpec, Config, FrontendSpec, GlobalSpec, HealthSpec, ServerSpec, StatsSpec,
)
from lbcore.model import DRAIN, MAINT, READY, Runtime
from lbcore.stats.jsonview import render_json
from lbcore.stats.snapshot import merge, server_row, snapshot


def make_config(stats: StatsSpec = None) -> Config:
    """keystone (http, checked, with a backup) and galera (tcp, unchecked):
    the two shapes an OpenStack control plane puts behind its VIP."""
    checked = HealthSpec(type="http", path="/healthcheck", rise=2, fall=3)
    keystone = BackendSpec(
        name="keystone", mode="http", balance="roundrobin", health=checked,
        servers=(
            ServerSpec("ks1", Address("10.0.0.11", 5000), weight=10),
            ServerSpec("ks2", Address("10.0.0.12", 5000), weight=10, maxconn=100),
            ServerSpec("ks3", Address("10.0.0.13", 5000), backup=True),
        ),
    )
    galera = BackendSpec(
        name="galera", mode="tcp", balance="first",
        servers=(
            ServerSpec("db1", Address("10.0.0.21", 3306)),
            ServerSpec("db2", Address("10.0.0.22", 3306), backup=True),
        ),
    )
    frontends = {
        "keystone": FrontendSpec(name="keystone", binds=(Address("", 5000),), mode="http", backend="keystone"),
        "galera": FrontendSpec(name="galera", binds=(Address("10.0.0.1", 3306),), mode="tcp",
                               backend="galera", maxconn=500),
    }
    return Config(
        path="test.yaml", global_=GlobalSpec(),
        stats=stats or StatsSpec(bind=Address("127.0.0.1", 0)),
        frontends=frontends, backends={"keystone": keystone, "galera": galera},
    )


def make_runtime(stats: StatsSpec = None) -> Runtime:
    return Runtime.build(make_config(stats))


def add_traffic(runtime: Runtime) -> None:
    """Counters as the proxies would leave them after some requests."""
    fe = runtime.frontends["keystone"]
    be = runtime.backends["keystone"]
    ks1 = be.by_name["ks1"]
    for obj in (fe, be, ks1):
        for _ in range(3):
            obj.session_start()
        obj.session_end()
        obj.bytes_in += 1200
        obj.bytes_out += 34000
        obj.http_requests += 7
        obj.http_responses[1] += 5
        obj.http_responses[4] += 2
    ks1.connection_errors += 1
    be.connection_errors += 1
    ks1.add_timers(0.0, 0.002, 0.030, 0.040)
    ks1.add_timers(0.0, 0.004, 0.050, 0.060)
    be.add_timers(0.0, 0.003, 0.040, 0.050)
    ks1.check_status, ks1.check_code, ks1.check_duration_ms = "L7OK", 200, 3.2
    ks1.last_check_at = time.monotonic() - 1.5


SPEC_SERVER_FIELDS = {
    "name", "address", "status", "weight", "backup", "current_sessions", "max_sessions",
    "total_sessions", "bytes_in", "bytes_out", "connection_errors", "check_status",
    "check_code", "check_duration_ms", "last_change_s",
}


def test_snapshot_has_the_contract_shape_and_is_json():
    runtime = make_runtime()
    snap = json.loads(render_json(snapshot(runtime)))
    assert set(snap["frontends"]) == {"keystone", "galera"}
    assert set(snap["backends"]) == {"keystone", "galera"}
    keystone = snap["backends"]["keystone"]
    for key in ("status", "active_servers", "backup_servers", "servers"):
        assert key in keystone
    assert [s["name"] for s in keystone["servers"]] == ["ks1", "ks2", "ks3"]
    for row in keystone["servers"]:
        assert SPEC_SERVER_FIELDS <= set(row), SPEC_SERVER_FIELDS - set(row)
    assert keystone["servers"][0]["address"] == "10.0.0.11:5000"
    assert keystone["servers"][2]["backup"] is True


def test_counters_are_read_at_snapshot_time():
    runtime = make_runtime()
    before = snapshot(runtime)
    add_traffic(runtime)
    after = snapshot(runtime)
    assert before["backends"]["keystone"]["servers"][0]["total_sessions"] == 0
    ks1 = after["backends"]["keystone"]["servers"][0]
    assert (ks1["current_sessions"], ks1["max_sessions"], ks1["total_sessions"]) == (2, 3, 3)
    assert (ks1["bytes_in"], ks1["bytes_out"]) == (1200, 34000)
    assert ks1["http_responses"] == {"1xx": 0, "2xx": 5, "3xx": 0, "4xx": 0, "5xx": 2, "other": 0}
    assert ks1["connection_errors"] == 1
    assert ks1["check_status"] == "L7OK" and ks1["check_code"] == 200 and ks1["check_duration_ms"] == 3.2
    assert 1.0 <= ks1["check_age_s"] < 60
    assert ks1["connect_time_avg_s"] == pytest.approx(0.003)
    assert ks1["response_time_avg_s"] == pytest.approx(0.040)
    fe = after["frontends"]["keystone"]
    assert fe["status"] == "OPEN" and fe["http_requests"] == 7 and fe["mode"] == "http"


def test_states_follow_the_model():
    runtime = make_runtime()
    be = runtime.backends["keystone"]
    be.by_name["ks1"].set_admin(DRAIN)
    be.by_name["ks2"].set_weight(0)
    runtime.backends["galera"].by_name["db1"].set_admin(MAINT)
    snap = snapshot(runtime)
    rows = {s["name"]: s for s in snap["backends"]["keystone"]["servers"]}
    assert rows["ks1"]["status"] == "DRAIN"
    assert rows["ks2"]["status"] == "NOLB" and rows["ks2"]["weight"] == 0
    assert rows["ks3"]["status"] == "UP"
    # Only the backup is left to take work.
    assert snap["backends"]["keystone"]["active_servers"] == 0
    assert snap["backends"]["keystone"]["backup_servers"] == 1
    assert snap["backends"]["galera"]["servers"][0]["status"] == "MAINT"
    # Unchecked servers say so; checked ones without a verdict say INI, as HAProxy.
    assert snap["backends"]["galera"]["servers"][1]["check_status"] == "no check"
    assert rows["ks3"]["check_status"] == "INI"


def test_health_changes_show_as_down_with_downtime_and_transitions():
    runtime = make_runtime()
    be = runtime.backends["galera"]
    for server in be.servers:
        server.set_health(False, "test")
    snap = snapshot(runtime)
    galera = snap["backends"]["galera"]
    assert galera["status"] == "DOWN"
    assert galera["down_transitions"] == 1
    assert [s["status"] for s in galera["servers"]] == ["DOWN", "DOWN"]
    assert galera["servers"][0]["down_transitions"] == 1
    time.sleep(0.05)
    be.servers[0].set_health(True)
    snap = snapshot(runtime)
    assert snap["backends"]["galera"]["status"] == "UP"
    assert snap["backends"]["galera"]["downtime_s"] >= 0.05
    assert snap["backends"]["galera"]["servers"][0]["downtime_s"] >= 0.05
    assert snap["backends"]["galera"]["servers"][0]["last_change_s"] < 5


def test_server_row_is_the_stats_json_row():
    runtime = make_runtime()
    server = runtime.backends["keystone"].by_name["ks2"]
    row = server_row(server)
    from_snapshot = snapshot(runtime)["backends"]["keystone"]["servers"][1]
    assert set(row) == set(from_snapshot)
    assert row["session_limit"] == 100 and row["admin"] == READY


def test_merge_sums_counters_and_keeps_states_of_the_first():
    a, b = make_runtime(), make_runtime()
    add_traffic(a)
    add_traffic(b)
    b.backends["keystone"].by_name["ks1"].add_timers(0, 0.010, 0.100, 0.200)
    a.backends["keystone"].by_name["ks1"].set_admin(DRAIN)
    merged = merge([snapshot(a), snapshot(b)])
    ks1 = merged["backends"]["keystone"]["servers"][0]
    assert ks1["status"] == "DRAIN"
    assert (ks1["current_sessions"], ks1["max_sessions"], ks1["total_sessions"]) == (4, 6, 6)
    assert ks1["bytes_out"] == 68000
    assert ks1["http_responses"]["2xx"] == 10
    assert ks1["timed_requests"] == 5
    # (0.002 + 0.004) * 2 + 0.010 over 5 requests
    assert ks1["connect_time_avg_s"] == pytest.approx(0.022 / 5)
    assert merged["frontends"]["keystone"]["http_requests"] == 14
    assert merged["process"]["processes"] == 2
    assert len(merged["process"]["pids"]) == 2


def test_merge_shows_servers_only_some_workers_have():
    a, b = make_runtime(), make_runtime()
    snap_a, snap_b = snapshot(a), snapshot(b)
    extra = dict(snap_b["backends"]["galera"]["servers"][0], name="db3")
    snap_b["backends"]["galera"]["servers"].append(extra)
    merged = merge([snap_a, snap_b])
    assert [s["name"] for s in merged["backends"]["galera"]["servers"]] == ["db1", "db2", "db3"]


def test_merge_of_one_is_itself_and_of_none_is_an_error():
    snap = snapshot(make_runtime())
    assert merge([snap]) is snap
    with pytest.raises(ValueError):
        merge([])
