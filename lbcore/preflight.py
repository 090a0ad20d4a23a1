"""Checks `--check` runs beyond the config's own validation: what needs the
outside world. The config module knows nothing of sockets, so name
resolution lives here.

Like `haproxy -c`, a server whose host name does not resolve fails the
check: found at run time it would only be a server that is never UP.
"""

from __future__ import annotations

import ipaddress
import socket

from .config import Config


def unresolvable_servers(config: Config) -> list[str]:
    """One problem line per server whose host does not resolve."""
    problems = []
    failed: dict[str, str] = {}
    for backend in config.backends.values():
        for index, server in enumerate(backend.servers):
            host = server.address.host
            try:
                ipaddress.ip_address(host)
                continue
            except ValueError:
                pass
            if host not in failed:
                try:
                    socket.getaddrinfo(host, server.address.port, type=socket.SOCK_STREAM)
                    failed[host] = ""
                except (socket.gaierror, UnicodeError) as exc:
                    failed[host] = getattr(exc, "strerror", None) or str(exc)
            if failed[host]:
                problems.append(f"{config.path}: backends.{backend.name}.servers[{index}].address: "
                                f"cannot resolve host {host!r} of server {server.name} ({failed[host]})")
    return problems
