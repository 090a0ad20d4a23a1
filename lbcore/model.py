"""Runtime state of frontends, backends and servers. No I/O.

Counters are plain ints bumped on the hot path and read at scrape time by
the stats endpoint. A server's health is changed only through
`Server.set_health()` and its admin state only through `Server.set_admin()`
/ `Server.set_weight()`; both notify the backend, which recomputes the set
of servers that may take new work and tells its listeners (the upstream
connection pool, tcp session killers) about the change.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, Optional

from . import balance, persist, stick, tracking
from .rules.frontend import FrontendRules
from .config import BackendSpec, FrontendSpec, ServerSpec

log = logging.getLogger("lbcore")

# Server.status values, as HAProxy shows them.
UP, DOWN, MAINT, DRAIN, NOLB = "UP", "DOWN", "MAINT", "DRAIN", "NOLB"
# Admin states (set through the admin API).
READY = "READY"

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")


def status_class_index(code: int) -> int:
    """Index into `http_responses` for an HTTP status code."""
    idx = code // 100 - 1
    return idx if 0 <= idx <= 4 else 5


class Counters:
    """Traffic counters shared by frontends, backends and servers."""

    __slots__ = (
        "cur_sessions", "max_sessions", "total_sessions",
        "bytes_in", "bytes_out",
        "http_requests", "http_responses",
        "denied_req", "denied_resp",
        "request_errors", "connection_errors", "response_errors",
        "retries", "redispatches",
        "client_aborts", "server_aborts",
        "queue_cur", "queue_max",
        # Sums of timers (seconds) over completed requests, for averages.
        "time_queue", "time_connect", "time_response", "time_total",
        "timed_requests",
    )

    def __init__(self) -> None:
        self.cur_sessions = 0
        self.max_sessions = 0
        self.total_sessions = 0
        self.bytes_in = 0  # from the client (request side)
        self.bytes_out = 0  # to the client (response side)
        self.http_requests = 0
        self.http_responses = [0, 0, 0, 0, 0, 0]  # 1xx..5xx, other
        self.denied_req = 0
        self.denied_resp = 0
        self.request_errors = 0
        self.connection_errors = 0
        self.response_errors = 0
        self.retries = 0
        self.redispatches = 0
        self.client_aborts = 0
        self.server_aborts = 0
        self.queue_cur = 0
        self.queue_max = 0
        self.time_queue = 0.0
        self.time_connect = 0.0
        self.time_response = 0.0
        self.time_total = 0.0
        self.timed_requests = 0

    def session_start(self) -> None:
        self.cur_sessions += 1
        self.total_sessions += 1
        if self.cur_sessions > self.max_sessions:
            self.max_sessions = self.cur_sessions

    def session_end(self) -> None:
        self.cur_sessions -= 1

    def add_timers(self, tq: float, tc: float, tr: float, tt: float) -> None:
        self.time_queue += tq
        self.time_connect += tc
        self.time_response += tr
        self.time_total += tt
        self.timed_requests += 1


class Server(Counters):
    """One backend server: its spec, its health/admin state and counters."""

    __slots__ = (
        "spec", "backend", "name", "address", "host", "port",
        "weight", "initial_weight", "backup", "maxconn", "send_proxy", "tls", "check_tls", "checked",
        "health", "admin", "usable",
        "last_change", "downtime", "down_since", "down_transitions",
        "check_status", "check_code", "check_duration_ms", "check_age",
        "check_failures", "last_check_at",
        "consecutive_ok", "consecutive_fail",
        "observed_failures", "puid",
    )

    def __init__(self, spec: ServerSpec, backend: "Backend") -> None:
        super().__init__()
        self.spec = spec
        self.backend = backend
        self.name = spec.name
        self.address = spec.address
        self.host = spec.address.host or "127.0.0.1"
        self.port = spec.address.port
        self.weight = spec.weight
        self.initial_weight = spec.weight
        self.backup = spec.backup
        self.maxconn = spec.maxconn or 0  # 0 = unlimited
        self.send_proxy = spec.send_proxy  # None, or the PROXY protocol version
        # TLS to the server (None: plain connections) and to its probes, one
        # ServerTLS (lbcore/server_tls.py) built per spec, never per connection.
        self.tls, self.check_tls = _server_tls(spec)
        self.checked = spec.check and backend.spec.health.type != "none"
        initial_up = (not self.checked) or backend.spec.health.initial_state == "up"
        self.health = UP if initial_up else DOWN
        self.admin = MAINT if spec.disabled else READY
        self.usable = False
        now = time.monotonic()
        self.last_change = now
        self.downtime = 0.0
        self.down_since = None if initial_up else now
        self.down_transitions = 0
        self.check_status = "" if self.checked else "no check"
        self.check_code: Optional[int] = None
        self.check_duration_ms: Optional[float] = None
        self.check_age: Optional[float] = None
        self.check_failures = 0
        self.last_check_at: Optional[float] = None
        # Owned by the health state machine: counters towards rise/fall.
        self.consecutive_ok = 0
        self.consecutive_fail = 0
        # Layer-4 failures seen by the proxies (HAProxy's hanafail column).
        self.observed_failures = 0
        # HAProxy's server id (declaration order from 1): what stick tables store.
        self.puid = 0
        self._refresh_usable()

    # -- state ---------------------------------------------------------------

    @property
    def status(self) -> str:
        if self.admin == MAINT:
            return MAINT
        if self.health == DOWN:
            return DOWN
        if self.admin == DRAIN:
            return DRAIN
        if self.weight == 0:
            return NOLB
        return UP

    def has_room(self) -> bool:
        return self.maxconn == 0 or self.cur_sessions < self.maxconn

    # Sessions start and end here so the balancer sees the load change
    # (leastconn keeps its servers ordered by load).
    def session_start(self) -> None:
        Counters.session_start(self)
        self.backend.balancer.load_changed(self)

    def session_end(self) -> None:
        self.cur_sessions -= 1
        self.backend.balancer.load_changed(self)

    def _refresh_usable(self) -> None:
        self.usable = self.health == UP and self.admin == READY and self.weight > 0

    def set_health(self, up: bool, reason: str = "") -> bool:
        """The one setter for check results. Returns True if the state flipped."""
        new = UP if up else DOWN
        if new == self.health:
            return False
        now = time.monotonic()
        if new == DOWN:
            self.down_transitions += 1
            self.down_since = now
        elif self.down_since is not None:
            self.downtime += now - self.down_since
            self.down_since = None
        self.health = new
        self.last_change = now
        self._refresh_usable()
        log.warning(
            "Server %s/%s is %s%s. %d active and %d backup servers left.",
            self.backend.name, self.name, new,
            f", reason: {reason}" if reason else "",
            self.backend.count_usable(False), self.backend.count_usable(True),
        )
        self.backend.server_changed(self)
        return True

    def set_admin(self, admin: str, source: str = "admin") -> None:
        """READY | DRAIN | MAINT, from the admin API or the state file."""
        if admin == self.admin:
            return
        self.admin = admin
        self.last_change = time.monotonic()
        self._refresh_usable()
        log.warning("Server %s/%s set to %s by %s.", self.backend.name, self.name, admin, source)
        self.backend.server_changed(self)

    def set_weight(self, weight: int, source: str = "admin") -> None:
        if weight == self.weight:
            return
        self.weight = weight
        self._refresh_usable()
        log.warning("Server %s/%s weight set to %d by %s.", self.backend.name, self.name, weight, source)
        self.backend.server_changed(self)

    def reconfigure(self, spec: ServerSpec) -> None:
        if self.weight == self.initial_weight:  # keep an admin's reweight
            self.weight = spec.weight
        if spec.disabled != self.spec.disabled:
            # The config's `disabled` changed: it decides, as a restarted
            # HAProxy would; unchanged, an operator's enable or disable stays.
            self.admin = MAINT if spec.disabled else READY
            log.warning("Server %s/%s set to %s by the config.", self.backend.name, self.name, self.admin)
        self.initial_weight = spec.weight
        self.spec = spec
        # The same address (Backend.reconfigure), but the new config's
        # objects: holding the old ones kept every server's part of the
        # config it started with alive beside the current one.
        self.name = spec.name
        self.address = spec.address
        self.host = spec.address.host or "127.0.0.1"
        self.backup = spec.backup
        self.maxconn = spec.maxconn or 0
        self.send_proxy = spec.send_proxy
        self.tls, self.check_tls = _server_tls(spec)  # the files are read again, as HAProxy's reload
        was_checked = self.checked
        self.checked = spec.check and self.backend.spec.health.type != "none"
        if not self.checked:
            self.health = UP
            self.check_status = "no check"
        elif not was_checked:
            self.check_status = ""
        self._refresh_usable()

    def current_downtime(self) -> float:
        if self.down_since is None:
            return self.downtime
        return self.downtime + time.monotonic() - self.down_since


ServerListener = Callable[[Server], None]


def _server_tls(spec: ServerSpec) -> tuple:
    """(TLS for the traffic, TLS for the probes), each a ServerTLS or None."""
    if spec.tls is None:
        return None, None
    from .server_tls import ServerTLS
    tls = ServerTLS(spec.tls)
    return (tls if spec.tls.traffic else None), (tls if spec.tls.checks else None)


def _request_hash(spec: BackendSpec):
    """(algorithm, argument) when the balancer hashes a part of the HTTP
    request (uri, hdr, url_param), else None: the key is then the client
    address (source) or unused."""
    algorithm, argument = spec.balance_key
    return (algorithm, argument) if algorithm in ("uri", "hdr", "url_param") else None


class Backend(Counters):
    """A pool of servers and the balancer that chooses among them."""

    __slots__ = (
        "spec", "name", "mode", "servers", "by_name", "by_id", "balancer", "request_hash", "persist",
        "candidates", "listeners", "last_change", "waiters", "limited",
        # Whole-backend availability history, for stats (HAProxy's backend chkdown/downtime).
        "down_transitions", "downtime", "down_since",
    )

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__()
        self.spec = spec
        self.name = spec.name
        self.mode = spec.mode
        self.balancer = balance.make(spec.balance, spec.hash)
        self.request_hash = _request_hash(spec)
        self.listeners: list[ServerListener] = []
        self.last_change = time.monotonic()
        # Requests waiting for a server slot (per-server maxconn); owned by the proxies.
        self.waiters: list = []
        self.servers = [Server(s, self) for s in spec.servers]
        self.by_name = {s.name: s for s in self.servers}
        self.by_id: dict[int, Server] = {}
        self._number_servers()
        # Cookie and stick rules (lbcore.persist.Persistence), set by Runtime.build.
        self.persist = None
        self.candidates: list[Server] = []
        self.down_transitions = 0
        self.downtime = 0.0
        self.down_since: Optional[float] = None
        self._recompute()
        if not self.candidates:
            self.down_since = self.last_change

    def _recompute(self) -> None:
        primaries = [s for s in self.servers if s.usable and not s.backup]
        if primaries:
            self.candidates = primaries
        else:
            backups = [s for s in self.servers if s.usable and s.backup]
            # As HAProxy: only the first usable backup serves, unless
            # all_backups (option allbackups) shares the load among them.
            self.candidates = backups if self.spec.all_backups else backups[:1]
        self.balancer.update(self.candidates)
        # Whether any server has a maxconn (then full ones are skipped).
        self.limited = any(s.maxconn for s in self.servers)

    def _number_servers(self) -> None:
        for puid, server in enumerate(self.servers, 1):
            server.puid = puid
        self.by_id = {s.puid: s for s in self.servers}

    def count_usable(self, backup: bool) -> int:
        return sum(1 for s in self.servers if s.usable and s.backup == backup)

    @property
    def status(self) -> str:
        return UP if self.candidates else DOWN

    def server_changed(self, server: Server) -> None:
        had = bool(self.candidates)
        self._recompute()
        if had != bool(self.candidates):
            self._availability_changed()
        for listener in list(self.listeners):
            try:
                listener(server)
            except Exception:  # a listener must never break a state change
                log.exception("server change listener failed")

    def _availability_changed(self) -> None:
        now = time.monotonic()
        self.last_change = now
        if not self.candidates:
            self.down_transitions += 1
            self.down_since = now
        elif self.down_since is not None:
            self.downtime += now - self.down_since
            self.down_since = None

    def current_downtime(self) -> float:
        if self.down_since is None:
            return self.downtime
        return self.downtime + time.monotonic() - self.down_since

    def pick(self, client_key: bytes = b"", exclude=None, full_ok: bool = False) -> Optional[Server]:
        """A server for new work, or None if every usable one is full/absent.
        `exclude`: a server or a collection of servers already tried.
        `full_ok`: full servers (maxconn) are candidates too (the caller
        waits for the one picked: hash balancing keeps a key's server)."""
        if not exclude:
            exclude = None
        elif isinstance(exclude, Server):
            exclude = (exclude,)
        return self.balancer.pick(client_key, exclude, self.limited and not full_ok)

    def reconfigure(self, spec: BackendSpec) -> None:
        """A reload: take the new spec. Servers that survive (same name and
        address) stay the same objects, so in-flight work, health state and
        counters carry over; an admin's reweight survives too."""
        old = self.by_name
        if (spec.balance, spec.hash) != (self.spec.balance, self.spec.hash):
            self.balancer = balance.make(spec.balance, spec.hash)
            self.request_hash = _request_hash(spec)
        self.spec = spec
        self.mode = spec.mode
        servers = []
        for server_spec in spec.servers:
            server = old.get(server_spec.name)
            if server is not None and server.address == server_spec.address:
                server.reconfigure(server_spec)
            else:
                server = Server(server_spec, self)
            servers.append(server)
        self.servers = servers
        self.by_name = {s.name: s for s in servers}
        self._number_servers()
        had = bool(self.candidates)
        self._recompute()
        if had != bool(self.candidates):
            self._availability_changed()


class Frontend(Counters):
    """A listening proxy: its spec, its backend, its counters."""

    __slots__ = ("spec", "name", "mode", "backend", "stopping", "rules", "parked")

    def __init__(self, spec: FrontendSpec, backend: Backend) -> None:
        super().__init__()
        self.spec = spec
        self.name = spec.name
        self.mode = spec.mode
        self.backend = backend
        self.stopping = False
        self.rules = None  # its acls and rules, compiled (proxy/stream.py's Rules); None: none
        self.parked = 0  # of its current sessions, idle ones off their transports (proxy/parking.py)

    def reconfigure(self, spec: FrontendSpec, backend: Backend) -> None:
        self.spec = spec
        self.mode = spec.mode
        self.backend = backend


class Runtime:
    """Everything built from one Config: what the proxies and stats read."""

    def __init__(self, config, frontends: dict[str, Frontend], backends: dict[str, Backend],
                 stick_tables: Optional[dict] = None):
        self.config = config
        self.frontends = frontends
        self.backends = backends
        self.stick_tables: dict[str, stick.StickTable] = stick_tables or {}
        self.started = time.monotonic()

    @classmethod
    def build(cls, config, previous: Optional["Runtime"] = None) -> "Runtime":
        """Runtime objects for `config`. On a reload the previous objects
        that survive are reconfigured in place: connections hold references
        to them, and their counters and states must carry over."""
        steps = cls.build_steps(config, previous)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    @classmethod
    def build_steps(cls, config, previous: Optional["Runtime"] = None):
        """build() as a generator that pauses after each backend and
        frontend, returning the Runtime: a reload of a large config runs it
        a few milliseconds at a time between the event loop's other work
        (server.py). Every object is whole at each pause: a backend is
        reconfigured at once, and a frontend still points to a backend that
        works until it is reconfigured itself."""
        old_backends = previous.backends if previous else {}
        old_frontends = previous.frontends if previous else {}
        backends = {}
        for name, spec in config.backends.items():
            backend = old_backends.get(name)
            if backend is not None and backend.mode == spec.mode:
                backend.reconfigure(spec)
            else:
                backend = Backend(spec)
            backends[name] = backend
            yield
        frontends = {}
        for name, spec in config.frontends.items():
            frontend = old_frontends.get(name)
            if frontend is not None and frontend.mode == spec.mode:
                frontend.reconfigure(spec, backends[spec.backend])
            else:
                frontend = Frontend(spec, backends[spec.backend])
            # The frontend's rules (lbcore/rules), or None when no rule can
            # touch its traffic: then its request path has no rule step.
            frontend.rules = FrontendRules.build(frontend, backends)
            frontends[name] = frontend
            yield
        tables = build_stick_tables(config, previous.stick_tables if previous else {})
        tracking.install(tables)  # the tables track_sc rules and sc_* fetches name
        for name, backend in backends.items():
            spec = backend.spec
            if spec.cookie is not None or spec.stick_on:
                rules = [(rule, tables[rule.table]) for rule in spec.stick_on]
                for _, table in rules:
                    table.sticky = True
                backend.persist = persist.Persistence(backend, spec.cookie, rules)
            else:
                backend.persist = None
        runtime = cls(config, frontends, backends, tables)
        if previous is not None:
            runtime.started = previous.started
        return runtime

    def servers(self) -> Iterable[Server]:
        for backend in self.backends.values():
            yield from backend.servers


def build_stick_tables(config, previous: dict) -> dict:
    """The config's stick tables. A table whose definition did not change
    across a reload is the same object, entries and all (HAProxy needs a
    local peer for that; keeping them here costs nothing)."""
    tables = {}
    for name, spec in config.stick_tables().items():
        old = previous.get(name)
        if old is not None and old.spec == spec:
            tables[name] = old
            continue
        table = stick.StickTable(
            name, spec.type, spec.size,
            expire_ms=int(spec.expire * 1000) if spec.expire else None,
            store=dict(spec.store), length=spec.length, peers=spec.peers)
        table.spec = spec
        if old is not None and old.type == spec.type and old.length == spec.length:
            # Same keys, new data or limits: keep who is stuck where.
            for entry in old:
                if entry.server_id is not None and table.get(entry.key) is not None:
                    table.entries[entry.key].server_id = entry.server_id
        tables[name] = table
    return tables
