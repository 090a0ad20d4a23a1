"""A timer wheel: callbacks due at a loop time, fired by one loop timer.

Every check of every server needs two timers (its next probe, the probe's
deadline). One loop timer each would be thousands of timer handles; here
they share slots of RESOLUTION seconds, and only the earliest non-empty
slot has a loop timer, like HAProxy's shared timer tree. A callback cannot
be taken back: its owner ignores a call that no longer concerns it (see
`Check.token` in checker.py).
"""

from __future__ import annotations

import heapq
import logging
import math
from typing import Callable

log = logging.getLogger("lbcore")

RESOLUTION = 0.01  # seconds: probes run at most this late


class TimerWheel:
    def __init__(self, loop) -> None:
        self.loop = loop
        self._slots: dict[int, list] = {}  # tick -> [(callback, arg)]
        self._ticks: list[int] = []  # heap of the ticks that have a slot
        self._handle = None
        self._armed = None  # the tick the loop timer is set for

    def __len__(self) -> int:
        return sum(len(slot) for slot in self._slots.values())

    def call_at(self, when: float, callback: Callable, arg, slack: float = 0.0) -> None:
        """`callback(arg)` at loop time `when`, within a RESOLUTION either way.
        With `slack`, up to that much later, on a tick that is a multiple of
        it: callbacks that do not need to be exact then share wake-ups
        (each wake-up of the process costs more than a probe's own work)."""
        tick = math.ceil(when / RESOLUTION)
        step = int(slack / RESOLUTION)
        if step > 1:
            tick = -(-tick // step) * step
        slot = self._slots.get(tick)
        if slot is None:
            self._slots[tick] = [(callback, arg)]
            heapq.heappush(self._ticks, tick)
            if self._armed is None or tick < self._armed:
                self._arm(tick)
        else:
            slot.append((callback, arg))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._armed = None
        self._slots.clear()
        self._ticks.clear()

    def _arm(self, tick: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = tick
        self._handle = self.loop.call_at(tick * RESOLUTION, self._fire)

    def _fire(self) -> None:
        self._handle = self._armed = None
        # Half a tick of slack: the loop's clock is coarse (1 ms in uvloop),
        # and a timer that wakes a hair early must not spin until it is due.
        now_tick = math.floor((self.loop.time() + RESOLUTION / 2) / RESOLUTION)
        ticks = self._ticks
        while ticks and ticks[0] <= now_tick:
            for callback, arg in self._slots.pop(heapq.heappop(ticks)):
                try:
                    callback(arg)
                except Exception:
                    log.exception("timer callback failed")
        # The callbacks may have armed a later tick than the earliest left.
        if ticks and ticks[0] != self._armed:
            self._arm(ticks[0])
