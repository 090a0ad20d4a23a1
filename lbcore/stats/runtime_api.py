"""HAProxy's runtime API ("stats socket" commands): the command table and
what each command answers, in HAProxy 2.6's formats.

No sockets here (runtime_socket.py moves the bytes; cli_parser.py reads
them). A command is looked up in `REGISTRY` by its leading words, checked
against the session's level, and run with a `Call` that gives it its
arguments and the `Service` of the process: the runtime, the (merged)
stats snapshot, the admin actions shared with the HTTP admin API, and
the certificates. Other features add commands with `register()` (the
stick tables' `show table`, `clear table`, `set table`).

Answers are HAProxy's, byte for byte where tools parse them: the text a
handler returns is followed by one empty line (`get weight` answers
`1 (initial 1)\\n\\n`, a `set` that succeeds just `\\n`); a refused command
raises CommandError and answers its message and the empty line.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional, Union

from .. import __version__
from ..model import DOWN, DRAIN, MAINT, READY, Runtime, Server
from .admin import MAX_WEIGHT, AdminAction, AdminError, NoSuchBackend, NoSuchServer, log_change, log_refusal
from .cli_parser import Command
from .csvview import COLUMNS, TYPE_BACKEND, TYPE_FRONTEND, TYPE_SERVER, render_csv, rows

log = logging.getLogger("lbcore.stats")

# The HAProxy release whose runtime API lbcore follows: tools read the
# version to decide what they may send (Ansible sends `state drain` only
# to 1.5 or later), so it is HAProxy's; lbcore's own is in `Description`.
HAPROXY_VERSION = "2.6.12"
HAPROXY_RELEASE_DATE = "2023/03/10"

LEVELS = ("user", "operator", "admin")
LEVEL_RANK = {name: rank for rank, name in enumerate(LEVELS)}
DEFAULT_TIMEOUT = 10.0  # HAProxy's `timeout cli` default for the stats socket

PERMISSION_DENIED = "Permission denied"

Handler = Callable[["Call"], Union[str, Awaitable[str]]]


class CommandError(Exception):
    """A refused command: the message is the whole answer (plus the empty line)."""


@dataclass(frozen=True)
class CommandSpec:
    words: tuple[str, ...]
    level: str
    usage: str  # as HAProxy's help shows it, e.g. "get weight <bk>/<srv>"
    description: str
    handler: Handler


REGISTRY: list[CommandSpec] = []


def register(words: str, level: str, usage: str, description: str) -> Callable[[Handler], Handler]:
    """Add a command: `@register("show table", "user", "show table <table>", "...")`.
    The longest matching words win, so "show servers state" and "show stat"
    can live beside each other."""
    if level not in LEVEL_RANK:
        raise ValueError(f"unknown level {level!r}")

    def add(handler: Handler) -> Handler:
        spec = CommandSpec(tuple(words.split()), level, usage, description, handler)
        REGISTRY[:] = [c for c in REGISTRY if c.words != spec.words] + [spec]
        return handler
    return add


def lookup(words: tuple[str, ...]) -> Optional[CommandSpec]:
    best = None
    for spec in REGISTRY:
        n = len(spec.words)
        if words[:n] == spec.words and (best is None or n > len(best.words)):
            best = spec
    return best


@dataclass
class Session:
    """One client connection's state."""

    level: str = "admin"
    prompt: bool = False
    timeout: float = DEFAULT_TIMEOUT
    quit: bool = False
    peer: str = "runtime API"


@dataclass
class Service:
    """What the commands act on, given by the process that serves the socket
    (one process, or a master that merges its workers)."""

    get_runtime: Callable[[], Runtime]
    get_snapshot: Callable[[], Any]  # dict, or an awaitable of one
    admin: AdminAction
    certificates: Any = None  # lbcore.certificates.CertificateStore, when TLS is configured
    get_sessions: Optional[Callable[[], Any]] = None  # list of session dicts, or an awaitable
    workers: int = 1
    started: float = field(default_factory=time.time)
    rates: Any = None  # stats.rates.RateMeter shared with the HTTP endpoint

    async def snapshot(self) -> dict:
        snap = await _resolve(self.get_snapshot())
        return self.rates.annotate(snap) if self.rates is not None else snap


