"""Multi-process mode (`global.workers` > 1): one master, N workers.

The master binds every frontend address once per worker with
SO_REUSEPORT and keeps those listening sockets for the life of the
process; each worker is started with the whole group (pass_fds): it
accepts from its own socket as its readiness comes, and every
STEAL_INTERVAL it also takes whatever waits in its siblings' queues
(lbcore.listeners.Acceptor). The kernel spreads connections evenly over
the group, and nothing is stranded when a worker stops accepting: a
SIGKILLed worker's queue (and a hung one's) is emptied by the others
within that interval instead of waiting for the replacement, whose
restart may back off for seconds. (What a SIGKILLed worker had already
accepted dies with it; nothing that was waiting does.) Keeping the
sockets in the master, rather than letting workers bind, also means a
bind error is found before any worker starts (exit 1, as in one-process
mode), and a reload binds new addresses all-or-nothing in one place and
hands them to the workers over the control channel.

The master also owns everything that must exist once: the health checks
(run on the master's own Runtime, built from the same config), the stats
endpoint, the state file and the pidfile. Every server state change in
the master (health, admin state, weight: Backend.listeners) is broadcast
to the workers, which apply it through the same setters; a worker's
passive observations (connect refused, reset) go to the master, which
decides through HealthChecker.observe_failure and broadcasts the verdict.
So one server DOWN is DOWN in every process. The stats endpoint asks each
worker for its snapshot, sums the counters (stats.snapshot.merge) and
takes every state from the master's runtime.

Signals go to the master only (workers run in their own session, so a
terminal's Ctrl-C does not reach them twice): SIGHUP re-validates the file,
reloads the master and sends the workers the config it validated (never
the path: the file may change again in between); SIGTERM and SIGINT are
forwarded after the master stopped listening. A worker that dies is
restarted, at once if it had been running a while, with a growing delay
if it keeps dying young. A worker whose master is gone (its channel hits
EOF) stops gracefully.

Modules: this one is the master; lbcore.worker is one worker process;
lbcore.control is the channel between them and what travels on it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Optional

from . import pidfile, state_file, systemd, takeover
from .config import Address, Config, ConfigError
from .adoption import POLL_INTERVAL, Keeper, adopt_message
from .control import MAX_FDS, Channel, find_server, pack, server_state, state_rows, worker_config
from .health import HealthChecker
from .listeners import bind_socket, inherited
from .logs import setup_event_log
from .model import Runtime, Server
from .server import BindError, load_off_loop

log = logging.getLogger("lbcore")

EXIT_BIND = 1
EXIT_WORKER = 1

COUNTER_POLL = 0.5  # seconds between two reads of the workers' counters
SNAPSHOT_TIMEOUT = 1.0  # a worker that does not answer in time is left out of the stats
MIN_UPTIME = 5.0  # a worker that dies younger than this counts as crashing
BACKOFF_FIRST = 0.5  # first restart delay of a crashing worker, doubled each time
BACKOFF_MAX = 30.0
KILL_MARGIN = 5.0  # SIGTERM: after the grace period, this long before SIGKILL
STOP_NOW_WAIT = 5.0  # SIGINT: how long workers get before SIGKILL
EXIT_WAIT = 5.0  # a worker that closed its channel must exit within this
WATCH_INTERVAL = 1.0

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _exit_description(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


# -- the master side ----------------------------------------------------------

class Slot:
    """One worker position: its own listening sockets are the master's
    `listeners[address][index]`; its process changes on every restart."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: Optional[subprocess.Popen] = None
        self.channel: Optional[Channel] = None
        self.started_at = 0.0
        self.ready = False
        self.restarts = 0
        self.crashes = 0  # consecutive early deaths
        self.restart_timer: Optional[asyncio.TimerHandle] = None
        self.waiters: dict[int, asyncio.Future] = {}
        self.keeper: Optional[Keeper] = None  # its process's connections (lbcore.adoption)

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def forget_waiters(self) -> None:
        for future in self.waiters.values():
            if not future.done():
                future.set_result(None)
        self.waiters.clear()


