"""/metrics: Prometheus text exposition with HAProxy's exporter names.

Names, types and labels follow HAProxy's built-in exporter (addons/promex)
so existing dashboards and alerts keep working: `haproxy_frontend_*`,
`haproxy_backend_*`, `haproxy_server_*` with `proxy`, `server`, `state` and
`code` labels, one sample per state for the `*_status` gauges (1 for the
current state). What HAProxy has no name for is `lbcore_*`.

A custom collector turns a snapshot dict into metric families when
prometheus_client asks for them; nothing Prometheus-related runs on the
request path, and no metric objects live between scrapes.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..model import STATUS_CLASSES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

SCOPES = ("global", "frontend", "backend", "server", "sticktable")

FRONTEND_STATES = ("DOWN", "UP")
BACKEND_STATES = ("DOWN", "UP")
SERVER_STATES = ("DOWN", "UP", "MAINT", "DRAIN", "NOLB")
# The check results HAProxy exports as haproxy_server_check_status states,
# in its order (those that are a verdict, not "unknown"/"initializing").
CHECK_STATES = (
    "HANA", "SOCKERR", "L4OK", "L4TOUT", "L4CON", "L6OK", "L6TOUT", "L6RSP",
    "L7TOUT", "L7RSP", "L7OK", "L7OKC", "L7STS", "PROCERR", "PROCTOUT", "PROCOK",
)

G, C = "gauge", "counter"

Getter = Callable[[dict], Optional[float]]


def _key(name: str) -> Getter:
    return lambda row: row.get(name)


def _http_only(name: str) -> Getter:
    return lambda row: row.get(name) if row.get("mode") == "http" else None


# (metric suffix, type, help, value getter); a getter answering None skips the sample.
FRONTEND_METRICS: tuple[tuple[str, str, str, Getter], ...] = (
    ("current_sessions", G, "Number of current sessions.", _key("current_sessions")),
    ("max_sessions", G, "Maximum observed number of active sessions.", _key("max_sessions")),
    ("limit_sessions", G, "Configured session limit.", _key("session_limit")),
    ("sessions_total", C, "Total number of sessions.", _key("total_sessions")),
    ("bytes_in_total", C, "Current total of incoming bytes.", _key("bytes_in")),
    ("bytes_out_total", C, "Current total of outgoing bytes.", _key("bytes_out")),
    ("requests_denied_total", C, "Total number of denied requests.", _key("denied_requests")),
    ("responses_denied_total", C, "Total number of denied responses.", _key("denied_responses")),
    ("request_errors_total", C, "Total number of request errors.", _key("request_errors")),
    ("http_requests_total", C, "Total number of HTTP requests received.", _http_only("http_requests")),
    ("connections_total", C, "Total number of connections.", _key("total_sessions")),
)

BACKEND_METRICS: tuple[tuple[str, str, str, Getter], ...] = (
    ("current_queue", G, "Current number of queued requests.", _key("queue_current")),
    ("max_queue", G, "Maximum observed number of queued requests.", _key("queue_max")),
    ("current_sessions", G, "Number of current sessions.", _key("current_sessions")),
    ("max_sessions", G, "Maximum observed number of active sessions.", _key("max_sessions")),
    ("sessions_total", C, "Total number of sessions.", _key("total_sessions")),
    ("bytes_in_total", C, "Current total of incoming bytes.", _key("bytes_in")),
    ("bytes_out_total", C, "Current total of outgoing bytes.", _key("bytes_out")),
    ("requests_denied_total", C, "Total number of denied requests.", _key("denied_requests")),
    ("responses_denied_total", C, "Total number of denied responses.", _key("denied_responses")),
    ("connection_errors_total", C, "Total number of connection errors.", _key("connection_errors")),
    ("response_errors_total", C, "Total number of response errors.", _key("response_errors")),
    ("retry_warnings_total", C, "Total number of retry warnings.", _key("retries")),
    ("redispatch_warnings_total", C, "Total number of redispatch warnings.", _key("redispatches")),
    ("weight", G, "Service weight.", _key("weight")),
    ("active_servers", G, "Current number of active servers.", _key("active_servers")),
    ("backup_servers", G, "Current number of backup servers.", _key("backup_servers")),
    ("check_up_down_total", C, "Total number of UP->DOWN transitions.", _key("down_transitions")),
    ("check_last_change_seconds", G, "Number of seconds since the last UP<->DOWN transition.", _key("last_change_s")),
    ("downtime_seconds_total", C, "Total downtime (in seconds) for the service.", _key("downtime_s")),
    ("loadbalanced_total", C, "Total number of times a service was selected.", _key("total_sessions")),
    ("http_requests_total", C, "Total number of HTTP requests received.", _http_only("http_requests")),
    ("client_aborts_total", C, "Total number of data transfers aborted by the client.", _key("client_aborts")),
    ("server_aborts_total", C, "Total number of data transfers aborted by the server.", _key("server_aborts")),
    ("queue_time_average_seconds", G, "Avg. queue time for last successful connections.", _key("queue_time_avg_s")),
    ("connect_time_average_seconds", G, "Avg. connect time for last successful connections.", _key("connect_time_avg_s")),
    ("response_time_average_seconds", G, "Avg. response time for last successful connections.", _key("response_time_avg_s")),
    ("total_time_average_seconds", G, "Avg. total time for last successful connections.", _key("total_time_avg_s")),
    ("uweight", G, "Server's user weight, or sum of active servers' user weights for a backend.", _key("user_weight")),
)


def _check_duration(row: dict) -> Optional[float]:
    ms = row.get("check_duration_ms")
    return None if ms is None or not row.get("checked") else ms / 1000.0


def _check_code(row: dict) -> Optional[float]:
    # HAProxy reports 0 until a layer 5-7 check has produced a code.
    return (row.get("check_code") or 0) if row.get("checked") else None


SERVER_METRICS: tuple[tuple[str, str, str, Getter], ...] = (
    ("current_queue", G, "Current number of queued requests.", _key("queue_current")),
    ("max_queue", G, "Maximum observed number of queued requests.", _key("queue_max")),
    ("current_sessions", G, "Number of current sessions.", _key("current_sessions")),
    ("max_sessions", G, "Maximum observed number of active sessions.", _key("max_sessions")),
    ("limit_sessions", G, "Configured session limit.", _key("session_limit")),
    ("sessions_total", C, "Total number of sessions.", _key("total_sessions")),
    ("bytes_in_total", C, "Current total of incoming bytes.", _key("bytes_in")),
    ("bytes_out_total", C, "Current total of outgoing bytes.", _key("bytes_out")),
    ("responses_denied_total", C, "Total number of denied responses.", _key("denied_responses")),
    ("connection_errors_total", C, "Total number of connection errors.", _key("connection_errors")),
    ("response_errors_total", C, "Total number of response errors.", _key("response_errors")),
    ("retry_warnings_total", C, "Total number of retry warnings.", _key("retries")),
    ("redispatch_warnings_total", C, "Total number of redispatch warnings.", _key("redispatches")),
    ("weight", G, "Service weight.", _key("weight")),
    ("active", G, "Is the server active (not backup).", lambda r: 0 if r.get("backup") else 1),
    ("backup", G, "Is the server backup.", lambda r: 1 if r.get("backup") else 0),
    ("check_failures_total", C, "Total number of failed individual health checks.", _key("check_failures")),
    ("check_up_down_total", C, "Total number of UP->DOWN transitions.", _key("down_transitions")),
    ("check_last_change_seconds", G, "Number of seconds since the last UP<->DOWN transition.", _key("last_change_s")),
    ("downtime_seconds_total", C, "Total downtime (in seconds) for the service.", _key("downtime_s")),
    ("loadbalanced_total", C, "Total number of times a service was selected.", _key("total_sessions")),
    ("check_code", G, "layer5-7 code, if available of the last health check.", _check_code),
    ("check_duration_seconds", G, "Total duration of the latest server health check, in seconds.", _check_duration),
    ("client_aborts_total", C, "Total number of data transfers aborted by the client.", _key("client_aborts")),
    ("server_aborts_total", C, "Total number of data transfers aborted by the server.", _key("server_aborts")),
    ("queue_time_average_seconds", G, "Avg. queue time for last successful connections.", _key("queue_time_avg_s")),
    ("connect_time_average_seconds", G, "Avg. connect time for last successful connections.", _key("connect_time_avg_s")),
    ("response_time_average_seconds", G, "Avg. response time for last successful connections.", _key("response_time_avg_s")),
    ("total_time_average_seconds", G, "Avg. total time for last successful connections.", _key("total_time_avg_s")),
    ("uweight", G, "Server's user weight, or sum of active servers' user weights for a backend.", _key("weight")),
)


def _family(name: str, kind: str, doc: str, labels: list[str]) -> Metric:
    if kind == C:
        return CounterMetricFamily(name, doc, labels=labels)
    return GaugeMetricFamily(name, doc, labels=labels)


def _table(prefix: str, table, objects: list[tuple[list[str], dict]], labels: list[str]) -> Iterator[Metric]:
    for suffix, kind, doc, get in table:
        family = _family(prefix + suffix, kind, doc, labels)
        for label_values, row in objects:
            value = get(row)
            if value is not None:
                family.add_metric(label_values, float(value))
        if family.samples:
            yield family


def _states(name: str, doc: str, labels: list[str], states: Iterable[str],
            objects: list[tuple[list[str], dict, Optional[str]]]) -> Iterator[Metric]:
    family = GaugeMetricFamily(name, doc, labels=labels + ["state"])
    states = tuple(states)
    for label_values, _row, current in objects:
        if current is None:
            continue
        for state in states:
            family.add_metric(label_values + [state], 1.0 if state == current else 0.0)
    if family.samples:
        yield family


def _http_responses(name: str, labels: list[str], objects) -> Iterator[Metric]:
    family = CounterMetricFamily(name, "Total number of HTTP responses.", labels=labels + ["code"])
    for label_values, row, mode in objects:
        if mode != "http":
            continue
        responses = row["http_responses"]
        for cls in STATUS_CLASSES:
            family.add_metric(label_values + [cls], float(responses.get(cls, 0)))
    if family.samples:
        yield family


def _server_state(row: dict) -> str:
    status = row.get("status", "DOWN")
    return status if status in SERVER_STATES else "DOWN"


def _global_families(snapshot: dict) -> Iterator[Metric]:
    process = snapshot.get("process", {})
    frontends = snapshot["frontends"].values()
    info = GaugeMetricFamily("lbcore_info", "lbcore build information.", labels=["version"])
    info.add_metric([str(process.get("version", ""))], 1.0)
    yield info
    yield GaugeMetricFamily("lbcore_uptime_seconds", "Seconds since lbcore started.",
                            value=process.get("uptime_s", 0.0))
    yield GaugeMetricFamily("lbcore_processes", "Number of worker processes whose counters are summed here.",
                            value=process.get("processes", 1))
    yield GaugeMetricFamily("haproxy_process_nbproc", "Number of started processes.",
                            value=process.get("processes", 1))
    yield GaugeMetricFamily("haproxy_process_uptime_seconds", "How long ago this worker process was started (seconds).",
                            value=process.get("uptime_s", 0.0))
    if "start_time" in process:
        yield GaugeMetricFamily("haproxy_process_start_time_seconds", "Start time in seconds.",
                                value=process["start_time"])
    yield GaugeMetricFamily("haproxy_process_current_connections", "Current number of connections.",
                            value=sum(f["current_sessions"] for f in frontends))
    yield CounterMetricFamily("haproxy_process_connections_total", "Total number of connections.",
                              value=sum(f["total_sessions"] for f in frontends))
    yield CounterMetricFamily("haproxy_process_requests_total", "Total number of HTTP requests.",
                              value=sum(f["http_requests"] for f in frontends))


def _frontend_families(snapshot: dict) -> Iterator[Metric]:
    objects = [([name], row) for name, row in snapshot["frontends"].items()]
    yield from _table("haproxy_frontend_", FRONTEND_METRICS, objects, ["proxy"])
    yield from _states(
        "haproxy_frontend_status", "Current status of the service, per state label value.", ["proxy"],
        FRONTEND_STATES, [(lv, row, "UP" if row.get("status") == "OPEN" else "DOWN") for lv, row in objects])
    yield from _http_responses("haproxy_frontend_http_responses_total", ["proxy"],
                               [(lv, row, row.get("mode")) for lv, row in objects])
    # lbcore's own: what HAProxy has no name for.
    yield from _table("lbcore_frontend_", (
        ("idle_parked", G, "Current idle keep-alive client connections held off the event loop's "
         "transports (counted in current_sessions too).", _key("idle_parked")),
    ), objects, ["proxy"])


def _backend_families(snapshot: dict) -> Iterator[Metric]:
    objects = [([name], row) for name, row in snapshot["backends"].items()]
    yield from _table("haproxy_backend_", BACKEND_METRICS, objects, ["proxy"])
    yield from _states(
        "haproxy_backend_status", "Current status of the service, per state label value.", ["proxy"],
        BACKEND_STATES, [(lv, row, "UP" if row.get("status") == "UP" else "DOWN") for lv, row in objects])
    yield from _http_responses("haproxy_backend_http_responses_total", ["proxy"],
                               [(lv, row, row.get("mode")) for lv, row in objects])


def _server_families(snapshot: dict) -> Iterator[Metric]:
    labels = ["proxy", "server"]
    objects = []
    modes = []
    for backend_name, backend in snapshot["backends"].items():
        for server in backend["servers"]:
            objects.append(([backend_name, server["name"]], server))
            modes.append(backend.get("mode"))
    yield from _table("haproxy_server_", SERVER_METRICS, objects, labels)
    yield from _states(
        "haproxy_server_status", "Current status of the service, per state label value.", labels,
        SERVER_STATES, [(lv, row, _server_state(row)) for lv, row in objects])
    yield from _states(
        "haproxy_server_check_status", "Status of last health check, per state label value.", labels,
        CHECK_STATES, [(lv, row, row.get("check_status") if row.get("checked") else None) for lv, row in objects])
    yield from _http_responses("haproxy_server_http_responses_total", labels,
                               [(lv, row, mode) for (lv, row), mode in zip(objects, modes)])
    # lbcore's own: what HAProxy has no name for.
    yield from _table("lbcore_server_", (
        ("check_age_seconds", G, "Seconds since the last health check finished.", _key("check_age_s")),
        ("health_up", G, "1 if health checks say the server is up, whatever its admin state.",
         lambda r: 1 if r.get("health") == "UP" else 0),
        ("http_requests_total", C, "Total number of HTTP requests sent to the server.",
         lambda r: r.get("http_requests")),
    ), objects, labels)


def _sticktable_families(snapshot: dict) -> Iterator[Metric]:
    tables = snapshot.get("stick_tables", {})
    size = GaugeMetricFamily("haproxy_sticktable_size", "Stick table size.", labels=["name", "type"])
    used = GaugeMetricFamily("haproxy_sticktable_used", "Number of entries used in this stick table.",
                             labels=["name", "type"])
    for name, row in tables.items():
        size.add_metric([name, row["type"]], float(row["size"]))
        used.add_metric([name, row["type"]], float(row["used"]))
    if tables:
        yield size
        yield used


_SCOPE_FAMILIES = {
    "global": _global_families,
    "frontend": _frontend_families,
    "backend": _backend_families,
    "server": _server_families,
    "sticktable": _sticktable_families,
}


class SnapshotCollector:
    """A prometheus_client collector over whatever `get_snapshot` returns
    at collect time."""

    def __init__(self, get_snapshot: Callable[[], dict], scopes: Iterable[str] = SCOPES):
        self.get_snapshot = get_snapshot
        self.scopes = tuple(scopes)

    def collect(self) -> Iterator[Metric]:
        snapshot = self.get_snapshot()
        for scope in SCOPES:
            if scope in self.scopes:
                yield from _SCOPE_FAMILIES[scope](snapshot)


def parse_scopes(query: str) -> tuple[str, ...]:
    """HAProxy's `?scope=` filter: repeated, `*` for all, empty for none."""
    scopes: Optional[list[str]] = None
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key != "scope":
            continue
        if scopes is None:
            scopes = []
        if value == "*":
            scopes.extend(SCOPES)
        elif value == "":
            scopes.clear()
        elif value in SCOPES:
            scopes.append(value)
        else:
            raise ValueError(f"unknown scope {value!r}; expected one of {', '.join(SCOPES)} or *")
    return SCOPES if scopes is None else tuple(dict.fromkeys(scopes))


def render_metrics(snapshot: dict, scopes: Iterable[str] = SCOPES) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: snapshot, scopes))
    return generate_latest(registry)
