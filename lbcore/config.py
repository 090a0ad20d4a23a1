"""lb.yaml -> frozen specs.

The config knows nothing of sockets: it turns a file in the format of
../shared/spec/lb-yaml.md into immutable dataclasses, with every default
applied and every error reported with its key path and YAML line.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import os
import re
from dataclasses import field, replace
from typing import Any, Callable, Iterable, Mapping, Optional

from . import stick
from .dataclass_code import dataclass  # dataclasses.dataclass, its methods compiled at build time

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .balance import ALGORITHMS as BALANCE_NAMES
from .balance import parse as balance_parse


def _rules():
    """lbcore.rules, imported when a config has something for it (acls,
    rules, use_backend, userlists, error files, a stick_on sample): ~12 ms
    of imports that a plain config's start (or --check) goes without
    before it binds. With tracking, which registers track_sc* and sc_*."""
    from . import rules, tracking  # noqa: F401
    return rules


__all__ = [
    "Address", "Timeouts", "LogSpec", "GlobalSpec", "SocketSpec", "StatsSpec", "TLSSpec", "ServerTLSSpec",
    "FrontendSpec", "HealthSpec", "ServerSpec", "BackendSpec", "Config",
    "StickTableSpec", "StickOnSpec", "CookieSpec", "PeersSpec",
    "ConfigError", "load", "loads", "parse_duration", "parse_size",
    "parse_address",
]


# (Every spec class has a docstring: without one, dataclass() writes one
# with inspect.signature() at every import, ~0.06 ms a class.)


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
    """global.log: where the access log goes, and in which format."""

    target: str = "stdout"  # stdout | stderr | "udp host:port" syslog | file path
    format: str = "http"  # http | json | none
    # Set when target is a syslog address ("127.0.0.1:514" or "udp://..."):
    syslog: Optional[Address] = None
    # Set when target is "unix:/dev/log": syslog to a unix datagram socket.
    syslog_socket: Optional[str] = None
    facility: str = "local0"  # syslog facility, as HAProxy's `log ADDR FACILITY`


@dataclass(frozen=True)
class GlobalSpec:
    """The global section: settings of the whole process."""

    workers: int = 1  # "auto" resolved to the CPU count by the loader
    maxconn: int = 20000
    log: LogSpec = field(default_factory=LogSpec)
    pidfile: Optional[str] = None
    state_file: Optional[str] = None
    grace: float = 30.0  # SIGTERM: time given to in-flight work before exit
    # SIGTERM: keep accepting this long, monitor_uri answering 503, so that a
    # health check (keepalived, a BGP announcer) withdraws the node before
    # it stops accepting. HAProxy's global `grace`.
    stop_delay: float = 0.0
    # Applied once every listener is bound and every certificate read, as
    # HAProxy's user/group/chroot (server.py drop_privileges).
    user: Optional[str] = None
    group: Optional[str] = None
    chroot: Optional[str] = None


SOCKET_LEVELS = ("user", "operator", "admin")  # HAProxy's, lowest first


@dataclass(frozen=True)
class SocketSpec:
    """stats.socket: HAProxy's runtime API on a unix socket (`path`) or on
    TCP (`address`, from "ipv4@HOST:PORT"); exactly one of the two is set."""

    path: Optional[str] = None
    address: Optional[Address] = None
    mode: int = 0o600
    group: Optional[str] = None
    level: str = "admin"

    def __str__(self) -> str:
        return self.path if self.path is not None else f"ipv4@{self.address}"


@dataclass(frozen=True)
class StatsSpec:
    """The stats section: the stats page, its metrics listeners and the runtime API socket."""

    bind: Optional[Address]  # None: only the runtime API socket is served
    auth: Optional[tuple[str, str]] = None  # (user, password)
    admin: bool = True
    refresh: float = 5.0
    socket: Optional[SocketSpec] = None
    # More listeners that serve only /metrics, without auth: a Prometheus
    # exporter port of its own (kolla's `listen metrics`).
    metrics_binds: tuple[Address, ...] = ()
    tls: Optional["TLSSpec"] = None  # HTTPS on `bind` (TripleO's stats listen with `ssl crt`)


@dataclass(frozen=True)
class TLSSpec:
    """TLS on a frontend's (or the stats page's) listeners: HAProxy's `bind ... ssl crt`."""

    cert: str
    key: Optional[str] = None
    alpn: tuple[str, ...] = ("http/1.1",)
    min_version: Optional[str] = None  # TLSv1.2 | TLSv1.3 (HAProxy's ssl-min-ver)
    ciphers: Optional[str] = None  # OpenSSL cipher list for TLS <= 1.2
    ciphersuites: Optional[str] = None  # TLS 1.3 suites


def set_ciphersuites(context, suites: str) -> None:
    """TLS 1.3 suites: Python's ssl has no setter; OpenSSL's is reached
    through the context's pointer (the same call HAProxy makes)."""
    import ctypes
    import ctypes.util
    import _ssl  # noqa: F401  (loads the libssl Python links)
    lib = ctypes.CDLL(_ssl.__file__)
    setter = getattr(lib, "SSL_CTX_set_ciphersuites", None)
    if setter is None:
        raise ValueError("this OpenSSL cannot set TLS 1.3 ciphersuites")
    # PySSLContext: PyObject_HEAD then the SSL_CTX pointer.
    ctx_ptr = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    setter.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    if setter(ctx_ptr, suites.encode()) != 1:
        raise ValueError(f"invalid TLS 1.3 ciphersuites {suites!r}")


@dataclass(frozen=True)
class StickTableSpec:
    """A stick table (lbcore/stick.py), named after its section."""

    name: str
    type: str  # ip | ipv6 | integer | string
    size: int
    expire: Optional[float] = None  # seconds; None: entries never expire (only evicted)
    length: int = 32  # string keys: longer keys are cut
    peers: Optional[str] = None  # the peers section that synchronises it
    # (data type, period in ms or None), e.g. (("conn_cur", None), ("http_req_rate", 10000))
    store: tuple[tuple[str, Optional[int]], ...] = ()


@dataclass(frozen=True)
class StickOnSpec:
    """Persistence by a sample: HAProxy's `stick on` (match and store),
    `stick match` (match only) or `stick store-request` (store only)."""

    sample: str  # src | dst | another fetch expression (req.hdr(x), ...)
    table: str  # the stick table's name (the backend's own by default)
    match: bool = True
    store: bool = True


@dataclass(frozen=True)
class CookieSpec:
    """Cookie persistence: HAProxy's `cookie NAME insert|rewrite|prefix ...`."""

    name: str
    mode: str = "insert"  # insert | rewrite | prefix
    indirect: bool = False
    nocache: bool = False
    preserve: bool = False
    httponly: bool = False
    secure: bool = False
    domain: tuple[str, ...] = ()


@dataclass(frozen=True)
class PeersSpec:
    """A peers section: the LB nodes that share stick-table entries."""

    name: str
    local: str
    nodes: tuple[tuple[str, "Address"], ...] = ()  # (name, address), the local node included


