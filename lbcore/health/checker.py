"""Runs the probes, and the passive hook.

Each checked server has a `Check`: a small schedule on the checker's one
timer wheel, not a task. When its time comes it starts a `Probe` (a
non-blocking connect, and for http one write and one read, its socket in
the checker's one epoll set, poller.py) and puts the probe's deadline on
the same wheel;
the next probe is scheduled only after the previous one finished or timed
out, so probes of one server never overlap or pile up, and a server that
hangs until its timeout never delays another's checks. The first probe is
spread at random over one interval and later ones are jittered by +/-10%,
so that a restart does not fire every check in the same instant. Results
go through `apply_result`, which flips the server only through its setter.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Callable, Optional

from lbcore_ext import probesock

from ..config import HealthSpec
from ..model import MAINT, UP, Runtime, Server
from .poller import ProbePoller
from .probes import Probe, is_ip, new_probe, probe_request, probe_server
from .state import ProbeResult, RiseFall, apply_result
from .wheel import TimerWheel

log = logging.getLogger("lbcore")

JITTER = 0.1  # +/- fraction of the interval between two probes
# How late a probe may start, or its deadline pass, as a fraction of its
# interval (and at most BATCH seconds): probes due within that much of
# one another share one wake-up of the process. A quarter of the jitter
# leaves the spread of the probes as it was; at inter 2s, it is 50 ms, and
# 3,000 servers cost about 20 wake-ups a second instead of 100.
SLACK = JITTER / 4
BATCH = 0.05
# start(in_steps=True): STEP_SLICE seconds of making checks (the clock
# looked at every STEP_CHECKS checks, ~0.1 ms of work), then STEP_GAP
# seconds of the loop's other work: the first requests, a few turns of
# the loop each, wait for one slice at most rather than all of them.
STEP_SLICE = 0.002
STEP_CHECKS = 32
STEP_GAP = 0.005


class HealthChecker:
    """`start(loop)`, `reload(runtime)`, `stop()`; `observe_failure` is
    the passive hook handed to the proxies."""

    def __init__(self, get_runtime: Callable[[], Runtime], rng: Optional[random.Random] = None) -> None:
        self._get_runtime = get_runtime
        self._rng = rng or random.Random()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._wheel: Optional[TimerWheel] = None
        self._poller: Optional[ProbePoller] = None
        self._checks: dict[Server, Check] = {}
        self._specs: dict[Server, HealthSpec] = {}  # the spec each check runs with
        # Kept apart from the checks: a check restarted for a changed spec
        # keeps its server's streaks.
        self._machines: dict[Server, RiseFall] = {}
        # Servers whose probes an operator stopped (runtime API `disable
        # health`): not probed, and UP unless an admin state says otherwise.
        self.paused: set[Server] = set()
        self._steps = None  # the checks start(in_steps=True) has yet to make

    # -- lifecycle ------------------------------------------------------------

    def start(self, loop: Optional[asyncio.AbstractEventLoop] = None, in_steps: bool = False) -> None:
        """Check every server of the runtime. `in_steps`: the checks are
        made STEP_SLICE seconds of work at a time, STEP_GAP apart (a start:
        3,000 servers are ~10 ms of work, and the connections that queued
        while the process started are served meanwhile). A reload()
        or stop() meanwhile takes over from the steps left."""
        self._loop = loop or asyncio.get_running_loop()
        self._wheel = TimerWheel(self._loop)
        self._poller = ProbePoller(self._loop)
        if in_steps:
            self._steps = self._reload_steps(self._get_runtime())
            self._loop.call_later(STEP_GAP, self._step)
        else:
            self.reload(self._get_runtime())

    def _step(self) -> None:
        steps = self._steps
        if steps is None:  # reloaded or stopped meanwhile
            return
        clock = time.perf_counter
        deadline = clock() + STEP_SLICE
        for _ in steps:
            if clock() >= deadline:
                self._loop.call_later(STEP_GAP, self._step)
                return
        self._steps = None

    @property
    def starting(self) -> bool:
        """Checks of the start still being made (start(in_steps=True))."""
        return self._steps is not None

    def reload(self, runtime: Optional[Runtime] = None) -> None:
        """Match the checks to `runtime`: servers that survived the reload
        (the same objects) keep their check and state, unless their
        backend's health spec changed, in which case their check restarts
        with the new spec and the same streaks; new servers get a check;
        removed or no longer checked servers lose theirs."""
        if self._loop is None:
            raise RuntimeError("HealthChecker.reload() called before start()")
        self._steps = None
        for _ in self._reload_steps(runtime if runtime is not None else self._get_runtime()):
            pass

    def _reload_steps(self, runtime: Runtime):
        """reload(), a generator that yields every STEP_CHECKS new checks."""
        wanted = {s: s.backend.spec.health for s in runtime.servers() if s.checked}
        for server in list(self._checks):
            if wanted.get(server) != self._specs[server]:
                self._checks.pop(server).cancel()
                del self._specs[server]
        for server in list(self._machines):
            if server not in wanted:
                del self._machines[server]
        self.paused &= set(wanted)
        made = 0
        for server, health in wanted.items():
            if server not in self._checks:
                self._specs[server] = health
                check = self._checks[server] = Check(self, server, health, self._machine(server, health))
                check.schedule(self._loop.time() + self._rng.uniform(0.0, health.interval))
                made += 1
                if made % STEP_CHECKS == 0:
                    yield

    def stop(self) -> Optional[asyncio.Future]:
        """Stop every check and close the probes in flight. Returns a future
        (already done: nothing runs on after this) for callers that await
        the end of the checks before closing the loop."""
        self._steps = None
        checks = list(self._checks.values())
        self._checks.clear()
        self._specs.clear()
        for check in checks:
            check.cancel()
        if self._wheel is not None:
            self._wheel.close()
        if self._poller is not None:
            self._poller.close()
        if self._loop is None:
            return None
        done = self._loop.create_future()
        done.set_result([])
        return done

    def set_enabled(self, server: Server, enabled: bool) -> None:
        """HAProxy's `enable|disable health`: a server whose checks are
        disabled is considered UP; enabling them lets the next probe decide."""
        if not server.checked:
            return
        if enabled:
            if server in self.paused:
                self.paused.discard(server)
                self._machine(server, server.backend.spec.health).unsettle()
            return
        self.paused.add(server)
        server.check_status = ""
        server.set_health(True, "health checks disabled by an operator")

    @property
    def probed_servers(self) -> list[Server]:
        """The servers that have a check right now."""
        return list(self._checks)

    # -- passive checks -------------------------------------------------------

    def observe_failure(self, server: Server, reason: str) -> None:
        """A proxy saw `server` fail at layer 4 (connect refused, reset...).
        A checked UP server goes DOWN at once and returns only after `rise`
        probes that started after this failure. An unchecked server is never
        taken out (nothing would bring it back); its failure is only counted.
        A server this takes DOWN shows check status HANA, as in HAProxy."""
        server.observed_failures += 1
        if not server.checked or server.admin == MAINT or server in self.paused:
            return
        machine = self._machine(server, server.backend.spec.health)
        machine.force_down()
        server.consecutive_ok = 0
        server.consecutive_fail = 0
        if server.health == UP:
            # HAProxy's status for a server taken out by traffic analysis;
            # the last probe's L7OK would contradict the DOWN next to it.
            server.check_status = "HANA"
            server.check_code = None
            server.check_duration_ms = None
            server.last_check_at = time.monotonic()
            server.set_health(False, f"{reason} (observed)")

    # -- the probe loop -------------------------------------------------------

    def _machine(self, server: Server, health: HealthSpec) -> RiseFall:
        machine = self._machines.get(server)
        if machine is None:
            machine = self._machines[server] = RiseFall(health.rise, health.fall)
        return machine



class Check:
    """The probe schedule of one server: due -> probe -> result -> due..."""

    __slots__ = ("checker", "server", "health", "machine", "request", "bad_request", "address",
                 "slack", "probe", "epoch", "in_maint", "stopped", "token", "_on_due", "_on_deadline", "_on_result")

    def __init__(self, checker: HealthChecker, server: Server, health: HealthSpec, machine: RiseFall) -> None:
        self.checker = checker
        self.server = server
        self.health = health
        self.machine = machine
        machine.configure(health.rise, health.fall)
        self.bad_request = None
        try:
            self.request = probe_request(server, health)
        except ValueError as exc:
            self.request, self.bad_request = None, str(exc)
        # What the probe connects to, worked out once; None for a host name,
        # resolved by the loop's resolver at each probe.
        self.address = None
        if is_ip(server.host):
            try:
                self.address = probesock.address(server.host, health.port or server.port)
            except (OSError, OverflowError):
                pass  # probe_server() reports why, at each probe
        self.slack = min(BATCH, health.interval * SLACK)
        self.probe: Optional[Probe] = None
        self.epoch = 0
        self.in_maint = False
        self.stopped = False
        # Wheel entries cannot be removed: each carries the token it was
        # scheduled with, and a stale one (cancelled, rescheduled) is ignored.
        self.token = 0
        # The callbacks, bound once rather than at every probe.
        self._on_due = self._due
        self._on_deadline = self._deadline
        self._on_result = self._record

    def done(self) -> bool:
        """Stopped, with no probe left in flight."""
        return self.stopped and self.probe is None

    def cancel(self) -> None:
        self.stopped = True
        self.token += 1
        if self.probe is not None:
            self.probe.abort()
            self.probe = None

    def schedule(self, when: float) -> None:
        self.token += 1
        self.checker._wheel.call_at(when, self._on_due, self.token, self.slack)

    def _next(self) -> None:
        checker = self.checker
        jitter = 1.0 + JITTER * (2.0 * checker._rng.random() - 1.0)  # uniform in 1 +/- JITTER
        self.schedule(checker._loop.time() + self.health.interval * jitter)

    def _due(self, token: int) -> None:
        if token != self.token or self.stopped:
            return
        server = self.server
        if server.admin == MAINT or server in self.checker.paused:
            self.in_maint = True  # HAProxy counts no checks in maintenance
            self._next()
            return
        if self.in_maint:
            self.in_maint = False
            self.machine.unsettle()
        self.epoch = self.machine.epoch
        if self.bad_request is not None:
            self._record(ProbeResult(False, "SOCKERR", None, 0.0, self.bad_request))
            return
        health = self.health
        if self.address is None:
            self.checker._loop.create_task(self._probe_by_name())
            return
        checker = self.checker
        probe = self.probe = new_probe(checker._poller, server, self.address, health, self.request,
                                       self._on_result)
        checker._wheel.call_at(checker._loop.time() + health.timeout, self._on_deadline, probe, self.slack)
        probe.start()

    def _deadline(self, probe: Probe) -> None:
        # A probe object is new each time and held by its wheel entry, so
        # identity alone tells whether this deadline is still the current one.
        if probe is self.probe:
            probe.expire()

    async def _probe_by_name(self) -> None:
        token = self.token
        try:
            result = await probe_server(self.server, self.health)
        except Exception as exc:  # a bug in a probe must not end this server's checks
            log.exception("health probe of %s/%s failed", self.server.backend.name, self.server.name)
            result = ProbeResult(False, "SOCKERR", None, 0.0, f"probe error: {exc}")
        if token == self.token and not self.stopped:
            self._record(result)

    def _record(self, result: Optional[ProbeResult]) -> None:
        self.probe = None
        if self.stopped:
            return
        server = self.server
        if result is not None:
            try:
                apply_result(server, self.machine, result, time.monotonic(), self.epoch)
            except Exception:
                log.exception("recording the health of %s/%s failed", server.backend.name, server.name)
        self._next()
