"""One worker process of multi-process mode (see lbcore.workers).

A LoadBalancer whose master owns what must exist once: it probes the
servers, binds the listening sockets and serves the stats. The worker
gets its config, sockets and the servers' states from the master's hello,
applies every state change the master broadcasts through the model's
setters, reports its proxies' passive observations (connect refused,
reset) instead of acting on them, answers snapshot requests, and reloads
with the config (and any new listening sockets) the master sends.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from typing import Optional

from .config import Address, Config
from .control import Channel, find_server, unpack
from .model import DRAIN, MAINT, READY, UP, Runtime, Server
from .server import BindError, LoadBalancer

log = logging.getLogger("lbcore")

EXIT_BIND = 1
EXIT_START = 1
HELLO_TIMEOUT = 60.0  # the hello is written before the worker starts: this only guards a broken master


class _QuietModel(logging.Filter):
    """Drops the model's state-change lines (warnings) while a worker
    applies its master's verdicts: the master has logged them once
    already. Errors still pass. (Told apart by level and timing, not by
    record.module: the compiled model has no Python frames to name it.)"""

    def __init__(self) -> None:
        super().__init__()
        self.active = False

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.active and record.levelno == logging.WARNING)


class WorkerHealth:
    """A worker's stand-in for the HealthChecker (same interface): the
    master probes; the worker reports what its proxies observe."""

    def __init__(self, worker: "WorkerBalancer") -> None:
        self.worker = worker

    def start(self, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        self.worker.attach(loop or asyncio.get_running_loop())

    def reload(self, runtime: Optional[Runtime] = None) -> None:
        pass  # the master sends the health of new servers with the reload

    def stop(self) -> None:
        return None

    def observe_failure(self, server: Server, reason: str) -> None:
        self.worker.channel.send({
            "t": "observe", "backend": server.backend.name, "server": server.name,
            "address": str(server.address), "reason": reason,
        })


class WorkerBalancer(LoadBalancer):
    """A LoadBalancer that takes its listening sockets, server states and
    reloads from its master, and answers its snapshot requests."""

    serves_takeover = False  # the master hands the sockets on
    serves_peers = False

    def __init__(self, config: Config, channel: Channel, groups: dict[Address, list[socket.socket]],
                 state: list, slot: int, table: Optional[tuple[int, int, int]] = None) -> None:
        super().__init__(config, reuse_port=True)
        self.channel = channel
        self.slot = slot
        # Sockets the next _bind_all takes instead of binding: the master's,
        # each address's group with this worker's own socket first.
        self._incoming = groups
        self._initial_state = state
        self._table = table  # (memfd, slots, socket) shared with the master (lbcore.adoption)
        # Messages that arrive while a reload is being applied wait for it,
        # so the state sent after a reload lands on the reloaded runtime.
        self._held: Optional[list] = None
        self._quiet = _QuietModel()
        log.addFilter(self._quiet)
        self._handlers = {
            "server": lambda m: self._apply([m.get("server")]),
            "state": lambda m: self._apply(m.get("servers") or []),
            "reload": self._start_reload,
            "snapshot": self._send_snapshot,
            "sessions": self._send_sessions,
            "shutdown_sessions": self._shutdown_sessions,
            "clear_counters": self._clear_counters,
            "certificate": self._certificate,
            "fds": lambda m: None,  # descriptors for the next reload ride on it
        }

    # -- LoadBalancer hooks ----------------------------------------------------

    def _start_health(self, loop) -> None:
        # Before the loop runs once: see attach().
        self.health = WorkerHealth(self)
        self.health.start(loop)

    def _health_now(self) -> WorkerHealth:
        return self.health  # never a HealthChecker here: the master probes

    def _listen(self, address: Address, transparent: bool = False, interface=None) -> socket.socket:
        group = self._incoming.get(address)
        if not group:
            raise OSError(f"the master sent no listening socket for {address}")
        return group[0]

    def _siblings(self, address: Address) -> list[socket.socket]:
        group = self._incoming.pop(address, None)
        return group[1:] if group else []

    def reload(self) -> None:
        log.warning("worker: SIGHUP ignored; reloads go through the master (pid %d)", os.getppid())

    # -- the channel -----------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called from run() after the acceptors were installed but before
        the loop has run once: no connection is taken before the master's
        view of the servers is applied."""
        self._apply(self._initial_state)
        self._initial_state = None
        if self._table is not None:
            from .adoption import Journal
            self.ctx.journal = Journal(loop, *self._table)
            self._table = None
        self.channel.start(loop, self._on_message, self._on_master_lost)
        self.channel.send({"t": "ready", "pid": os.getpid()})

    def _on_message(self, message: dict) -> None:
        if message["t"] == "adopt":
            self._adopt(message)  # descriptors in hand: never held back by a reload
            return
        if self._held is not None:
            self._held.append(message)
            return
        handler = self._handlers.get(message["t"])
        if handler is None:
            log.error("worker: unknown control message %r", message["t"])
            return
        handler(message)

    def _on_master_lost(self) -> None:
        log.error("worker: the master is gone; stopping")
        self.graceful_stop()

    def _apply(self, rows: list) -> None:
        self._quiet.active = True
        try:
            for row in rows:
                if not isinstance(row, list) or len(row) != 6:
                    log.error("worker: bad server state %r", row)
                    continue
                backend, name, address, health, admin, weight = row
                server = find_server(self.runtime, backend, name, address)
                if server is None:
                    continue
                if admin in (READY, DRAIN, MAINT):
                    server.set_admin(admin, source="master")
                if isinstance(weight, int) and not isinstance(weight, bool):
                    server.set_weight(weight, source="master")
                if server.checked and health in ("UP", "DOWN"):
                    server.set_health(health == UP, "master")
        finally:
            self._quiet.active = False

    def _adopt(self, message: dict) -> None:
        """Connections a dead sibling was serving, taken on here."""
        from .adoption import adopted
        conns = message.get("conns") or []
        fds = self.channel.take_fds(len(conns))
        taken = 0
        for frontend, sock, pending in adopted(message, fds):
            handler = self.handlers.get(frontend)
            adopt = getattr(handler, "adopt", None)
            try:
                if adopt is not None and adopt(sock, pending):
                    taken += 1
                    continue
            except Exception:
                log.exception("worker: adopting a connection failed")
            sock.close()
        log.info("worker %d: took on %d of %d connections of a dead worker", self.slot, taken, len(conns))

    def _send_snapshot(self, message: dict) -> None:
        from .stats.snapshot import snapshot
        self.channel.send({"t": "snapshot", "id": message.get("id"), "data": snapshot(self.runtime)})

    def _send_sessions(self, message: dict) -> None:
        from .sessions import list_sessions
        self.channel.send({"t": "sessions", "id": message.get("id"), "data": list_sessions(self)})

    def _shutdown_sessions(self, message: dict) -> None:
        from .sessions import kill_server_sessions
        row = message.get("server")
        if isinstance(row, list) and len(row) == 6:
            server = find_server(self.runtime, row[0], row[1], row[2])
            if server is not None:
                kill_server_sessions(self, server)

    def _clear_counters(self, message: dict) -> None:
        from .stats.admin import clear_counters
        clear_counters(self.runtime, bool(message.get("all")))

    def _certificate(self, message: dict) -> None:
        path, pem = message.get("path"), message.get("pem")
        if isinstance(path, str) and isinstance(pem, str):
            try:
                self.install_certificate(path, pem)
            except Exception as exc:  # the master validated it; this one must not die of it
                log.error("worker: certificate %s not installed: %s", path, exc)

    def _start_reload(self, message: dict) -> None:
        config = unpack(message["config"])
        addresses = unpack(message["addresses"])
        sizes = message.get("sizes") or [1] * len(addresses)
        fds = [socket.socket(fileno=fd) for fd in self.channel.take_fds(sum(sizes))]
        self._incoming = {}
        for address, size in zip(addresses, sizes):
            self._incoming[address], fds = fds[:size], fds[size:]
        self._held = []
        self.loop.create_task(self._reload_then_release(config))

    async def _reload_then_release(self, config: Config) -> None:
        try:
            await self._reload(config)
        except Exception:
            log.exception("worker: reload failed")
        finally:
            for group in self._incoming.values():  # refused reload: not ours to keep
                for sock in group:
                    sock.close()
            self._incoming = {}
            held, self._held = self._held or [], None
            for message in held:
                self._on_message(message)