@dataclass(frozen=True)
class FrontendSpec:
    """A frontend: the addresses it listens on, and what it does with what comes in."""

    name: str
    binds: tuple[Address, ...]
    mode: str  # http | tcp
    backend: str
    maxconn: int = 10000
    forwarded_for: bool = True
    forwarded_proto: bool = True
    # Client networks that get no X-Forwarded-For (HAProxy's `option forwardfor except NET`).
    forwarded_for_except: tuple[str, ...] = ()
    monitor_uri: Optional[str] = None
    tls: Optional[TLSSpec] = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    # Rules (lbcore/rules), compiled at load. acls: ((name, (text, ...)), ...)
    acls: tuple = ()
    tcp_request: tuple = ()  # of rules.Rule
    http_request: tuple = ()
    http_response: tuple = ()
    use_backend: tuple = ()  # of rules.UseBackend
    stick_table: Optional[StickTableSpec] = None
    # Binds that may name an address this host does not hold yet (a VIP on
    # the peer node): IP_FREEBIND/IP_TRANSPARENT, HAProxy's `bind ... transparent`.
    transparent: frozenset = frozenset()
    # Binds limited to one network interface (SO_BINDTODEVICE, HAProxy's
    # `bind ... interface`): address -> interface name.
    interfaces: Mapping[Address, str] = field(default_factory=dict)
    # status -> rules.answers.ErrorFile: lbcore's own answers with that
    # status come from this file (HAProxy's errorfile); a backend's win.
    error_files: Mapping[int, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HealthSpec:
    """A backend's health checks: how its servers are probed, and when they count as up or down."""

    type: str = "none"  # none | tcp | http | mysql
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
    headers: tuple[tuple[str, str], ...] = ()  # more request headers for http probes
    # mysql probes: log in as `user` (no password) and quit; without a user
    # only the server's greeting is read. `client`: the login packet's
    # format, HAProxy's post-41 (MySQL >= 4.1, MariaDB) or pre-41.
    user: Optional[str] = None
    client: str = "post-41"
    # tcp probes: a dialogue once connected (HAProxy's tcp-check send /
    # expect), (("send", text) | ("expect", text) | ("expect_regex", re), ...).
    steps: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ServerTLSSpec:
    """TLS to one server (servers[].tls), with HAProxy 2.6's meaning of the
    server keywords `ssl verify ca-file crl-file verifyhost sni alpn
    check-ssl check-sni check-alpn ssl-min-ver ciphers ciphersuites`."""

    verify: str = "required"  # none | required (HAProxy's default, ssl-server-verify)
    ca: Optional[str] = None  # CA file (PEM), or "@system-ca"; required with verify required
    crl: Optional[str] = None  # CRL file (PEM), checked for every certificate of the chain
    verifyhost: Optional[str] = None  # name the certificate must carry when no SNI is sent
    sni: Optional[str] = None  # SNI sent on the server's connections (none by default, as HAProxy)
    alpn: tuple[str, ...] = ()
    min_version: Optional[str] = None
    ciphers: Optional[str] = None
    ciphersuites: Optional[str] = None
    # The server's own traffic uses TLS (HAProxy's `ssl`); false when only
    # its checks do (`check-ssl` without `ssl`).
    traffic: bool = True
    # Probes use TLS too. Resolved at load: HAProxy's rule, true for a
    # TLS server unless its checks go to another port (health.port).
    checks: bool = True
    check_sni: Optional[str] = None  # SNI of the probes (HAProxy's check-sni)
    check_alpn: tuple[str, ...] = ()  # ALPN of the probes (check-alpn; default: alpn)


@dataclass(frozen=True)
class ServerSpec:
    """One server of a backend."""

    name: str
    address: Address
    weight: int = 1
    backup: bool = False
    maxconn: Optional[int] = None  # already inherited from the backend's maxconn
    check: bool = True
    send_proxy: Optional[str] = None  # None | "v1" | "v2"
    cookie: Optional[str] = None  # this server's value for the backend's cookie persistence
    # Starts in maintenance (MAINT): no traffic, no checks, until enabled
    # through the runtime API or the stats admin page (HAProxy's `disabled`).
    disabled: bool = False
    tls: Optional[ServerTLSSpec] = None  # TLS to the server (or to its checks only)


@dataclass(frozen=True)
class BackendSpec:
    """A backend: its servers, and how connections and requests are spread over them."""

    name: str
    mode: str = "http"
    balance: str = "roundrobin"  # roundrobin | leastconn | first | source | uri | hdr(NAME) | url_param(NAME)
    maxconn: Optional[int] = None
    health: HealthSpec = field(default_factory=HealthSpec)
    retries: int = 3
    redispatch: bool = True
    timeouts: Timeouts = field(default_factory=Timeouts)
    servers: tuple[ServerSpec, ...] = ()
    on_marked_down: Optional[str] = None  # None | "shutdown_sessions"
    all_backups: bool = False  # every usable backup serves, not only the first (option allbackups)
    # Backend-section rules, run after the frontend's (lbcore/rules).
    acls: tuple = ()
    http_request: tuple = ()
    http_response: tuple = ()
    stick_table: Optional[StickTableSpec] = None
    stick_on: tuple[StickOnSpec, ...] = ()
    cookie: Optional[CookieSpec] = None
    hash: str = "map-based"  # map-based | consistent: how hash balancing maps keys
    # Idle server connections kept per server (None: lbcore's cap of 256;
    # 0: none kept), and how often the unneeded ones are halved (seconds).
    pool_max_conn: Optional[int] = None
    pool_purge_delay: float = 5.0
    error_files: Mapping[int, Any] = field(default_factory=dict)  # as FrontendSpec's

    @property
    def balance_key(self) -> tuple[str, Optional[str]]:
        """(algorithm, argument) of `balance`: ("hdr", "X-Tenant")."""
        return balance_parse(self.balance)


@dataclass(frozen=True)
class Config:
    """A whole config, every default applied: what load(), loads() and load_tree() give."""

    path: str
    global_: GlobalSpec
    stats: Optional[StatsSpec]
    frontends: Mapping[str, FrontendSpec]
    backends: Mapping[str, BackendSpec]
    userlists: Mapping[str, Any] = field(default_factory=dict)  # name -> rules.auth.Userlist
    peers: Mapping[str, PeersSpec] = field(default_factory=dict)
    # haproxy.cfg files and directories (`lbcore -f`) this config was read
    # from; empty for an lb.yaml (`path`). A reload reads the same again.
    sources: tuple[str, ...] = ()

    def stick_tables(self) -> dict[str, StickTableSpec]:
        """Every stick table by name (frontends' and backends')."""
        tables = {}
        for section in (*self.frontends.values(), *self.backends.values()):
            if section.stick_table is not None:
                tables[section.stick_table.name] = section.stick_table
        return tables


class ConfigError(Exception):
    """Raised with every problem found; str() gives one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


# ---------------------------------------------------------------------------
# Loading.
#
# The YAML is composed into a node graph (not constructed into dicts) so that
# every value keeps its line, duplicate keys can be seen before PyYAML's
# constructor would silently drop them, and one pass can collect every
# problem instead of stopping at the first.

MODES = ("http", "tcp")
HASH_TYPES = ("map-based", "consistent")
REQUEST_HASHES = ("uri", "hdr", "url_param")  # balance algorithms that read the HTTP request
HEALTH_TYPES = ("none", "tcp", "http", "mysql")
MYSQL_CLIENTS = ("post-41", "pre-41")
PROBE_STEPS = ("send", "expect", "expect_regex")
HEALTH_METHODS = ("GET", "HEAD", "OPTIONS")
INITIAL_STATES = ("up", "down")
SEND_PROXY = ("v1", "v2")
ON_MARKED_DOWN = ("shutdown_sessions",)
LOG_FORMATS = ("http", "json", "none")
# RFC 5424 facility codes, by HAProxy's names.
SYSLOG_FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
                     "auth2", "ftp", "ntp", "audit", "alert", "cron2", "local0", "local1", "local2",
                     "local3", "local4", "local5", "local6", "local7")
MAX_WEIGHT = 256

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h|d)?")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"([0-9]+)\s*([kmgKMG])?")
_SIZE_UNITS = {None: 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_HOSTNAME_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_STATUS_CLASS = re.compile(r"([1-5])xx")
# A log target that looks like host:port (and not like a path) is syslog.
_SYSLOG_LIKE = re.compile(r"(\[[^\]/]*\]|[A-Za-z0-9.*_-]*):[0-9]+")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_EXPIRE = 24 * 86400.0  # HAProxy's stick-table expire is at most 2^31 ms
# A sample expression: a fetch name, optional (args), optional ,converters.
_SAMPLE = re.compile(r"[a-z][a-z0-9_.]*(\([^()]*\))?(,[a-z][a-z0-9_]*(\([^()]*\))?)*")
_L4_SAMPLES = ("src", "dst")
# RFC 6265 cookie-value characters (no quotes, commas, semicolons, spaces).
_COOKIE_VALUE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_WILDCARD_HOSTS = ("", "::")


# -- value parsers: plain Python values in, ValueError with a message out ---

def parse_duration(value: Any) -> float:
    """Seconds from `2`, `0.5`, "500ms", "2s", "1m", "1h", "1d". Must be > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a duration like 2, 0.5, '500ms' or '1m', got {_describe_value(value)}")
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if not match:
            raise ValueError(
                f"invalid duration {value!r} (expected a number of seconds or a number "
                "with a unit: ms, s, m, h, d, e.g. '500ms', '2s')")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration must be greater than 0, got {value!r}")
    return seconds


def parse_delay(value: Any) -> float:
    """A duration that may also be 0 (no delay)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
        return 0.0
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match and float(match.group(1)) == 0:
            return 0.0
    return parse_duration(value)


def parse_size(value: Any) -> int:
    """Bytes from `16384`, "16k", "1m", "1g" (powers of 1024). Must be > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected a size like 16384, '16k' or '1m', got {_describe_value(value)}")
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if not match:
            raise ValueError(f"invalid size {value!r} (expected bytes or a number with k, m or g, e.g. '16k')")
        unit = match.group(2).lower() if match.group(2) else None
        size = int(match.group(1)) * _SIZE_UNITS[unit]
    else:
        size = value
    if size <= 0:
        raise ValueError(f"size must be greater than 0, got {value!r}")
    return size


def parse_address(value: Any, *, server: bool = False) -> Address:
    """`host:port`, `[v6]:port`, `*:port`, `0.0.0.0:port` or `:port`.

    Wildcards become host "". A server address must name a real host.
    """
    if not isinstance(value, str):
        raise ValueError(f"expected an address 'host:port', got {_describe_value(value)}")
    text = value
    if not text or text.split() != [text]:  # empty, or any whitespace in it
        raise ValueError(f"invalid address {value!r} (expected 'host:port' without spaces)")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"invalid address {value!r}: '[' without closing ']'")
        host, rest = text[1:end], text[end + 1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid address {value!r}: {host!r} is not an IPv6 address") from None
        if not rest.startswith(":"):
            raise ValueError(f"invalid address {value!r}: missing port (expected '[{host}]:PORT')")
        port_text = rest[1:]
    else:
        if ":" not in text:
            raise ValueError(f"invalid address {value!r}: missing port (expected 'host:port')")
        if text.count(":") > 1:
            raise ValueError(f"invalid address {value!r}: an IPv6 address must be in brackets, e.g. '[::1]:8080'")
        host, port_text = text.split(":")
        if host in ("*", "0.0.0.0", ""):
            host = ""
        else:
            _check_host(host, value)
    if not port_text.isdigit() or not port_text.isascii():
        raise ValueError(f"invalid address {value!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"invalid address {value!r}: port {port} is not in 1..65535")
    if server and host in _WILDCARD_HOSTS:
        raise ValueError(f"invalid server address {value!r}: the host must not be a wildcard")
    return Address(host, port)


def _check_host(host: str, value: str) -> None:
    problem = _host_problem(host)
    if problem:
        raise ValueError(f"invalid address {value!r}: {host!r} {problem}")


@functools.lru_cache(maxsize=4096)  # a big config names the same few hosts thousands of times
def _host_problem(host: str) -> Optional[str]:
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return "is not an IPv4 address"
        return None
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_HOSTNAME_LABEL.fullmatch(label) for label in labels):
        return "is not a valid host name"
    return None


def _describe_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _suggest(word: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    same_letters = [c for c in choices if c.lower() == word.lower()]
    if not same_letters:
        import difflib  # only when a word is unknown
    close = same_letters or difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# -- the node walker ----------------------------------------------------------

class _Invalid(Exception):
    """A value that does not fit; the reader turns it into one problem line."""

    def __init__(self, message: str, node: Optional[Node] = None):
        super().__init__(message)
        self.message = message
        self.node = node


def _line(node: Optional[Node]) -> Optional[int]:
    return node.start_mark.line + 1 if node is not None and node.start_mark else None


def _key(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


class _Mapping:
    """A checked YAML mapping: only known keys, each with its key node."""

    __slots__ = ("keypath", "node", "entries")

    def __init__(self, keypath: str, node: Optional[Node], entries: dict[str, tuple[Node, Node]]):
        self.keypath = keypath
        self.node = node
        self.entries = entries

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def value(self, key: str) -> Optional[Node]:
        entry = self.entries.get(key)
        return entry[1] if entry else None

    def key_node(self, key: str) -> Optional[Node]:
        entry = self.entries.get(key)
        return entry[0] if entry else None

    def path(self, key: str) -> str:
        return _key(self.keypath, key)


_NO_VALUE = object()
_STR_TAG = "tag:yaml.org,2002:str"


def _known_entries(node: MappingNode, known: frozenset) -> Optional[dict[str, tuple[Node, Node]]]:
    """The entries of a mapping node whose keys are all known and each
    written once: what _Reader._entries and _drop_unknown give it, without
    their checks; None for any other mapping (a key unknown, written twice,
    not a scalar, or a merge key '<<', which no known set holds), for them
    to read and report. Nearly every mapping of a config is like this."""
    entries = {}
    for pair in node.value:
        key = pair[0].value  # (a list for a key that is not a scalar)
        if type(key) is not str or key not in known or key in entries:
            return None
        entries[key] = pair
    return entries


class _Reader:
    """Walks the node graph, collecting problems as `file:line: keypath: msg`."""

    def __init__(self, path: str, base_dir: str):
        self.path = path
        self.base_dir = base_dir
        self._problems: list[tuple[int, str]] = []
        self.bad_paths: set[str] = set()
        self._constructor = yaml.constructor.SafeConstructor()
        # integer(1), choice(MODES), nullable(...): each parser made once,
        # not once per key of every backend and server.
        self.integer = functools.cache(self._integer)
        self.choice = functools.cache(self._choice)
        self.nullable = functools.cache(self._nullable)
        self._known_sets: dict[Iterable[str], frozenset] = {}  # mapping(): the keys a mapping may have
        # (tag, text) -> value of the scalars the constructor built: a large
        # config repeats `false`, `2s`, `3`... thousands of times, and the
        # safe constructor's values of a scalar are immutable.
        self._scalars: dict[tuple[str, str], Any] = {}
        self._server_addresses: dict[str, Address] = {}  # see server_address()

    def drop_parsers(self) -> None:
        """Forgets the parsers made (see __init__), once the graph is read."""
        del self.integer, self.choice, self.nullable

    # problems
    def problem(self, keypath: str, node: Optional[Node], message: str) -> None:
        origin = getattr(node.start_mark, "origin", None) if node is not None else None
        if origin is not None:
            # A value read from haproxy.cfg: name its file, line and keyword;
            # the lb.yaml key it maps to comes last, for `lbcore convert` users.
            if message.startswith("unknown key") or message.endswith("got a mapping"):
                message = "not supported yet by this lbcore"
            self._problems.append((0, f"{origin}: {origin.keyword}: {message} (lb.yaml {keypath})"))
            self.bad_paths.add(keypath)
            return
        line = _line(node)
        where = f"{self.path}:{line}" if line else self.path
        self._problems.append((line or 0, f"{where}: {keypath}: {message}" if keypath else f"{where}: {message}"))
        self.bad_paths.add(keypath)

    @property
    def problems(self) -> list[str]:
        """In file order, each once (an aliased node is walked once per use)."""
        ordered = sorted(self._problems, key=lambda problem: problem[0])
        return list(dict.fromkeys(text for _, text in ordered))

    # scalars
    def scalar(self, node: Node) -> Any:
        """The Python value of a node, as PyYAML's safe loader would build it
        (mappings and lists are only described, never built)."""
        if type(node) is ScalarNode:  # (composed from YAML text)
            if node.tag == _STR_TAG:
                return node.value  # what the constructor would give, without its bookkeeping per node
            key = (node.tag, node.value)
            value = self._scalars.get(key, _NO_VALUE)
            if value is not _NO_VALUE:
                return value
        else:
            python = getattr(node, "python", _NO_VALUE)
            if python is not _NO_VALUE:
                return python  # a haproxy.cfg value (haproxy_cfg.tree.Scalar)
            if isinstance(node, MappingNode):
                return {}
            if isinstance(node, SequenceNode):
                return []
        try:
            value = self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise _Invalid(f"unsupported YAML value ({getattr(exc, 'problem', None) or exc})", node) from None
        if type(node) is ScalarNode:
            self._scalars[key] = value
        return value

    def describe(self, node: Node) -> str:
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        return _describe_value(self.scalar(node))

    # mappings
    def mapping(self, node: Optional[Node], keypath: str, known: Iterable[str],
                required: Iterable[str] = ()) -> Optional[_Mapping]:
        """The known entries of a mapping node; None (after a problem) if the
        node is not a mapping. An absent or null section reads as empty."""
        known_set = self._known_sets.get(known)  # (`known` is one of the _*_KEYS tuples)
        if known_set is None:
            known_set = self._known_sets[known] = frozenset(known)
        if isinstance(node, MappingNode):
            entries = _known_entries(node, known_set)
            if entries is None:  # something to report, or merge keys to follow: the full reading
                entries = self._entries(node, keypath, set())
                entries = self._drop_unknown(entries, keypath, known, known_set)
        elif node is None or self.is_null(node):
            entries = {}
        else:
            self.problem(keypath, node, f"expected a mapping, got {self.describe(node)}")
            return None
        for key in required:
            if key not in entries:
                self.problem(_key(keypath, key), node, "required key is missing")
        return _Mapping(keypath, node, entries)

    def _drop_unknown(self, entries: dict[str, tuple[Node, Node]], keypath: str, known: Iterable[str],
                      known_set: frozenset) -> dict[str, tuple[Node, Node]]:
        """`entries` without the keys not in `known`, each reported."""
        unknown = False
        for key, (key_node, _) in entries.items():
            if key in known_set:
                continue
            unknown = True
            # Top-level "x-" keys hold YAML anchors for reuse ("<<: *x-srv"),
            # as in docker-compose; nothing reads them.
            if not (keypath == "" and key.startswith("x-")):
                self.problem(_key(keypath, key), key_node, f"unknown key '{key}'{_suggest(key, known)}")
        if unknown:
            entries = {k: v for k, v in entries.items() if k in known_set}
        return entries

    def named_mapping(self, node: Optional[Node], keypath: str) -> dict[str, tuple[Node, Node]]:
        """A mapping whose keys are user-chosen names (frontends, backends)."""
        if node is None or self.is_null(node):
            return {}
        if not isinstance(node, MappingNode):
            self.problem(keypath, node, f"expected a mapping of names, got {self.describe(node)}")
            return {}
        entries = self._entries(node, keypath, set())
        for name, (key_node, _) in entries.items():
            self.check_name(name, keypath, name, key_node)
        return entries

    def check_name(self, name: str, parent: str, key: str, node: Optional[Node]) -> bool:
        """`name` (the value at `parent`.`key`) is a valid section or server name."""
        if _NAME.fullmatch(name):
            return True
        self.problem(_key(parent, key), node, f"invalid name {name!r} (use only letters, digits, '_', '.' and '-')")
        return False

    def _entries(self, node: MappingNode, keypath: str, merging: set[int]) -> dict[str, tuple[Node, Node]]:
        # Explicit keys win over merged ones ("<<: *anchor"), as in YAML's
        # merge-key spec; a key written twice is an error, not a silent overwrite.
        explicit: dict[str, tuple[Node, Node]] = {}
        merged: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, MappingNode):
                        self.problem(_key(keypath, "<<"), source,
                                     "a merge key '<<' needs a mapping or a list of mappings")
                    elif id(source) in merging or source is node:
                        self.problem(_key(keypath, "<<"), source, "a merge key '<<' refers to its own mapping")
                    else:
                        for key, entry in self._entries(source, keypath, merging | {id(node)}).items():
                            merged.setdefault(key, entry)
                continue
            if not isinstance(key_node, ScalarNode):
                self.problem(keypath, key_node, "a key must be a plain name, not a list or mapping")
                continue
            key = key_node.value
            if key in explicit:
                first = _line(explicit[key][0])
                self.problem(_key(keypath, key), key_node,
                             f"duplicate key '{key}'" + (f" (first at line {first})" if first else ""))
                continue
            explicit[key] = (key_node, value_node)
        if not merged:
            return explicit
        merged.update(explicit)
        return merged

    def is_null(self, node: Node) -> bool:
        return isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"

    # typed fields
    def get(self, mapping: Optional[_Mapping], key: str, parse: Callable[[Node], Any], default: Any = None) -> Any:
        """Parse `key` of `mapping` with `parse`, or give `default` when the
        key is absent (or its value invalid, after recording the problem)."""
        entry = mapping.entries.get(key) if mapping is not None else None
        if entry is None:
            return default
        try:
            return parse(entry[1])
        except (_Invalid, ValueError) as exc:
            self.invalid(mapping.path(key), entry[1], exc)  # (the key path is made for a problem only)
        return default

    def read(self, mapping: Optional[_Mapping], parsers: Mapping[str, Callable[[Node], Any]],
             **defaults: Any) -> dict[str, Any]:
        """The keys of `mapping` that `parsers` names, each parsed with its
        parser, in the order of `parsers` (that of get() calls one by one):
        a key absent, or whose value is invalid (its problem recorded), is
        left out, so that the spec's own default applies, or the one given
        in `defaults`. Unlike a get() per key, a key not written costs
        nothing: most of the dozen keys a server or backend may have are
        not written."""
        values = dict(defaults)
        if mapping is None or mapping.entries.keys().isdisjoint(parsers):
            return values
        for key, parse in parsers.items():
            entry = mapping.entries.get(key)
            if entry is None:
                continue
            try:
                values[key] = parse(entry[1])
            except (_Invalid, ValueError) as exc:
                self.invalid(mapping.path(key), entry[1], exc)
        return values

    def parse(self, node: Node, keypath: str, parse: Callable[[Node], Any], default: Any = None) -> Any:
        try:
            return parse(node)
        except (_Invalid, ValueError) as exc:
            self.invalid(keypath, node, exc)
        return default

    def invalid(self, keypath: str, node: Node, exc: Exception) -> None:
        """Records the problem of a value a parser refused."""
        if isinstance(exc, _Invalid):
            self.problem(keypath, exc.node or node, exc.message)
        else:
            self.problem(keypath, node, str(exc))

    def boolean(self, node: Node) -> bool:
        value = self.scalar(node)
        if not isinstance(value, bool):
            raise _Invalid(f"expected true or false, got {self.describe(node)}")
        return value

    # integer(low, high): an integer parser, made by _integer once per reader (see __init__).
    def _integer(self, low: Optional[int] = None, high: Optional[int] = None) -> Callable[[Node], int]:
        def parse(node: Node) -> int:
            value = self.scalar(node)
            if isinstance(value, bool) or not isinstance(value, int):
                raise _Invalid(f"expected an integer, got {self.describe(node)}")
            if low is not None and value < low:
                raise _Invalid(f"must be at least {low}, got {value}" if high is None
                               else f"must be in {low}..{high}, got {value}")
            if high is not None and value > high:
                raise _Invalid(f"must be in {low}..{high}, got {value}")
            return value
        return parse

    def string(self, node: Node) -> str:
        value = self.scalar(node)
        if not isinstance(value, str):
            raise _Invalid(f"expected a string, got {self.describe(node)}")
        if not value:
            raise _Invalid("must not be empty")
        return value

    def path_string(self, node: Node) -> str:
        value = self.string(node)
        return os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(value)))

    def existing_file(self, node: Node) -> str:
        path = self.path_string(node)
        if not os.path.isfile(path):
            raise _Invalid(f"file not found: {path}")
        return path

    # choice(choices): a parser of one of the words of a tuple, made by _choice once per reader.
    def _choice(self, choices: tuple[str, ...]) -> Callable[[Node], str]:

        def parse(node: Node) -> str:
            value = self.scalar(node)
            if not isinstance(value, str) or value not in choices:
                shown = repr(value) if isinstance(value, str) else self.describe(node)
                hint = _suggest(value, choices) if isinstance(value, str) else ""
                raise _Invalid(f"invalid value {shown}: expected one of {' | '.join(choices)}{hint}")
            return value
        return parse

    def duration(self, node: Node) -> float:
        return parse_duration(self.plain(node))

    def delay(self, node: Node) -> float:
        return parse_delay(self.plain(node))

    def address(self, node: Node) -> Address:
        return parse_address(self.plain(node))

    def server_address(self, node: Node) -> Address:
        # A large config names the same servers in backend after backend:
        # each text is parsed once (an Address is immutable, and shared).
        value = self.plain(node)
        address = self._server_addresses.get(value) if type(value) is str else None
        if address is None:
            address = parse_address(value, server=True)  # (raises for anything but a text)
            self._server_addresses[value] = address
        return address

    def plain(self, node: Node) -> Any:
        if isinstance(node, (MappingNode, SequenceNode)):
            raise _Invalid(f"expected a single value, got {self.describe(node)}")
        return self.scalar(node)

    # nullable(parse): `parse`, or None for a null value, made by _nullable once per reader.
    def _nullable(self, parse: Callable[[Node], Any]) -> Callable[[Node], Any]:
        def parse_or_null(node: Node) -> Any:
            return None if self.is_null(node) else parse(node)
        return parse_or_null

    def request_path(self, node: Node) -> str:
        value = self.string(node)
        if not value.startswith("/") or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
            raise _Invalid(f"invalid path {value!r} (must start with '/' and contain no spaces or control characters)")
        return value

    def header_value(self, node: Node) -> str:
        value = self.string(node)
        if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
            raise _Invalid(f"invalid value {value!r} (no spaces or control characters)")
        return value


