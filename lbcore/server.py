"""Process lifecycle: start, SIGHUP reload, SIGTERM drain, SIGINT stop.

Static settings (the listening sockets) are kept apart from reloadable
ones (frontends' routing, backends, servers): a reload re-reads the file,
keeps every listener whose address survives (so no connection is ever
refused), binds the new ones, closes the removed ones, and reconfigures
the runtime objects in place so in-flight work and counters carry over.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import ssl
import time
from typing import Callable, Optional

from . import build
from . import pidfile, systemd, takeover
from .batch import WriteBatch
from .config import Address, Config, ConfigError
from .heap import hold_collections, release_collections, release_free_memory, settle_heap
from . import bind_first
from .listeners import Acceptor, BindError, bind_socket, inherited  # noqa: F401  (BindError: lbcore.server's name for it)
from .logs import AccessLog, setup_event_log
from .model import Runtime
from .proxy.context import ProxyContext
from .proxy.http import HttpProxy
from .proxy import stream
from .timers import Sweeper
from .upstream import UpstreamPool

log = logging.getLogger("lbcore")

LOG_FLUSH_INTERVAL = 0.2


async def load_off_loop(config: Config) -> Config:
    """Read and validate `config`'s files again without holding up the
    connections the event loop serves meanwhile (a large file takes a good
    part of a second): in a forked child, else on a thread
    (lbcore/config_reader.py). ConfigError as config.load()."""
    return await asyncio.get_running_loop().run_in_executor(None, _load_politely, config)


RELOAD_SLICE = 0.005  # seconds of reload work between two turns of the event loop


async def run_in_slices(steps):
    """Drive the generator `steps` to its end, letting the event loop run
    whenever a slice of work has taken RELOAD_SLICE; its return value."""
    clock = time.perf_counter
    began = clock()
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        if clock() - began >= RELOAD_SLICE:
            await asyncio.sleep(0)
            began = clock()


def _load_politely(config: Config) -> Config:
    collecting = gc.isenabled()
    gc.disable()  # the new specs are acyclic; a collection now would walk the heap holding the GIL
    from . import config_reader  # pickle and the child-process reader: only for a reload
    try:
        return config_reader.read(config)
    finally:
        # The new specs would otherwise sit in the youngest generation, and
        # the first collection after this would walk them all.
        settle_heap()
        if collecting:
            gc.enable()



def tls_specs(config: Config) -> list:
    return [fe.tls for fe in config.frontends.values() if fe.tls is not None]


def check_certificates(config: Config) -> None:
    """Load every frontend's certificate before anything binds, so a bad
    PEM file is a clear error (at start, or a refused reload)."""
    for name, fe in config.frontends.items():
        if fe.tls is None:
            continue
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(fe.tls.cert, fe.tls.key)
        except (ssl.SSLError, OSError) as exc:
            raise BindError(f"frontend {name}: cannot load TLS certificate {fe.tls.cert}: {exc}")


# Modules imported lazily later (reload, stats, admin, the health checker):
# imported before a chroot hides the interpreter's library, or `user` may
# not read it (drop_privileges).
_LATE_IMPORTS = ("lbcore.haproxy_cfg", "lbcore.stats.admin", "lbcore.stats.snapshot", "lbcore.stats.csvview",
                 "lbcore.stats.jsonview", "lbcore.stats.htmlpage", "lbcore.stats.prometheus",
                 "lbcore.state_file", "encodings.idna", "encodings.ascii", "encodings.latin_1",
                 # not imported by a start that does not use them (tests/integration/test_startup_imports.py)
                 "lbcore.config_reader", "lbcore.spec_pickle", "difflib", "logging.handlers",
                 "hashlib", "hmac", "ctypes", "ctypes.util", "shutil", "tempfile",
                 # imported once the start serves (LoadBalancer._start_health)
                 "lbcore.health.checker")


def drop_privileges(spec) -> None:
    """chroot, then group, then user, as HAProxy: once bound and every
    certificate and log target is open. Not reversible: a reload in a
    chroot cannot read the config again (see docs/haproxy-compat.md)."""
    if spec.chroot is None and spec.user is None and spec.group is None:
        return
    import grp
    import importlib
    import pwd

    uid = gid = None
    if spec.user is not None:
        entry = pwd.getpwuid(int(spec.user)) if spec.user.isdigit() else pwd.getpwnam(spec.user)
        uid, gid = entry.pw_uid, entry.pw_gid
    if spec.group is not None:
        gid = int(spec.group) if spec.group.isdigit() else grp.getgrnam(spec.group).gr_gid
    # What is imported later (a reload's reader, the stats pages, the
    # health checker once this serves) is imported now: in the chroot the
    # sources are out of reach, and so they may be to `user` (a checkout
    # or venv only root may read).
    for name in _LATE_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    if spec.chroot is not None:
        os.chroot(spec.chroot)
        os.chdir("/")
    if gid is not None:
        os.setgroups([gid])
        os.setgid(gid)
    if uid is not None:
        os.setuid(uid)
    log.info("privileges dropped:%s%s%s", f" chroot {spec.chroot}" if spec.chroot else "",
             f" group {spec.group}" if spec.group else "", f" user {spec.user}" if spec.user else "")


# Stick tables: expired entries are swept every PURGE_INTERVAL seconds, at
# most PURGE_BUDGET looked at per table and sweep (a 1M table sheds 100k/s).
PURGE_INTERVAL = 1.0
PURGE_BUDGET = 100_000

# The start-up's heap settles (lbcore.heap.settle_heap: a full collection,
# 20-45 ms at 1,000 frontend/backend pairs) this long after the server
# serves: the requests that queued in the listen backlogs while it started
# are answered first, each a few loop turns. Until then no collection runs
# at all (hold_collections), so none walks the young config either. (A
# process that replaces another settles before it accepts: _serve.)
SETTLE_AFTER = 0.2


class LoadBalancer:
    """Everything one lbcore process runs."""

    serves_takeover = True  # hands its sockets to an `-sf` successor (not a worker: its master does)
    serves_peers = True  # runs the peers sections (stick-table sync); workers' tables are their own

    def __init__(self, config: Config, reuse_port: bool = False) -> None:
        self.config = config
        self.reuse_port = reuse_port
        self.runtime: Optional[Runtime] = None
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.acceptors: dict[Address, Acceptor] = {}
        self._inherited_siblings: dict[Address, list] = {}
        self.handlers: dict[str, object] = {}  # frontend name -> HttpProxy | TcpProxy
        self.health = None
        self.stats = None
        self.peers: list = []  # lbcore.peers.Peers, one per peers section
        self.stopped: Optional[asyncio.Future] = None
        self.serving: Optional[asyncio.Future] = None
        self.takeover: Optional[takeover.TakeoverServer] = None
        self.exit_code = 0
        self._reloading = False
        self._reload_again = False
        # Called once every listener is bound and serving (-sf, -Ws, -D).
        self.on_started: list[Callable[[], None]] = []
        self._settle_timer: Optional[asyncio.TimerHandle] = None

    # -- start -----------------------------------------------------------------

    async def run(self) -> int:
        hold_collections()  # until the heap settles (_settle_start_up)
        try:
            return await self._serve()
        finally:
            if self._settle_timer is not None:  # stopped before it settled
                self._settle_timer.cancel()
                self._settle_timer = None
            release_collections()

    def _settle_start_up(self) -> None:
        self._settle_timer = None
        settle_heap()
        release_collections()

    async def _serve(self) -> int:
        self.loop = loop = asyncio.get_running_loop()
        self.stopped = loop.create_future()
        self.serving = loop.create_future()
        config = self.config
        setup_event_log(config.global_.log)
        self.access_log = AccessLog(config.global_.log)
        self.sweeper = Sweeper(loop)
        self.sweeper.start()
        self.pool = UpstreamPool(loop, self.sweeper, WriteBatch(loop))
        self.ctx = ProxyContext(loop, self.access_log, observe_failure=self._observe_failure,
                                maxconn=config.global_.maxconn)
        # Bind everything before serving anything: a config that cannot bind
        # fails whole. Bound first: connections queue in the listen backlog
        # while the runtime is built (10-20 ms for 1,000 frontends).
        # A port answers as soon as it listens, before the first accept: a
        # SIGHUP sent then must find its handler (its default action kills
        # the process); the reload itself waits until this start is done.
        self._install_reload_signals(loop)
        sockets = self._bind_all(config, {})
        self.runtime = Runtime.build(config)
        if config.global_.state_file:
            from . import state_file  # only for a config that names one (and before a chroot: _LATE_IMPORTS)
            state_file.load(self.runtime, config.global_.state_file)
        takeover.restore(self.runtime)
        takeover.follow(loop, lambda: self.runtime)
        self._install_handlers()
        self._install_signals(loop)
        bind_first.release_signals()  # those that came meanwhile are handled now
        if takeover.replacing:
            # A successor (a -W reload's worker, `lbcore -sf`) settles its
            # heap before it accepts: the process it replaces serves
            # meanwhile, so the full collection (20-45 ms at 1,000 pairs)
            # holds up no request. After serving (below) it was the longest
            # wait of a -W reload: 30-70 ms where haproxy's is 12-25.
            self._settle_start_up()
        self._install_acceptors(sockets)
        self._start_health(loop)
        await self._start_peers(config)
        self._purge_tables()
        try:
            await self._start_stats(config)
        except OSError as exc:
            raise BindError(f"cannot start stats: {exc.strerror or exc}") from None
        if not takeover.replacing:
            self._settle_timer = loop.call_later(SETTLE_AFTER, self._settle_start_up)
        if config.global_.pidfile:
            pidfile.write(config.global_.pidfile)
        if self.serves_takeover:
            self.takeover = takeover.TakeoverServer(self._handover, self._takeover_state)
            self.takeover.start(loop)
        self._flush_logs()
        log.info("lbcore started (pid %d): %s", os.getpid(), ", ".join(
            f"{name} on {', '.join(str(a) for a in fe.binds)} ({fe.mode})"
            for name, fe in config.frontends.items()))
        log.info("build: %s", build())
        drop_privileges(config.global_)
        systemd.ready()
        self.serving.set_result(None)
        for callback in self.on_started:
            callback()
        del config  # this frame lives on: it must not keep the start-up config past a reload
        await self.stopped
        return self.exit_code

    def _bind_all(self, config: Config, keep: dict) -> dict:
        """Listening sockets for every bind of `config`, reusing those in
        `keep` (address -> socket). All or nothing."""
        check_certificates(config)
        sockets = {}
        fresh = []
        try:
            for name, fe in config.frontends.items():
                for address in fe.binds:
                    if address in keep:
                        sockets[address] = (name, keep[address])
                        continue
                    try:
                        sock = self._listen(address, address in fe.transparent, fe.interfaces.get(address))
                    except OSError as exc:
                        raise BindError(f"cannot bind frontend {name} to {address}: {exc.strerror or exc}")
                    fresh.append(sock)
                    sockets[address] = (name, sock)
        except BindError:
            for sock in fresh:
                sock.close()
            raise
        return sockets

    # Hooks a worker process overrides (lbcore.worker): its master probes
    # the servers and owns the listening sockets.
    def _start_health(self, loop) -> None:
        """The health checks start once this serves: the checker's import
        and its checks (made a slice at a time) come after the connections
        that queued during the start (a first probe is due at a random time
        within its interval anyway)."""
        loop.call_soon(self._health_now)

    def _health_now(self):
        """The HealthChecker, made (and started, unless this is stopping)
        if it was not yet."""
        if self.health is None:
            from .health.checker import HealthChecker
            self.health = HealthChecker(lambda: self.runtime)
            if not self.ctx.stopping:
                self.health.start(self.loop, in_steps=True)
        return self.health

    def _observe_failure(self, server, reason: str) -> None:
        """The proxies' passive health hook (ProxyContext.observe_failure)."""
        (self.health or self._health_now()).observe_failure(server, reason)

    def _listen(self, address: Address, transparent: bool = False, interface: Optional[str] = None):
        group = inherited.take(address)
        if group:  # handed over by systemd or by the lbcore this one replaces
            self._inherited_siblings[address] = group[1:]
            return group[0]
        return bind_socket(address, self.reuse_port, transparent, interface)

    def _siblings(self, address: Address) -> list:
        """The other sockets of this listener's SO_REUSEPORT group, whose
        queues are emptied too (a worker's; see lbcore.workers)."""
        return self._inherited_siblings.pop(address, [])

    def _make_handler(self, frontend):
        if frontend.mode == "http":
            return HttpProxy(frontend, self.ctx, self.pool, self.sweeper)
        from .proxy.tcp import TcpProxy
        return TcpProxy(frontend, self.ctx)

    def _install_reload_signals(self, loop) -> None:
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        # HAProxy's signals: SIGUSR2 reloads (master-worker), SIGUSR1 is the
        # soft stop that `-sf` sends to the previous process.
        loop.add_signal_handler(signal.SIGUSR2, self.reload)

    def _install_signals(self, loop) -> None:
        loop.add_signal_handler(signal.SIGUSR1, self.graceful_stop)
        loop.add_signal_handler(signal.SIGTERM, self.graceful_stop)
        loop.add_signal_handler(signal.SIGINT, self.stop_now)

    def _install_handlers(self) -> None:
        handlers = {}
        for name, frontend in self.runtime.frontends.items():
            handler = self.handlers.get(name)
            if handler is None or handler.frontend is not frontend:
                handler = self._make_handler(frontend)
            else:
                reconfigure = getattr(handler, "reconfigure", None)
                if reconfigure is not None:
                    reconfigure()
            handlers[name] = handler
        self.retired = [h for n, h in self.handlers.items() if handlers.get(n) is not h]
        self.handlers = handlers
        for backend in self.runtime.backends.values():
            if self.pool.server_changed not in backend.listeners:
                backend.listeners.append(self.pool.server_changed)
            if stream.server_changed not in backend.listeners:
                backend.listeners.append(stream.server_changed)  # queued streams take a returning server

    def _install_acceptors(self, sockets: dict) -> None:
        acceptors = {}
        for address, (name, sock) in sockets.items():
            handler = self.handlers[name]
            frontend = handler.frontend
            acceptor = self.acceptors.get(address)
            if acceptor is None:
                acceptor = Acceptor(self.loop, sock, None, None, self._siblings(address), self.ctx.paused)
            acceptor.on_accept = handler.accept
            acceptor.may_accept = (lambda fe=frontend: self.ctx.may_accept(fe))
            acceptors[address] = acceptor
        for address, acceptor in self.acceptors.items():
            if address not in acceptors:
                acceptor.close()
                log.info("stopped listening on %s", address)
        self.acceptors = acceptors
        for acceptor in acceptors.values():
            acceptor.start()

    def _purge_tables(self) -> None:
        """Expired stick-table entries leave within a second (HAProxy's
        expiry task): `used`, the metrics and `show table` count live ones.
        Each sweep looks at a bounded number of entries per table."""
        for table in self.runtime.stick_tables.values():
            table.purge(budget=PURGE_BUDGET)
        if not self.ctx.stopping:
            self.loop.call_later(PURGE_INTERVAL, self._purge_tables)

    async def _start_peers(self, config: Config) -> None:
        """One lbcore.peers.Peers per peers section: it listens on this
        node's address and keeps the tables that name it in step."""
        self.peers = []
        if not config.peers:
            return
        if not self.serves_peers:
            log.warning("peers: stick-table sync needs global.workers: 1; these workers keep their own tables")
            return
        from .peers import Peers
        for spec in config.peers.values():
            peers = Peers(self.loop, spec, lambda: self.runtime)
            try:
                await peers.start()
            except OSError as exc:
                raise BindError(f"peers {spec.name}: cannot listen on {dict(spec.nodes)[spec.local]}: "
                                f"{exc.strerror or exc}") from None
            self.peers.append(peers)

    async def _start_stats(self, config: Config) -> None:
        if config.stats is None:
            return
        from .certificates import CertificateStore
        from .sessions import kill_server_sessions, list_sessions
        from .stats.admin import AdminAction
        from .stats.runtime_api import Service
        from .stats.serve import StatsServers
        from .stats.snapshot import snapshot
        admin = AdminAction(lambda: self.runtime, get_health=self._health_now,
                            kill_sessions=lambda server: kill_server_sessions(self, server))
        get_snapshot = lambda: snapshot(self.runtime)  # noqa: E731
        service = Service(lambda: self.runtime, get_snapshot, admin,
                          get_sessions=lambda: list_sessions(self),
                          certificates=CertificateStore(lambda: tls_specs(self.config), self.install_certificate))
        self.stats = StatsServers(config.stats, get_snapshot, admin, service)
        await self.stats.start()

    def _handover(self) -> list[tuple[str, str, list[int]]]:
        given = [("bind", str(address), [acceptor.sock.fileno()] + [s.fileno() for s in acceptor.siblings])
                 for address, acceptor in self.acceptors.items()]
        return given + (self.stats.handover() if self.stats is not None else [])

    async def _takeover_state(self) -> takeover.Carry:
        return await takeover.Carry.build(self.runtime)  # a slice at a time: this process still serves

    def install_certificate(self, path: str, pem: str) -> None:
        """A committed `set ssl cert`: the frontends using `path` take a new
        context for their next handshakes; open connections keep theirs."""
        from .certificates import context_from_pem
        for handler in self.handlers.values():
            tls = handler.frontend.spec.tls
            if tls is not None and tls.cert == path:
                handler.ssl = context_from_pem(tls, pem)
        log.warning("certificate %s replaced for new TLS handshakes", path)

    def _flush_logs(self) -> None:
        self.access_log.flush()
        if self.stopped is not None and not self.stopped.done():
            self.loop.call_later(LOG_FLUSH_INTERVAL, self._flush_logs)

    # -- reload ----------------------------------------------------------------

    def reload(self) -> None:
        if self._reloading:
            self._reload_again = True  # once the running one is done, from the file as it is then
            return
        self._reloading = True
        self.loop.create_task(self._reload_when_serving())

    async def _reload_when_serving(self) -> None:
        try:
            await self.serving  # a reload asked for during start-up runs once it is done
            while True:
                self._reload_again = False
                await systemd.reload_notified(self._reload())
                if not self._reload_again:
                    break
        finally:
            self._reloading = False

    async def _reload(self, new: Optional[Config] = None) -> None:
        """Re-read the file; a worker is given `new`, the config its master
        validated, so every process runs the same one."""
        path = self.config.path
        log.info("reloading %s", path)
        if new is None and self.config.global_.chroot is not None:
            log.error("reload refused: the process is chrooted to %s and cannot read its configuration "
                      "again; reload through the master (-W, SIGUSR2) or start a new lbcore with -sf",
                      self.config.global_.chroot)
            return
        try:
            new = new or await load_off_loop(self.config)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused: %s", problem)
            log.error("reload refused: keeping the running configuration")
            return
        keep = {address: acceptor.sock for address, acceptor in self.acceptors.items()}
        try:
            sockets = self._bind_all(new, keep)
        except BindError as exc:
            log.error("reload refused: %s; keeping the running configuration", exc)
            return
        # Applied a few milliseconds at a time, the loop serving between
        # (a whole 1,000-pair config is ~100 ms of work): the runtime first,
        # one backend or frontend per step, then the handlers and acceptors
        # together, then the health checks.
        runtime = await run_in_slices(Runtime.build_steps(new, previous=self.runtime))
        if self.ctx.stopping:
            # A SIGTERM came meanwhile: the drain has closed the listeners.
            for address, (_, sock) in sockets.items():
                if address not in keep:
                    sock.close()
            return
        old = self.config
        self.config = new
        self.runtime = runtime
        self.pool.prune(list(self.runtime.servers()))
        self._install_handlers()
        self._install_acceptors(sockets)
        self.ctx.maxconn = new.global_.maxconn
        await asyncio.sleep(0)
        if new.global_.log != old.global_.log:
            self.access_log.close()
            setup_event_log(new.global_.log)
            self.access_log = self.ctx.access_log = AccessLog(new.global_.log)
        (self.health or self._health_now()).reload(self.runtime)
        for peers in self.peers:
            peers.attach()  # the reloaded runtime's tables
        if self.stats is not None and self.stats.service.certificates is not None:
            self.stats.service.certificates.reloaded()
        if new.stats != old.stats:
            if self.stats is not None:
                self.stats.close()
                self.stats = None
            await self._start_stats(new)
        for handler in self.retired:
            drain = getattr(handler, "drain", None)
            if drain is not None:
                drain()
        settle_heap()
        # Once this reload's locals (the previous config) are gone too.
        self.loop.call_soon(release_free_memory)
        log.info("reloaded %s: %d frontends, %d backends, %d servers", path,
                 len(self.runtime.frontends), len(self.runtime.backends),
                 sum(len(b.servers) for b in self.runtime.backends.values()))

    # -- stop ------------------------------------------------------------------

    def graceful_stop(self) -> None:
        if self.ctx.stopping or self.ctx.withdrawn:
            return
        systemd.stopping()
        self.ctx.withdrawn = True  # monitor_uri answers 503 from now on
        if self.takeover is not None:
            self.takeover.close()  # a draining process has nothing left to hand on
        delay = self.config.global_.stop_delay
        if delay > 0:
            log.info("SIGTERM: monitor_uri answers 503; still accepting for %ss (stop_delay) "
                     "while health checks withdraw this node", delay)
            self.loop.call_later(delay, self._drain)
        else:
            self._drain()

    def _drain(self) -> None:
        log.info("no longer accepting; finishing in-flight work (grace %ss)", self.config.global_.grace)
        self.ctx.stopping = True
        for acceptor in self.acceptors.values():
            acceptor.close()
        self.acceptors = {}
        for handler in self.handlers.values():
            drain = getattr(handler, "drain", None)
            if drain is not None:
                drain()
        self.loop.create_task(self._wait_drained())

    async def _wait_drained(self) -> None:
        deadline = self.loop.time() + self.config.global_.grace
        while self.ctx.connections > 0 and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.ctx.connections > 0:
            log.warning("grace period over: closing %d connections", self.ctx.connections)
        self._shutdown()

    def stop_now(self) -> None:
        log.info("SIGINT: stopping now")
        systemd.stopping()
        self.ctx.stopping = True
        for acceptor in self.acceptors.values():
            acceptor.close()
        self.acceptors = {}
        self._shutdown()

    def _shutdown(self) -> None:
        for handler in self.handlers.values():
            handler.close_all()
        if self.ctx.parking is not None:
            self.ctx.parking.close()
        self.pool.close_all()
        if self.health is not None:
            self.health.stop()
        for peers in getattr(self, "peers", ()):
            peers.close()
        if self.stats is not None:
            self.stats.close()
        if self.config.global_.state_file:
            from . import state_file
            state_file.save(self.runtime, self.config.global_.state_file)
        self.sweeper.stop()
        self.access_log.close()
        if self.takeover is not None:
            self.takeover.close()
            if self.takeover.successors:
                self.takeover.finish(takeover.Carry.now(self.runtime))
        if self.config.global_.pidfile:
            pidfile.remove(self.config.global_.pidfile)
        log.info("lbcore stopped")
        if not self.stopped.done():
            self.stopped.set_result(None)
