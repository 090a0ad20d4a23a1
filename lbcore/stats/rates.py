"""Session rates and "last session" ages for the stats page and CSV, derived
at scrape time from the plain total counters (nothing on the hot path).

A RateMeter remembers each object's total sessions at its previous
samples; a scrape computes sessions per second over the last
`window` seconds and keeps the highest rate seen, and notes when a total
last moved (HAProxy's `Last`, to the precision of the scrapes).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Optional

WINDOW = 10.0  # seconds of history a rate is averaged over, at most
MIN_SPAN = 0.5  # below this between samples, keep the previous rate


class _Track:
    __slots__ = ("samples", "rate", "rate_max", "last_moved", "last_total")

    def __init__(self, total: int, now: float) -> None:
        self.samples: deque = deque([(now, total)])
        self.rate = 0
        self.rate_max = 0
        self.last_moved: Optional[float] = None
        self.last_total = total


class RateMeter:
    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self._tracks: dict[tuple, _Track] = {}

    def _update(self, key: tuple, row: dict[str, Any], now: float, seen: set) -> None:
        total = int(row.get("total_sessions", 0))
        seen.add(key)
        track = self._tracks.get(key)
        if track is None or total < track.last_total:  # new, or counters cleared
            track = self._tracks[key] = _Track(total, now)
        else:
            if total != track.last_total:
                track.last_moved = now
                track.last_total = total
            while len(track.samples) > 1 and now - track.samples[1][0] >= self.window:
                track.samples.popleft()
            then, before = track.samples[0]
            if now - then >= MIN_SPAN:
                track.rate = int(round((total - before) / (now - then)))
                track.rate_max = max(track.rate_max, track.rate)
            track.samples.append((now, total))
        row["session_rate"] = track.rate
        row["session_rate_max"] = track.rate_max
        if track.last_moved is not None:
            row["last_session_s"] = now - track.last_moved
        elif total == 0:
            row["last_session_s"] = None  # never had a session
        # else: sessions happened before the first scrape, when is unknown

    def annotate(self, snapshot: dict[str, Any], now: Optional[float] = None) -> dict[str, Any]:
        """`snapshot` with `session_rate`, `session_rate_max` and
        `last_session_s` in every frontend, backend and server row."""
        now = time.monotonic() if now is None else now
        seen: set = set()
        for name, fe in snapshot.get("frontends", {}).items():
            self._update(("f", name), fe, now, seen)
        for name, be in snapshot.get("backends", {}).items():
            self._update(("b", name), be, now, seen)
            for srv in be.get("servers", []):
                self._update(("s", name, srv["name"]), srv, now, seen)
        for key in [k for k in self._tracks if k not in seen]:
            del self._tracks[key]
        return snapshot