# -- sections -----------------------------------------------------------------

_TOP_KEYS = ("global", "defaults", "stats", "frontends", "backends", "peers", "userlists")
_GLOBAL_KEYS = ("workers", "maxconn", "log", "pidfile", "state_file", "grace", "stop_delay", "user", "group",
                "chroot")
_LOG_KEYS = ("target", "format", "facility")
_DEFAULTS_KEYS = ("timeouts", "retries", "redispatch", "error_files")
_TIMEOUT_KEYS = tuple(Timeouts.__dataclass_fields__)
_STATS_KEYS = ("bind", "auth", "admin", "refresh", "socket", "metrics_bind", "tls")
_SOCKET_KEYS = ("path", "mode", "group", "level")
_AUTH_KEYS = ("user", "password")
_BIND_KEYS = ("address", "transparent", "tls", "interface")
_FRONTEND_KEYS = ("bind", "mode", "backend", "maxconn", "forwarded_for", "forwarded_proto", "forwarded_for_except",
                  "monitor_uri", "tls", "timeouts", "stick_table", "acls", "tcp_request",
                  "http_request", "http_response", "use_backend", "error_files")
_TLS_KEYS = ("cert", "key", "alpn", "min_version", "ciphers", "ciphersuites")
TLS_MIN_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_BACKEND_KEYS = ("mode", "balance", "maxconn", "health", "retries", "redispatch", "timeouts",
                 "servers", "on_marked_down", "stick_table", "stick_on", "cookie", "all_backups", "acls",
                 "http_request", "http_response", "hash", "pool_max_conn", "pool_purge_delay", "error_files")
_HEALTH_KEYS = ("type", "path", "method", "host", "expect_status", "interval", "timeout",
                "rise", "fall", "port", "initial_state", "headers", "user", "client", "steps")
_SERVER_KEYS = ("name", "address", "weight", "backup", "maxconn", "check", "send_proxy", "cookie", "disabled",
                "tls")
_NAME_AND_ADDRESS = frozenset(("name", "address"))  # see _Builder.plain_server
_SERVER_TLS_KEYS = ("verify", "ca", "crl", "verifyhost", "sni", "alpn", "min_version", "ciphers", "ciphersuites",
                    "traffic", "checks", "check_sni", "check_alpn")
SERVER_VERIFY = ("none", "required")
_STICK_TABLE_KEYS = ("type", "size", "expire", "peers", "store", "len")
_STICK_ON_KEYS = ("on", "match", "store", "table")
_COOKIE_KEYS = ("name", "mode", "indirect", "nocache", "preserve", "httponly", "secure", "domain")
_PEERS_KEYS = ("local", "nodes")
_PEER_NODE_KEYS = ("name", "address")
COOKIE_MODES = ("insert", "rewrite", "prefix", "passive")


_UNIQUE = object()  # a node too deep to compare: read on its own


def _fingerprint(node: Optional[Node], depth: int = 0) -> Any:
    """What a node says, as a hashable value: equal for two nodes written
    alike (tags and texts; not their lines), whatever file they came from."""
    if node is None:
        return None
    if isinstance(node, ScalarNode):
        return (node.tag, node.value)
    if depth > 8:
        return _UNIQUE  # (and an alias of a node inside itself ends here)
    parts = []
    for item in node.value:
        # (Scalars, most items, are read here rather than by a call each.)
        if isinstance(item, tuple):
            key, value = item
            key = (key.tag, key.value) if isinstance(key, ScalarNode) else _fingerprint(key, depth + 1)
            value = (value.tag, value.value) if isinstance(value, ScalarNode) else _fingerprint(value, depth + 1)
            if key is _UNIQUE or value is _UNIQUE:
                return _UNIQUE
            parts.append((key, value))
        else:
            value = (item.tag, item.value) if isinstance(item, ScalarNode) else _fingerprint(item, depth + 1)
            if value is _UNIQUE:
                return _UNIQUE
            parts.append(value)
    return (node.tag, type(node).__name__, tuple(parts))


@dataclass(frozen=True)
class _Defaults:
    """The defaults section: what every frontend and backend inherits."""

    timeouts: Timeouts = Timeouts()
    retries: int = 3
    redispatch: bool = True
    error_files: Mapping[int, Any] = field(default_factory=dict)


