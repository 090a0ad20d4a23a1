"""global.state_file: server states kept across a full restart (HAProxy's
server-state-file). Written at stop, read at start; a server is matched
by backend, name and address, so a changed server starts fresh."""

from __future__ import annotations

import json
import logging
import os

from .model import READY, DRAIN, MAINT, Runtime

log = logging.getLogger("lbcore")


def save(runtime: Runtime, path: str) -> None:
    data = {"version": 1, "backends": {}}
    for backend in runtime.backends.values():
        data["backends"][backend.name] = {
            server.name: {
                "address": str(server.address),
                "health": server.health,
                "admin": server.admin,
                "weight": server.weight,
            }
            for server in backend.servers
        }
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except OSError as exc:
        log.error("cannot write state file %s: %s", path, exc)


def restore_server(server, entry: dict, source: str) -> None:
    """Take a saved health, admin state and weight (a state file entry, or
    a stats snapshot row handed over by the process this one replaces)."""
    if entry.get("admin") in (READY, DRAIN, MAINT):
        server.set_admin(entry["admin"], source=source)
    weight = entry.get("weight")
    if isinstance(weight, int) and not isinstance(weight, bool) and 0 <= weight <= 256:
        server.set_weight(weight, source=source)
    if server.checked and entry.get("health") in ("UP", "DOWN"):
        server.set_health(entry["health"] == "UP", source)


def load(runtime: Runtime, path: str) -> None:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        log.error("ignoring state file %s: %s", path, exc)
        return
    restored = 0
    for backend in runtime.backends.values():
        saved = data.get("backends", {}).get(backend.name, {})
        for server in backend.servers:
            entry = saved.get(server.name)
            if not isinstance(entry, dict) or entry.get("address") != str(server.address):
                continue
            restore_server(server, entry, "state file")
            restored += 1
    log.info("restored %d server states from %s", restored, path)
