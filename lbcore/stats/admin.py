"""The admin API's action: change a server's admin state and/or weight.

`POST /admin/backends/{backend}/servers/{server}` with
`{"state": "ready"|"drain"|"maint"}` and/or `{"weight": 0..256}`. The
endpoint parses the body and calls `apply()`; a multi-process master gives
the endpoint another object with the same `apply()` that fans the change
out to its workers. Changes go through Server.set_admin/set_weight, which
log them and tell the pools.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Optional, Protocol

from ..model import DRAIN, MAINT, READY, Runtime
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


class AdminHandler(Protocol):
    def apply(self, backend: str, server: str, state: Optional[str], weight: Any) -> dict: ...


def parse_body(body: bytes) -> tuple[Optional[str], Any]:
    """(state, weight) from a request body; values are checked by validate()."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AdminError(400, f"body is not valid JSON: {exc}") from None
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
    (so a reload that swaps the runtime needs nothing re-wired)."""

    def __init__(self, get_runtime: Callable[[], Runtime]):
        self.get_runtime = get_runtime

    def apply(self, backend: str, server: str, state: Optional[str], weight: Any) -> dict:
        runtime = self.get_runtime()
        pool = runtime.backends.get(backend)
        if pool is None:
            raise AdminError(404, f"no backend named {backend!r}")
        target = pool.by_name.get(server)
        if target is None:
            raise AdminError(404, f"backend {backend!r} has no server named {server!r}")
        admin, new_weight = validate(state, weight)
        if admin is not None:
            target.set_admin(admin, source="stats admin API")
        if new_weight is not None:
            target.set_weight(new_weight, source="stats admin API")
        return server_row(target)
