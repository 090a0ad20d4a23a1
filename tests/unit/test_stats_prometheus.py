"""/metrics parsed with prometheus_client's own parser and compared with
the names HAProxy's exporter (addons/promex) uses."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lbcore.model import DRAIN, MAINT
from lbcore.stats.prometheus import parse_scopes, render_metrics
from lbcore.stats.snapshot import merge, snapshot
from tests.unit.test_stats_snapshot import add_traffic, make_runtime

# Names from HAProxy's promex README (families as the parser names them:
# counters without their _total suffix).
HAPROXY_NAMES = {
    "process": """nbthread nbproc relative_process_id uptime_seconds start_time_seconds max_connections
        current_connections connections requests""",
    "frontend": """current_sessions max_sessions limit_sessions sessions bytes_in bytes_out
        requests_denied responses_denied request_errors status limit_session_rate max_session_rate
        http_responses http_requests_rate_max http_requests connections_rate_max connections
        intercepted_requests denied_connections denied_sessions failed_header_rewriting
        internal_errors""",
    "backend": """current_queue max_queue current_sessions max_sessions limit_sessions sessions
        bytes_in bytes_out requests_denied responses_denied connection_errors response_errors
        retry_warnings redispatch_warnings status weight active_servers backup_servers check_up_down
        check_last_change_seconds downtime_seconds loadbalanced max_session_rate http_responses
        http_requests client_aborts server_aborts last_session_seconds queue_time_average_seconds
        connect_time_average_seconds response_time_average_seconds total_time_average_seconds
        uweight""",
    "server": """current_queue max_queue current_sessions max_sessions limit_sessions sessions
        bytes_in bytes_out responses_denied connection_errors response_errors retry_warnings
        redispatch_warnings status weight active backup check_failures check_up_down
        check_last_change_seconds downtime_seconds queue_limit current_throttle loadbalanced
        max_session_rate check_status check_code check_duration_seconds http_responses
        client_aborts server_aborts last_session_seconds queue_time_average_seconds
        connect_time_average_seconds response_time_average_seconds total_time_average_seconds
        uweight""",
}
KNOWN = {f"haproxy_{scope}_{name}" for scope, names in HAPROXY_NAMES.items() for name in names.split()}


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(fams: dict, name: str) -> dict:
    """{frozenset(labels.items()): value} of a family's main samples."""
    fam = fams[name]
    return {frozenset(s.labels.items()): s.value for s in fam.samples if not s.name.endswith("_created")}


def value(fams, name, **labels):
    return samples(fams, name)[frozenset(labels.items())]


@pytest.fixture
def scraped():
    runtime = make_runtime()
    add_traffic(runtime)
    be = runtime.backends["keystone"]
    be.by_name["ks2"].set_admin(DRAIN)
    be.by_name["ks3"].set_admin(MAINT)
    runtime.backends["galera"].by_name["db2"].set_weight(0)
    return families(render_metrics(snapshot(runtime)).decode())


def test_every_haproxy_name_is_one_haproxy_uses(scraped):
    emitted = {name for name in scraped if name.startswith("haproxy_")}
    assert emitted - KNOWN == set()
    others = {name for name in scraped if not name.startswith("haproxy_")}
    assert all(name.startswith("lbcore_") for name in others), others


def test_the_contracts_metrics_are_there_with_their_types(scraped):
    expected = {
        "haproxy_frontend_current_sessions": "gauge",
        "haproxy_frontend_max_sessions": "gauge",
        "haproxy_frontend_sessions": "counter",
        "haproxy_frontend_bytes_in": "counter",
        "haproxy_frontend_bytes_out": "counter",
        "haproxy_frontend_http_requests": "counter",
        "haproxy_frontend_http_responses": "counter",
        "haproxy_frontend_request_errors": "counter",
        "haproxy_backend_status": "gauge",
        "haproxy_backend_active_servers": "gauge",
        "haproxy_backend_backup_servers": "gauge",
        "haproxy_backend_current_sessions": "gauge",
        "haproxy_backend_sessions": "counter",
        "haproxy_backend_connection_errors": "counter",
        "haproxy_backend_response_errors": "counter",
        "haproxy_backend_retry_warnings": "counter",
        "haproxy_backend_redispatch_warnings": "counter",
        "haproxy_backend_current_queue": "gauge",
        "haproxy_backend_http_responses": "counter",
        "haproxy_backend_response_time_average_seconds": "gauge",
        "haproxy_server_status": "gauge",
        "haproxy_server_current_sessions": "gauge",
        "haproxy_server_max_sessions": "gauge",
        "haproxy_server_sessions": "counter",
        "haproxy_server_bytes_in": "counter",
        "haproxy_server_bytes_out": "counter",
        "haproxy_server_connection_errors": "counter",
        "haproxy_server_check_failures": "counter",
        "haproxy_server_check_up_down": "counter",
        "haproxy_server_downtime_seconds": "counter",
        "haproxy_server_weight": "gauge",
        "haproxy_server_current_queue": "gauge",
        "haproxy_server_http_responses": "counter",
        "haproxy_server_check_status": "gauge",
        "haproxy_server_check_duration_seconds": "gauge",
        "lbcore_info": "gauge",
        "lbcore_uptime_seconds": "gauge",
    }
    missing = set(expected) - set(scraped)
    assert not missing
    assert {name: scraped[name].type for name in expected} == expected