class _Builder:
    """Turns the checked node graph into specs; all problems end in reader."""

    def __init__(self, reader: _Reader):
        self.r = reader
        # port -> (address, keypath, node) of every listening address on it, for clashes.
        self.binds: dict[int, list[tuple[Address, str, Node]]] = {}
        self.rules = _RulesReader(reader)
        # (backend, keypath, node, StickOnSpec) checked once every table is known.
        self._stick_rules: list = []
        # keypath -> node of values checked against each other at the end.
        self._where: dict[str, Node] = {}
        self._health_seen: dict[tuple, HealthSpec] = {}  # see health()
        self._timeouts_seen: dict[tuple, Timeouts] = {}  # see timeouts()
        self._fingerprints: dict[int, Any] = {}  # see fingerprint()
        self._plain_servers: dict[tuple[str, str, Optional[int]], ServerSpec] = {}  # see plain_server()

    def fingerprint(self, node: Optional[Node]) -> Any:
        """_fingerprint(node), worked out once per node: a haproxy.cfg's
        tree gives every section the very node of its defaults' timeouts
        (for timeouts(); a health block is each backend's own). The graph,
        which holds every node, outlives the builder: no id is reused."""
        fingerprint = self._fingerprints.get(id(node), _NO_VALUE)
        if fingerprint is _NO_VALUE:
            fingerprint = self._fingerprints[id(node)] = _fingerprint(node)
        return fingerprint

    def config(self, root: MappingNode) -> Config:
        r = self.r
        top = r.mapping(root, "", _TOP_KEYS, required=("frontends",))
        global_ = self.global_(top.value("global"))
        defaults = self.defaults(top.value("defaults"))
        stats = self.stats(top.value("stats")) if "stats" in top else None
        peers = self.peers(top.value("peers"))
        userlists = self.rules.userlists(top.value("userlists"))
        backends = self.backends(top.value("backends"), defaults)
        frontends = self.frontends(top.value("frontends"), defaults, backends, "frontends" in top)
        config = Config(path=r.path, global_=global_, stats=stats, frontends=frontends, backends=backends,
                        peers=peers, userlists=userlists)
        self.check_stickiness(config)
        return config

    # global
    def global_(self, node: Optional[Node]) -> GlobalSpec:
        r = self.r
        m = r.mapping(node, "global", _GLOBAL_KEYS)
        default = GlobalSpec()
        spec = GlobalSpec(
            workers=r.get(m, "workers", self.workers, default.workers),
            maxconn=r.get(m, "maxconn", r.integer(1), default.maxconn),
            log=self.log(m.value("log") if m else None),
            pidfile=r.get(m, "pidfile", r.nullable(r.path_string)),
            state_file=r.get(m, "state_file", r.nullable(r.path_string)),
            grace=r.get(m, "grace", r.duration, default.grace),
            stop_delay=r.get(m, "stop_delay", r.delay, default.stop_delay),
            user=r.get(m, "user", r.nullable(self.user_name)),
            group=r.get(m, "group", r.nullable(self.group_name)),
            chroot=r.get(m, "chroot", r.nullable(self.chroot_dir)),
        )
        if spec.workers > 1:
            for key in ("user", "group", "chroot"):
                if getattr(spec, key) is not None:
                    r.problem(m.path(key), m.value(key),
                              "not supported yet with workers > 1 (run one worker, or drop it)")
        return spec

    def workers(self, node: Node) -> int:
        if self.r.scalar(node) == "auto":
            return os.cpu_count() or 1
        try:
            return self.r.integer(1)(node)
        except _Invalid as exc:
            raise _Invalid(exc.message.replace("expected an integer", "expected an integer or 'auto'")) from None

    def log(self, node: Optional[Node]) -> LogSpec:
        r = self.r
        m = r.mapping(node, "global.log", _LOG_KEYS)
        spec = LogSpec(format=r.get(m, "format", r.choice(LOG_FORMATS), LogSpec.format),
                       facility=r.get(m, "facility", r.choice(SYSLOG_FACILITIES), LogSpec.facility))
        if m is not None and "target" in m:
            target, syslog = r.get(m, "target", self.log_target, (LogSpec.target, None))
            spec = replace(spec, target=target, syslog=syslog)
            if target.startswith("unix:"):
                spec = replace(spec, syslog_socket=target[len("unix:"):])
        return spec

    def log_target(self, node: Node) -> tuple[str, Optional[Address]]:
        value = self.r.string(node)
        if value in ("stdout", "stderr"):
            return value, None
        if value.startswith("unix:"):
            # A unix datagram socket (/dev/log): it may appear later (a
            # container's bind mount), so it is not required to exist yet.
            if not value[len("unix:"):].startswith("/"):
                raise _Invalid(f"invalid log target {value!r} (expected 'unix:/absolute/path')")
            return value, None
        if value.startswith("udp://"):
            return value, parse_address(value[len("udp://"):], server=True)
        if "://" in value:
            raise _Invalid(f"unsupported log target {value!r} (syslog goes over udp: 'udp://host:port')")
        if _SYSLOG_LIKE.fullmatch(value):
            return value, parse_address(value, server=True)
        path = self.r.path_string(node)
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            raise _Invalid(f"log file directory not found: {directory}")
        return path, None

    # defaults
    def defaults(self, node: Optional[Node]) -> _Defaults:
        r = self.r
        m = r.mapping(node, "defaults", _DEFAULTS_KEYS)
        base = _Defaults()
        return _Defaults(
            timeouts=self.timeouts(m.value("timeouts") if m else None, "defaults.timeouts", base.timeouts),
            retries=r.get(m, "retries", r.integer(0), base.retries),
            redispatch=r.get(m, "redispatch", r.boolean, base.redispatch),
            error_files=self.error_files(m, {}),
        )

    def error_files(self, m: Optional[_Mapping], inherited: Mapping[int, Any]) -> Mapping[int, Any]:
        """error_files: {STATUS: PATH}, read and checked now (a reload reads
        them again). Each status replaces the inherited one of its code only,
        as HAProxy's errorfile over its defaults'."""
        r = self.r
        if m is None or "error_files" not in m:
            return inherited
        node, keypath = m.value("error_files"), m.path("error_files")
        if r.is_null(node):
            return {}
        if not isinstance(node, MappingNode):
            r.problem(keypath, node, f"expected a mapping of status codes to files, got {r.describe(node)}")
            return inherited
        rules = _rules()
        out = dict(inherited)
        for key_node, value_node in node.value:
            code = r.plain(key_node)
            item_path = _key(keypath, str(key_node.value))
            if isinstance(code, str) and code.isdigit():
                code = int(code)
            if code not in rules.answers.ERROR_FILE_CODES:
                r.problem(item_path, key_node, f"no error file for status {key_node.value!r} "
                          f"(one of {', '.join(map(str, rules.answers.ERROR_FILE_CODES))})")
                continue
            try:
                path = r.path_string(value_node)
                with open(path, "rb") as f:
                    data = f.read(rules.answers.MAX_ERROR_FILE + 1)
                out[code] = rules.answers.parse_error_file(data)
            except _Invalid as exc:
                r.problem(item_path, exc.node or value_node, exc.message)
            except OSError as exc:
                r.problem(item_path, value_node, f"cannot read error file {path}: {exc.strerror or exc}")
            except ValueError as exc:
                r.problem(item_path, value_node, f"error file {path}: {exc}")
        return out

    def timeouts(self, node: Optional[Node], keypath: str, inherited: Timeouts) -> Timeouts:
        """Per-key merge: setting one timeout keeps every other inherited
        one. A block written like one already read (a haproxy.cfg repeats
        its defaults' timeouts in every section) is not read again."""
        if node is None:
            return inherited
        key = (self.fingerprint(node), inherited)
        spec = self._timeouts_seen.get(key) if key[0] is not _UNIQUE else None
        if spec is None:
            before = len(self.r._problems)
            spec = self._timeouts(node, keypath, inherited)
            if key[0] is not _UNIQUE and len(self.r._problems) == before:
                self._timeouts_seen[key] = spec
        return spec

    def _timeouts(self, node: Node, keypath: str, inherited: Timeouts) -> Timeouts:
        m = self.r.mapping(node, keypath, _TIMEOUT_KEYS)
        if m is None:
            return inherited
        if not m.entries:
            return inherited  # (the usual case: a thousand backends would each copy it)
        changes = {key: self.r.get(m, key, self.r.duration, getattr(inherited, key)) for key in m.entries}
        return replace(inherited, **changes)

    # stats
    def stats(self, node: Optional[Node]) -> Optional[StatsSpec]:
        r = self.r
        if node is not None and r.is_null(node):
            return None
        m = r.mapping(node, "stats", _STATS_KEYS)
        if m is None:
            return None
        socket_spec = self.stats_socket(m.value("socket")) if "socket" in m else None
        if "bind" not in m and "metrics_bind" not in m and socket_spec is None \
                and "socket" not in r.bad_paths and "stats.socket" not in r.bad_paths:
            r.problem("stats.bind", node, "required key is missing (or give stats.socket or stats.metrics_bind alone)")
        bind = r.get(m, "bind", r.address)
        if bind is not None:
            self.add_bind(bind, m.path("bind"), m.value("bind"))
        metrics_binds = []
        if "metrics_bind" in m:
            node, keypath = m.value("metrics_bind"), m.path("metrics_bind")
            items = [(f"{keypath}[{i}]", item) for i, item in enumerate(node.value)] \
                if isinstance(node, SequenceNode) else [(keypath, node)]
            for item_path, item in items:
                address = r.parse(item, item_path, r.address)
                if address is not None:
                    self.add_bind(address, item_path, item)
                    metrics_binds.append(address)
        return StatsSpec(
            metrics_binds=tuple(metrics_binds),
            tls=self.tls(m.value("tls"), m.path("tls")) if "tls" in m else None,
            bind=bind,
            auth=self.auth(m.value("auth")) if "auth" in m else None,
            admin=r.get(m, "admin", r.boolean, StatsSpec.admin),
            refresh=r.get(m, "refresh", r.duration, StatsSpec.refresh),
            socket=socket_spec,
        )

    def stats_socket(self, node: Node) -> Optional[SocketSpec]:
        r = self.r
        if r.is_null(node):
            return None
        m = r.mapping(node, "stats.socket", _SOCKET_KEYS, required=("path",))
        if m is None:
            return None
        path = r.get(m, "path", r.string)
        if path is None:
            return None
        spec = SocketSpec(
            mode=r.get(m, "mode", self.file_mode, SocketSpec.mode),
            group=r.get(m, "group", r.nullable(self.group_name), None),
            level=r.get(m, "level", r.choice(SOCKET_LEVELS), SocketSpec.level),
        )
        if path.startswith("ipv4@"):
            address = r.parse(m.value("path"), m.path("path"), lambda n: parse_address(path[len("ipv4@"):]))
            if address is None:
                return None
            self.add_bind(address, m.path("path"), m.value("path"))
            return replace(spec, address=address)
        if path.startswith(("unix@", "/", ".")) or "@" not in path:
            path = path[len("unix@"):] if path.startswith("unix@") else path
            full = os.path.normpath(os.path.join(r.base_dir, os.path.expanduser(path)))
            return replace(spec, path=full)
        r.problem(m.path("path"), m.value("path"),
                  f"unsupported socket address {path!r}: use a unix socket path or 'ipv4@HOST:PORT'")
        return None

    def file_mode(self, node: Node) -> int:
        # The source text, not the YAML value: YAML 1.1 reads 0600 as octal
        # and 600 as decimal, and an operator means "0600" by both.
        self.r.plain(node)
        text = str(node.value)
        if not re.fullmatch(r"0?[0-7]{3}", text):
            raise _Invalid(f"expected an octal file mode like \"0600\", got {self.r.describe(node)}")
        return int(text, 8)

    def networks(self, node: Node) -> tuple[str, ...]:
        """One network or a list: "127.0.0.0/8", ["10.0.0.0/8", "::1"]."""
        items = node.value if isinstance(node, SequenceNode) else [node]
        out = []
        for item in items:
            text = self.r.string(item) if isinstance(item, ScalarNode) else None
            try:
                out.append(str(ipaddress.ip_network(text, strict=False)))
            except (TypeError, ValueError):
                raise _Invalid(f"expected a network like 127.0.0.0/8, got {self.r.describe(item)}", item) from None
        return tuple(out)

    def user_name(self, node: Node) -> str:
        import pwd
        value = self.r.plain(node)
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else self.r.string(node)
        try:
            pwd.getpwuid(int(text)) if text.isdigit() else pwd.getpwnam(text)
        except (KeyError, OverflowError):
            raise _Invalid(f"no such user {text!r}") from None
        return text

    def chroot_dir(self, node: Node) -> str:
        path = self.r.path_string(node)
        if not os.path.isdir(path):
            raise _Invalid(f"chroot directory not found: {path}")
        return path

    def group_name(self, node: Node) -> str:
        import grp
        value = self.r.plain(node)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        name = self.r.string(node)
        try:
            grp.getgrnam(name)
        except KeyError:
            raise _Invalid(f"no such group {name!r}") from None
        return name

    def auth(self, node: Node) -> Optional[tuple[str, str]]:
        r = self.r
        if r.is_null(node):
            return None
        m = r.mapping(node, "stats.auth", _AUTH_KEYS, required=_AUTH_KEYS)
        if m is None:
            return None
        user = r.get(m, "user", r.string, "")
        password = r.get(m, "password", r.string, "")
        if ":" in user:
            r.problem(m.path("user"), m.value("user"), "must not contain ':' (HTTP basic auth separator)")
        return (user, password)

    # frontends
    def frontends(self, node: Optional[Node], defaults: _Defaults,
                  backends: dict[str, BackendSpec], present: bool) -> dict[str, FrontendSpec]:
        r = self.r
        entries = r.named_mapping(node, "frontends")
        if present and not entries and "frontends" not in r.bad_paths:
            r.problem("frontends", node, "at least one frontend is required")
        return {name: self.frontend(name, value, defaults, backends) for name, (_, value) in entries.items()}

    def frontend(self, name: str, node: Node, defaults: _Defaults,
                 backends: dict[str, BackendSpec]) -> FrontendSpec:
        r = self.r
        keypath = _key("frontends", name)
        m = r.mapping(node, keypath, _FRONTEND_KEYS, required=("bind", "backend"))
        if m is None:
            return FrontendSpec(name=name, binds=(), mode="http", backend="")
        mode = r.get(m, "mode", r.choice(MODES), "http")
        backend = r.get(m, "backend", r.string, "")
        if backend and m.path("backend") not in r.bad_paths:
            target = backends.get(backend)
            if target is None:
                r.problem(m.path("backend"), m.value("backend"),
                          f"backend '{backend}' is not defined{_suggest(backend, backends)}")
            elif (target.mode != mode and m.path("mode") not in r.bad_paths
                  and _key(_key("backends", backend), "mode") not in r.bad_paths):
                where = m.key_node("mode") or m.value("backend")
                r.problem(m.path("mode") if "mode" in m else m.path("backend"), where,
                          f"frontend mode '{mode}' does not match backend '{backend}' mode '{target.mode}'")
        binds, transparent, interfaces = self.frontend_binds(m)
        error_files = self.error_files(m, defaults.error_files)
        return FrontendSpec(
            name=name,
            binds=binds,
            transparent=transparent,
            interfaces=interfaces,
            mode=mode,
            backend=backend,
            **r.read(m, self._frontend_fields),
            tls=self.tls(m.value("tls"), m.path("tls")) if "tls" in m else None,
            timeouts=self.timeouts(m.value("timeouts"), m.path("timeouts"), defaults.timeouts)
            if "timeouts" in m else defaults.timeouts,
            **self.features(m, name, mode, error_files, backends),
            error_files=error_files,
        )

    def features(self, m: _Mapping, name: str, mode: str, error_files: Mapping[int, Any],
                 backends: Optional[dict[str, BackendSpec]] = None) -> dict[str, Any]:
        """A section's rules and stick table, and a backend's (no `backends`)
        stick rules and cookie persistence: the fields of its spec they give.
        Most sections write none of their keys, and then each reader would
        give its spec's default: nothing is read."""
        if m.entries.keys().isdisjoint(_FEATURE_KEYS):
            return {}
        features = dict(self.rules.section(m, name, mode, backends, error_files),
                        stick_table=self.stick_table(name, m))
        if backends is None:
            features.update(stick_on=self.stick_on(name, m), cookie=self.cookie(m))
        return features

    @functools.cached_property
    def _frontend_fields(self) -> dict[str, Callable[[Node], Any]]:
        """How frontend() reads a frontend's plain keys, each defaulting to FrontendSpec's."""
        r = self.r
        return {
            "maxconn": r.integer(1),
            "forwarded_for": r.boolean,
            "forwarded_proto": r.boolean,
            "forwarded_for_except": self.networks,
            "monitor_uri": r.nullable(r.request_path),
        }

    def frontend_binds(self, m: _Mapping) -> tuple[tuple[Address, ...], frozenset, dict]:
        """The addresses, those of them bound `transparent`, and those bound
        to one interface. An entry is an address or a mapping {address,
        transparent, interface}."""
        r = self.r
        node = m.value("bind")
        if node is None:
            return (), frozenset(), {}
        keypath = m.path("bind")
        if isinstance(node, SequenceNode):
            items = [(f"{keypath}[{i}]", item) for i, item in enumerate(node.value)]
            if not items:
                r.problem(keypath, node, "at least one address is required")
        else:
            items = [(keypath, node)]
        binds, transparent, interfaces = [], set(), {}
        for item_path, item in items:
            if isinstance(item, MappingNode):
                entry = r.mapping(item, item_path, _BIND_KEYS, required=("address",))
                if entry is None:
                    continue
                if "tls" in entry:
                    r.problem(entry.path("tls"), entry.value("tls"),
                              "a TLS setting of its own per bind is not supported: set the frontend's tls")
                address = r.get(entry, "address", r.address)
                if address is not None and r.get(entry, "transparent", r.boolean, False):
                    transparent.add(address)
                interface = r.get(entry, "interface", r.nullable(self.interface_name))
                if address is not None and interface:
                    interfaces[address] = interface
                item_path = entry.path("address")
            else:
                address = r.parse(item, item_path, r.address)
            if address is not None:
                self.add_bind(address, item_path, item)
                binds.append(address)
        return tuple(binds), frozenset(transparent), interfaces

    def interface_name(self, node: Node) -> str:
        """A network interface name as the kernel takes it (IFNAMSIZ)."""
        value = self.r.plain(node)
        if not isinstance(value, str) or not 0 < len(value.encode()) < 16 \
                or any(c in value for c in "/: \t\0"):
            raise _Invalid(f"expected a network interface name like eth0 (1..15 bytes), got {self.r.describe(node)}")
        return value

    def add_bind(self, address: Address, keypath: str, node: Node) -> None:
        # Only binds on the same port can clash: look at those alone, so a
        # config of a thousand frontends is not checked pair by pair.
        same_port = self.binds.setdefault(address.port, [])
        for other, other_path, other_node in same_port:
            if other.port == address.port and (
                    other.host == address.host
                    or other.host in _WILDCARD_HOSTS or address.host in _WILDCARD_HOSTS):
                line = _line(other_node)
                self.r.problem(keypath, node, f"address {address} clashes with {other} bound by {other_path}"
                               + (f" (line {line})" if line else ""))
                return
        same_port.append((address, keypath, node))

    def tls(self, node: Node, keypath: str) -> Optional[TLSSpec]:
        r = self.r
        if r.is_null(node):
            return None
        m = r.mapping(node, keypath, _TLS_KEYS, required=("cert",))
        if m is None:
            return None
        return TLSSpec(
            cert=r.get(m, "cert", r.existing_file, ""),
            key=r.get(m, "key", r.nullable(r.existing_file)),
            alpn=r.get(m, "alpn", self.alpn, TLSSpec.alpn),
            min_version=r.get(m, "min_version", r.nullable(r.choice(TLS_MIN_VERSIONS))),
            ciphers=r.get(m, "ciphers", r.nullable(self.ciphers)),
            ciphersuites=r.get(m, "ciphersuites", r.nullable(self.ciphersuites)),
        )

    def ciphers(self, node: Node) -> str:
        import ssl
        value = self.r.string(node)
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).set_ciphers(value)
        except ssl.SSLError:
            raise _Invalid(f"no cipher in {value!r} is known to OpenSSL") from None
        return value

    def ciphersuites(self, node: Node) -> str:
        import ssl
        value = self.r.string(node)
        try:
            set_ciphersuites(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), value)
        except (ValueError, OSError, AttributeError) as exc:
            raise _Invalid(str(exc)) from None
        return value

    def alpn(self, node: Node) -> tuple[str, ...]:
        r = self.r
        items = node.value if isinstance(node, SequenceNode) else [node]
        if not items:
            raise _Invalid("at least one protocol is required, e.g. [http/1.1]")
        protocols = []
        for item in items:
            value = r.string(item) if isinstance(item, ScalarNode) else None
            if value is None or len(value.encode()) > 255:
                raise _Invalid("expected protocol names like http/1.1 (each 1..255 bytes)", item)
            protocols.append(value)
        return tuple(protocols)

    # backends
    def backends(self, node: Optional[Node], defaults: _Defaults) -> dict[str, BackendSpec]:
        entries = self.r.named_mapping(node, "backends")
        return {name: self.backend(name, value, defaults) for name, (_, value) in entries.items()}

    def backend(self, name: str, node: Node, defaults: _Defaults) -> BackendSpec:
        r = self.r
        keypath = _key("backends", name)
        m = r.mapping(node, keypath, _BACKEND_KEYS)
        if m is None:
            r.bad_paths.add(_key(keypath, "mode"))
            return BackendSpec(name=name)
        timeouts = self.timeouts(m.value("timeouts"), m.path("timeouts"), defaults.timeouts) \
            if "timeouts" in m else defaults.timeouts
        maxconn = r.get(m, "maxconn", r.nullable(r.integer(1)))
        mode = r.get(m, "mode", r.choice(MODES), BackendSpec.mode)
        algorithm = r.get(m, "balance", self.balance, BackendSpec.balance)
        if mode == "tcp" and balance_parse(algorithm)[0] in REQUEST_HASHES:
            r.problem(m.path("balance"), m.value("balance"),
                      f"balance {algorithm} hashes a part of the HTTP request: it needs mode http")
        health = self.health(m.value("health"), m.path("health"), timeouts)
        servers = self.servers(m.value("servers"), m.path("servers"), maxconn, health)
        if mode == "http":
            self.check_server_alpn(servers, m)
        error_files = self.error_files(m, defaults.error_files)
        return BackendSpec(
            name=name,
            mode=mode,
            balance=algorithm,
            maxconn=maxconn,
            health=health,
            timeouts=timeouts,
            servers=servers,
            **r.read(m, self._backend_fields, retries=defaults.retries, redispatch=defaults.redispatch),
            **self.features(m, name, mode, error_files),
            error_files=error_files,
        )

    @functools.cached_property
    def _backend_fields(self) -> dict[str, Callable[[Node], Any]]:
        """How backend() reads a backend's plain keys (BackendSpec's defaults,
        but retries and redispatch: the defaults section's)."""
        r = self.r
        return {
            "hash": r.choice(HASH_TYPES),
            "pool_max_conn": r.nullable(r.integer(0)),
            "pool_purge_delay": r.duration,
            "retries": r.integer(0),
            "redispatch": r.boolean,
            "on_marked_down": r.nullable(r.choice(ON_MARKED_DOWN)),
            "all_backups": r.boolean,
        }

    def balance(self, node: Node) -> str:
        """`roundrobin`, `hdr(X-Tenant)`...: kept as written, checked here."""
        value = self.r.scalar(node)
        if not isinstance(value, str):
            raise _Invalid(f"expected an algorithm name, not {self.r.describe(node)}")
        try:
            balance_parse(value)
        except ValueError as exc:
            raise _Invalid(f"{exc}{_suggest(value, BALANCE_NAMES)}") from None
        return value.strip()

    def health(self, node: Optional[Node], keypath: str, timeouts: Timeouts) -> HealthSpec:
        """A backend's health spec. Large configs repeat the same health
        block in every backend: one written like one already read (and
        found valid) is that spec again, not read a second time."""
        key = (_fingerprint(node), timeouts.check)
        spec = self._health_seen.get(key) if key[0] is not _UNIQUE else None
        if spec is None:
            before = len(self.r._problems)
            spec = self._health(node, keypath, timeouts)
            if key[0] is not _UNIQUE and len(self.r._problems) == before:
                self._health_seen[key] = spec
        return spec

    def _health(self, node: Optional[Node], keypath: str, timeouts: Timeouts) -> HealthSpec:
        r = self.r
        m = r.mapping(node, keypath, _HEALTH_KEYS)
        d = HealthSpec
        spec = HealthSpec(
            type=r.get(m, "type", r.choice(HEALTH_TYPES), d.type),
            path=r.get(m, "path", r.request_path, d.path),
            method=r.get(m, "method", r.choice(HEALTH_METHODS), d.method),
            host=r.get(m, "host", r.nullable(r.header_value)),
            expect_status=self.expect_status(m, d.expect_status),
            interval=r.get(m, "interval", r.duration, d.interval),
            # The probe timeout falls back to timeouts.check (defaults, then
            # the backend's own), HAProxy's "timeout check".
            timeout=r.get(m, "timeout", r.duration, timeouts.check),
            rise=r.get(m, "rise", r.integer(1), d.rise),
            fall=r.get(m, "fall", r.integer(1), d.fall),
            port=r.get(m, "port", r.nullable(r.integer(1, 65535))),
            initial_state=r.get(m, "initial_state", r.choice(INITIAL_STATES), d.initial_state),
            headers=r.get(m, "headers", self.probe_headers, ()),
            user=r.get(m, "user", r.nullable(self.mysql_user)),
            client=r.get(m, "client", r.choice(MYSQL_CLIENTS), d.client),
            steps=r.get(m, "steps", self.probe_steps, ()),
        )
        if m is not None and spec.type != "mysql":
            for key in ("user", "client"):
                if key in m:
                    r.problem(m.path(key), m.value(key), f"{key} is for type mysql (type is {spec.type})")
        if m is not None and spec.type != "tcp" and spec.steps:
            r.problem(m.path("steps"), m.value("steps"), f"steps are for type tcp (type is {spec.type})")
        return spec

    def probe_steps(self, node: Node) -> tuple[tuple[str, str], ...]:
        """health.steps: [{send: TEXT} | {expect: TEXT} | {expect_regex: RE}, ...]."""
        r = self.r
        if r.is_null(node):
            return ()
        if not isinstance(node, SequenceNode):
            raise _Invalid(f"expected a list of {{send|expect|expect_regex: text}}, got {r.describe(node)}")
        steps = []
        for item in node.value:
            if not isinstance(item, MappingNode) or len(item.value) != 1:
                raise _Invalid("each step is one of {send: TEXT}, {expect: TEXT}, {expect_regex: RE}", item)
            key_node, value_node = item.value[0]
            kind, value = str(key_node.value), r.plain(value_node)
            if kind not in PROBE_STEPS or not isinstance(value, str) or not value:
                raise _Invalid(f"expected send, expect or expect_regex with a text, got {kind!r}", item)
            if kind == "expect_regex":
                try:
                    re.compile(value.encode("utf-8"))
                except re.error as exc:
                    raise _Invalid(f"invalid regular expression {value!r}: {exc}", value_node) from None
            steps.append((kind, value))
        return tuple(steps)

    def mysql_user(self, node: Node) -> str:
        """health.user: sent NUL-terminated in the login packet, so it cannot
        hold a NUL; MySQL user names are at most 80 characters (MariaDB)."""
        value = self.r.plain(node)
        if not isinstance(value, str) or not value or "\0" in value or len(value.encode()) > 80:
            raise _Invalid(f"expected a MySQL user name (1..80 bytes, no NUL), got {self.r.describe(node)}")
        return value

    def probe_headers(self, node: Node) -> tuple[tuple[str, str], ...]:
        """health.headers: {Name: value}; no Host (health.host) and nothing
        that would break the request line apart."""
        r = self.r
        if r.is_null(node):
            return ()
        if not isinstance(node, MappingNode):
            raise _Invalid(f"expected a mapping of header names to values, got {r.describe(node)}")
        out = []
        for key_node, value_node in node.value:
            name = str(key_node.value)
            value = r.plain(value_node)
            value = "" if value is None else str(value)
            if not _TOKEN.fullmatch(name):
                raise _Invalid(f"invalid header name {name!r}", key_node)
            if name.lower() in ("host", "connection", "content-length", "transfer-encoding"):
                raise _Invalid(f"header {name!r} is set by lbcore (use health.host for Host)", key_node)
            if any(c in value for c in "\r\n\0"):
                raise _Invalid(f"header {name!r}: the value holds a line break", value_node)
            out.append((name, value))
        return tuple(out)

    def expect_status(self, m: Optional[_Mapping], default: frozenset[int]) -> frozenset[int]:
        r = self.r
        if m is None or "expect_status" not in m:
            return default
        node, keypath = m.value("expect_status"), m.path("expect_status")
        if not isinstance(node, SequenceNode):
            return frozenset(r.parse(node, keypath, self.status_codes, default))
        if not node.value:
            r.problem(keypath, node, "at least one status code is required")
        codes: set[int] = set()
        for index, item in enumerate(node.value):
            codes |= r.parse(item, f"{keypath}[{index}]", self.status_codes, set())
        return frozenset(codes or default)

    def status_codes(self, node: Node) -> set[int]:
        value = self.r.plain(node)
        if isinstance(value, str):
            match = _STATUS_CLASS.fullmatch(value)
            if not match:
                raise _Invalid(f"invalid status {value!r} (expected a code like 200 or a class like '2xx')", node)
            first = int(match.group(1)) * 100
            return set(range(first, first + 100))
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"expected a status code like 200 or a class like '2xx', got {self.r.describe(node)}", node)
        if not 100 <= value <= 599:
            raise _Invalid(f"status code must be in 100..599, got {value}", node)
        return {value}

    def servers(self, node: Optional[Node], keypath: str, maxconn: Optional[int],
                health: HealthSpec = HealthSpec()) -> tuple[ServerSpec, ...]:
        r = self.r
        if node is None or r.is_null(node):
            return ()
        if not isinstance(node, SequenceNode):
            r.problem(keypath, node, f"expected a list of servers, got {r.describe(node)}")
            return ()
        servers = []
        seen: dict[str, tuple[int, Node]] = {}  # name -> (index, name node) of its first server
        for index, item in enumerate(node.value):
            server, name_node = self.server(item, keypath, index, maxconn, health)
            if server is None:
                continue
            if server.name in seen:
                first, first_node = seen[server.name]
                line = _line(first_node)
                r.problem(f"{keypath}[{index}].name", name_node,
                          f"duplicate server name '{server.name}' (first at {keypath}[{first}]"
                          + (f", line {line})" if line else ")"))
            elif server.name:
                seen[server.name] = (index, name_node)
            servers.append(server)
        return tuple(servers)

    def server(self, node: Node, servers_path: str, index: int, maxconn: Optional[int],
               health: HealthSpec = HealthSpec()) -> tuple[Optional[ServerSpec], Optional[Node]]:
        """The spec of servers[index] and its name node (for duplicate reports)."""
        r = self.r
        if isinstance(node, MappingNode):
            plain = self.plain_server(node, maxconn)
            if plain is not None:
                return plain
        keypath = f"{servers_path}[{index}]"
        if not isinstance(node, MappingNode):
            r.problem(keypath, node, f"expected a server mapping with name and address, got {r.describe(node)}")
            return None, None
        m = r.mapping(node, keypath, _SERVER_KEYS, required=("name", "address"))
        name = r.get(m, "name", r.string, "")
        if name and not r.check_name(name, m.keypath, "name", m.value("name")):
            name = ""
        server_maxconn = r.get(m, "maxconn", r.nullable(r.integer(1)))
        spec = ServerSpec(
            name=name,
            address=r.get(m, "address", r.server_address, Address("", 0)),
            maxconn=server_maxconn if server_maxconn is not None else maxconn,
            **r.read(m, self._server_fields),
            tls=self.server_tls(m.value("tls"), m.path("tls"), health) if "tls" in m else None,
        )
        if "cookie" in m:  # for check_stickiness's duplicate values
            self._where[m.path("cookie")] = m.value("cookie")
        return spec, m.value("name")


    def plain_server(self, node: MappingNode, maxconn: Optional[int]) -> Optional[tuple[ServerSpec, Node]]:
        """What server() gives for the usual server, {name: NAME, address:
        HOST:PORT} and nothing more, both valid: every other key is absent
        (its default; the backend's maxconn), so the spec is made straight
        from the two texts, once for each name, address and maxconn (a
        large config lists the same servers in backend after backend; a
        spec is immutable). None for any other server, which server()
        reads in full, and reports."""
        entries = _known_entries(node, _NAME_AND_ADDRESS)
        if entries is None or len(entries) != 2:
            return None
        name_node, address_node = entries["name"][1], entries["address"][1]
        try:
            name, address = self.r.scalar(name_node), self.r.scalar(address_node)
        except _Invalid:
            return None
        if type(name) is not str or type(address) is not str:
            return None
        spec = self._plain_servers.get((name, address, maxconn))
        if spec is None:
            if not _NAME.fullmatch(name):
                return None
            try:
                spec = ServerSpec(name=name, address=self.r.server_address(address_node), maxconn=maxconn)
            except ValueError:
                return None
            self._plain_servers[name, address, maxconn] = spec
        return spec, name_node

    @functools.cached_property
    def _server_fields(self) -> dict[str, Callable[[Node], Any]]:
        """How server() reads a server's other keys, each defaulting to ServerSpec's."""
        r = self.r
        return {
            "weight": r.integer(0, MAX_WEIGHT),
            "backup": r.boolean,
            "check": r.boolean,
            "send_proxy": r.nullable(r.choice(SEND_PROXY)),
            "cookie": r.nullable(self.cookie_value),
            "disabled": r.boolean,
        }

    def server_tls(self, node: Node, keypath: str, health: HealthSpec) -> Optional[ServerTLSSpec]:
        r = self.r
        if r.is_null(node):
            return None
        m = r.mapping(node, keypath, _SERVER_TLS_KEYS)
        if m is None:
            return None
        before = len(r.problems)
        verify = r.get(m, "verify", r.choice(SERVER_VERIFY), ServerTLSSpec.verify)
        traffic = r.get(m, "traffic", r.boolean, ServerTLSSpec.traffic)
        spec = ServerTLSSpec(
            verify=verify,
            ca=r.get(m, "ca", r.nullable(self.ca_file)),
            crl=r.get(m, "crl", r.nullable(r.existing_file)),
            verifyhost=r.get(m, "verifyhost", r.nullable(self.tls_name)),
            sni=r.get(m, "sni", r.nullable(self.tls_name)),
            alpn=r.get(m, "alpn", self.alpn, ()),
            min_version=r.get(m, "min_version", r.nullable(r.choice(TLS_MIN_VERSIONS))),
            ciphers=r.get(m, "ciphers", r.nullable(self.ciphers)),
            ciphersuites=r.get(m, "ciphersuites", r.nullable(self.ciphersuites)),
            traffic=traffic,
            # HAProxy: a TLS server's checks use TLS unless they go to another port.
            checks=r.get(m, "checks", r.boolean, traffic and health.port is None),
            check_sni=r.get(m, "check_sni", r.nullable(self.tls_name)),
            check_alpn=r.get(m, "check_alpn", self.alpn, ()),
        )
        if not spec.traffic and not spec.checks:
            r.problem(m.path("checks") if "checks" in m else keypath, node,
                      "TLS is used for neither traffic nor checks: set traffic or checks, or drop tls")
        if spec.verify == "required" and spec.ca is None and m.path("ca") not in r.bad_paths \
                and len(r.problems) == before:
            # HAProxy refuses this too: verifying against nothing would fail every handshake.
            r.problem(m.path("verify") if "verify" in m else keypath, m.value("verify") or node,
                      "verify is required (the default) but no CA is given: set ca "
                      "(a PEM file, or @system-ca), or verify: none")
        if len(r.problems) == before:
            # Build the context once now, so that a file OpenSSL cannot use
            # is reported here (the CA alone first, to name the right key).
            from .server_tls import ServerTLS
            for key, trial in (("ca", replace(spec, crl=None)), ("crl", spec)):
                try:
                    ServerTLS(trial)
                except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                    r.problem(m.path(key) if key in m else keypath, m.value(key) or node,
                              f"cannot use this file: {exc}")
                    break
                if spec.crl is None:
                    break
        return spec

    def check_server_alpn(self, servers: tuple[ServerSpec, ...], m: _Mapping) -> None:
        """http mode speaks HTTP/1.1 to servers: ALPN may offer nothing else."""
        for index, server in enumerate(servers):
            tls = server.tls
            if tls is None:
                continue
            for key in ("alpn", "check_alpn"):
                other = [p for p in getattr(tls, key) if p != "http/1.1"]
                if other:
                    keypath = f"{m.path('servers')}[{index}].tls.{key}"
                    self.r.problem(keypath, m.value("servers"),
                                   f"lbcore speaks HTTP/1.1 to servers in http mode: cannot offer {', '.join(other)}")

    def ca_file(self, node: Node) -> str:
        from .server_tls import SYSTEM_CA
        if self.r.scalar(node) == SYSTEM_CA:
            return SYSTEM_CA
        path = self.r.existing_file(node)
        if not os.access(path, os.R_OK):
            raise _Invalid(f"file not readable: {path}")
        return path

    def tls_name(self, node: Node) -> str:
        value = self.r.string(node)
        if not re.fullmatch(r"[A-Za-z0-9*]([A-Za-z0-9_.*-]{0,252})", value) or ".." in value:
            raise _Invalid(f"invalid host name {value!r}")
        return value

    # stick tables, persistence, peers
    def stick_table(self, section: str, m: _Mapping) -> Optional[StickTableSpec]:
        r = self.r
        node = m.value("stick_table")
        if node is None or r.is_null(node):
            return None
        t = r.mapping(node, m.path("stick_table"), _STICK_TABLE_KEYS, required=("type", "size"))
        if t is None:
            return None
        self._where[t.path("peers")] = t.value("peers")
        table_type = r.get(t, "type", r.choice(stick.TABLE_TYPES), "ip")
        length = r.get(t, "len", r.integer(1, 1024), stick.STRING_KEY_LEN)
        if "len" in t and table_type != "string":
            r.problem(t.path("len"), t.value("len"), "only a string table takes a key length")
        expire = r.get(t, "expire", r.nullable(r.duration))
        if expire is not None and expire > _MAX_EXPIRE:
            r.problem(t.path("expire"), t.value("expire"), "must be at most 24d (HAProxy's limit)")
        return StickTableSpec(
            name=section,
            type=table_type,
            size=r.get(t, "size", self.table_size, 1),
            expire=expire,
            length=length,
            peers=r.get(t, "peers", r.nullable(r.string)),
            store=self.table_store(t),
        )

    def table_size(self, node: Node) -> int:
        # "100k" = 102400 entries: HAProxy's sizes count in powers of 1024.
        value = self.r.plain(node)
        if isinstance(value, str):
            match = re.fullmatch(r"([0-9]+)\s*([kmgKMG])?", value.strip())
            if not match:
                raise _Invalid(f"invalid size {value!r} (expected a number of entries, or with k, m or g, e.g. '100k')")
            unit = (match.group(2) or "").lower()
            size = int(match.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]
        elif isinstance(value, int) and not isinstance(value, bool):
            size = value
        else:
            raise _Invalid(f"expected a number of entries like 1000 or '100k', got {self.r.describe(node)}")
        if size < 1:
            raise _Invalid(f"size must be at least 1, got {value!r}")
        return size

    def table_store(self, t: _Mapping) -> tuple[tuple[str, Optional[int]], ...]:
        r = self.r
        node = t.value("store")
        if node is None or r.is_null(node):
            return ()
        keypath = t.path("store")
        if isinstance(node, SequenceNode):
            items = [(f"{keypath}[{i}]", item) for i, item in enumerate(node.value)]
        else:
            # HAProxy's comma-separated form: "conn_cur,http_req_rate(10s)"
            text = r.parse(node, keypath, r.string, "")
            items = [(keypath, part) for part in _split_store(text)] if text else []
        store: dict[str, tuple[Optional[int], str]] = {}
        for item_path, item in items:
            text = item if isinstance(item, str) else r.parse(item, item_path, r.string, None)
            if text is None:
                continue
            try:
                name, period = stick.parse_store(text, parse_duration)
            except ValueError as exc:
                r.problem(item_path, item if isinstance(item, Node) else node, str(exc))
                continue
            if name in store:
                r.problem(item_path, item if isinstance(item, Node) else node, f"data type '{name}' stored twice")
                continue
            store[name] = (period, item_path)
        return tuple((name, period) for name, (period, _) in store.items())

    def stick_on(self, backend: str, m: _Mapping) -> tuple[StickOnSpec, ...]:
        r = self.r
        node = m.value("stick_on")
        if node is None or r.is_null(node):
            return ()
        keypath = m.path("stick_on")
        self._where[keypath] = node
        items = ([(f"{keypath}[{i}]", item) for i, item in enumerate(node.value)]
                 if isinstance(node, SequenceNode) else [(keypath, node)])
        rules = []
        for item_path, item in items:
            if isinstance(item, MappingNode):
                s = r.mapping(item, item_path, _STICK_ON_KEYS, required=("on",))
                sample = r.get(s, "on", self.sample_text, "")
                rule = StickOnSpec(
                    sample=sample,
                    table=r.get(s, "table", r.string, backend),
                    match=r.get(s, "match", r.boolean, True),
                    store=r.get(s, "store", r.boolean, True),
                )
                if not rule.match and not rule.store:
                    r.problem(item_path, item, "a rule that neither matches nor stores does nothing")
            else:
                sample = r.parse(item, item_path, self.sample_text, "")
                rule = StickOnSpec(sample=sample, table=backend)
            if sample:
                rules.append((item_path, item, rule))
        self._stick_rules.extend((backend, p, n, rule) for p, n, rule in rules)
        return tuple(rule for _, _, rule in rules)

    def sample_text(self, node: Node) -> str:
        value = self.r.string(node).strip()
        if not _SAMPLE.fullmatch(value):
            raise _Invalid(f"invalid sample {value!r} (expected src, dst or a fetch like req.hdr(x-user))")
        return value

    def cookie_value(self, node: Node) -> str:
        value = self.r.plain(node)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value or not _COOKIE_VALUE.fullmatch(value):
            raise _Invalid(f"invalid cookie value {value!r} (letters, digits and !#$%&'*+-.^_`|~ only)")
        return value

    def cookie(self, m: _Mapping) -> Optional[CookieSpec]:
        r = self.r
        node = m.value("cookie")
        if node is None or r.is_null(node):
            return None
        keypath = m.path("cookie")
        self._where[keypath] = node
        if isinstance(node, ScalarNode):
            # `cookie: SERVERID`: the name alone, inserted by lbcore.
            name = r.parse(node, keypath, self.cookie_value, None)
            return CookieSpec(name=name) if name else None
        c = r.mapping(node, keypath, _COOKIE_KEYS, required=("name",))
        if c is None:
            return None
        d = CookieSpec
        domain = r.get(c, "domain", self.domains, ())
        spec = CookieSpec(
            name=r.get(c, "name", self.cookie_value, "SERVERID"),
            mode=r.get(c, "mode", r.choice(COOKIE_MODES), d.mode),
            indirect=r.get(c, "indirect", r.boolean, d.indirect),
            nocache=r.get(c, "nocache", r.boolean, d.nocache),
            preserve=r.get(c, "preserve", r.boolean, d.preserve),
            httponly=r.get(c, "httponly", r.boolean, d.httponly),
            secure=r.get(c, "secure", r.boolean, d.secure),
            domain=domain,
        )
        if spec.preserve and spec.mode != "insert":
            r.problem(c.path("preserve"), c.value("preserve"), "preserve applies to insert mode only")
        return spec

    def domains(self, node: Node) -> tuple[str, ...]:
        items = node.value if isinstance(node, SequenceNode) else [node]
        out = []
        for item in items:
            value = self.r.string(item) if isinstance(item, ScalarNode) else None
            if value is None or not re.fullmatch(r"\.?[A-Za-z0-9.-]+", value):
                raise _Invalid("expected a domain like .example.com, or a list of them", item)
            out.append(value)
        return tuple(out)

    def peers(self, node: Optional[Node]) -> dict[str, PeersSpec]:
        r = self.r
        entries = r.named_mapping(node, "peers")
        sections = {}
        for name, (_, value) in entries.items():
            keypath = _key("peers", name)
            p = r.mapping(value, keypath, _PEERS_KEYS, required=("local", "nodes"))
            if p is None:
                continue
            local = r.get(p, "local", r.string, "")
            nodes = []
            seen: set[str] = set()
            nodes_node = p.value("nodes")
            if nodes_node is not None and not isinstance(nodes_node, SequenceNode):
                r.problem(p.path("nodes"), nodes_node, f"expected a list of nodes, got {r.describe(nodes_node)}")
            elif nodes_node is not None:
                for i, item in enumerate(nodes_node.value):
                    item_path = f"{p.path('nodes')}[{i}]"
                    n = r.mapping(item, item_path, _PEER_NODE_KEYS, required=("name", "address"))
                    if n is None:
                        continue
                    node_name = r.get(n, "name", r.string, "")
                    address = r.get(n, "address", r.server_address)
                    if node_name in seen:
                        r.problem(_key(item_path, "name"), n.value("name"), f"duplicate peer name '{node_name}'")
                        continue
                    if node_name and address is not None:
                        seen.add(node_name)
                        nodes.append((node_name, address))
            if local and p.path("local") not in r.bad_paths and p.path("nodes") not in r.bad_paths \
                    and local not in seen:
                r.problem(p.path("local"), p.value("local"),
                          f"'{local}' is not one of the nodes{_suggest(local, seen)}")
            for node_name, address in nodes:
                if node_name == local:
                    self.add_bind(address, p.path("nodes"), nodes_node)
            sections[name] = PeersSpec(name=name, local=local, nodes=tuple(nodes))
        return sections

    def check_stickiness(self, config: Config) -> None:
        """Cross-references: a stick rule's table exists; a table's peers
        section exists; tcp mode sticks on L4 samples; cookie values are unique."""
        r = self.r
        tables = config.stick_tables()
        for section_kind, sections in (("frontends", config.frontends), ("backends", config.backends)):
            for name, spec in sections.items():
                table = spec.stick_table
                if table is not None and table.peers and table.peers not in config.peers:
                    where = f"{section_kind}.{name}.stick_table.peers"
                    r.problem(where, self._where.get(where),
                              f"peers section '{table.peers}' is not defined{_suggest(table.peers, config.peers)}")
        seen_refs = set()
        for table, where, section in self.rules.tracking_refs():
            if table in tables or (table, where, section) in seen_refs:
                continue
            seen_refs.add((table, where, section))
            kind = "frontends" if section in config.frontends else "backends"
            own = " (this section has no stick_table; add one or name a table)" if table == section else ""
            r.problem(f"{kind}.{section}.{where}", None,
                      f"stick table '{table}' is not defined{own}{_suggest(table, tables)}")
        for backend, keypath, node, rule in self._stick_rules:
            if rule.table not in tables:
                if rule.table == backend:
                    r.problem(keypath, node, f"backend '{backend}' has no stick_table to stick on "
                                             "(add stick_table, or name a table with {on: ..., table: NAME})")
                else:
                    r.problem(keypath, node, f"stick table '{rule.table}' is not defined"
                                             f"{_suggest(rule.table, tables)}")
        for name, backend in config.backends.items():
            for rule in backend.stick_on:
                if rule.sample in _L4_SAMPLES:
                    continue
                where = f"backends.{name}.stick_on"
                if backend.mode == "tcp":
                    r.problem(where, self._where.get(where),
                              f"tcp mode sticks on src or dst, not '{rule.sample}'")
                    continue
                rules = _rules()
                try:
                    ctx = rules.context("http_request", r.base_dir, {}, self.rules.files, name)
                    rules.compile_sample(rule.sample, ctx)
                except rules.RuleError as exc:
                    r.problem(where, self._where.get(where), f"{rule.sample}: {exc}")
            if backend.cookie is not None and backend.mode != "http":
                r.problem(f"backends.{name}.cookie", self._where.get(f"backends.{name}.cookie"),
                          "cookie persistence needs http mode")
            values: dict[str, str] = {}
            for i, server in enumerate(backend.servers):
                if server.cookie is None:
                    continue
                if server.cookie in values:
                    where = f"backends.{name}.servers[{i}].cookie"
                    r.problem(where, self._where.get(where),
                              f"cookie value '{server.cookie}' is also server '{values[server.cookie]}'s")
                values[server.cookie] = server.name


