"""What every proxy connection shares within one process."""

from __future__ import annotations

import asyncio
from typing import Callable, Optional

from ..logs import AccessLog
from ..model import Frontend, Server


class ProxyContext:
    """The loop, the access log, the passive health hook and the connection
    accounting behind maxconn, handed to every frontend handler.

    Handlers call `opened(frontend)` when they take a client connection and
    `closed(frontend)` exactly once when it is gone; acceptors that paused
    because a limit was reached are resumed from `closed`.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, access_log: AccessLog,
                 observe_failure: Optional[Callable[[Server, str], None]] = None,
                 maxconn: int = 20000) -> None:
        self.loop = loop
        self.access_log = access_log
        # Called on a connect failure or reset from a server (observe layer 4).
        self.observe_failure = observe_failure or (lambda server, reason: None)
        self.maxconn = maxconn
        self.connections = 0  # client connections open in this process
        self.stopping = False
        # SIGTERM with global.stop_delay: monitor_uri fails so health checks
        # withdraw this node, while connections are still accepted.
        self.withdrawn = False
        # The Acceptors that stopped reading (maxconn reached, descriptors
        # short): closed() resumes them. Only those: looking at every
        # acceptor cost each connection's end 23 us at 1,000 frontends.
        self.paused: set = set()
        # A worker process's lbcore.adoption.Journal: its master keeps a copy
        # of every plain-http client connection and can hand it on.
        self.journal = None
        # Idle http client connections held off the loop's transports
        # (proxy/parking.py's Parking), made by the first one parked.
        self.parking = None

    def may_accept(self, frontend: Frontend) -> bool:
        return (not self.stopping and self.connections < self.maxconn
                and frontend.cur_sessions < frontend.spec.maxconn)

    def opened(self, frontend: Frontend) -> None:
        self.connections += 1
        frontend.session_start()

    def closed(self, frontend: Frontend) -> None:
        self.connections -= 1
        frontend.session_end()
        if self.paused and not self.stopping:
            for acceptor in list(self.paused):
                acceptor.start()