def test_counter_values_and_labels(scraped):
    assert value(scraped, "haproxy_frontend_current_sessions", proxy="keystone") == 2
    assert value(scraped, "haproxy_frontend_sessions", proxy="keystone") == 3
    assert value(scraped, "haproxy_frontend_http_requests", proxy="keystone") == 7
    assert value(scraped, "haproxy_frontend_http_responses", proxy="keystone", code="2xx") == 5
    assert value(scraped, "haproxy_frontend_http_responses", proxy="keystone", code="5xx") == 2
    assert value(scraped, "haproxy_frontend_limit_sessions", proxy="galera") == 500
    assert value(scraped, "haproxy_server_bytes_in", proxy="keystone", server="ks1") == 1200
    assert value(scraped, "haproxy_server_http_responses", proxy="keystone", server="ks1", code="other") == 0
    assert value(scraped, "haproxy_server_connection_errors", proxy="keystone", server="ks1") == 1
    assert value(scraped, "haproxy_server_weight", proxy="keystone", server="ks1") == 10
    assert value(scraped, "haproxy_server_connect_time_average_seconds", proxy="keystone", server="ks1") \
        == pytest.approx(0.003)
    assert value(scraped, "haproxy_backend_active_servers", proxy="keystone") == 1
    assert value(scraped, "haproxy_backend_backup_servers", proxy="keystone") == 0
    assert value(scraped, "haproxy_server_check_code", proxy="keystone", server="ks1") == 200
    assert value(scraped, "haproxy_server_check_duration_seconds", proxy="keystone", server="ks1") \
        == pytest.approx(0.0032)


def test_status_gauges_are_one_hot(scraped):
    expected = {"ks1": "UP", "ks2": "DRAIN", "ks3": "MAINT", "db1": "UP", "db2": "NOLB"}
    status = samples(scraped, "haproxy_server_status")
    for (proxy, server) in (("keystone", "ks1"), ("keystone", "ks2"), ("keystone", "ks3"),
                            ("galera", "db1"), ("galera", "db2")):
        row = {dict(k)["state"]: v for k, v in status.items()
               if dict(k)["proxy"] == proxy and dict(k)["server"] == server}
        assert set(row) == {"UP", "DOWN", "MAINT", "DRAIN", "NOLB"}
        assert [state for state, v in row.items() if v == 1] == [expected[server]]
        assert sum(row.values()) == 1
    backend = samples(scraped, "haproxy_backend_status")
    assert backend[frozenset({"proxy": "keystone", "state": "UP"}.items())] == 1
    assert backend[frozenset({"proxy": "keystone", "state": "DOWN"}.items())] == 0


def test_check_status_has_haproxys_states_for_checked_servers_only(scraped):
    check = samples(scraped, "haproxy_server_check_status")
    ks1 = {dict(k)["state"]: v for k, v in check.items() if dict(k)["server"] == "ks1"}
    assert {"L4OK", "L4CON", "L4TOUT", "L7OK", "L7STS", "L7TOUT"} <= set(ks1)
    assert [s for s, v in ks1.items() if v == 1] == ["L7OK"]
    assert not any(dict(k)["proxy"] == "galera" for k in check)  # galera servers are not checked


def test_http_metrics_only_for_http_proxies(scraped):
    assert not any(dict(k)["proxy"] == "galera" for k in samples(scraped, "haproxy_frontend_http_responses"))
    assert not any(dict(k)["proxy"] == "galera" for k in samples(scraped, "haproxy_backend_http_requests"))
    assert any(dict(k)["proxy"] == "galera" for k in samples(scraped, "haproxy_backend_current_sessions"))


def test_down_backend_status():
    runtime = make_runtime()
    for server in runtime.backends["galera"].servers:
        server.set_health(False)
    fams = families(render_metrics(snapshot(runtime)).decode())
    assert value(fams, "haproxy_backend_status", proxy="galera", state="DOWN") == 1
    assert value(fams, "haproxy_server_status", proxy="galera", server="db1", state="DOWN") == 1
    assert value(fams, "haproxy_server_check_up_down", proxy="galera", server="db1") == 1
    assert value(fams, "haproxy_backend_check_up_down", proxy="galera") == 1


def test_merged_snapshot_renders_sums():
    a, b = make_runtime(), make_runtime()
    add_traffic(a)
    add_traffic(b)
    fams = families(render_metrics(merge([snapshot(a), snapshot(b)])).decode())
    assert value(fams, "haproxy_server_sessions", proxy="keystone", server="ks1") == 6
    assert value(fams, "lbcore_processes") == 2


def test_scope_filter_like_haproxy():
    snap = snapshot(make_runtime())
    only_servers = families(render_metrics(snap, parse_scopes("scope=server")).decode())
    assert only_servers and all(n.startswith(("haproxy_server_", "lbcore_server_")) for n in only_servers)
    assert parse_scopes("") == ("global", "frontend", "backend", "server", "sticktable")
    assert parse_scopes("scope=frontend&scope=backend") == ("frontend", "backend")
    assert parse_scopes("scope=*&scope=") == ()
    assert render_metrics(snap, ()) == b""
    with pytest.raises(ValueError, match="unknown scope"):
        parse_scopes("scope=bogus")