def _split_store(text: str) -> list[str]:
    """Splits "a,b(10s),c" at the commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


# A section's keys that _RulesReader.section() reads.
_RULE_KEYS = ("acls", "tcp_request", "http_request", "http_response", "use_backend")
# And those of every reader _Builder.features() asks.
_FEATURE_KEYS = frozenset(_RULE_KEYS + ("stick_table", "stick_on", "cookie"))


class _RulesReader:
    """acls, tcp_request, http_request, http_response, use_backend and
    userlists: every expression compiled once here (lbcore/rules), every
    error reported at its key path (`frontends.api.http_request[2].if`)."""

    USER_KEYS = ("user", "password", "insecure_password")

    def __init__(self, reader: _Reader):
        self.r = reader
        self.files: dict = {}  # map and pattern files, read once per load
        self.lists: dict = {}

    def tracking_refs(self) -> list:
        """(table, where, section) of every stick table a track_sc rule named."""
        if not self.files:
            return []  # no rule read (lbcore.tracking not even imported)
        from . import tracking
        return self.files.get(tracking.REFS_KEY, [])

    def plain_value(self, node: Node) -> Any:
        try:
            return self.r._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise _Invalid(f"unsupported YAML value ({getattr(exc, 'problem', None) or exc})", node) from None

    # userlists
    def userlists(self, node: Optional[Node]) -> dict:
        r = self.r
        out = {}
        for name, (_, value) in r.named_mapping(node, "userlists").items():
            rules = _rules()
            keypath = _key("userlists", name)
            if not isinstance(value, SequenceNode):
                r.problem(keypath, value, f"expected a list of users, got {r.describe(value)}")
                continue
            users: dict = {}
            for index, item in enumerate(value.value):
                item_path = f"{keypath}[{index}]"
                m = r.mapping(item, item_path, self.USER_KEYS, required=("user",))
                if m is None:
                    continue
                user = r.get(m, "user", r.string, "")
                if ":" in user:
                    r.problem(m.path("user"), m.value("user"), "must not contain ':' (HTTP basic auth separator)")
                secrets = [key for key in ("password", "insecure_password") if key in m]
                if len(secrets) != 1:
                    r.problem(item_path, item, "give exactly one of password (a crypt(3) hash) "
                                               "or insecure_password")
                    continue
                secret = r.get(m, secrets[0], r.string, None)
                if secret is None or not user:
                    continue
                if secrets[0] == "password":
                    try:
                        rules.auth.check_hash(secret)
                    except rules.RuleError as exc:
                        r.problem(m.path("password"), m.value("password"), str(exc))
                        continue
                if user.encode() in users:
                    r.problem(m.path("user"), m.value("user"), f"duplicate user '{user}'")
                users[user.encode()] = (secrets[0] == "password", secret.encode())
            out[name] = rules.auth.Userlist(name, users)
        self.lists = out
        return out

    # a frontend's or backend's rules
    def section(self, m: Optional[_Mapping], name: str, mode: str,
                backends: Optional[dict] = None, error_files: Optional[Mapping] = None) -> dict:
        """The rule fields of a FrontendSpec (backends given) or BackendSpec.
        `error_files` replace HAProxy's pages in the section's deny answers."""
        if m is None:
            return {}
        if m.entries.keys().isdisjoint(_RULE_KEYS):
            return {"acls": ()}  # what the reading below gives: no rules module needed
        rules = _rules()
        r = self.r
        ctx = rules.context("http_request", r.base_dir, self.lists, self.files, name)
        acls, broken = self.acls(m, ctx)
        fields: dict = {"acls": tuple(acls.texts.items())}
        names = ("tcp_request", "http_request", "http_response") if backends is not None \
            else ("http_request", "http_response")
        for list_name in names:
            if list_name not in m:
                continue
            if mode != "http" and list_name != "tcp_request":
                r.problem(m.path(list_name), m.key_node(list_name),
                          f"{list_name} rules need mode http (this section is mode {mode})")
                continue
            list_ctx = rules.context(list_name, r.base_dir, self.lists, self.files, name)
            list_ctx.error_files = error_files or {}
            fields[list_name] = self.rule_list(m.value(list_name), m.path(list_name), list_name,
                                               acls, broken, list_ctx)
        if backends is not None and "use_backend" in m:
            phase = rules.REQ if mode == "http" else rules.L4
            switch_ctx = rules.context("http_request", r.base_dir, self.lists, self.files, name, phase)
            if mode != "http":
                switch_ctx.where = "tcp mode use_backend"
            fields["use_backend"] = self.use_backend(m.value("use_backend"), m.path("use_backend"),
                                                     mode, backends, acls, broken, switch_ctx)
        return fields

    def acls(self, m: _Mapping, ctx: "rules.Context") -> tuple:
        rules = _rules()
        r = self.r
        definitions: dict = {}
        if "acls" in m:
            for acl_name, (key_node, value) in r.named_mapping(m.value("acls"), m.path("acls")).items():
                keypath = _key(m.path("acls"), acl_name)
                if isinstance(value, SequenceNode):
                    items = value.value
                    if not items:
                        r.problem(keypath, value, "at least one ACL expression is required")
                        continue
                else:
                    items = [value]
                texts = []
                for item in items:
                    text = r.parse(item, keypath, r.string)
                    if text is not None:
                        texts.append(text)
                if len(texts) == len(items):
                    definitions[acl_name] = texts
        table = rules.AclTable({}, ctx)
        broken = set()
        for acl_name, texts in definitions.items():
            candidate = rules.AclTable({acl_name: texts}, ctx)
            try:
                candidate.check(acl_name)
            except rules.RuleError as exc:
                r.problem(_key(m.path("acls"), acl_name), m.value("acls"), str(exc))
                broken.add(acl_name)
                continue
            table.texts[acl_name] = candidate.texts[acl_name]
        return table, broken

    def condition(self, entries: dict, keypath: str, acls, broken: set, ctx) -> Any:
        """The check of an item's `if` or `unless` (None when it has none)."""
        rules = _rules()
        r = self.r
        keys = [key for key in ("if", "unless") if key in entries]
        if not keys:
            return None
        if len(keys) > 1:
            r.problem(keypath, entries["unless"][0], "give either 'if' or 'unless', not both")
            return None
        key = keys[0]
        node = entries[key][1]
        text = r.parse(node, _key(keypath, key), r.string)
        if text is None:
            return None
        try:
            return rules.compile_condition(text, acls, ctx, negate=(key == "unless"))
        except rules.RuleError as exc:
            if getattr(exc, "name", None) in broken:
                return None  # its definition's problem is reported already
            r.problem(_key(keypath, key), node, str(exc))
            return None

    def items(self, node: Node, keypath: str, example: str):
        """(index path, entries) of each mapping in a rule list."""
        r = self.r
        if r.is_null(node):
            return
        if not isinstance(node, SequenceNode):
            r.problem(keypath, node, f"expected a list of rules like {example}, got {r.describe(node)}")
            return
        for index, item in enumerate(node.value):
            item_path = f"{keypath}[{index}]"
            if not isinstance(item, MappingNode):
                r.problem(item_path, item, f"expected a rule like {example}, got {r.describe(item)}")
                continue
            yield item_path, item, r._entries(item, item_path, set())

    def rule_list(self, node: Node, keypath: str, list_name: str, acls, broken: set, ctx) -> tuple:
        rules = _rules()
        r = self.r
        registry = rules.LISTS[list_name][0]
        out = []
        for item_path, item, entries in self.items(node, keypath, "{deny: 403, if: \"...\"}"):
            actions = [key for key in entries if key not in ("if", "unless")]
            if len(actions) != 1:
                r.problem(item_path, item, f"expected exactly one action (one of {', '.join(registry)}), "
                                           f"got {', '.join(actions) or 'none'}")
                continue
            action = actions[0]
            key_node, value_node = entries[action]
            if action not in registry:
                r.problem(_key(item_path, action), key_node,
                          f"unknown {list_name} action '{action}'{_suggest(action, registry)}"
                          f" (expected one of {', '.join(registry)})")
                continue
            when = self.condition(entries, item_path, acls, broken, ctx)
            try:
                act = rules.compile_action(list_name, action, self.plain_value(value_node), ctx)
            except (rules.RuleError, _Invalid) as exc:
                r.problem(_key(item_path, action), value_node, getattr(exc, "message", None) or str(exc))
                continue
            out.append(rules.Rule(when, act, action))
        return tuple(out)

    def use_backend(self, node: Node, keypath: str, mode: str, backends: dict, acls, broken: set,
                    ctx) -> tuple:
        rules = _rules()
        r = self.r
        out = []
        for item_path, item, entries in self.items(node, keypath, "{backend: NAME, if: \"...\"}"):
            unknown = [key for key in entries if key not in ("backend", "if", "unless")]
            for key in unknown:
                r.problem(_key(item_path, key), entries[key][0],
                          f"unknown key '{key}' (expected backend, if or unless)")
            if "backend" not in entries:
                r.problem(_key(item_path, "backend"), item, "required key is missing")
                continue
            name_node = entries["backend"][1]
            name_path = _key(item_path, "backend")
            name = r.parse(name_node, name_path, r.string)
            when = self.condition(entries, item_path, acls, broken, ctx)
            if name is None or unknown:
                continue
            if "%[" in name:
                try:
                    fmt = rules.compile_format(name, ctx)
                except rules.RuleError as exc:
                    r.problem(name_path, name_node, str(exc))
                    continue
                out.append(rules.UseBackend(when, None, fmt))
                continue
            target = backends.get(name)
            if target is None:
                r.problem(name_path, name_node, f"backend '{name}' is not defined{_suggest(name, backends)}")
                continue
            if target.mode != mode:
                r.problem(name_path, name_node,
                          f"frontend mode '{mode}' does not match backend '{name}' mode '{target.mode}'")
                continue
            out.append(rules.UseBackend(when, name, None))
        return tuple(out)


