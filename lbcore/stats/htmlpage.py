"""The stats page at `/`: what an operator reads, without JavaScript.

Laid out like HAProxy's stats page, with its colour classes
(`active_up`, `active_down`, `active_draining`, `maintain`, ...) so the
page reads the same to people used to HAProxy: one table per frontend and
per backend, one row per server. Every name from the config is escaped.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any, Optional

from .csvview import CHECK_DESCRIPTIONS

# HAProxy's stats page colours, by its class names.
STYLE = """
body { font-family: arial, helvetica, sans-serif; font-size: 13px; color: #000; background: #fff; margin: 1em; }
h1 { font-size: x-large; margin: 0 0 .2em 0; }
h1 span { color: #6020a0; }
.info { margin-bottom: 1em; color: #333; }
table.proxy { border-collapse: collapse; margin-bottom: 1.2em; min-width: 60em; }
table.proxy th, table.proxy td { border: 1px solid #999; padding: 2px 6px; font-size: 12px; white-space: nowrap; }
table.proxy td { text-align: right; }
table.proxy td.name, table.proxy td.text { text-align: left; }
caption { text-align: left; font-weight: bold; font-size: 14px; padding: 3px 6px; color: #fff; background: #b00040; }
caption.frontend { background: #6020a0; }
caption span { font-weight: normal; font-size: 12px; color: #ffd; }
th { background: #20d0d0; color: #000; }
tr.frontend, tr.backend { background: #e8e8d0; font-weight: bold; }
.active_up { background: #c0ffc0; }
.active_down { background: #ff9090; }
.active_going_up { background: #ffd020; }
.active_going_down { background: #ffffa0; }
.active_nolb { background: #20a0ff; }
.active_draining { background: #20a0ff; }
.active_no_check { background: #e0e0e0; }
.backup_up { background: #b0d0ff; }
.backup_down { background: #ff9090; }
.backup_going_up { background: #ff80ff; }
.backup_going_down { background: #c060ff; }
.backup_nolb { background: #90b0e0; }
.backup_draining { background: #cc9900; }
.backup_no_check { background: #e0e0e0; }
.maintain { background: #c07820; }
.status_down { background: #ff9090; }
.status_up { background: #c0ffc0; }
table.legend { margin-bottom: .8em; }
table.legend td { border: 0; padding: 1px 8px; font-size: 11px; }
"""

LEGEND = (
    ("active_up", "active UP"),
    ("backup_up", "backup UP"),
    ("active_going_down", "active UP, going down"),
    ("active_going_up", "active DOWN, going up"),
    ("active_down", "active or backup DOWN"),
    ("active_draining", "DRAIN (no new work)"),
    ("active_nolb", "NOLB (weight 0)"),
    ("maintain", "MAINT (admin)"),
    ("active_no_check", "not checked"),
)


def human_duration(seconds: Optional[float]) -> str:
    """HAProxy's short style: 42s, 5m12s, 1h2m, 3d4h."""
    if seconds is None:
        return "-"
    s = int(max(0, seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{s}s"
    return f"{s}s"


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def server_class(srv: dict[str, Any]) -> str:
    """The HAProxy colour class for a server row."""
    status = srv.get("status")
    if status == "MAINT":
        return "maintain"
    kind = "backup" if srv.get("backup") else "active"
    if status == "DOWN":
        return f"{kind}_going_up" if srv.get("consecutive_ok") else f"{kind}_down"
    if status == "DRAIN":
        return f"{kind}_draining"
    if status == "NOLB":
        return f"{kind}_nolb"
    if not srv.get("checked"):
        return f"{kind}_no_check"
    if srv.get("consecutive_fail"):
        return f"{kind}_going_down"
    return f"{kind}_up"


def _td(value: Any, cls: str = "", title: str = "") -> str:
    attrs = f' class="{cls}"' if cls else ""
    if title:
        attrs += f' title="{escape(title)}"'
    return f"<td{attrs}>{escape(str(value))}</td>"


def _check_text(srv: dict[str, Any]) -> tuple[str, str]:
    """('L7OK/200 in 3ms', description) as HAProxy's LastChk column."""
    if not srv.get("checked"):
        return "no check", ""
    status = srv.get("check_status") or "INI"
    text = status
    if srv.get("check_code") is not None:
        text += f"/{srv['check_code']}"
    if srv.get("check_duration_ms") is not None:
        text += f" in {srv['check_duration_ms']:.0f}ms"
    return text, CHECK_DESCRIPTIONS.get(status, status)


def _status_text(srv: dict[str, Any]) -> str:
    status = srv.get("status", "")
    # HAProxy's transitional states: "UP 2/3" is two more failed checks
    # from DOWN, "DOWN 1/2" one good check of the two needed to be UP.
    if srv.get("checked") and status == "UP" and srv.get("consecutive_fail"):
        fall = srv.get("check_fall") or 1
        return f"UP {max(1, fall - srv['consecutive_fail'])}/{fall}"
    if srv.get("checked") and status == "DOWN" and srv.get("consecutive_ok"):
        return f"DOWN {srv['consecutive_ok']}/{srv.get('check_rise')}"
    return status


def _limit(value: Optional[int]) -> str:
    return "-" if not value else str(value)


def _bytes_cells(row: dict[str, Any]) -> str:
    return (_td(human_bytes(row["bytes_in"]), title=f"{row['bytes_in']} bytes")
            + _td(human_bytes(row["bytes_out"]), title=f"{row['bytes_out']} bytes"))


def _http_title(row: dict[str, Any]) -> str:
    if row.get("mode") != "http":
        return ""
    responses = row["http_responses"]
    return "HTTP responses: " + ", ".join(f"{k}={v}" for k, v in responses.items())


def _head(columns: tuple) -> str:
    """Two header rows: groups (Sessions, Bytes, ...) over their columns."""
    top, bottom = [], []
    for column in columns:
        if isinstance(column, str):
            top.append(f'<th rowspan="2">{escape(column)}</th>')
        else:
            group, subs = column
            top.append(f'<th colspan="{len(subs)}">{escape(group)}</th>')
            bottom.extend(f"<th>{escape(sub)}</th>" for sub in subs)
    return f"<tr>{''.join(top)}</tr><tr>{''.join(bottom)}</tr>"


FRONTEND_HEAD = _head((
    "Name", "Status", "Mode", ("Sessions", ("cur", "max", "limit", "total")), ("Bytes", ("in", "out")),
    "Requests", "Req errors", "Default backend",
))

BACKEND_HEAD = _head((
    "Server", "Status", "Last check", "Check age", "Weight", "Act", "Bck",
    ("Queue", ("cur", "max")), ("Sessions", ("cur", "max", "limit", "total")), ("Bytes", ("in", "out")),
    ("Errors", ("conn", "resp")), ("Checks", ("fail", "down")), "Last change", "Downtime", "Address",
))


def _frontend_table(name: str, fe: dict[str, Any]) -> str:
    status_cls = "status_up" if fe["status"] == "OPEN" else "status_down"
    binds = ", ".join(fe.get("binds", []))
    cells = "".join([
        _td("Frontend", "name"),
        _td(fe["status"], f"text {status_cls}"),
        _td(fe["mode"], "text"),
        _td(fe["current_sessions"]), _td(fe["max_sessions"]), _td(_limit(fe.get("session_limit"))),
        _td(fe["total_sessions"], title=_http_title(fe)),
        _bytes_cells(fe),
        _td(fe["http_requests"] if fe["mode"] == "http" else "-"),
        _td(fe["request_errors"]),
        _td(fe.get("backend", ""), "text"),
    ])
    return (
        f'<table class="proxy frontend" id="frontend-{escape(name)}">'
        f'<caption class="frontend">frontend {escape(name)} <span>{escape(binds)}</span></caption>'
        f"{FRONTEND_HEAD}<tr class=\"frontend\">{cells}</tr></table>\n"
    )


def _server_row(srv: dict[str, Any]) -> str:
    check, check_desc = _check_text(srv)
    cls = server_class(srv)
    cells = "".join([
        _td(srv["name"], "name"),
        _td(_status_text(srv), "text status"),
        _td(check, "text", title=check_desc),
        _td(human_duration(srv.get("check_age_s")) if srv.get("check_age_s") is not None else "-"),
        _td(srv["weight"]),
        _td("-" if srv["backup"] else "Y"), _td("Y" if srv["backup"] else "-"),
        _td(srv["queue_current"]), _td(srv["queue_max"]),
        _td(srv["current_sessions"]), _td(srv["max_sessions"]), _td(_limit(srv.get("session_limit"))),
        _td(srv["total_sessions"], title=_http_title(srv)),
        _bytes_cells(srv),
        _td(srv["connection_errors"]), _td(srv["response_errors"]),
        _td(srv["check_failures"] if srv.get("checked") else "-"),
        _td(srv["down_transitions"] if srv.get("checked") else "-"),
        _td(human_duration(srv.get("last_change_s"))),
        _td(human_duration(srv.get("downtime_s")) if srv.get("downtime_s") else "-"),
        _td(srv["address"], "text"),
    ])
    return f'<tr class="server {cls}" data-server="{escape(srv["name"])}">{cells}</tr>'


def _backend_table(name: str, be: dict[str, Any]) -> str:
    servers = "".join(_server_row(srv) for srv in be["servers"])
    status_cls = "status_up" if be["status"] == "UP" else "status_down"
    total = "".join([
        _td("Backend", "name"),
        _td(be["status"], f"text {status_cls}"),
        _td(""),
        _td(""),
        _td(be["weight"]),
        _td(be["active_servers"]), _td(be["backup_servers"]),
        _td(be["queue_current"]), _td(be["queue_max"]),
        _td(be["current_sessions"]), _td(be["max_sessions"]), _td("-"),
        _td(be["total_sessions"], title=_http_title(be)),
        _bytes_cells(be),
        _td(be["connection_errors"]), _td(be["response_errors"]),
        _td(""), _td(be.get("down_transitions", 0)),
        _td(human_duration(be.get("last_change_s"))),
        _td(human_duration(be.get("downtime_s")) if be.get("downtime_s") else "-"),
        _td(""),
    ])
    return (
        f'<table class="proxy backend" id="backend-{escape(name)}">'
        f'<caption>backend {escape(name)} <span>{escape(be["mode"])}, {escape(str(be.get("balance", "")))}</span></caption>'
        f'{BACKEND_HEAD}{servers}<tr class="backend">{total}</tr></table>\n'
    )


def _legend() -> str:
    cells = "".join(f'<td class="{cls}">{escape(text)}</td>' for cls, text in LEGEND)
    return f'<table class="legend"><tr>{cells}</tr></table>\n'


def render_html(snapshot: dict[str, Any], refresh: Optional[float] = 5.0) -> bytes:
    process = snapshot.get("process", {})
    refresh_meta = ""
    if refresh and refresh > 0:
        refresh_meta = f'<meta http-equiv="refresh" content="{max(1, int(round(refresh)))}">'
    pids = process.get("pids") or [process.get("pid")]
    info = (
        f"lbcore {escape(str(process.get('version', '')))} &middot; "
        f"{process.get('processes', 1)} process(es), pid {escape(', '.join(str(p) for p in pids))} &middot; "
        f"up {human_duration(process.get('uptime_s'))} &middot; "
        f"generated {escape(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}"
        + (f" &middot; refresh every {int(round(refresh))}s" if refresh_meta else "")
    )
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        refresh_meta,
        "<title>lbcore statistics</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>lbcore <span>statistics</span></h1>",
        f'<div class="info">{info} &middot; <a href="/stats.json">JSON</a> &middot; '
        '<a href="/stats.csv">CSV</a> &middot; <a href="/metrics">Prometheus</a></div>',
        _legend(),
    ]
    frontends, backends = snapshot["frontends"], snapshot["backends"]
    # A frontend and the backend of the same name sit together, as a
    # HAProxy `listen` section does.
    for name in dict.fromkeys([*frontends, *backends]):
        if name in frontends:
            parts.append(_frontend_table(name, frontends[name]))
        if name in backends:
            parts.append(_backend_table(name, backends[name]))
    parts.append("</body></html>\n")
    return "".join(parts).encode("utf-8")
