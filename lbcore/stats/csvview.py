"""HAProxy's stats CSV (management guide, "9.1. CSV format", HAProxy 2.6).

Monitoring tools index these columns by name and, often, by position, so
the column list is HAProxy's static field list, in its order, unchanged.
Like HAProxy, every line ends with a comma, a field is quoted only when it
holds a comma or a quote, and a value lbcore does not know is left empty
rather than made up. Rows go proxy by proxy: FRONTEND, then the servers,
then BACKEND; a frontend and a backend with the same name are one proxy,
as a `listen` section is in HAProxy.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Callable, Iterable, Optional

COLUMNS = (
    "pxname", "svname", "qcur", "qmax", "scur", "smax", "slim", "stot",
    "bin", "bout", "dreq", "dresp", "ereq", "econ", "eresp", "wretr",
    "wredis", "status", "weight", "act", "bck", "chkfail", "chkdown",
    "lastchg", "downtime", "qlimit", "pid", "iid", "sid", "throttle",
    "lbtot", "tracked", "type", "rate", "rate_lim", "rate_max",
    "check_status", "check_code", "check_duration", "hrsp_1xx", "hrsp_2xx",
    "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other", "hanafail",
    "req_rate", "req_rate_max", "req_tot", "cli_abrt", "srv_abrt",
    "comp_in", "comp_out", "comp_byp", "comp_rsp", "lastsess", "last_chk",
    "last_agt", "qtime", "ctime", "rtime", "ttime", "agent_status",
    "agent_code", "agent_duration", "check_desc", "agent_desc",
    "check_rise", "check_fall", "check_health", "agent_rise", "agent_fall",
    "agent_health", "addr", "cookie", "mode", "algo", "conn_rate",
    "conn_rate_max", "conn_tot", "intercepted", "dcon", "dses", "wrew",
    "connect", "reuse", "cache_lookups", "cache_hits", "srv_icur",
    "src_ilim", "qtime_max", "ctime_max", "rtime_max", "ttime_max", "eint",
    "idle_conn_cur", "safe_conn_cur", "used_conn_cur", "need_conn_est",
    "uweight", "agg_server_status", "agg_server_check_status",
    "agg_check_status",
)

TYPE_FRONTEND, TYPE_BACKEND, TYPE_SERVER = 0, 1, 2

# HAProxy's check_desc for each check_status.
CHECK_DESCRIPTIONS = {
    "UNK": "Unknown",
    "INI": "Initializing",
    "SOCKERR": "Socket error",
    "L4OK": "Layer4 check passed",
    "L4TOUT": "Layer4 timeout",
    "L4CON": "Layer4 connection problem",
    "L6OK": "Layer6 check passed",
    "L6TOUT": "Layer6 timeout",
    "L6RSP": "Layer6 invalid response",
    "L7TOUT": "Layer7 timeout",
    "L7RSP": "Layer7 invalid response",
    "L7OK": "Layer7 check passed",
    "L7OKC": "Layer7 check conditionally passed",
    "L7STS": "Layer7 wrong status",
}

# Features lbcore does not have (compression, cache, tcp-request rules,
# header rewrites): their counters are truly zero, as HAProxy shows them.
_ABSENT_FEATURES = ("comp_in", "comp_out", "comp_byp", "comp_rsp", "cache_lookups", "cache_hits", "wrew")


def _ms(seconds: Optional[float]) -> Optional[int]:
    return None if seconds is None else int(round(seconds * 1000))


def _secs(seconds: Optional[float]) -> Optional[int]:
    return None if seconds is None else int(seconds)


def _http(row: dict[str, Any], fields: dict[str, Any], with_requests: bool = True) -> None:
    if row.get("mode") != "http":
        return
    responses = row["http_responses"]
    for cls in ("1xx", "2xx", "3xx", "4xx", "5xx", "other"):
        fields[f"hrsp_{cls}"] = responses[cls]
    if with_requests:
        fields["req_tot"] = row["http_requests"]


def frontend_fields(name: str, fe: dict[str, Any], iid: int) -> dict[str, Any]:
    fields = {
        "pxname": name, "svname": "FRONTEND",
        "scur": fe["current_sessions"], "smax": fe["max_sessions"],
        "slim": fe.get("session_limit"), "stot": fe["total_sessions"],
        "bin": fe["bytes_in"], "bout": fe["bytes_out"],
        "dreq": fe["denied_requests"], "dresp": fe["denied_responses"],
        "ereq": fe["request_errors"], "status": fe["status"],
        "pid": 1, "iid": iid, "sid": 0, "type": TYPE_FRONTEND,
        "conn_tot": fe["total_sessions"], "mode": fe["mode"],
        "dcon": 0, "dses": 0,
    }
    fields.update(dict.fromkeys(_ABSENT_FEATURES, 0))
    _rates(fe, fields, last=False)
    _http(fe, fields)
    return fields


def _rates(row: dict[str, Any], fields: dict[str, Any], last: bool = True) -> None:
    """Session rate and last-session age, when the endpoint measured them
    (stats.rates); left empty otherwise rather than made up."""
    if "session_rate" in row:
        fields["rate"] = row["session_rate"]
        fields["rate_max"] = row["session_rate_max"]
        if last and "last_session_s" in row:
            age = row["last_session_s"]
            fields["lastsess"] = -1 if age is None else int(age)


def _timers(row: dict[str, Any], fields: dict[str, Any]) -> None:
    fields["qtime"] = _ms(row["queue_time_avg_s"])
    fields["ctime"] = _ms(row["connect_time_avg_s"])
    fields["rtime"] = _ms(row["response_time_avg_s"])
    fields["ttime"] = _ms(row["total_time_avg_s"])


def server_fields(name: str, be: dict[str, Any], srv: dict[str, Any], iid: int, sid: int) -> dict[str, Any]:
    fields = {
        "pxname": name, "svname": srv["name"],
        "qcur": srv["queue_current"], "qmax": srv["queue_max"],
        "scur": srv["current_sessions"], "smax": srv["max_sessions"],
        "slim": srv.get("session_limit"), "stot": srv["total_sessions"],
        "bin": srv["bytes_in"], "bout": srv["bytes_out"],
        "dresp": srv["denied_responses"],
        "econ": srv["connection_errors"], "eresp": srv["response_errors"],
        "wretr": srv["retries"], "wredis": srv["redispatches"],
        "status": srv["status"], "weight": srv["weight"],
        "act": 0 if srv["backup"] else 1, "bck": 1 if srv["backup"] else 0,
        "lastchg": _secs(srv.get("last_change_s")), "downtime": _secs(srv.get("downtime_s")),
        "pid": 1, "iid": iid, "sid": sid,
        "lbtot": srv["total_sessions"], "type": TYPE_SERVER,
        "cli_abrt": srv["client_aborts"], "srv_abrt": srv["server_aborts"],
        "addr": srv["address"], "mode": be["mode"], "uweight": srv["weight"],
        "wrew": 0,
    }
    _timers(srv, fields)
    _rates(srv, fields)
    if srv.get("checked"):
        status = srv.get("check_status") or "INI"
        rise, fall = srv.get("check_rise") or 1, srv.get("check_fall") or 1
        fields.update({
            "chkfail": srv["check_failures"], "chkdown": srv["down_transitions"],
            "check_status": status,
            "check_code": srv.get("check_code"),
            "check_duration": None if srv.get("check_duration_ms") is None else int(round(srv["check_duration_ms"])),
            "check_desc": CHECK_DESCRIPTIONS.get(status, status),
            "check_rise": rise, "check_fall": fall,
            "check_health": _check_health(srv, rise, fall),
        })
    _http(dict(srv, mode=be["mode"]), fields)
    return fields


def _check_health(srv: dict[str, Any], rise: int, fall: int) -> int:
    """HAProxy's 0..rise+fall-1 health level: >= rise means UP."""
    if srv.get("health") == "DOWN":
        return min(srv.get("consecutive_ok", 0), rise - 1)
    return max(rise, rise + fall - 1 - srv.get("consecutive_fail", 0))


