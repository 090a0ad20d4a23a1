"""lb.yaml -> frozen specs.

The config knows nothing of sockets: it turns a file in the format of
../shared/spec/lb-yaml.md into immutable dataclasses, with every default
applied and every error reported with its key path and YAML line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional


@dataclass(frozen=True)
class Address:
    """A host:port. host is "" for the wildcard (`*:80`, `0.0.0.0:80`)."""

    host: str
    port: int

    def __str__(self) -> str:
        host = self.host or "*"
        if ":" in host:
            return f"[{host}]:{self.port}"
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Timeouts:
    """All durations in seconds (float)."""

    connect: float = 5.0
    client: float = 60.0
    server: float = 60.0
    http_request: float = 10.0
    http_keep_alive: float = 10.0
    tunnel: float = 3600.0
    queue: float = 30.0
    check: float = 2.0


@dataclass(frozen=True)
class LogSpec:
    target: str = "stdout"  # stdout | stderr | "udp host:port" syslog | file path
    format: str = "http"  # http | json | none
    # Set when target is a syslog address ("127.0.0.1:514" or "udp://..."):
    syslog: Optional[Address] = None


@dataclass(frozen=True)
class GlobalSpec:
    workers: int = 1  # "auto" resolved to the CPU count by the loader
    maxconn: int = 20000
    log: LogSpec = field(default_factory=LogSpec)
    pidfile: Optional[str] = None
    state_file: Optional[str] = None
    grace: float = 30.0  # SIGTERM: time given to in-flight work before exit


@dataclass(frozen=True)
class StatsSpec:
    bind: Address
    auth: Optional[tuple[str, str]] = None  # (user, password)
    admin: bool = True
    refresh: float = 5.0


@dataclass(frozen=True)
class TLSSpec:
    cert: str
    key: Optional[str] = None
    alpn: tuple[str, ...] = ("http/1.1",)


@dataclass(frozen=True)
class FrontendSpec:
    name: str
    binds: tuple[Address, ...]
    mode: str  # http | tcp
    backend: str
    maxconn: int = 10000
    forwarded_for: bool = True
    forwarded_proto: bool = True
    monitor_uri: Optional[str] = None
    tls: Optional[TLSSpec] = None
    timeouts: Timeouts = field(default_factory=Timeouts)


@dataclass(frozen=True)
class HealthSpec:
    type: str = "none"  # none | tcp | http
    path: str = "/"
    method: str = "GET"  # GET | HEAD | OPTIONS
    host: Optional[str] = None
    expect_status: frozenset[int] = frozenset({200})
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    port: Optional[int] = None
    initial_state: str = "up"  # up | down


@dataclass(frozen=True)
class ServerSpec:
    name: str
    address: Address
    weight: int = 1
    backup: bool = False
    maxconn: Optional[int] = None  # already inherited from the backend's maxconn
    check: bool = True
    send_proxy: Optional[str] = None  # None | "v1" | "v2"


@dataclass(frozen=True)
class BackendSpec:
    name: str
    mode: str = "http"
    balance: str = "roundrobin"  # roundrobin | leastconn | source | first
    maxconn: Optional[int] = None
    health: HealthSpec = field(default_factory=HealthSpec)
    retries: int = 3
    redispatch: bool = True
    timeouts: Timeouts = field(default_factory=Timeouts)
    servers: tuple[ServerSpec, ...] = ()
    on_marked_down: Optional[str] = None  # None | "shutdown_sessions"


@dataclass(frozen=True)
class Config:
    path: str
    global_: GlobalSpec
    stats: Optional[StatsSpec]
    frontends: Mapping[str, FrontendSpec]
    backends: Mapping[str, BackendSpec]


class ConfigError(Exception):
    """Raised with every problem found; str() gives one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))
