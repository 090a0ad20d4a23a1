"""The rise/fall state machine, sans-I/O.

Fed probe results, it decides when a server flips UP or DOWN; it never
opens a socket nor reads a clock, so every sequence can be unit-tested.
The flip itself goes through `Server.set_health()`, the one health setter,
which logs it once and tells the backend's listeners (pools, balancers).

Semantics, HAProxy's where it has them:

- `rise` consecutive successes take a DOWN server UP, `fall` consecutive
  failures take an UP server DOWN; a result of the other kind restarts
  the count, so a flapping server keeps the state it has.
- Until its first verdict a server is "unsettled" (HAProxy `init-state up`
  / `down`): the first probe alone decides. A server that starts UP but is
  dead leaves the pool after one probe instead of `fall`, one that starts
  DOWN but is fine joins after one probe instead of `rise`. Leaving MAINT
  makes a server unsettled again, as in HAProxy.
- A server forced DOWN by a passive observation needs `rise` successful
  probes, all started after the observation, to come back.
- chkfail (`Server.check_failures`) counts failed probes while the server
  is UP or on its way up, not the repeated failures of a server already
  DOWN (HAProxy: "only counts checks failed when the server is up").
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from ..dataclass_code import dataclass
from ..model import UP


class ProbeResult(NamedTuple):
    """One probe outcome. `status` is HAProxy's check status name.
    Immutable; a tuple because one is made per probe, thousands a second
    (a frozen dataclass takes five times longer to build)."""

    ok: bool
    status: str  # L4OK L4CON L4TOUT L6RSP L7OK L7STS L7RSP L7TOUT SOCKERR
    code: Optional[int] = None  # HTTP status for L7OK / L7STS
    duration_ms: float = 0.0
    info: str = ""  # detail for the log, e.g. "Connection refused"

    def reason(self) -> str:
        """The text logged with a state flip: `L7STS 503, check duration: 2ms`."""
        text = self.status
        if self.code is not None:
            text += f" {self.code}"
        if self.info:
            text += f" ({self.info})"
        return f"{text}, check duration: {self.duration_ms:.0f}ms"


@dataclass(frozen=True, slots=True)
class Verdict:
    flip: Optional[bool]  # True: mark UP, False: mark DOWN, None: no change
    counted: bool  # a failure that counts in chkfail


# The only four verdicts there are, made once (one is needed per probe).
_MARK_UP = Verdict(True, False)
_MARK_DOWN = Verdict(False, True)
_NO_CHANGE = Verdict(None, False)
_COUNTED = Verdict(None, True)


class RiseFall:
    """Consecutive-result counters of one server against rise/fall."""

    __slots__ = ("rise", "fall", "ok_streak", "fail_streak", "settled", "epoch")

    def __init__(self, rise: int, fall: int) -> None:
        self.configure(rise, fall)
        self.ok_streak = 0
        self.fail_streak = 0
        self.settled = False
        # Bumped by every forced verdict; results of probes started under an
        # older epoch are ignored (they describe a server before its failure).
        self.epoch = 0

    def configure(self, rise: int, fall: int) -> None:
        """Take new thresholds (a reload); the streaks carry over."""
        if not isinstance(rise, int) or rise < 1:
            raise ValueError(f"rise must be an integer >= 1, got {rise!r}")
        if not isinstance(fall, int) or fall < 1:
            raise ValueError(f"fall must be an integer >= 1, got {fall!r}")
        self.rise = rise
        self.fall = fall

    def feed(self, ok: bool, up: bool) -> Verdict:
        """One probe result for a server that is currently `up` (or not)."""
        first = not self.settled
        self.settled = True
        if ok:
            self.ok_streak += 1
            self.fail_streak = 0
            if not up and (first or self.ok_streak >= self.rise):
                self.ok_streak = 0
                return _MARK_UP
            return _NO_CHANGE
        rising = self.ok_streak > 0
        self.ok_streak = 0
        self.fail_streak += 1
        if up and (first or self.fail_streak >= self.fall):
            self.fail_streak = 0
            return _MARK_DOWN
        return _COUNTED if up or rising else _NO_CHANGE

    def force_down(self) -> None:
        """A passive failure took the server DOWN: start the rise count over."""
        self.ok_streak = 0
        self.fail_streak = 0
        self.settled = True
        self.epoch += 1

    def unsettle(self) -> None:
        """Back from MAINT: the next probe alone decides, as at startup."""
        self.ok_streak = 0
        self.fail_streak = 0
        self.settled = False


def apply_result(server, machine: RiseFall, result: ProbeResult, now: float,
                 epoch: Optional[int] = None) -> Optional[bool]:
    """Record `result` on `server` and flip its health if the machine says
    so. `now` is the time.monotonic() of the probe's end; `epoch` is
    `machine.epoch` when the probe started. Returns the flip, if any."""
    server.check_status = result.status
    server.check_code = result.code
    server.check_duration_ms = result.duration_ms
    server.last_check_at = now
    if epoch is not None and epoch != machine.epoch:
        return None
    verdict = machine.feed(result.ok, server.health == UP)
    if verdict.counted:
        server.check_failures += 1
    server.consecutive_ok = machine.ok_streak
    server.consecutive_fail = machine.fail_streak
    if verdict.flip is not None:
        server.set_health(verdict.flip, result.reason())
    return verdict.flip
