"""Runs the probes: one task per checked server, and the passive hook.

Each server has its own task so a server that hangs until its timeout
never delays another's checks. A task sleeps, probes, records, sleeps
again: the next probe is scheduled only after the previous one finished
or timed out, so probes of one server never overlap or pile up. The first
probe is spread at random over one interval and later ones are jittered by
+/-10%, so that a restart does not fire every check in the same instant.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Callable, Optional

from ..config import HealthSpec
from ..model import MAINT, UP, Runtime, Server
from .probes import probe_server
from .state import ProbeResult, RiseFall, apply_result

log = logging.getLogger("lbcore")

JITTER = 0.1  # +/- fraction of the interval between two probes


class HealthChecker:
    """`start(loop)`, `reload(runtime)`, `stop()`; `observe_failure` is
    the passive hook handed to the proxies."""

    def __init__(self, get_runtime: Callable[[], Runtime], rng: Optional[random.Random] = None) -> None:
        self._get_runtime = get_runtime
        self._rng = rng or random.Random()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._tasks: dict[Server, asyncio.Task] = {}
        self._specs: dict[Server, HealthSpec] = {}  # the spec each task runs with
        # Kept apart from the tasks: a task restarted for a changed spec keeps
        # its server's streaks.
        self._machines: dict[Server, RiseFall] = {}
        # Servers whose probes an operator stopped (runtime API `disable
        # health`): not probed, and UP unless an admin state says otherwise.
        self.paused: set[Server] = set()

    # -- lifecycle ------------------------------------------------------------

    def start(self, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self.reload(self._get_runtime())

    def reload(self, runtime: Optional[Runtime] = None) -> None:
        """Match the tasks to `runtime`: servers that survived the reload (the
        same objects) keep their task and state, unless their backend's
        health spec changed, in which case their task restarts with the new
        spec and the same streaks; new servers get a task; removed or no
        longer checked servers lose theirs."""
        if self._loop is None:
            raise RuntimeError("HealthChecker.reload() called before start()")
        runtime = runtime if runtime is not None else self._get_runtime()
        wanted = {s: s.backend.spec.health for s in runtime.servers() if s.checked}
        for server in list(self._tasks):
            if wanted.get(server) != self._specs[server]:
                self._tasks.pop(server).cancel()
                del self._specs[server]
        for server in list(self._machines):
            if server not in wanted:
                del self._machines[server]
        self.paused &= set(wanted)
        for server, health in wanted.items():
            if server not in self._tasks:
                self._specs[server] = health
                self._tasks[server] = self._loop.create_task(
                    self._run(server, health), name=f"health {server.backend.name}/{server.name}")

    def stop(self) -> Optional[asyncio.Future]:
        """Cancel every probe. Returns a future done when they have all
        ended, which a caller about to close the loop should await."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        self._specs.clear()
        for task in tasks:
            task.cancel()
        if self._loop is None:
            return None
        if not tasks:
            done = self._loop.create_future()
            done.set_result([])
            return done
        return asyncio.gather(*tasks, return_exceptions=True)

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
        """The servers that have a probe task right now."""
        return list(self._tasks)

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

    async def _run(self, server: Server, health: HealthSpec) -> None:
        machine = self._machine(server, health)
        machine.configure(health.rise, health.fall)
        in_maint = False
        await asyncio.sleep(self._rng.uniform(0.0, health.interval))
        while True:
            if server.admin == MAINT or server in self.paused:
                in_maint = True  # HAProxy counts no checks in maintenance
            else:
                if in_maint:
                    in_maint = False
                    machine.unsettle()
                await self._probe_once(server, health, machine)
            await asyncio.sleep(health.interval * self._rng.uniform(1.0 - JITTER, 1.0 + JITTER))

    async def _probe_once(self, server: Server, health: HealthSpec, machine: RiseFall) -> None:
        epoch = machine.epoch
        try:
            result = await probe_server(server, health)
        except Exception as exc:  # a bug in a probe must not end this server's checks
            log.exception("health probe of %s/%s failed", server.backend.name, server.name)
            result = ProbeResult(False, "SOCKERR", None, 0.0, f"probe error: {exc}")
        if result is None:
            return
        try:
            apply_result(server, machine, result, time.monotonic(), epoch)
        except Exception:
            log.exception("recording the health of %s/%s failed", server.backend.name, server.name)
