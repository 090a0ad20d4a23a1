"""A process's established sessions, as the runtime API sees them:
`show sess` lists them, `shutdown sessions server B/S` closes a server's.

Read from the proxies' own bookkeeping (tcp sessions, http client
connections, the server connections the sweeper watches): nothing is
counted on the hot path for this.
"""

from __future__ import annotations

import os
import time
from typing import Any

from .model import Server
from .upstream import UpstreamConnection


def _src(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer)


def _upstreams(balancer) -> list:
    return [c for c in list(balancer.sweeper.watched) if type(c) is UpstreamConnection]


def _name(obj: Any) -> Any:
    return getattr(obj, "name", None) if obj is not None else None


def list_sessions(balancer) -> list[dict]:
    """Every client session of `balancer` (a LoadBalancer) right now. Read
    defensively: a session may not have chosen its backend or server yet."""
    now = balancer.loop.time() if balancer.loop is not None else time.monotonic()
    serving = {id(c.client): c.server for c in _upstreams(balancer) if c.client is not None}
    rows = []
    for handler in list(balancer.handlers.values()):
        frontend = handler.frontend
        for session in list(getattr(handler, "sessions", ())):  # tcp mode
            began = getattr(session, "t_begin", None)  # the stream's clock is the loop's
            rows.append({
                "id": f"0x{id(session):x}", "proto": "tcpv4", "src": _src(getattr(session, "peer", None)),
                "frontend": frontend.name, "backend": _name(getattr(session, "backend", None)),
                "server": _name(getattr(session, "server", None)),
                "age_s": max(0.0, now - began) if isinstance(began, float) else 0.0, "pid": os.getpid(),
            })
        for client in list(getattr(handler, "clients", ())):  # http mode
            rows.append({
                "id": f"0x{id(client):x}", "proto": "tcpv4", "src": _src(client.peer),
                "frontend": frontend.name, "backend": _name(frontend.backend),
                "server": _name(serving.get(id(client))), "age_s": 0.0, "pid": os.getpid(),
            })
        for parked in list(getattr(handler, "parked", {}).values()):  # idle http, off its transport
            rows.append({
                "id": f"0x{id(parked):x}", "proto": "tcpv4", "src": _src(parked.peer),
                "frontend": frontend.name, "backend": _name(frontend.backend),
                "server": None, "age_s": 0.0, "pid": os.getpid(),
            })
    return rows


def kill_server_sessions(balancer, server: Server) -> int:
    """Close every session established with `server`, as HAProxy's
    `shutdown sessions server`: tcp tunnels are killed, http exchanges in
    flight lose their server connection (the client sees it closed), idle
    pooled connections are dropped. Returns how many were closed."""
    from .proxy.tcp import KILLED

    killed = 0
    for handler in list(balancer.handlers.values()):
        for session in list(getattr(handler, "sessions", ())):
            if getattr(session, "server", None) is server:
                session.kill(KILLED)
                killed += 1
    for conn in _upstreams(balancer):
        if conn.server is server and not conn.closed:
            if conn.transport is not None:
                conn.transport.abort()
            killed += 1
    balancer.pool.close_idle(server)
    return killed
