"""A plain, JSON-able picture of a Runtime's state and counters.

Every renderer (HTML, JSON, CSV, Prometheus) works from this dict and never
from the runtime objects, so the same code serves one process or the merge
of several worker processes' snapshots. The hot path only bumps plain ints;
everything here is read and computed at scrape time.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterable, Optional

from .. import __version__
from ..model import STATUS_CLASSES, Backend, Counters, Frontend, Runtime, Server

# Counters that add up across worker processes; everything else in a row is
# state (status, health, weights, check results) and comes from one process.
SUMMED = (
    "current_sessions", "max_sessions", "total_sessions",
    "bytes_in", "bytes_out", "http_requests",
    "denied_requests", "denied_responses",
    "request_errors", "connection_errors", "response_errors",
    "retries", "redispatches", "client_aborts", "server_aborts",
    "queue_current", "queue_max", "timed_requests",
)
AVERAGES = ("queue_time_avg_s", "connect_time_avg_s", "response_time_avg_s", "total_time_avg_s")


def _average(total: float, count: int) -> float:
    return total / count if count else 0.0


def _counters(c: Counters) -> dict[str, Any]:
    n = c.timed_requests
    return {
        "current_sessions": c.cur_sessions,
        "max_sessions": c.max_sessions,
        "total_sessions": c.total_sessions,
        "bytes_in": c.bytes_in,
        "bytes_out": c.bytes_out,
        "http_requests": c.http_requests,
        "http_responses": dict(zip(STATUS_CLASSES, c.http_responses)),
        "denied_requests": c.denied_req,
        "denied_responses": c.denied_resp,
        "request_errors": c.request_errors,
        "connection_errors": c.connection_errors,
        "response_errors": c.response_errors,
        "retries": c.retries,
        "redispatches": c.redispatches,
        "client_aborts": c.client_aborts,
        "server_aborts": c.server_aborts,
        "queue_current": c.queue_cur,
        "queue_max": c.queue_max,
        "timed_requests": n,
        "queue_time_avg_s": _average(c.time_queue, n),
        "connect_time_avg_s": _average(c.time_connect, n),
        "response_time_avg_s": _average(c.time_response, n),
        "total_time_avg_s": _average(c.time_total, n),
    }


def _age(now: float, then: Optional[float]) -> Optional[float]:
    return None if then is None else max(0.0, now - then)


def server_row(server: Server, now: Optional[float] = None) -> dict[str, Any]:
    """One server as stats.json shows it (also the admin API's answer)."""
    now = time.monotonic() if now is None else now
    health = server.backend.spec.health
    check_status = server.check_status
    if server.checked and not check_status:
        check_status = "INI"  # HAProxy's name for "no verdict yet"
    row = {
        "name": server.name,
        "address": str(server.address),
        "status": server.status,
        "health": server.health,
        "admin": server.admin,
        "usable": server.usable,
        "weight": server.weight,
        "initial_weight": server.initial_weight,
        "backup": server.backup,
        "session_limit": server.maxconn or None,
        "checked": server.checked,
        "check_status": check_status,
        "check_code": server.check_code,
        "check_duration_ms": server.check_duration_ms,
        "check_age_s": _age(now, server.last_check_at),
        "check_failures": server.check_failures,
        "check_rise": health.rise if server.checked else None,
        "check_fall": health.fall if server.checked else None,
        "consecutive_ok": server.consecutive_ok,
        "consecutive_fail": server.consecutive_fail,
        "down_transitions": server.down_transitions,
        "downtime_s": server.current_downtime(),
        "last_change_s": _age(now, server.last_change),
    }
    row.update(_counters(server))
    return row


def backend_row(backend: Backend, now: float) -> dict[str, Any]:
    row = {
        "name": backend.name,
        "mode": backend.mode,
        "balance": backend.spec.balance,
        "status": backend.status,
        "active_servers": backend.count_usable(False),
        "backup_servers": backend.count_usable(True),
        # HAProxy's backend weight: what the balancer is currently sharing out.
        "weight": sum(s.weight for s in backend.candidates),
        "user_weight": sum(s.weight for s in backend.servers),
        "down_transitions": backend.down_transitions,
        "downtime_s": backend.current_downtime(),
        "last_change_s": _age(now, backend.last_change),
    }
    row.update(_counters(backend))
    row["servers"] = [server_row(s, now) for s in backend.servers]
    return row


def frontend_row(frontend: Frontend) -> dict[str, Any]:
    spec = frontend.spec
    row = {
        "name": frontend.name,
        "mode": frontend.mode,
        "status": "STOP" if frontend.stopping else "OPEN",
        "backend": frontend.backend.name,
        "binds": [str(a) for a in spec.binds],
        "session_limit": spec.maxconn,
        "tls": spec.tls is not None,
        "idle_parked": frontend.parked,
    }
    row.update(_counters(frontend))
    return row


def snapshot(runtime: Runtime) -> dict[str, Any]:
    """Everything the stats endpoint shows, read from `runtime` right now."""
    now = time.monotonic()
    return {
        "process": {
            "version": __version__,
            "pid": os.getpid(),
            "processes": 1,
            "uptime_s": now - runtime.started,
            "start_time": time.time() - (now - runtime.started),
            "maxconn": runtime.config.global_.maxconn,
        },
        "frontends": {name: frontend_row(f) for name, f in runtime.frontends.items()},
        "backends": {name: backend_row(b, now) for name, b in runtime.backends.items()},
        "stick_tables": {name: {"type": t.type, "size": t.size, "used": t.used}
                         for name, t in getattr(runtime, "stick_tables", {}).items()},
    }


# -- merging worker processes' snapshots --------------------------------------

def _merge_counters(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """rows[0] with its counters replaced by the sums over all rows."""
    merged = dict(rows[0])
    for key in SUMMED:
        merged[key] = sum(r.get(key, 0) for r in rows)
    merged["http_responses"] = {
        cls: sum(r.get("http_responses", {}).get(cls, 0) for r in rows) for cls in STATUS_CLASSES
    }
    count = merged["timed_requests"]
    for key in AVERAGES:
        weighted = sum(r.get(key, 0.0) * r.get("timed_requests", 0) for r in rows)
        merged[key] = _average(weighted, count)
    return merged


def _group(items: Iterable[tuple[str, dict]]) -> dict[str, list[dict]]:
    """name -> rows, in first-seen order (so the first process decides order)."""
    groups: dict[str, list[dict]] = {}
    for name, row in items:
        groups.setdefault(name, []).append(row)
    return groups


def merge(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """One snapshot from several worker processes' snapshots.

    Counters are summed; states, health and check results come from the
    first snapshot that has the object (all workers share one config and
    one view of health). Objects that only some workers have yet (during a
    reload) are still shown."""
    if not snapshots:
        raise ValueError("merge() needs at least one snapshot")
    if len(snapshots) == 1:
        return snapshots[0]
    first = snapshots[0]
    frontends = {}
    for name, rows in _group((n, r) for s in snapshots for n, r in s["frontends"].items()).items():
        merged = frontends[name] = _merge_counters(rows)
        merged["idle_parked"] = sum(r.get("idle_parked", 0) for r in rows)
    backends = {}
    backend_groups = _group((n, r) for s in snapshots for n, r in s["backends"].items())
    for name, rows in backend_groups.items():
        merged = _merge_counters(rows)
        server_groups = _group((srv["name"], srv) for r in rows for srv in r["servers"])
        merged["servers"] = [_merge_counters(srows) for srows in server_groups.values()]
        backends[name] = merged
    process = dict(first["process"])
    process["processes"] = sum(s["process"].get("processes", 1) for s in snapshots)
    process["pids"] = [s["process"].get("pid") for s in snapshots]
    # Each worker keeps its own entries (peers keep them in step): the
    # fullest worker's count is the table's use.
    tables: dict[str, dict] = {}
    for s in snapshots:
        for name, row in s.get("stick_tables", {}).items():
            if name not in tables or row["used"] > tables[name]["used"]:
                tables[name] = dict(row)
    return {"process": process, "frontends": frontends, "backends": backends, "stick_tables": tables}


# -- counts of worker processes that died --------------------------------------

# What a process holds only while it lives: gone with it, never carried over.
GAUGES = ("current_sessions", "queue_current", "max_sessions", "queue_max")


def _retire_row(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    for key in GAUGES:
        row[key] = 0
    if "idle_parked" in row:
        row["idle_parked"] = 0
    return row


def retired(snap: dict[str, Any]) -> dict[str, Any]:
    """A dead worker's last snapshot as counts to keep adding to the totals,
    so that totals and Prometheus counters never go backwards when a worker
    is killed and replaced by a fresh one counting from zero."""
    backends = {}
    for name, be in snap.get("backends", {}).items():
        row = _retire_row(be)
        row["servers"] = [_retire_row(s) for s in be.get("servers", [])]
        backends[name] = row
    return {
        "process": dict(snap.get("process", {}), processes=0),
        "frontends": {name: _retire_row(fe) for name, fe in snap.get("frontends", {}).items()},
        "backends": backends,
    }


def restrict(snap: dict[str, Any], like: dict[str, Any]) -> dict[str, Any]:
    """`snap` with only the frontends, backends and servers `like` has (a
    departed worker's counts must not bring back what a reload removed)."""
    backends = {}
    for name, be in snap["backends"].items():
        current = like["backends"].get(name)
        if current is None:
            continue
        names = {s["name"] for s in current["servers"]}
        backends[name] = dict(be, servers=[s for s in be["servers"] if s["name"] in names])
    frontends = {name: fe for name, fe in snap["frontends"].items() if name in like["frontends"]}
    return {"process": snap["process"], "frontends": frontends, "backends": backends}
