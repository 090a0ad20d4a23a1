"""What a process serves for `stats:`: the HTTP endpoint on `stats.bind`,
the exporter-only ones on `stats.metrics_bind` and the runtime API on
`stats.socket`, started and stopped together. One
process and a multi-process master build it the same way, each with its
own snapshot source and admin actions."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Callable, Optional

from ..config import StatsSpec
from .admin import AdminHandler
from .endpoint import StatsEndpoint
from .rates import RateMeter
from .runtime_api import Service
from .runtime_socket import RuntimeSocket

log = logging.getLogger("lbcore.stats")


class StatsServers:
    def __init__(self, spec: StatsSpec, get_snapshot: Callable[[], Any], http_admin: AdminHandler,
                 service: Service) -> None:
        self.spec = spec
        self.service = service
        self.endpoint: Optional[StatsEndpoint] = None
        self.socket: Optional[RuntimeSocket] = None
        # One meter for both, so that `show stat` and /stats.csv agree on rates.
        self.rates = RateMeter()
        service.rates = self.rates
        if spec.bind is not None:
            self.endpoint = StatsEndpoint(spec, get_snapshot, http_admin)
            self.endpoint.rates = self.rates
        self.exporters = [StatsEndpoint(replace(spec, bind=address, auth=None), get_snapshot, http_admin,
                                        metrics_only=True) for address in spec.metrics_binds]
        for exporter in self.exporters:
            exporter.rates = self.rates
        if spec.socket is not None:
            self.socket = RuntimeSocket(spec.socket, service)

    async def start(self) -> None:
        """Bind all or none: OSError names the address that failed."""
        started = []
        try:
            for endpoint in ([self.endpoint] if self.endpoint is not None else []) + self.exporters:
                await endpoint.start()
                started.append(endpoint)
            if self.socket is not None:
                await self.socket.start()
        except OSError:
            for endpoint in started:
                endpoint.close()
            raise

    def handover(self) -> list[tuple[str, str, list[int]]]:
        """What an -sf takeover hands on besides the frontends' sockets."""
        given = []
        if self.endpoint is not None:
            given.append(("stats", str(self.spec.bind), self.endpoint.listening_fds()))
        for exporter in self.exporters:
            given.append(("stats", str(exporter.spec.bind), exporter.listening_fds()))
        if self.socket is not None and self.socket.spec.address is not None:
            # A TCP runtime socket is handed on like the stats port; a unix
            # one is replaced by the new process's rename.
            given.append(("stats", str(self.socket.spec), self.socket.listening_fds()))
        return given

    @property
    def port(self) -> int:
        return self.endpoint.port

    def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
        for exporter in self.exporters:
            exporter.close()
        if self.socket is not None:
            self.socket.close()