class MasterAdmin:
    """The stats endpoint's admin handler in the master: the change is made
    on the master's runtime, whose listeners broadcast it to every worker;
    the answer is the server's row with every worker's counters."""

    def __init__(self, master: "Master") -> None:
        from .stats.admin import AdminAction
        self.master = master
        self.action = master.admin_action()

    def shutdown_sessions(self, backend: str, server: str) -> Any:
        return self.action.shutdown_sessions(backend, server)

    async def apply(self, backend: str, server: str, state: Optional[str], weight: Any,
                    source: str = "stats admin API") -> dict:
        row = self.action.apply(backend, server, state, weight, source=source)
        merged = await self.master.snapshot()
        for candidate in merged["backends"].get(backend, {}).get("servers", []):
            if candidate.get("name") == server:
                return candidate
        return row


class Master:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.count = config.global_.workers
        self.slots = [Slot(i) for i in range(self.count)]
        self.listeners: dict[Address, list[socket.socket]] = {}
        self.runtime: Optional[Runtime] = None
        self.health: Optional[HealthChecker] = None
        self.stats = None
        self.takeover: Optional[takeover.TakeoverServer] = None
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.done: Optional[asyncio.Future] = None
        self.started = False  # every worker has been ready once
        self.stopping = False
        self.exit_code = 0
        self._ids = itertools.count(1)
        # Counters of workers that died (stats.snapshot.retired), and each
        # slot's latest snapshot (the process it came from, the data), so a
        # SIGKILLed worker's counts stay in the totals.
        self.departed: Optional[dict] = None
        self.certificates = None  # lbcore.certificates.CertificateStore, with stats
        self.last_replies: dict[int, tuple] = {}
        self._shutting_down = False
        # Called once every worker is ready (-sf, -Ws, -D).
        self.on_started: list = []
        # Connections of a dead worker waiting for a worker to take them on
        # (lbcore.adoption): (frontend, descriptor, bytes read).
        self.orphans: list[tuple[str, int, bytes]] = []

    # -- start -----------------------------------------------------------------

    async def run(self) -> int:
        self.loop = loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        config = self.config
        setup_event_log(config.global_.log)
        self.listeners = self._bind(config, {})
        self.runtime = Runtime.build(config)
        if config.global_.state_file:
            state_file.load(self.runtime, config.global_.state_file)
        # Counters taken over go on the master's own objects: every stats
        # view sums them with the workers'.
        takeover.restore(self.runtime)
        takeover.follow(loop, lambda: self.runtime)
        self._hook(self.runtime)
        self.health = HealthChecker(lambda: self.runtime)
        self.health.start(loop)
        try:
            await self._start_stats(config)
        except OSError as exc:
            self._close_listeners()
            await self._stop_health()
            raise BindError(f"cannot start the stats endpoint: {exc.strerror or exc}") from None
        if config.global_.pidfile:
            pidfile.write(config.global_.pidfile)
        self.takeover = takeover.TakeoverServer(self._handover, self.snapshot)
        self.takeover.start(loop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGUSR2, self.reload)  # HAProxy's master reload
        loop.add_signal_handler(signal.SIGUSR1, self.graceful_stop)  # HAProxy's soft stop (-sf)
        loop.add_signal_handler(signal.SIGTERM, self.graceful_stop)
        loop.add_signal_handler(signal.SIGINT, self.stop_now)
        for slot in self.slots:
            self._spawn(slot)
        watcher = loop.create_task(self._watch())
        poller = loop.create_task(self._poll_counters())
        keepers = loop.create_task(self._poll_keepers())
        log.info("lbcore master started (pid %d), %d workers: %s", os.getpid(), self.count, ", ".join(
            f"{name} on {', '.join(str(a) for a in fe.binds)} ({fe.mode})"
            for name, fe in config.frontends.items()))
        del config  # this frame lives on: it must not keep the start-up config past a reload
        try:
            return await self.done
        finally:
            watcher.cancel()
            poller.cancel()
            keepers.cancel()

    def _bind(self, config: Config, keep: dict) -> dict[Address, list[socket.socket]]:
        """One SO_REUSEPORT listening socket per worker for every bind of
        `config`, reusing those in `keep`. All or nothing."""
        listeners: dict[Address, list[socket.socket]] = {}
        fresh: list[socket.socket] = []
        try:
            for name, fe in config.frontends.items():
                for address in fe.binds:
                    if address in listeners:
                        continue
                    if address in keep:
                        listeners[address] = keep[address]
                        continue
                    handed = inherited.take(address)
                    if handed:
                        # Handed over by systemd or the lbcore this one replaces:
                        # kept whole (connections wait in each), shared round the
                        # workers if there are fewer than workers.
                        listeners[address] = [handed[i % len(handed)]
                                              for i in range(max(self.count, len(handed)))]
                        continue
                    group: list[socket.socket] = []
                    try:
                        target = address
                        for _ in range(self.count):
                            sock = bind_socket(target, reuse_port=True, transparent=address in fe.transparent,
                                               interface=fe.interfaces.get(address))
                            fresh.append(sock)
                            group.append(sock)
                            if not target.port:  # port 0: the group shares the port the kernel chose
                                target = dataclasses.replace(address, port=sock.getsockname()[1])
                    except OSError as exc:
                        raise BindError(f"cannot bind frontend {name} to {address}: {exc.strerror or exc}")
                    listeners[address] = group
        except BindError:
            for sock in fresh:
                sock.close()
            raise
        return listeners

    def _handover(self) -> list[tuple[str, str, list[int]]]:
        """The whole group of every bind: a successor with any number of
        workers empties every queue (lbcore.listeners.Acceptor)."""
        given = [("bind", str(address), list({sock.fileno(): None for sock in group}))
                 for address, group in self.listeners.items()]
        return given + (self.stats.handover() if self.stats is not None else [])

    def _hook(self, runtime: Runtime) -> None:
        for backend in runtime.backends.values():
            if self._server_changed not in backend.listeners:
                backend.listeners.append(self._server_changed)

    def admin_action(self):
        """The admin actions on the master's runtime: state and weight changes
        reach the workers through the runtime's listeners (_server_changed),
        what lives only in the workers (sessions, counters) by a message."""
        from .stats.admin import AdminAction
        return AdminAction(lambda: self.runtime, get_health=lambda: self.health,
                           kill_sessions=self._kill_sessions, clear_counters=self._clear_counters)

    def _kill_sessions(self, server: Server) -> None:
        self._broadcast({"t": "shutdown_sessions", "server": server_state(server)})

    def _clear_counters(self, everything: bool) -> None:
        if everything:
            self.departed = None
            self.last_replies.clear()
        self._broadcast({"t": "clear_counters", "all": everything})

    def _install_certificate(self, path: str, pem: str) -> None:
        """Check the PEM here (a bad one fails the commit), then every worker
        takes it; a worker started later gets it after its hello."""
        from .certificates import context_from_pem
        from .server import tls_specs
        for tls in tls_specs(self.config):
            if tls.cert == path:
                context_from_pem(tls, pem)
        self._broadcast({"t": "certificate", "path": path, "pem": pem})
        log.warning("certificate %s replaced for new TLS handshakes in every worker", path)

    async def sessions(self) -> list:
        replies = await asyncio.gather(*(self._ask(slot, "sessions") for slot in self.slots))
        return [row for reply in replies if isinstance(reply, list) for row in reply if isinstance(row, dict)]

    async def _start_stats(self, config: Config) -> None:
        if config.stats is None:
            return
        from .stats.runtime_api import Service
        from .stats.serve import StatsServers
        from .certificates import CertificateStore
        from .server import tls_specs
        if self.certificates is None:
            self.certificates = CertificateStore(lambda: tls_specs(self.config), self._install_certificate)
        service = Service(lambda: self.runtime, self.snapshot, self.admin_action(),
                          get_sessions=self.sessions, workers=self.count, certificates=self.certificates)
        stats = StatsServers(config.stats, self.snapshot, MasterAdmin(self), service)
        await stats.start()
        self.stats = stats

    # -- workers ---------------------------------------------------------------

    def _spawn(self, slot: Slot) -> None:
        slot.restart_timer = None
        if self.stopping:
            return
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = {address: self._group_fds(group, slot) for address, group in self.listeners.items()}
        passed = [fd for group in fds.values() for fd in group]
        try:
            keeper = Keeper(self.loop)
        except OSError as exc:
            keeper = None
            log.error("worker %d: no table for its connections (%s): they die with it", slot.index, exc)
        if keeper is not None:
            passed += [keeper.fd, keeper.their_fd]
        # The master alone speaks to systemd (NotifyAccess=main).
        env = {name: value for name, value in os.environ.items() if name != "NOTIFY_SOCKET"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "lbcore.worker", "--channel", str(child.fileno())],
                pass_fds=[child.fileno(), *passed], stdin=subprocess.DEVNULL,
                start_new_session=True, env=env)
        except OSError as exc:
            parent.close()
            if keeper is not None:
                keeper.close()
            log.error("cannot start worker %d: %s", slot.index, exc)
            self._schedule_restart(slot, crashed=True)
            return
        finally:
            child.close()
        slot.proc = proc
        slot.keeper = keeper
        if keeper is not None:
            keeper.given()
        slot.started_at = time.monotonic()
        slot.ready = False
        channel = slot.channel = Channel(parent)
        channel.start(self.loop, lambda message: self._on_message(slot, message),
                      lambda: self._on_channel_closed(slot, channel, proc))
        channel.send({
            "t": "hello", "slot": slot.index,
            "config": pack(worker_config(self.config)), "sockets": pack(fds),
            "state": state_rows(self.runtime),
            "journal": [keeper.fd, keeper.slots, keeper.their_fd] if keeper is not None else None,
        })
        if self.certificates is not None:
            for path, pem in self.certificates.committed.items():
                channel.send({"t": "certificate", "path": path, "pem": pem})

    @staticmethod
    def _group_fds(group: list[socket.socket], slot: Slot) -> list[int]:
        """The group's descriptors as one worker gets them: its own
        first, then its siblings' (whose queues it empties if they stall)."""
        own = group[slot.index]
        fds = {own.fileno(): None}
        fds.update((sock.fileno(), None) for sock in group)  # a handed-over group may repeat sockets
        return list(fds)

    def _on_message(self, slot: Slot, message: dict) -> None:
        kind = message["t"]
        if kind in ("snapshot", "sessions"):
            future = slot.waiters.pop(message.get("id"), None)
            data = message.get("data")
            if kind == "snapshot":
                valid = isinstance(data, dict) and isinstance(data.get("frontends"), dict) \
                    and isinstance(data.get("backends"), dict)
                data = data if valid else None
                if data is not None:
                    self.last_replies[slot.index] = (slot.proc, data)
            if future is not None and not future.done():
                future.set_result(data)
        elif kind == "observe":
            server = find_server(self.runtime, message.get("backend"), message.get("server"),
                                  message.get("address"))
            if server is not None:
                self.health.observe_failure(server, str(message.get("reason") or "failure"))
        elif kind == "ready":
            slot.ready = True
            log.info("worker %d started (pid %d)", slot.index, slot.pid)
            if self.orphans:
                orphans, self.orphans = self.orphans, []
                self._hand_on(orphans, dead=-1)
            if not self.started and all(s.ready for s in self.slots):
                self.started = True
                systemd.ready()
                for callback in self.on_started:
                    callback()
        else:
            log.error("master: unknown control message %r from worker %d", kind, slot.index)

    def _on_channel_closed(self, slot: Slot, channel: Channel, proc: subprocess.Popen) -> None:
        if slot.channel is channel:
            slot.channel = None
        slot.forget_waiters()
        self.loop.create_task(self._reap(slot, proc))

    async def _reap(self, slot: Slot, proc: subprocess.Popen) -> None:
        deadline = self.loop.time() + EXIT_WAIT
        while proc.poll() is None:
            if self.loop.time() > deadline:
                log.error("worker %d (pid %d) closed its control channel but did not exit; killing it",
                          slot.index, proc.pid)
                proc.kill()
                deadline = float("inf")
            await asyncio.sleep(0.02)
        self._exited(slot, proc)

    async def _watch(self) -> None:
        """A worker's exit is normally seen as EOF on its channel; this
        catches any the channel missed."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            for slot in self.slots:
                proc = slot.proc
                if proc is not None and proc.poll() is not None:
                    self._exited(slot, proc)

    def _exited(self, slot: Slot, proc: subprocess.Popen) -> None:
        if slot.proc is not proc:
            return  # already handled
        slot.proc = None
        self._keep_counts(slot, proc)
        if slot.channel is not None:
            slot.channel.close()
            slot.channel = None
        keeper, slot.keeper = slot.keeper, None
        if keeper is not None:
            if not self.stopping and proc.returncode != 0:
                keeper.poll()  # what it sent until it died
                self._carry_on(slot, keeper)
            keeper.close()
        slot.forget_waiters()
        how = _exit_description(proc.returncode)
        lived = time.monotonic() - slot.started_at
        if self.stopping:
            log.info("worker %d (pid %d) exited (%s)", slot.index, proc.pid, how)
            return
        if not self.started:
            log.error("worker %d (pid %d) failed to start (%s); stopping", slot.index, proc.pid, how)
            self.exit_code = EXIT_WORKER
            self.stop_now(announce=False)
            return
        # A ready worker ended by SIGKILL was killed (an operator, a test,
        # the OOM killer), it did not crash: it comes back at once, since
        # backing off would only leave the other workers alone with its share.
        killed = proc.returncode == -signal.SIGKILL and slot.ready
        crashed = not slot.ready or (lived < MIN_UPTIME and not killed)
        delay = self._schedule_restart(slot, crashed)
        log.error("worker %d (pid %d) died (%s) after %.1fs; restarting it%s", slot.index, proc.pid, how,
                  lived, f" in {delay:.1f}s" if delay else "")

    def _carry_on(self, slot: Slot, keeper: Keeper) -> None:
        """A worker died: the connections it held that can be carried on go
        to the other workers (lbcore.adoption); the rest close now."""
        carried, closed = keeper.orphans()
        if not carried and not closed:
            return
        log.warning("worker %d died holding %d client connections: %d handed to other workers, "
                    "%d closed (a response had started, or a request that may not be sent twice)",
                    slot.index, len(carried) + closed, len(carried), closed)
        self._hand_on(carried, slot.index)

    def _hand_on(self, orphans: list[tuple[str, int, bytes]], dead: int) -> None:
        """To the running workers in turn; if none runs, to the first that
        becomes ready."""
        targets = [s for s in self.slots if s.index != dead and s.ready and s.channel is not None] \
            or [s for s in self.slots if s.ready and s.channel is not None]
        if not targets:
            self.orphans.extend(orphans)
            return
        shares: list[list] = [[] for _ in targets]
        for i, orphan in enumerate(orphans):
            shares[i % len(targets)].append(orphan)
        for target, share in zip(targets, shares):
            for start in range(0, len(share), MAX_FDS):
                batch = share[start:start + MAX_FDS]
                target.channel.send(adopt_message(batch), [fd for _, fd, _ in batch], owned=True)

    def _keep_counts(self, slot: Slot, proc: subprocess.Popen) -> None:
        from .stats.snapshot import merge, retired
        last = self.last_replies.pop(slot.index, None)
        if last is None or last[0] is not proc:
            return
        gone = retired(last[1])
        self.departed = gone if self.departed is None else retired(merge([self.departed, gone]))

    async def _poll_counters(self) -> None:
        """Ask every worker for its counters now and then, so that what a
        worker counted before a SIGKILL is known to at most this long ago."""
        while True:
            await asyncio.sleep(COUNTER_POLL)
            await asyncio.gather(*(self._ask(slot) for slot in self.slots))

    async def _poll_keepers(self) -> None:
        """Take in the connections the workers kept and ended: in batches,
        so that a new connection does not wake the master."""
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            for slot in self.slots:
                if slot.keeper is not None:
                    slot.keeper.poll()

    def _schedule_restart(self, slot: Slot, crashed: bool) -> float:
        slot.crashes = slot.crashes + 1 if crashed else 0
        delay = min(BACKOFF_FIRST * 2 ** (slot.crashes - 1), BACKOFF_MAX) if slot.crashes else 0.0
        slot.restarts += 1
        slot.restart_timer = self.loop.call_later(delay, self._spawn, slot)
        return delay

    def _broadcast(self, message: dict) -> None:
        for slot in self.slots:
            if slot.channel is not None:
                slot.channel.send(message)

    def _server_changed(self, server: Server) -> None:
        self._broadcast({"t": "server", "server": server_state(server)})

    # -- stats -----------------------------------------------------------------

    async def _ask(self, slot: Slot, kind: str = "snapshot") -> Any:
        channel = slot.channel
        if channel is None or not slot.ready:
            return None
        request_id = next(self._ids)
        future = self.loop.create_future()
        slot.waiters[request_id] = future
        try:
            if not channel.send({"t": kind, "id": request_id}):
                return None
            return await asyncio.wait_for(future, SNAPSHOT_TIMEOUT)
        except asyncio.TimeoutError:
            log.warning("worker %d (pid %s) did not answer a stats request within %.1fs; left out",
                        slot.index, slot.pid, SNAPSHOT_TIMEOUT)
            return None
        finally:
            slot.waiters.pop(request_id, None)

    async def snapshot(self) -> dict:
        """Every worker's counters summed, with the master's states."""
        from .stats.snapshot import merge, restrict, retired, snapshot

        own = snapshot(self.runtime)
        slots = list(self.slots)
        replies = await asyncio.gather(*(self._ask(slot) for slot in slots))
        answered = [reply for reply in replies if reply is not None]
        departed = [restrict(self.departed, own)] if self.departed is not None else []
        for slot, reply in zip(slots, replies):
            # Silent (dead but not reaped yet, or slow): its last counts
            # stand in, so the totals do not dip until it is folded in.
            last = self.last_replies.get(slot.index)
            if reply is None and last is not None and last[0] is slot.proc:
                departed.append(restrict(retired(last[1]), own))
        merged = dict(merge([own] + answered + departed))
        process = dict(own["process"])
        process["master_pid"] = os.getpid()
        process["processes"] = len(answered)
        process["pids"] = [reply["process"].get("pid") for reply in answered]
        process["workers"] = [self._worker_row(slot, reply) for slot, reply in zip(slots, replies)]
        merged["process"] = process
        return merged

    def _worker_row(self, slot: Slot, reply: Optional[dict]) -> dict:
        if reply is not None:
            status = "running"
        elif slot.proc is None:
            status = "restarting" if not self.stopping else "stopped"
        elif not slot.ready:
            status = "starting"
        else:
            status = "not answering"
        row = {
            "slot": slot.index, "pid": slot.pid, "status": status, "restarts": slot.restarts,
            "uptime_s": time.monotonic() - slot.started_at if slot.proc is not None else None,
        }
        frontends = list(reply["frontends"].values()) if reply is not None else []
        for key in ("current_sessions", "total_sessions", "http_requests", "bytes_in", "bytes_out"):
            row[key] = sum(f.get(key, 0) for f in frontends) if reply is not None else None
        return row

    # -- reload ----------------------------------------------------------------

    def reload(self) -> None:
        if not self.stopping:
            self.loop.create_task(systemd.reload_notified(self._reload()))

    async def _reload(self) -> None:
        path = self.config.path
        log.info("reloading %s", path)
        try:
            new = await load_off_loop(self.config)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused: %s", problem)
            log.error("reload refused: keeping the running configuration")
            return
        if new.global_.workers != self.count:
            log.warning("global.workers changed from %d to %d: takes effect at the next restart",
                        self.count, new.global_.workers)
        try:
            listeners = self._bind(new, self.listeners)
        except BindError as exc:
            log.error("reload refused: %s; keeping the running configuration", exc)
            return
        old = self.config
        fresh = [address for address in listeners if address not in self.listeners]
        removed = {address: group for address, group in self.listeners.items() if address not in listeners}
        self.config = new
        self.listeners = listeners
        self.runtime = Runtime.build(new, previous=self.runtime)
        self._hook(self.runtime)
        self.health.reload(self.runtime)
        if self.certificates is not None:
            self.certificates.reloaded()  # the workers read the files again
        if new.global_.log != old.global_.log:
            setup_event_log(new.global_.log)
        packed = pack(worker_config(new))
        rows = state_rows(self.runtime)
        for slot in self.slots:
            # A worker being restarted starts with the new config anyway.
            if slot.channel is not None:
                self._send_reload(slot, packed, fresh)
                slot.channel.send({"t": "state", "servers": rows})
        for address, group in removed.items():
            for sock in group:
                sock.close()
            log.info("stopped listening on %s", address)
        if new.stats != old.stats:
            if self.stats is not None:
                self.stats.close()
                self.stats = None
            try:
                await self._start_stats(new)
            except OSError as exc:
                log.error("stats endpoint not restarted: %s", exc)
        log.info("reloaded %s: %d frontends, %d backends, %d servers", path,
                 len(self.runtime.frontends), len(self.runtime.backends),
                 sum(len(b.servers) for b in self.runtime.backends.values()))

    def _send_reload(self, slot: Slot, packed: str, fresh: list[Address]) -> None:
        groups = [self._group_fds(self.listeners[address], slot) for address in fresh]
        fds = [fd for group in groups for fd in group]
        batches = [fds[i:i + MAX_FDS] for i in range(0, len(fds), MAX_FDS)] or [[]]
        for batch in batches[:-1]:
            slot.channel.send({"t": "fds"}, batch)
        slot.channel.send({"t": "reload", "config": packed, "addresses": pack(fresh),
                           "sizes": [len(group) for group in groups]}, batches[-1])

    # -- stop ------------------------------------------------------------------

    def graceful_stop(self) -> None:
        if self.stopping:
            return
        grace = self.config.global_.grace
        log.info("SIGTERM: no longer accepting; workers finish in-flight work (grace %ss)", grace)
        self._begin_stop()
        self._signal_workers(signal.SIGTERM)
        self.loop.create_task(self._wait_workers(self.config.global_.stop_delay + grace + KILL_MARGIN))

    def stop_now(self, announce: bool = True) -> None:
        if self._shutting_down:
            return
        if announce:
            log.info("SIGINT: stopping now")
        self._begin_stop()
        self._signal_workers(signal.SIGINT)
        self.loop.create_task(self._wait_workers(STOP_NOW_WAIT))

    def _begin_stop(self) -> None:
        self.stopping = True
        systemd.stopping()
        if self.takeover is not None:
            self.takeover.close()
        # The master's copies keep the sockets listening: close them first so
        # that new connections are refused, not queued for nobody.
        self._close_listeners()
        for frontend in self.runtime.frontends.values():
            frontend.stopping = True
        for slot in self.slots:
            if slot.restart_timer is not None:
                slot.restart_timer.cancel()
                slot.restart_timer = None

    def _close_listeners(self) -> None:
        for group in self.listeners.values():
            for sock in group:
                sock.close()
        self.listeners = {}

    def _signal_workers(self, sig: signal.Signals) -> None:
        for slot in self.slots:
            if slot.alive():
                # A worker still starting has no handlers yet: SIGINT would
                # print a KeyboardInterrupt traceback, SIGTERM just ends it.
                try:
                    slot.proc.send_signal(sig if slot.ready else signal.SIGTERM)
                except OSError:
                    pass

    async def _wait_workers(self, limit: float) -> None:
        deadline = self.loop.time() + limit
        while any(slot.alive() for slot in self.slots) and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for slot in self.slots:
            proc = slot.proc
            if proc is not None and proc.poll() is None:
                log.warning("worker %d (pid %d) did not stop in time; killing it", slot.index, proc.pid)
                proc.kill()
                proc.wait()
            if proc is not None:
                self._exited(slot, proc)
        await self._shutdown()

    async def _stop_health(self) -> None:
        if self.health is not None:
            stopped = self.health.stop()
            if stopped is not None:
                await stopped

    async def _shutdown(self) -> None:
        if self._shutting_down:
            return
        self._shutting_down = True
        for _, fd, _ in self.orphans:
            os.close(fd)
        self.orphans = []
        for slot in self.slots:
            if slot.keeper is not None:
                slot.keeper.close()
                slot.keeper = None
        await self._stop_health()
        if self.stats is not None:
            self.stats.close()
        if self.config.global_.state_file:
            state_file.save(self.runtime, self.config.global_.state_file)
        if self.takeover is not None:
            self.takeover.close()
            if self.takeover.successors:
                self.takeover.finish(await self.snapshot())
        if self.config.global_.pidfile:
            pidfile.remove(self.config.global_.pidfile)
        log.info("lbcore stopped")
        if not self.done.done():
            self.done.set_result(self.exit_code)


def run_master(config: Config, started: tuple = ()) -> int:
    import uvloop

    master = Master(config)
    del config  # the master's only (cli.Handover)
    master.on_started.extend(started)
    try:
        return uvloop.run(master.run())
    except BindError as exc:
        print(f"lbcore: {exc}", file=sys.stderr)
        return EXIT_BIND