def worker_main(argv: Optional[list[str]] = None) -> int:
    """`python -m lbcore.worker --channel FD`, started by the master."""
    parser = argparse.ArgumentParser(prog="lbcore-worker")
    parser.add_argument("--channel", type=int, required=True, help="control socket inherited from the master")
    args = parser.parse_args(argv)
    channel = Channel(socket.socket(fileno=args.channel))
    try:
        hello = channel.receive_blocking(HELLO_TIMEOUT)
        if hello["t"] != "hello":
            raise ValueError(f"expected a hello, got {hello['t']!r}")
        config = unpack(hello["config"])
        groups = {address: [socket.socket(fileno=fd) for fd in fds]
                  for address, fds in unpack(hello["sockets"]).items()}
        state, slot = hello["state"], hello["slot"]
        table = tuple(hello["journal"]) if hello.get("journal") else None
    except Exception as exc:
        print(f"lbcore worker: no valid start message from the master: {exc}", file=sys.stderr)
        return EXIT_START

    import uvloop

    worker = WorkerBalancer(config, channel, groups, state, slot, table)
    del config, hello  # the worker's only: this frame must not keep the start-up config (cli.Handover)
    try:
        return uvloop.run(worker.run())
    except BindError as exc:
        print(f"lbcore worker {slot}: {exc}", file=sys.stderr)
        return EXIT_BIND


if __name__ == "__main__":
    sys.exit(worker_main())