# -- entry points ---------------------------------------------------------------

def load(path: str) -> Config:
    """Read and validate the lb.yaml at `path`; ConfigError lists every problem."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: config is not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    return loads(text, path)


def loads(text: str, path: str = "<string>") -> Config:
    """Validate lb.yaml text. `path` names it in errors and anchors relative
    file paths (TLS certs, log file, pidfile); "<string>" anchors them to the
    current directory."""
    try:
        root = _compose(text, path)
    except ConfigError:
        _refuse_haproxy_syntax(text, path)
        raise
    if root is None:
        raise ConfigError([f"{path}: the config is empty (it needs at least 'frontends')"])
    if not isinstance(root, MappingNode):
        _refuse_haproxy_syntax(text, path)
        kind = "a list" if isinstance(root, SequenceNode) else "a single value"
        raise ConfigError([f"{path}:{_line(root)}: the top level must be a mapping of sections, got {kind}"])
    base_dir = os.getcwd() if path == "<string>" else os.path.dirname(os.path.abspath(path))
    reader = _Reader(path, base_dir)
    config = _build(reader, root)
    if reader.problems:
        raise ConfigError(reader.problems)
    return config


def _build(reader: _Reader, root: MappingNode) -> Config:
    """The Config of a node graph; its problems are left in `reader`."""
    builder = _Builder(reader)
    try:
        return builder.config(root)
    finally:
        # The parsers made once per load are closures over the reader and
        # the builder: cycles, which would keep them and every node they
        # hold until the next garbage collection (and none runs while a
        # config is read). Broken here, all goes as the load returns.
        builder.__dict__.clear()
        reader.drop_parsers()


# The section keywords a haproxy.cfg starts with.
_HAPROXY_SECTIONS = ("global", "defaults", "frontend", "backend", "listen", "userlist", "peers",
                     "resolvers", "cache", "program", "http-errors", "ring", "mailers")


def _refuse_haproxy_syntax(text: str, path: str) -> None:
    """A haproxy.cfg given where an lb.yaml is expected: say so, and name
    the flag that reads it, rather than a YAML error about its first line."""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        word = stripped.split()[0]
        if word in _HAPROXY_SECTIONS and not stripped.startswith(f"{word}:"):
            raise ConfigError([
                f"{path}:{number}: this looks like HAProxy configuration syntax ('{stripped}'), "
                f"not lb.yaml: run it with `lbcore -f {path}` (check it with `lbcore -f {path} -c`), "
                f"or convert it with `lbcore convert -f {path} > lb.yaml`"])
        return


def load_tree(root: Node, path: str, sources: tuple[str, ...] = (), base_dir: Optional[str] = None) -> Config:
    """Validate an lb.yaml node graph built by another reader (haproxy_cfg),
    whose marks name where each value came from."""
    reader = _Reader(path, base_dir or os.getcwd())
    config = _build(reader, root)
    if reader.problems:
        raise ConfigError(reader.problems)
    return replace(config, sources=tuple(sources))


def reread(config: Config) -> Config:
    """The config read again from where `config` came from (SIGHUP)."""
    if config.sources:
        from . import haproxy_cfg
        return haproxy_cfg.load(list(config.sources)).config
    return load(config.path)


def _fast_loader():
    """libyaml's composer, where PyYAML was built with it: ~10x faster than
    the pure-Python one on a large config, with the same nodes and line
    marks. It still asks PyYAML's Python resolver for the tag of every
    node (a dozen regular expressions tried on each plain scalar): answered
    here as the safe resolver would, without asking it where the answer
    cannot depend on the value (it has no path resolvers, so a tag depends
    on the value alone): a quoted scalar, or a plain one whose first
    character starts none of its patterns (`be12`, `127.0.0.1:80`), is a
    string; other plain values are resolved once per distinct value. At
    1,000 frontend/backend pairs, 3,000 distinct names went through the
    patterns one by one: 14 of the 43 ms of composing."""
    base = getattr(yaml, "CSafeLoader", None)
    if base is None or base.yaml_path_resolvers:
        return base
    patterns = base.yaml_implicit_resolvers
    if None in patterns:  # a pattern tried on every value (none in PyYAML's own)
        return base
    first_chars = frozenset(key for key in patterns if key)
    string = base.DEFAULT_SCALAR_TAG
    collection = {MappingNode: base.DEFAULT_MAPPING_TAG, SequenceNode: base.DEFAULT_SEQUENCE_TAG}

    class Loader(base):
        def __init__(self, stream) -> None:
            super().__init__(stream)
            self._tags: dict[str, str] = {}

        def resolve(self, kind, value, implicit):
            if kind is not ScalarNode:
                return collection[kind]
            if not implicit[0] or (value and value[0] not in first_chars):
                return string
            tag = self._tags.get(value)
            if tag is None:
                tag = self._tags[value] = base.resolve(self, kind, value, implicit)
            return tag

        def descend_resolver(self, current_node, current_index) -> None:
            pass  # only path resolvers use it

        def ascend_resolver(self) -> None:
            pass
    return Loader


_FAST_LOADER = _fast_loader()


def _compose(text: str, path: str) -> Optional[Node]:
    if _FAST_LOADER is not None:
        try:
            return yaml.compose(text, Loader=_FAST_LOADER)
        except (yaml.YAMLError, RecursionError):
            pass  # the pure-Python composer below words the error, as it always has
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context:
            # The context says where the broken construct began, which is
            # often the line to fix when the problem shows only at its end.
            started = f" at line {exc.context_mark.line + 1}" if exc.context_mark else ""
            problem += f" ({exc.context}{started})"
        where = f"{path}:{mark.line + 1}" if mark else path
        raise ConfigError([f"{where}: invalid YAML: {problem}{_yaml_hint(text, mark)}"]) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError([f"{path}:{line}: invalid YAML: {exc.reason} (character {exc.character!r})"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {exc}"]) from None
    except RecursionError:
        raise ConfigError([f"{path}: invalid YAML: nested too deeply"]) from None


def _yaml_hint(text: str, mark: Any) -> str:
    # `bind: *:80` and `bind: [::1]:80` are the usual ways an address
    # breaks YAML: '*' starts an alias and '[' a list.
    if mark is None:
        return ""
    lines = text.splitlines()
    if mark.line >= len(lines):
        return ""
    if re.search(r":\s+(\*|\[[0-9A-Fa-f:]*\]?:)", lines[mark.line]):
        return " (quote addresses that start with '*' or '[', e.g. \"*:80\", \"[::1]:8080\")"
    return ""