@dataclass
class Call:
    service: Service
    session: Session
    spec: CommandSpec
    args: tuple[str, ...]  # the words after the command's own
    payload: Optional[str] = None


async def _resolve(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


# -- running a line -----------------------------------------------------------

async def execute(command: Command, session: Session, service: Service) -> str:
    """The answer to one command, framed (the empty line, the prompt)."""
    try:
        body = await _run(command, session, service)
    except CommandError as exc:
        body = f"{exc}\n"
    except Exception:
        log.exception("runtime API: %r failed", " ".join(command.words))
        body = "Internal error; see the lbcore log.\n"
    if session.quit:
        return ""
    return body + "\n" + ("> " if session.prompt else "")


async def _run(command: Command, session: Session, service: Service) -> str:
    spec = lookup(command.words)
    if spec is None:
        return _unknown(command.words, session)
    if LEVEL_RANK[session.level] < LEVEL_RANK[spec.level]:
        return f"{PERMISSION_DENIED}\n"
    call = Call(service, session, spec, command.words[len(spec.words):], command.payload)
    return await _resolve(spec.handler(call))


def _help_lines(session: Session, first_word: Optional[str] = None) -> str:
    shown = [spec for spec in REGISTRY if LEVEL_RANK[spec.level] <= LEVEL_RANK[session.level]
             and (first_word is None or spec.words[0] == first_word)]
    shown.sort(key=lambda spec: (spec.words[0] in ("help", "prompt", "quit"), spec.usage))
    return "".join(f"  {spec.usage:<40}: {spec.description}\n" for spec in shown)


def _unknown(words: tuple[str, ...], session: Session) -> str:
    near = _help_lines(session, words[0]) if words else ""
    if near:
        return "Unknown command, but maybe one of the following ones is a better match:\n" + near
    return "Unknown command. Please enter one of the following commands only:\n" + _help_lines(session)


def empty_line_answer(session: Session) -> str:
    """An empty line: nothing in prompt mode; outside it HAProxy lists the commands."""
    if session.prompt:
        return "> "
    return _unknown((), session) + "\n"


# -- arguments ----------------------------------------------------------------

def _server_ref(call: Call, index: int = 0) -> tuple[str, str]:
    if len(call.args) <= index or "/" not in call.args[index]:
        raise CommandError("Require 'backend/server'.")
    backend, _, server = call.args[index].partition("/")
    if not backend or not server:
        raise CommandError("Require 'backend/server'.")
    return backend, server


def _find(call: Call, index: int = 0) -> Server:
    backend, server = _server_ref(call, index)
    try:
        return call.service.admin.find(backend, server)
    except NoSuchBackend:
        raise CommandError("No such backend.") from None
    except NoSuchServer:
        raise CommandError("No such server.") from None


def parse_weight(text: str, initial: int) -> int:
    """HAProxy's weight argument: `N` (0..256) or `N%` of the initial weight."""
    digits = len(text) - len(text.lstrip("0123456789"))
    if digits == 0:
        raise CommandError("Empty weight string empty or preceded by garbage")
    value, rest = int(text[:digits]), text[digits:]
    if rest == "%":
        if value > 100 * MAX_WEIGHT:
            raise CommandError("Relative weight is too high.")
        value = initial * value // 100
        return min(value, MAX_WEIGHT)
    if rest:
        raise CommandError("Trailing garbage in weight string")
    if value > MAX_WEIGHT:
        raise CommandError(f"Absolute weight can only be between 0 and {MAX_WEIGHT} inclusive.")
    return value


def _change(call: Call, server: Server, state: Optional[str] = None, weight: Optional[int] = None) -> str:
    who = f"{call.session.peer} (runtime API: {' '.join(call.spec.words + call.args)})"
    change = {k: v for k, v in (("state", state), ("weight", weight)) if v is not None}
    try:
        call.service.admin.apply(server.backend.name, server.name, state, weight, source="runtime API")
    except AdminError as exc:
        log_refusal(server.backend.name, server.name, exc.status, exc.message, who)
        raise CommandError(exc.message) from None
    log_change(server.backend.name, server.name, change, who)
    return ""


# -- the commands -------------------------------------------------------------

@register("help", "user", "help [<command>]", "list matching or all commands")
def _help(call: Call) -> str:
    first = call.args[0] if call.args else None
    return "The following commands are valid at this level:\n" + (
        _help_lines(call.session, first) or _help_lines(call.session))


@register("prompt", "user", "prompt", "toggle interactive mode with prompt")
def _prompt(call: Call) -> str:
    call.session.prompt = not call.session.prompt
    return ""


@register("quit", "user", "quit", "disconnect")
def _quit(call: Call) -> str:
    call.session.quit = True
    return ""


@register("set timeout", "user", "set timeout [cli] <delay>", "change a timeout setting")
def _set_timeout(call: Call) -> str:
    if len(call.args) != 2 or call.args[0] != "cli":
        raise CommandError("'set timeout' only supports 'cli'.")
    try:
        seconds = int(call.args[1])
    except ValueError:
        raise CommandError("Expects an integer value.") from None
    if seconds <= 0:
        raise CommandError("Expects an integer value.")
    call.session.timeout = float(seconds)
    return ""


@register("user", "user", "user", "lower the level of the current CLI session to user")
def _user(call: Call) -> str:
    call.session.level = "user"
    return ""


@register("operator", "user", "operator", "lower the level of the current CLI session to operator")
def _operator(call: Call) -> str:
    if LEVEL_RANK[call.session.level] < LEVEL_RANK["operator"]:
        raise CommandError(PERMISSION_DENIED)
    call.session.level = "operator"
    return ""


@register("show cli level", "user", "show cli level", "display the level of the current CLI session")
def _show_level(call: Call) -> str:
    return f"{call.session.level}\n"


@register("show version", "user", "show version", "show version of the current process")
def _show_version(call: Call) -> str:
    return f"{HAPROXY_VERSION}\n"


def _uptime(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 86400}d {s % 86400 // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"


def info_fields(snapshot: dict, service: Service) -> list[tuple[str, Any]]:
    """`show info`, in HAProxy 2.6's field order. What lbcore has no
    equivalent for is 0, as HAProxy shows a feature that is not in use."""
    process = snapshot.get("process", {})
    frontends = snapshot.get("frontends", {}).values()
    runtime = service.get_runtime()
    maxconn = runtime.config.global_.maxconn
    uptime = float(process.get("uptime_s", 0.0))
    curr = sum(f.get("current_sessions", 0) for f in frontends)
    cum_conns = sum(f.get("total_sessions", 0) for f in frontends)
    cum_req = sum(f.get("http_requests", 0) for f in frontends)
    bytes_out = sum(f.get("bytes_out", 0) for f in frontends)
    workers = process.get("workers")
    rate = sum(f.get("session_rate", 0) for f in frontends)  # stats.rates, when measured
    rate_max = sum(f.get("session_rate_max", 0) for f in frontends)
    zero = 0
    return [
        ("Name", "HAProxy"), ("Version", HAPROXY_VERSION), ("Release_date", HAPROXY_RELEASE_DATE),
        ("Nbthread", service.workers), ("Nbproc", 1), ("Process_num", 1),
        ("Pid", process.get("master_pid", process.get("pid", os.getpid()))),
        ("Uptime", _uptime(uptime)), ("Uptime_sec", int(uptime)),
        ("Memmax_MB", zero), ("PoolAlloc_MB", zero), ("PoolUsed_MB", zero), ("PoolFailed", zero),
        ("Ulimit-n", _nofile()), ("Maxsock", _nofile()),
        ("Maxconn", maxconn), ("Hard_maxconn", maxconn),
        ("CurrConns", curr), ("CumConns", cum_conns), ("CumReq", cum_req),
        ("MaxSslConns", zero), ("CurrSslConns", zero), ("CumSslConns", zero),
        ("Maxpipes", zero), ("PipesUsed", zero), ("PipesFree", zero),
        ("ConnRate", rate), ("ConnRateLimit", zero), ("MaxConnRate", rate_max),
        ("SessRate", rate), ("SessRateLimit", zero), ("MaxSessRate", rate_max),
        ("SslRate", zero), ("SslRateLimit", zero), ("MaxSslRate", zero),
        ("SslFrontendKeyRate", zero), ("SslFrontendMaxKeyRate", zero), ("SslFrontendSessionReuse_pct", zero),
        ("SslBackendKeyRate", zero), ("SslBackendMaxKeyRate", zero),
        ("SslCacheLookups", zero), ("SslCacheMisses", zero),
        ("CompressBpsIn", zero), ("CompressBpsOut", zero), ("CompressBpsRateLim", zero),
        ("Tasks", len(workers) if workers else 1), ("Run_queue", zero), ("Idle_pct", 100),
        ("node", socket.gethostname()),
        ("Description", f"lbcore {__version__}"),
        ("Stopping", 1 if any(f.get("status") == "STOP" for f in frontends) else 0),
        ("Jobs", curr), ("Unstoppable Jobs", zero),
        ("Listeners", sum(len(f.get("binds", ())) for f in frontends)),
        ("ActivePeers", zero), ("ConnectedPeers", zero), ("DroppedLogs", zero), ("BusyPolling", zero),
        ("FailedResolutions", zero), ("TotalBytesOut", bytes_out), ("TotalSplicdedBytesOut", zero),
        ("BytesOutRate", zero), ("DebugCommandsIssued", zero), ("CumRecvLogs", zero),
        ("Build info", f"lbcore {__version__}"),
        ("Memmax_bytes", zero), ("PoolAlloc_bytes", zero), ("PoolUsed_bytes", zero),
        ("Start_time_sec", int(process.get("start_time", service.started))), ("Tainted", zero),
    ]


def _nofile() -> int:
    try:
        import resource
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 0


@register("show info", "user", "show info [desc|json|typed|float]*", "report information about the running process")
async def _show_info(call: Call) -> str:
    fields = info_fields(await call.service.snapshot(), call.service)
    if "typed" in call.args:
        return "".join(f"{i}.{name}.1:{'S' if isinstance(v, str) else 'G'}:"
                       f"{'str' if isinstance(v, str) else 'u64'}:{v}\n"
                       for i, (name, v) in enumerate(fields))
    return "".join(f"{name}: {value}\n" for name, value in fields)


def _stat_filter(args: tuple[str, ...]) -> Optional[Callable[[dict], bool]]:
    """`show stat <iid|name> <type mask> <sid>`: -1 is "all"; the type mask
    adds 1 (frontends), 2 (backends), 4 (servers)."""
    numbers = [a for a in args if a not in ("typed", "json", "desc", "no-maint", "up")]
    if not numbers:
        return None
    if len(numbers) != 3:
        raise CommandError("Expects 3 arguments: <iid|proxy name> <type> <sid>, -1 for all.")
    proxy, mask, sid = numbers
    try:
        mask_value, sid_value = int(mask), int(sid)
    except ValueError:
        raise CommandError("Expects 3 arguments: <iid|proxy name> <type> <sid>, -1 for all.") from None
    bits = {TYPE_FRONTEND: 1, TYPE_BACKEND: 2, TYPE_SERVER: 4}

    def keep(fields: dict) -> bool:
        if proxy != "-1" and str(fields["iid"]) != proxy and fields["pxname"] != proxy:
            return False
        if mask_value != -1 and not mask_value & bits[fields["type"]]:
            return False
        return sid_value == -1 or fields["sid"] == sid_value
    return keep


def _status_filter(args: tuple[str, ...]) -> Callable[[dict], bool]:
    no_maint, up = "no-maint" in args, "up" in args

    def keep(fields: dict) -> bool:
        if fields["type"] != TYPE_SERVER:
            return True
        if no_maint and fields["status"] == MAINT:
            return False
        return not up or str(fields["status"]).startswith("UP")
    return keep


# Tags of `show stat typed` (origin, nature, scope) for the fields that are
# not plain counters, as HAProxy prints them.
_TYPED_TAGS = {
    "pxname": "KNS", "svname": "KNS", "status": "SGP", "pid": "KGP", "iid": "KGS", "sid": "KGS",
    "type": "CGS", "scur": "MGP", "qcur": "MGP", "smax": "MMP", "qmax": "MMP", "slim": "CLP",
    "weight": "MAS", "act": "MGS", "bck": "MGS", "lastchg": "MAP", "mode": "CGS", "addr": "CGS",
    "algo": "CGS", "check_status": "MGP", "check_desc": "MGP", "check_rise": "MGP", "check_fall": "MGP",
    "check_health": "MGP", "uweight": "MAS", "downtime": "MAP",
}


@register("show stat", "user", "show stat [desc|json|no-maint|typed|up]*", "report counters for each proxy and server")
async def _show_stat(call: Call) -> str:
    snapshot = await call.service.snapshot()
    selected = _stat_filter(call.args)
    status_ok = _status_filter(call.args)

    def keep(fields: dict) -> bool:
        return status_ok(fields) and (selected is None or selected(fields))
    if "typed" not in call.args:
        return render_csv(snapshot, keep).decode("utf-8")
    out = []
    letters = {TYPE_FRONTEND: "F", TYPE_BACKEND: "B", TYPE_SERVER: "S"}
    for fields in rows(snapshot):
        if not keep(fields):
            continue
        prefix = f"{letters[fields['type']]}.{fields['iid']}.{fields['sid']}"
        for pos, column in enumerate(COLUMNS):
            value = fields.get(column)
            if value is None:
                continue
            kind = "str" if isinstance(value, str) else "u64"
            out.append(f"{prefix}.{pos}.{column}.1:{_TYPED_TAGS.get(column, 'MCP')}:{kind}:{value}\n")
        out.append("\n")
    return "".join(out)


@register("show backend", "user", "show backend", "list backends in the current running config")
def _show_backend(call: Call) -> str:
    return "# name\n" + "".join(f"{name}\n" for name in call.service.get_runtime().backends)


# HAProxy's enum healthcheck_status, as `show servers state` numbers it.
CHECK_STATUS_CODES = {
    "UNK": 0, "INI": 1, "HANA": 4, "SOCKERR": 5, "L4OK": 6, "L4TOUT": 7, "L4CON": 8,
    "L6OK": 9, "L6TOUT": 10, "L6RSP": 11, "L7TOUT": 12, "L7RSP": 13, "L7OK": 15, "L7OKC": 16, "L7STS": 17,
}
CHECK_PASSED, CHECK_FAILED, CHECK_UNKNOWN = 3, 2, 0
SERVERS_STATE_HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
    "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id "
    "srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr "
    "srv_agent_addr srv_agent_port"
)
ADMIN_STATE_BITS = {READY: 0, MAINT: 0x01, DRAIN: 0x08}  # SRV_ADMF_FMAINT, SRV_ADMF_FDRAIN
CHECK_CONFIGURED, CHECK_ENABLED, CHECK_PAUSED = 0x02, 0x04, 0x08


def server_state_line(be_id: int, srv_id: int, server: Server, paused: bool, now: float) -> str:
    health = server.backend.spec.health
    # SRV_ST_STOPPED / SRV_ST_RUNNING: a server in maintenance is stopped, as in HAProxy.
    op_state = 0 if server.health == DOWN or server.admin == MAINT else 2
    status = server.check_status if server.checked else "INI"
    status_code = CHECK_STATUS_CODES.get(status or "INI", 1)
    if not server.checked or not server.check_status or server.check_status == "INI":
        result = CHECK_UNKNOWN
    else:
        result = CHECK_PASSED if server.health != DOWN else CHECK_FAILED
    if server.checked:
        level = (min(server.consecutive_ok, health.rise - 1) if server.health == DOWN
                 else max(health.rise, health.rise + health.fall - 1 - server.consecutive_fail))
        check_state = CHECK_CONFIGURED | (CHECK_PAUSED if paused else CHECK_ENABLED)
    else:
        level, check_state = health.rise, 0
    host = server.host or "-"
    return " ".join(str(v) for v in (
        be_id, server.backend.name, srv_id, server.name, host, op_state,
        ADMIN_STATE_BITS.get(server.admin, 0), server.weight, server.initial_weight,
        int(max(0.0, now - server.last_change)), status_code, result, level, check_state,
        0, 0, 0, "-", server.port, "-", 0, server.backend.spec.health.port or 0, "-", "-", 0,
    )) + "\n"


def proxy_ids(runtime: Runtime) -> dict[str, int]:
    """Proxy name -> iid, numbered as the CSV numbers them."""
    names = list(dict.fromkeys([*runtime.frontends, *runtime.backends]))
    return {name: iid for iid, name in enumerate(names, start=1)}


@register("show servers state", "user", "show servers state [<backend>]",
          "dump volatile server information (all or for a single backend)")
def _show_servers_state(call: Call) -> str:
    runtime = call.service.get_runtime()
    ids = proxy_ids(runtime)
    backends = list(runtime.backends.values())
    if call.args:
        backend = runtime.backends.get(call.args[0])
        if backend is None:
            raise CommandError("Can't find backend.")
        backends = [backend]
    health = call.service.admin.get_health() if call.service.admin.get_health else None
    paused = getattr(health, "paused", set())
    now = time.monotonic()
    lines = ["1\n", SERVERS_STATE_HEADER + "\n"]
    for backend in backends:
        for srv_id, server in enumerate(backend.servers, start=1):
            lines.append(server_state_line(ids[backend.name], srv_id, server, server in paused, now))
    return "".join(lines)


@register("show sess", "user", "show sess [id]", "report the list of current sessions or dump this exact session")
async def _show_sess(call: Call) -> str:
    getter = call.service.get_sessions
    sessions = await _resolve(getter()) if getter is not None else []
    lines = []
    for s in sessions:
        lines.append(
            f"{s['id']}: proto={s['proto']} src={s['src']} fe={s['frontend']} be={s.get('backend') or '<NONE>'} "
            f"srv={s.get('server') or '<none>'} age={int(s.get('age_s', 0))}s pid={s.get('pid', os.getpid())}\n")
    return "".join(lines)


@register("get weight", "user", "get weight <bk>/<srv>", "report a server's current weight")
def _get_weight(call: Call) -> str:
    server = _find(call)
    return f"{server.weight} (initial {server.initial_weight})\n"


@register("clear counters", "operator", "clear counters [all]", "clear max statistics counters (or all counters)")
async def _clear_counters(call: Call) -> str:
    everything = bool(call.args) and call.args[0] == "all"
    if everything and LEVEL_RANK[call.session.level] < LEVEL_RANK["admin"]:
        raise CommandError(PERMISSION_DENIED)
    await _resolve(call.service.admin.clear_counters(everything))
    log.warning("stats admin: counters cleared%s from %s (runtime API)", " (all)" if everything else "",
                call.session.peer)
    return ""


@register("enable server", "admin", "enable server  <bk>/<srv>", "enable a disabled server (use 'set server' instead)")
def _enable_server(call: Call) -> str:
    return _change(call, _find(call), state="ready")


@register("disable server", "admin", "disable server <bk>/<srv>", "disable a server for maintenance (use 'set server' instead)")
def _disable_server(call: Call) -> str:
    return _change(call, _find(call), state="maint")


@register("set weight", "admin", "set weight <bk>/<srv>  (DEPRECATED)", "change a server's weight (use 'set server' instead)")
def _set_weight(call: Call) -> str:
    server = _find(call)
    if len(call.args) < 2:
        raise CommandError("Require <weight>.")
    return _change(call, server, weight=parse_weight(call.args[1], server.initial_weight))


SET_SERVER_USAGE = "usage: set server <backend>/<server> health | state | weight"


@register("set server", "admin", "set server <bk>/<srv> [opts]", "change a server's state, weight or health")
def _set_server(call: Call) -> str:
    server = _find(call)
    if len(call.args) < 2:
        raise CommandError(SET_SERVER_USAGE)
    what, values = call.args[1], call.args[2:]
    if what == "state":
        if not values or values[0] not in ("ready", "drain", "maint"):
            raise CommandError("'set server <srv> state' expects 'ready', 'drain' and 'maint'.")
        return _change(call, server, state=values[0])
    if what == "weight":
        if not values:
            raise CommandError("Require <weight>.")
        return _change(call, server, weight=parse_weight(values[0], server.initial_weight))
    if what == "health":
        if not values or values[0] not in ("up", "stopping", "down"):
            raise CommandError("'set server <srv> health' expects 'up', 'stopping', or 'down'.")
        if not server.checked:
            raise CommandError("Health check is not configured for this server.")
        server.set_health(values[0] == "up", f"set by the runtime API ({call.session.peer})")
        return ""
    raise CommandError(SET_SERVER_USAGE)


def _health(call: Call, enabled: bool) -> str:
    server = _find(call)
    call.service.admin.set_health_checks(server.backend.name, server.name, enabled)
    log_change(server.backend.name, server.name, {"health_checks": "enabled" if enabled else "disabled"},
               f"{call.session.peer} (runtime API)")
    return ""


@register("enable health", "admin", "enable health <bk>/<srv>", "enable health checks")
def _enable_health(call: Call) -> str:
    return _health(call, True)


@register("disable health", "admin", "disable health <bk>/<srv>", "disable health checks")
def _disable_health(call: Call) -> str:
    return _health(call, False)


@register("shutdown sessions server", "admin", "shutdown sessions server <bk>/<srv>", "kill sessions on a server")
async def _shutdown_sessions(call: Call) -> str:
    server = _find(call)
    await _resolve(call.service.admin.shutdown_sessions(server.backend.name, server.name))
    log_change(server.backend.name, server.name, {"sessions": "shut down"}, f"{call.session.peer} (runtime API)")
    return ""


# -- certificates (the store is lbcore.certificates) ---------------------------

def _store(call: Call) -> Any:
    store = call.service.certificates
    if store is None:
        raise CommandError("No certificate is configured (no frontend has tls).")
    return store


@register("show ssl cert", "user", "show ssl cert [<certfile>]",
          "display the SSL certificates used in memory, or the details of a file")
def _show_ssl_cert(call: Call) -> str:
    store = call.service.certificates
    if not call.args:
        return store.list_text() if store is not None else "# filename\n"
    return _store(call).details_text(call.args[0])


@register("set ssl cert", "admin", "set ssl cert <certfile> <payload>", "replace a certificate file")
def _set_ssl_cert(call: Call) -> str:
    if not call.args:
        raise CommandError("'set ssl cert' expects a filename and a certificate as a payload")
    return _store(call).set(call.args[0], call.payload or "")


@register("commit ssl cert", "admin", "commit ssl cert <certfile>", "commit a certificate file")
async def _commit_ssl_cert(call: Call) -> str:
    if not call.args:
        raise CommandError("'commit ssl cert' expects a filename")
    answer = await _resolve(_store(call).commit(call.args[0]))
    log.warning("stats admin: certificate %s replaced from %s (runtime API)", call.args[0], call.session.peer)
    return answer


@register("abort ssl cert", "admin", "abort ssl cert <certfile>", "abort a transaction for a certificate file")
def _abort_ssl_cert(call: Call) -> str:
    if not call.args:
        raise CommandError("'abort ssl cert' expects a filename")
    return _store(call).abort(call.args[0])


# Commands of other features, registered on import.
from . import table_commands  # noqa: E402,F401
