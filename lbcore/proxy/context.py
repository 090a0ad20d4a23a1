"""What every proxy connection shares within one process."""

from __future__ import annotations

import asyncio
from typing import Callable, Optional

from ..logs import AccessLog
from ..model import Server


class ProxyContext:
    """The loop, the access log, the passive health hook and the process-wide
    connection count (global.maxconn), handed to every frontend handler."""

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
