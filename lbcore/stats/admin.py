"""The admin actions, shared by the HTTP admin API and the runtime API.

`POST /admin/backends/{backend}/servers/{server}` with
`{"state": "ready"|"drain"|"maint"}` and/or `{"weight": 0..256}`. The
endpoint parses the body and calls `apply()`; a multi-process master gives
the endpoint another object with the same `apply()` that fans the change
out to its workers. Changes go through Server.set_admin/set_weight, which
log them and tell the pools. The runtime API (runtime_api.py) calls the
same `apply()` and the actions only it has (health checks on/off, shutdown
sessions, clear counters), which reach the proxies through the hooks the
process gives AdminAction; every change is logged by `log_change()`, one
line format for both APIs.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Optional, Protocol

from ..model import DRAIN, MAINT, READY, Counters, Runtime, Server
from .snapshot import server_row

log = logging.getLogger("lbcore.stats")

STATES = {"ready": READY, "drain": DRAIN, "maint": MAINT}
MAX_WEIGHT = 256
FIELDS = ("state", "weight")


class AdminError(Exception):
    """A refused admin request: `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class NoSuchBackend(AdminError):
    def __init__(self, backend: str):
        super().__init__(404, f"no backend named {backend!r}")


class NoSuchServer(AdminError):
    def __init__(self, backend: str, server: str):
        super().__init__(404, f"backend {backend!r} has no server named {server!r}")


def log_change(backend: str, server: str, change: dict, who: Any) -> None:
    """The one log line of an admin change, whichever API made it."""
    log.warning("stats admin: %s/%s %s from %s", backend, server, json.dumps(change), who)


def log_refusal(backend: str, server: str, status: int, message: str, who: Any) -> None:
    log.warning("stats admin: %s/%s refused (%d: %s), from %s", backend, server, status, message, who)


class AdminHandler(Protocol):
    def apply(self, backend: str, server: str, state: Optional[str], weight: Any) -> dict: ...

    def shutdown_sessions(self, backend: str, server: str) -> Any: ...


def parse_body(body: bytes) -> tuple[Optional[str], Any]:
    """(state, weight) from a request body; values are checked by validate()."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AdminError(400, f"body is not valid JSON: {exc}") from None
    except RecursionError:  # json's C decoder on deep nesting; any admin body is flat
        raise AdminError(400, "body is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise AdminError(400, 'body must be a JSON object like {"state": "drain"} or {"weight": 10}')
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise AdminError(400, f"unknown field(s) {', '.join(map(repr, unknown))}; expected 'state' and/or 'weight'")
    if not any(k in data for k in FIELDS):
        raise AdminError(400, "body needs 'state' and/or 'weight'")
    return data.get("state"), data.get("weight")


def validate(state: Any, weight: Any) -> tuple[Optional[str], Optional[int]]:
    """(model admin state or None, weight or None), or AdminError(400)."""
    admin = None
    if state is not None:
        if not isinstance(state, str) or state.lower() not in STATES:
            raise AdminError(400, f"state must be one of {', '.join(STATES)}, not {state!r}")
        admin = STATES[state.lower()]
    if weight is not None:
        # bool is an int in Python; true/false is not a weight.
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT:
            raise AdminError(400, f"weight must be an integer from 0 to {MAX_WEIGHT}, not {weight!r}")
    return admin, weight


class AdminAction:
    """Applies admin changes to whatever Runtime `get_runtime` returns now
    (so a reload that swaps the runtime needs nothing re-wired).

    Hooks for what lives outside the runtime: `get_health()` the
    HealthChecker (probes on/off), `kill_sessions(server)` closes a
    server's established sessions in every process that has some,
    `clear_counters(all)` resets counters in every process."""

    def __init__(self, get_runtime: Callable[[], Runtime],
                 get_health: Optional[Callable[[], Any]] = None,
                 kill_sessions: Optional[Callable[[Server], Any]] = None,
                 clear_counters: Optional[Callable[[bool], Any]] = None):
        self.get_runtime = get_runtime
        self.get_health = get_health
        self.kill_sessions = kill_sessions
        self.clear = clear_counters

    def find(self, backend: str, server: str) -> Server:
        pool = self.get_runtime().backends.get(backend)
        if pool is None:
            raise NoSuchBackend(backend)
        target = pool.by_name.get(server)
        if target is None:
            raise NoSuchServer(backend, server)
        return target

    def apply(self, backend: str, server: str, state: Optional[str], weight: Any,
              source: str = "stats admin API") -> dict:
        target = self.find(backend, server)
        admin, new_weight = validate(state, weight)
        if admin is not None:
            target.set_admin(admin, source=source)
        if new_weight is not None:
            target.set_weight(new_weight, source=source)
        return server_row(target)

    def set_health_checks(self, backend: str, server: str, enabled: bool) -> None:
        target = self.find(backend, server)
        health = self.get_health() if self.get_health is not None else None
        if health is not None:
            health.set_enabled(target, enabled)

    def shutdown_sessions(self, backend: str, server: str) -> Any:
        target = self.find(backend, server)
        if self.kill_sessions is not None:
            return self.kill_sessions(target)
        return None

    def clear_counters(self, everything: bool) -> Any:
        clear_counters(self.get_runtime(), everything)
        if self.clear is not None:
            return self.clear(everything)
        return None


def clear_counters(runtime: Runtime, everything: bool) -> None:
    """HAProxy's `clear counters`: the maximums restart from the current
    values; `clear counters all` zeroes every counter."""
    objects = [*runtime.frontends.values(), *runtime.backends.values(), *runtime.servers()]
    for obj in objects:
        if everything:
            cur, queued = obj.cur_sessions, obj.queue_cur
            Counters.__init__(obj)
            obj.cur_sessions, obj.queue_cur = cur, queued
            obj.max_sessions, obj.queue_max = cur, queued
        else:
            obj.max_sessions = obj.cur_sessions
            obj.queue_max = obj.queue_cur
