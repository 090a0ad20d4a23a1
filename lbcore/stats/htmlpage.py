"""The stats page at `/`: what an operator reads, without JavaScript.

Laid out like HAProxy's stats page, with its colour classes
(`active_up`, `active_down`, `active_draining`, `maintain`, ...) so the
page reads the same to people used to HAProxy: one table per frontend and
per backend, one row per server. Every name from the config is escaped.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any, Iterable, Optional

from .csvview import CHECK_DESCRIPTIONS

# The row colours are HAProxy's, by its class names, so the page reads the
# same to people used to HAProxy's; the rest is lbcore's own: a process
# summary on top, sticky headers, grouped columns, and admin controls.
STYLE = """
:root { --ink: #1d2330; --muted: #5b6475; --line: #d5d9e2; --head: #eef1f6; --accent: #3a4a8c; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; font-size: 13px;
       color: var(--ink); background: #f6f7fa; margin: 0; }
header { background: #232a3d; color: #fff; padding: 10px 18px; display: flex; align-items: center;
         gap: 18px; flex-wrap: wrap; }
header h1 { font-size: 18px; margin: 0; font-weight: 600; letter-spacing: .2px; }
header h1 span { color: #9fb2ff; font-weight: 400; }
header nav { display: flex; gap: 12px; flex-wrap: wrap; margin-left: auto; }
header nav a { color: #dfe6ff; text-decoration: none; padding: 3px 9px; border: 1px solid #4a5578;
               border-radius: 4px; font-size: 12px; }
header nav a:hover { background: #34405e; }
main { padding: 14px 18px 30px; }
.banner { padding: 8px 12px; border-radius: 4px; margin-bottom: 12px; font-weight: 600; }
.banner.ok { background: #d9f5dd; border: 1px solid #7fcf8a; }
.banner.bad { background: #ffe0e0; border: 1px solid #e08a8a; }
.cards { display: flex; gap: 10px; flex-wrap: wrap; margin-bottom: 12px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 7px 12px; min-width: 120px; }
.card b { display: block; font-size: 11px; color: var(--muted); font-weight: 500; text-transform: uppercase;
          letter-spacing: .4px; }
.card span { font-size: 16px; font-weight: 600; }
.card.warn span { color: #b00020; }
table.legend { border-collapse: separate; border-spacing: 4px 0; margin: 0 0 12px -4px; }
table.legend td { padding: 2px 8px; font-size: 11px; border-radius: 3px; border: 1px solid rgba(0,0,0,.12); }
section.proxy { background: #fff; border: 1px solid var(--line); border-radius: 6px; margin-bottom: 14px;
                overflow-x: auto; }
table.proxy { border-collapse: collapse; width: 100%; }
table.proxy caption { text-align: left; padding: 7px 10px; font-size: 14px; font-weight: 600; color: #fff;
                      background: #7a1f4a; }
table.proxy caption.frontend { background: var(--accent); }
table.proxy caption span { font-weight: 400; font-size: 12px; color: #f2e6ff; margin-left: 8px; }
table.proxy th { background: var(--head); color: #2d3548; font-weight: 600; font-size: 11px; padding: 3px 6px;
                 border: 1px solid var(--line); white-space: nowrap; position: sticky; top: 0; }
table.proxy td { border: 1px solid var(--line); padding: 3px 6px; text-align: right; white-space: nowrap;
                 font-variant-numeric: tabular-nums; font-size: 12px; }
table.proxy td.name, table.proxy td.text { text-align: left; }
table.proxy td.name { font-weight: 600; }
table.proxy td.name input { margin: 0 6px 0 0; vertical-align: middle; }
tr.frontend, tr.backend { background: #eceef4; font-weight: 600; }
td.status { font-weight: 700; }
.status_down { background: #ff9090; }
.status_up { background: #c0ffc0; }
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
tr.server:hover td { filter: brightness(0.96); }
.hidden-note { color: var(--muted); padding: 6px 10px; font-size: 12px; }
form.admin .actions { display: flex; gap: 8px; align-items: center; padding: 7px 10px; background: #fafbfd;
                      border-top: 1px solid var(--line); flex-wrap: wrap; }
form.admin select, form.admin input[type=number], form.admin button { font: inherit; padding: 3px 6px; }
form.admin button { background: var(--accent); color: #fff; border: 0; border-radius: 4px; padding: 4px 12px;
                    cursor: pointer; }
footer { color: var(--muted); font-size: 11px; padding: 0 18px 14px; }
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
    "Name", "Status", "Mode", ("Session rate", ("cur", "max", "limit")),
    ("Sessions", ("cur", "max", "limit", "total")), ("Bytes", ("in", "out")),
    ("Denied", ("req", "resp")), ("Errors", ("req",)), "Requests", "Default backend",
))

BACKEND_HEAD = _head((
    "Server", "Status", "Last check", "Check age", "Weight", "Act", "Bck",
    ("Queue", ("cur", "max")), ("Session rate", ("cur", "max", "limit")),
    ("Sessions", ("cur", "max", "limit", "total", "LbTot", "Last")), ("Bytes", ("in", "out")),
    ("Denied", ("req", "resp")), ("Errors", ("req", "conn", "resp")), ("Warnings", ("retr", "redis")),
    ("Checks", ("fail", "down")), "Last change", "Downtime", "Address",
))

# The admin actions the page offers on the checked servers, as HAProxy's.
ACTIONS = (
    ("ready", "Set state to READY"),
    ("drain", "Set state to DRAIN"),
    ("maint", "Set state to MAINT"),
    ("weight", "Set weight to"),
    ("shutdown", "Kill sessions"),
)

# The outcome of an admin action, shown after the redirect (HAProxy's ;st=).
STATUS_MESSAGES = {
    "DONE": ("ok", "Action processed successfully."),
    "PART": ("bad", "Action partially processed: some servers were not found."),
    "NONE": ("ok", "Nothing has changed."),
    "ERRP": ("bad", "Action not processed because of invalid parameters."),
    "DENY": ("bad", "Action denied: admin actions are disabled (stats.admin is false)."),
}


def _rate(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    return "-" if value is None else str(value)


def _last(row: dict[str, Any]) -> str:
    if "last_session_s" not in row:
        return "-"
    return "never" if row["last_session_s"] is None else human_duration(row["last_session_s"])


def _frontend_table(name: str, fe: dict[str, Any]) -> str:
    status_cls = "status_up" if fe["status"] == "OPEN" else "status_down"
    binds = ", ".join(fe.get("binds", []))
    cells = "".join([
        _td("Frontend", "name"),
        _td(fe["status"], f"text status {status_cls}"),
        _td(fe["mode"], "text"),
        _td(_rate(fe, "session_rate")), _td(_rate(fe, "session_rate_max")), _td("-"),
        _td(fe["current_sessions"]), _td(fe["max_sessions"]), _td(_limit(fe.get("session_limit"))),
        _td(fe["total_sessions"], title=_http_title(fe)),
        _bytes_cells(fe),
        _td(fe["denied_requests"]), _td(fe["denied_responses"]),
        _td(fe["request_errors"]),
        _td(fe["http_requests"] if fe["mode"] == "http" else "-"),
        _td(fe.get("backend", ""), "text"),
    ])
    return (
        f'<section class="proxy"><table class="proxy frontend" id="frontend-{escape(name)}">'
        f'<caption class="frontend">frontend {escape(name)} <span>{escape(binds)}</span></caption>'
        f"<thead>{FRONTEND_HEAD}</thead><tbody><tr class=\"frontend\">{cells}</tr></tbody></table></section>\n"
    )


def _server_row(srv: dict[str, Any], admin: bool, backend: str) -> str:
    check, check_desc = _check_text(srv)
    cls = server_class(srv)
    name = escape(srv["name"])
    if admin:
        box = (f'<input type="checkbox" name="s" value="{name}" form="admin-{escape(backend)}" '
               f'aria-label="select {name}">')
        first = f'<td class="name"><label>{box}{name}</label></td>'
    else:
        first = _td(srv["name"], "name")
    cells = "".join([
        first,
        _td(_status_text(srv), "text status"),
        _td(check, "text", title=check_desc),
        _td(human_duration(srv.get("check_age_s")) if srv.get("check_age_s") is not None else "-"),
        _td(srv["weight"], title=f"initial weight {srv.get('initial_weight', srv['weight'])}"),
        _td("-" if srv["backup"] else "Y"), _td("Y" if srv["backup"] else "-"),
        _td(srv["queue_current"]), _td(srv["queue_max"]),
        _td(_rate(srv, "session_rate")), _td(_rate(srv, "session_rate_max")), _td("-"),
        _td(srv["current_sessions"]), _td(srv["max_sessions"]), _td(_limit(srv.get("session_limit"))),
        _td(srv["total_sessions"], title=_http_title(srv)),
        _td(srv["total_sessions"]), _td(_last(srv)),
        _bytes_cells(srv),
        _td("-"), _td(srv["denied_responses"]),
        _td("-"), _td(srv["connection_errors"]), _td(srv["response_errors"]),
        _td(srv["retries"]), _td(srv["redispatches"]),
        _td(srv["check_failures"] if srv.get("checked") else "-"),
        _td(srv["down_transitions"] if srv.get("checked") else "-"),
        _td(human_duration(srv.get("last_change_s"))),
        _td(human_duration(srv.get("downtime_s")) if srv.get("downtime_s") else "-"),
        _td(srv["address"], "text"),
    ])
    return f'<tr class="server {cls}" data-server="{name}">{cells}</tr>'


def _admin_form(name: str) -> str:
    options = "".join(f'<option value="{value}">{escape(text)}</option>' for value, text in ACTIONS)
    return (
        f'<form class="admin" id="admin-{escape(name)}" method="post" action="/">'
        f'<input type="hidden" name="b" value="{escape(name)}">'
        '<div class="actions">Choose the action to perform on the checked servers: '
        f'<select name="action" aria-label="action for backend {escape(name)}">{options}</select> '
        '<input type="number" name="weight" min="0" max="256" placeholder="weight" aria-label="weight"> '
        '<button type="submit">Apply</button></div></form>'
    )


def _backend_table(name: str, be: dict[str, Any], admin: bool = False, hide_down: bool = False) -> str:
    shown = [srv for srv in be["servers"] if not hide_down or srv.get("status") not in ("DOWN", "MAINT")]
    servers = "".join(_server_row(srv, admin, name) for srv in shown)
    status_cls = "status_up" if be["status"] == "UP" else "status_down"
    total = "".join([
        _td("Backend", "name"),
        _td(be["status"], f"text status {status_cls}"),
        _td(""),
        _td(""),
        _td(be["weight"]),
        _td(be["active_servers"]), _td(be["backup_servers"]),
        _td(be["queue_current"]), _td(be["queue_max"]),
        _td(_rate(be, "session_rate")), _td(_rate(be, "session_rate_max")), _td("-"),
        _td(be["current_sessions"]), _td(be["max_sessions"]), _td("-"),
        _td(be["total_sessions"], title=_http_title(be)),
        _td(be["total_sessions"]), _td(_last(be)),
        _bytes_cells(be),
        _td(be["denied_requests"]), _td(be["denied_responses"]),
        _td("-"), _td(be["connection_errors"]), _td(be["response_errors"]),
        _td(be["retries"]), _td(be["redispatches"]),
        _td(""), _td(be.get("down_transitions", 0)),
        _td(human_duration(be.get("last_change_s"))),
        _td(human_duration(be.get("downtime_s")) if be.get("downtime_s") else "-"),
        _td(""),
    ])
    hidden = len(be["servers"]) - len(shown)
    note = f'<div class="hidden-note">{hidden} server(s) DOWN or in MAINT hidden</div>' if hidden else ""
    return (
        f'<section class="proxy"><table class="proxy backend" id="backend-{escape(name)}">'
        f'<caption>backend {escape(name)} <span>{escape(be["mode"])}, {escape(str(be.get("balance", "")))}</span></caption>'
        f'<thead>{BACKEND_HEAD}</thead><tbody>{servers}<tr class="backend">{total}</tr></tbody></table>'
        f'{note}{_admin_form(name) if admin else ""}</section>\n'
    )


def _legend() -> str:
    cells = "".join(f'<td class="{cls}">{escape(text)}</td>' for cls, text in LEGEND)
    return f'<table class="legend"><tr>{cells}</tr></table>\n'


def _card(label: str, value: Any, warn: bool = False) -> str:
    return f'<div class="card{" warn" if warn else ""}"><b>{escape(label)}</b><span>{escape(str(value))}</span></div>'


def _process_block(snapshot: dict[str, Any]) -> str:
    process = snapshot.get("process", {})
    frontends = list(snapshot["frontends"].values())
    pids = process.get("pids") or [process.get("pid")]
    workers = process.get("workers")
    current = sum(f["current_sessions"] for f in frontends)
    maxconn = process.get("maxconn")
    cards = [
        _card("version", f"lbcore {process.get('version', '')}"),
        _card("pid", process.get("master_pid", ", ".join(str(p) for p in pids))),
        _card("uptime", human_duration(process.get("uptime_s"))),
    ]
    if workers is not None:
        running = sum(1 for w in workers if w.get("status") == "running")
        cards.append(_card(f"workers: {running}/{len(workers)} running",
                           ", ".join(str(w.get("pid") or "-") for w in workers), warn=running < len(workers)))
    cards += [
        _card("connections", f"{current}/{maxconn}" if maxconn else current),
        _card("session rate", f"{sum(f.get('session_rate', 0) for f in frontends)}/s"
                              f" (max {sum(f.get('session_rate_max', 0) for f in frontends)})"),
        _card("sessions", sum(f["total_sessions"] for f in frontends)),
        _card("requests", sum(f.get("http_requests", 0) for f in frontends)),
    ]
    down = [f"{b}/{s['name']}" for b, be in snapshot["backends"].items() for s in be["servers"]
            if s.get("status") == "DOWN"]
    cards.append(_card("servers down", len(down), warn=bool(down)))
    return f'<div class="cards" id="process">{"".join(cards)}</div>\n'


def _uri(options: Iterable[str]) -> str:
    return "/" + "".join(f";{o}" for o in options)


def render_html(snapshot: dict[str, Any], refresh: Optional[float] = 5.0, admin: bool = False,
                options: Iterable[str] = (), status: Optional[str] = None) -> bytes:
    """The page. `options` are HAProxy's URI switches: `up` hides servers
    that are DOWN or in MAINT, `norefresh` stops the auto-refresh; `status`
    is the outcome of the last admin action (`;st=DONE`)."""
    options = [o for o in dict.fromkeys(options) if o in ("up", "norefresh")]
    hide_down, norefresh = "up" in options, "norefresh" in options
    refresh_meta = ""
    if refresh and refresh > 0 and not norefresh:
        refresh_meta = f'<meta http-equiv="refresh" content="{max(1, int(round(refresh)))}">'

    def toggle(option: str) -> str:
        return _uri([o for o in options if o != option] if option in options else [*options, option])
    nav = "".join([
        f'<a href="{toggle("up")}">{"Show all servers" if hide_down else "Hide DOWN servers"}</a>',
        f'<a href="{toggle("norefresh")}">{"Enable refresh" if norefresh else "Disable refresh"}</a>',
        f'<a href="{_uri(options)}">Refresh now</a>',
        '<a href="/;csv">CSV</a><a href="/stats.json">JSON</a><a href="/metrics">Prometheus</a>',
    ])
    banner = ""
    if status in STATUS_MESSAGES:
        kind, message = STATUS_MESSAGES[status]
        banner = f'<div class="banner {kind}" id="action-status">{escape(message)}</div>'
    generated = escape(time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    refresh_note = f" &middot; refresh every {int(round(refresh))}s" if refresh_meta else " &middot; refresh off"
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        refresh_meta,
        "<title>lbcore statistics</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<header><h1>lbcore <span>statistics</span></h1><nav>{nav}</nav></header><main>",
        banner,
        _process_block(snapshot),
        _legend(),
    ]
    frontends, backends = snapshot["frontends"], snapshot["backends"]
    # A frontend and the backend of the same name sit together, as a
    # HAProxy `listen` section does.
    for name in dict.fromkeys([*frontends, *backends]):
        if name in frontends:
            parts.append(_frontend_table(name, frontends[name]))
        if name in backends:
            parts.append(_backend_table(name, backends[name], admin, hide_down))
    parts.append(f"</main><footer>generated {generated}{refresh_note}"
                 f"{' &middot; admin actions enabled' if admin else ''}</footer></body></html>\n")
    return "".join(parts).encode("utf-8")
