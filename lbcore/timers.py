"""Timeouts without a timer per event.

Re-arming a loop timer on every read would cost more than the read itself.
Instead every connection carries a `deadline` (loop time, 0 = none) that it
moves forward on activity using the coarse clock `Sweeper.now`, and one
periodic sweep expires whatever is past its deadline, like HAProxy's
coarse-grained task timers. Resolution is the tick (100 ms).
"""

from __future__ import annotations

import logging

log = logging.getLogger("lbcore")

TICK = 0.1


class Sweeper:
    def __init__(self, loop) -> None:
        self.loop = loop
        self.now = loop.time()
        self.watched: set = set()  # objects with .deadline and .expire()
        self._handle = None

    def start(self) -> None:
        self.now = self.loop.time()
        self._handle = self.loop.call_later(TICK, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        now = self.now = self.loop.time()
        expired = [item for item in self.watched if 0 < item.deadline <= now]
        for item in expired:
            try:
                item.expire()
            except Exception:
                log.exception("timeout handler failed")
        self._handle = self.loop.call_later(TICK, self._tick)