def backend_fields(name: str, be: dict[str, Any], iid: int) -> dict[str, Any]:
    fields = {
        "pxname": name, "svname": "BACKEND",
        "qcur": be["queue_current"], "qmax": be["queue_max"],
        "scur": be["current_sessions"], "smax": be["max_sessions"],
        "stot": be["total_sessions"],
        "bin": be["bytes_in"], "bout": be["bytes_out"],
        "dreq": be["denied_requests"], "dresp": be["denied_responses"],
        "econ": be["connection_errors"], "eresp": be["response_errors"],
        "wretr": be["retries"], "wredis": be["redispatches"],
        "status": be["status"], "weight": be["weight"],
        "act": be["active_servers"], "bck": be["backup_servers"],
        "chkdown": be.get("down_transitions"),
        "lastchg": _secs(be.get("last_change_s")), "downtime": _secs(be.get("downtime_s")),
        "pid": 1, "iid": iid, "sid": 0,
        "lbtot": be["total_sessions"], "type": TYPE_BACKEND,
        "cli_abrt": be["client_aborts"], "srv_abrt": be["server_aborts"],
        "mode": be["mode"], "algo": be.get("balance"), "uweight": be.get("user_weight"),
    }
    fields.update(dict.fromkeys(_ABSENT_FEATURES, 0))
    _timers(be, fields)
    _rates(be, fields)
    _http(be, fields)
    return fields


def rows(snapshot: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """Every CSV row as a column -> value dict, in HAProxy's order."""
    frontends, backends = snapshot["frontends"], snapshot["backends"]
    names = list(dict.fromkeys([*frontends, *backends]))
    for iid, name in enumerate(names, start=1):
        if name in frontends:
            yield frontend_fields(name, frontends[name], iid)
        if name in backends:
            be = backends[name]
            for sid, srv in enumerate(be["servers"], start=1):
                yield server_fields(name, be, srv, iid, sid)
            yield backend_fields(name, be, iid)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def render_csv(snapshot: dict[str, Any], keep: Optional[Callable[[dict[str, Any]], bool]] = None) -> bytes:
    """The CSV; `keep` selects rows (the runtime API's `show stat IID TYPE SID`)."""
    out = io.StringIO()
    out.write("# " + ",".join(COLUMNS) + ",\n")
    writer = csv.writer(out, lineterminator="\n")
    for fields in rows(snapshot):
        if keep is not None and not keep(fields):
            continue
        # The trailing "" gives HAProxy's trailing comma.
        writer.writerow([_cell(fields.get(col)) for col in COLUMNS] + [""])
    return out.getvalue().encode("utf-8")
