"""lb.yaml -> frozen specs.

The config knows nothing of sockets: it turns a file in the format of
../shared/spec/lb-yaml.md into immutable dataclasses, with every default
applied and every error reported with its key path and YAML line.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Optional

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .balance import ALGORITHMS as BALANCE_NAMES
from .balance import parse as balance_parse

__all__ = [
    "Address", "Timeouts", "LogSpec", "GlobalSpec", "StatsSpec", "TLSSpec",
    "FrontendSpec", "HealthSpec", "ServerSpec", "BackendSpec", "Config",
    "ConfigError", "load", "loads", "parse_duration", "parse_size",
    "parse_address",
]


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
    balance: str = "roundrobin"  # roundrobin | leastconn | first | source | uri | hdr(NAME) | url_param(NAME)
    maxconn: Optional[int] = None
    health: HealthSpec = field(default_factory=HealthSpec)
    retries: int = 3
    redispatch: bool = True
    timeouts: Timeouts = field(default_factory=Timeouts)
    servers: tuple[ServerSpec, ...] = ()
    on_marked_down: Optional[str] = None  # None | "shutdown_sessions"
    hash: str = "map-based"  # map-based | consistent: how hash balancing maps keys

    @property
    def balance_key(self) -> tuple[str, Optional[str]]:
        """(algorithm, argument) of `balance`: ("hdr", "X-Tenant")."""
        return balance_parse(self.balance)


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
HEALTH_TYPES = ("none", "tcp", "http")
HEALTH_METHODS = ("GET", "HEAD", "OPTIONS")
INITIAL_STATES = ("up", "down")
SEND_PROXY = ("v1", "v2")
ON_MARKED_DOWN = ("shutdown_sessions",)
LOG_FORMATS = ("http", "json", "none")
MAX_WEIGHT = 256

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h|d)?")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"([0-9]+)\s*([kmgKMG])?")
_SIZE_UNITS = {None: 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_HOSTNAME_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_STATUS_CLASS = re.compile(r"([1-5])xx")
# A log target that looks like host:port (and not like a path) is syslog.
_SYSLOG_LIKE = re.compile(r"(\[[^\]/]*\]|[A-Za-z0-9.*_-]*):[0-9]+")
_MERGE_TAG = "tag:yaml.org,2002:merge"
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
    if not text or text != text.strip() or any(c.isspace() for c in text):
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
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"invalid address {value!r}: {host!r} is not an IPv4 address") from None
        return
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_HOSTNAME_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"invalid address {value!r}: {host!r} is not a valid host name")


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


class _Reader:
    """Walks the node graph, collecting problems as `file:line: keypath: msg`."""

    def __init__(self, path: str, base_dir: str):
        self.path = path
        self.base_dir = base_dir
        self._problems: list[tuple[int, str]] = []
        self.bad_paths: set[str] = set()
        self._constructor = yaml.constructor.SafeConstructor()

    # problems
    def problem(self, keypath: str, node: Optional[Node], message: str) -> None:
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
        if isinstance(node, MappingNode):
            return {}
        if isinstance(node, SequenceNode):
            return []
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise _Invalid(f"unsupported YAML value ({getattr(exc, 'problem', None) or exc})", node) from None

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
        if node is None or self.is_null(node):
            entries: dict[str, tuple[Node, Node]] = {}
        elif isinstance(node, MappingNode):
            entries = self._entries(node, keypath, set())
        else:
            self.problem(keypath, node, f"expected a mapping, got {self.describe(node)}")
            return None
        known = list(known)
        for key, (key_node, _) in entries.items():
            # Top-level "x-" keys hold YAML anchors for reuse ("<<: *x-srv"),
            # as in docker-compose; nothing reads them.
            if key not in known and not (keypath == "" and key.startswith("x-")):
                self.problem(_key(keypath, key), key_node, f"unknown key '{key}'{_suggest(key, known)}")
        for key in required:
            if key not in entries:
                self.problem(_key(keypath, key), node, "required key is missing")
        return _Mapping(keypath, node, {k: v for k, v in entries.items() if k in known})

    def named_mapping(self, node: Optional[Node], keypath: str) -> dict[str, tuple[Node, Node]]:
        """A mapping whose keys are user-chosen names (frontends, backends)."""
        if node is None or self.is_null(node):
            return {}
        if not isinstance(node, MappingNode):
            self.problem(keypath, node, f"expected a mapping of names, got {self.describe(node)}")
            return {}
        entries = self._entries(node, keypath, set())
        for name, (key_node, _) in entries.items():
            self.check_name(name, _key(keypath, name), key_node)
        return entries

    def check_name(self, name: str, keypath: str, node: Optional[Node]) -> bool:
        if _NAME.fullmatch(name):
            return True
        self.problem(keypath, node, f"invalid name {name!r} (use only letters, digits, '_', '.' and '-')")
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
        merged.update(explicit)
        return merged

    def is_null(self, node: Node) -> bool:
        return isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"

    # typed fields
    def get(self, mapping: Optional[_Mapping], key: str, parse: Callable[[Node], Any], default: Any = None) -> Any:
        """Parse `key` of `mapping` with `parse`, or give `default` when the
        key is absent (or its value invalid, after recording the problem)."""
        if mapping is None or key not in mapping:
            return default
        return self.parse(mapping.value(key), mapping.path(key), parse, default)

    def parse(self, node: Node, keypath: str, parse: Callable[[Node], Any], default: Any = None) -> Any:
        try:
            return parse(node)
        except _Invalid as exc:
            self.problem(keypath, exc.node or node, exc.message)
        except ValueError as exc:
            self.problem(keypath, node, str(exc))
        return default

    def boolean(self, node: Node) -> bool:
        value = self.scalar(node)
        if not isinstance(value, bool):
            raise _Invalid(f"expected true or false, got {self.describe(node)}")
        return value

    def integer(self, low: Optional[int] = None, high: Optional[int] = None) -> Callable[[Node], int]:
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

    def choice(self, choices: Iterable[str]) -> Callable[[Node], str]:
        choices = tuple(choices)

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

    def address(self, node: Node) -> Address:
        return parse_address(self.plain(node))

    def server_address(self, node: Node) -> Address:
        return parse_address(self.plain(node), server=True)

    def plain(self, node: Node) -> Any:
        if isinstance(node, (MappingNode, SequenceNode)):
            raise _Invalid(f"expected a single value, got {self.describe(node)}")
        return self.scalar(node)

    def nullable(self, parse: Callable[[Node], Any]) -> Callable[[Node], Any]:
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

_TOP_KEYS = ("global", "defaults", "stats", "frontends", "backends")
_GLOBAL_KEYS = ("workers", "maxconn", "log", "pidfile", "state_file", "grace")
_LOG_KEYS = ("target", "format")
_DEFAULTS_KEYS = ("timeouts", "retries", "redispatch")
_TIMEOUT_KEYS = tuple(Timeouts.__dataclass_fields__)
_STATS_KEYS = ("bind", "auth", "admin", "refresh")
_AUTH_KEYS = ("user", "password")
_FRONTEND_KEYS = ("bind", "mode", "backend", "maxconn", "forwarded_for", "forwarded_proto",
                  "monitor_uri", "tls", "timeouts")
_TLS_KEYS = ("cert", "key", "alpn")
_BACKEND_KEYS = ("mode", "balance", "maxconn", "health", "retries", "redispatch", "timeouts",
                 "servers", "on_marked_down", "hash")
_HEALTH_KEYS = ("type", "path", "method", "host", "expect_status", "interval", "timeout",
                "rise", "fall", "port", "initial_state")
_SERVER_KEYS = ("name", "address", "weight", "backup", "maxconn", "check", "send_proxy")


@dataclass(frozen=True)
class _Defaults:
    timeouts: Timeouts = Timeouts()
    retries: int = 3
    redispatch: bool = True


class _Builder:
    """Turns the checked node graph into specs; all problems end in reader."""

    def __init__(self, reader: _Reader):
        self.r = reader
        # port -> (address, keypath, node) of every listening address on it, for clashes.
        self.binds: dict[int, list[tuple[Address, str, Node]]] = {}

    def config(self, root: MappingNode) -> Config:
        r = self.r
        top = r.mapping(root, "", _TOP_KEYS, required=("frontends",))
        global_ = self.global_(top.value("global"))
        defaults = self.defaults(top.value("defaults"))
        stats = self.stats(top.value("stats")) if "stats" in top else None
        backends = self.backends(top.value("backends"), defaults)
        frontends = self.frontends(top.value("frontends"), defaults, backends, "frontends" in top)
        return Config(path=r.path, global_=global_, stats=stats, frontends=frontends, backends=backends)

    # global
    def global_(self, node: Optional[Node]) -> GlobalSpec:
        r = self.r
        m = r.mapping(node, "global", _GLOBAL_KEYS)
        default = GlobalSpec()
        return GlobalSpec(
            workers=r.get(m, "workers", self.workers, default.workers),
            maxconn=r.get(m, "maxconn", r.integer(1), default.maxconn),
            log=self.log(m.value("log") if m else None),
            pidfile=r.get(m, "pidfile", r.nullable(r.path_string)),
            state_file=r.get(m, "state_file", r.nullable(r.path_string)),
            grace=r.get(m, "grace", r.duration, default.grace),
        )

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
        spec = LogSpec(format=r.get(m, "format", r.choice(LOG_FORMATS), LogSpec.format))
        if m is not None and "target" in m:
            target, syslog = r.get(m, "target", self.log_target, (LogSpec.target, None))
            spec = replace(spec, target=target, syslog=syslog)
        return spec

    def log_target(self, node: Node) -> tuple[str, Optional[Address]]:
        value = self.r.string(node)
        if value in ("stdout", "stderr"):
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
        )

    def timeouts(self, node: Optional[Node], keypath: str, inherited: Timeouts) -> Timeouts:
        # Per-key merge: setting one timeout keeps every other inherited one.
        m = self.r.mapping(node, keypath, _TIMEOUT_KEYS)
        if m is None:
            return inherited
        changes = {key: self.r.get(m, key, self.r.duration, getattr(inherited, key)) for key in m.entries}
        return replace(inherited, **changes)

    # stats
    def stats(self, node: Optional[Node]) -> Optional[StatsSpec]:
        r = self.r
        if node is not None and r.is_null(node):
            return None
        m = r.mapping(node, "stats", _STATS_KEYS, required=("bind",))
        if m is None:
            return None
        bind = r.get(m, "bind", r.address)
        if bind is not None:
            self.add_bind(bind, m.path("bind"), m.value("bind"))
        return StatsSpec(
            bind=bind if bind is not None else Address("", 0),
            auth=self.auth(m.value("auth")) if "auth" in m else None,
            admin=r.get(m, "admin", r.boolean, StatsSpec.admin),
            refresh=r.get(m, "refresh", r.duration, StatsSpec.refresh),
        )

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
        default = FrontendSpec
        return FrontendSpec(
            name=name,
            binds=self.frontend_binds(m),
            mode=mode,
            backend=backend,
            maxconn=r.get(m, "maxconn", r.integer(1), default.maxconn),
            forwarded_for=r.get(m, "forwarded_for", r.boolean, default.forwarded_for),
            forwarded_proto=r.get(m, "forwarded_proto", r.boolean, default.forwarded_proto),
            monitor_uri=r.get(m, "monitor_uri", r.nullable(r.request_path)),
            tls=self.tls(m.value("tls"), m.path("tls")) if "tls" in m else None,
            timeouts=self.timeouts(m.value("timeouts"), m.path("timeouts"), defaults.timeouts),
        )

    def frontend_binds(self, m: _Mapping) -> tuple[Address, ...]:
        r = self.r
        node = m.value("bind")
        if node is None:
            return ()
        keypath = m.path("bind")
        if isinstance(node, SequenceNode):
            items = [(f"{keypath}[{i}]", item) for i, item in enumerate(node.value)]
            if not items:
                r.problem(keypath, node, "at least one address is required")
        else:
            items = [(keypath, node)]
        binds = []
        for item_path, item in items:
            address = r.parse(item, item_path, r.address)
            if address is not None:
                self.add_bind(address, item_path, item)
                binds.append(address)
        return tuple(binds)

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
        )

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
        timeouts = self.timeouts(m.value("timeouts"), m.path("timeouts"), defaults.timeouts)
        maxconn = r.get(m, "maxconn", r.nullable(r.integer(1)))
        mode = r.get(m, "mode", r.choice(MODES), BackendSpec.mode)
        algorithm = r.get(m, "balance", self.balance, BackendSpec.balance)
        if mode == "tcp" and balance_parse(algorithm)[0] in REQUEST_HASHES:
            r.problem(m.path("balance"), m.value("balance"),
                      f"balance {algorithm} hashes a part of the HTTP request: it needs mode http")
        return BackendSpec(
            name=name,
            mode=mode,
            balance=algorithm,
            hash=r.get(m, "hash", r.choice(HASH_TYPES), BackendSpec.hash),
            maxconn=maxconn,
            health=self.health(m.value("health"), m.path("health"), timeouts),
            retries=r.get(m, "retries", r.integer(0), defaults.retries),
            redispatch=r.get(m, "redispatch", r.boolean, defaults.redispatch),
            timeouts=timeouts,
            servers=self.servers(m.value("servers"), m.path("servers"), maxconn),
            on_marked_down=r.get(m, "on_marked_down", r.nullable(r.choice(ON_MARKED_DOWN))),
        )

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
        r = self.r
        m = r.mapping(node, keypath, _HEALTH_KEYS)
        d = HealthSpec
        return HealthSpec(
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
        )

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

    def servers(self, node: Optional[Node], keypath: str, maxconn: Optional[int]) -> tuple[ServerSpec, ...]:
        r = self.r
        if node is None or r.is_null(node):
            return ()
        if not isinstance(node, SequenceNode):
            r.problem(keypath, node, f"expected a list of servers, got {r.describe(node)}")
            return ()
        servers = []
        seen: dict[str, tuple[str, Node]] = {}
        for index, item in enumerate(node.value):
            item_path = f"{keypath}[{index}]"
            server, name_node = self.server(item, item_path, maxconn)
            if server is None:
                continue
            if server.name in seen:
                first_path, first_node = seen[server.name]
                line = _line(first_node)
                r.problem(_key(item_path, "name"), name_node,
                          f"duplicate server name '{server.name}' (first at {first_path}"
                          + (f", line {line})" if line else ")"))
            elif server.name:
                seen[server.name] = (item_path, name_node)
            servers.append(server)
        return tuple(servers)

    def server(self, node: Node, keypath: str,
               maxconn: Optional[int]) -> tuple[Optional[ServerSpec], Optional[Node]]:
        """The server's spec and its name node (for duplicate reports)."""
        r = self.r
        if not isinstance(node, MappingNode):
            r.problem(keypath, node, f"expected a server mapping with name and address, got {r.describe(node)}")
            return None, None
        m = r.mapping(node, keypath, _SERVER_KEYS, required=("name", "address"))
        name = r.get(m, "name", r.string, "")
        if name and not r.check_name(name, m.path("name"), m.value("name")):
            name = ""
        d = ServerSpec
        server_maxconn = r.get(m, "maxconn", r.nullable(r.integer(1)))
        spec = ServerSpec(
            name=name,
            address=r.get(m, "address", r.server_address, Address("", 0)),
            weight=r.get(m, "weight", r.integer(0, MAX_WEIGHT), d.weight),
            backup=r.get(m, "backup", r.boolean, d.backup),
            maxconn=server_maxconn if server_maxconn is not None else maxconn,
            check=r.get(m, "check", r.boolean, d.check),
            send_proxy=r.get(m, "send_proxy", r.nullable(r.choice(SEND_PROXY))),
        )
        return spec, m.value("name")


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
    root = _compose(text, path)
    if root is None:
        raise ConfigError([f"{path}: the config is empty (it needs at least 'frontends')"])
    if not isinstance(root, MappingNode):
        kind = "a list" if isinstance(root, SequenceNode) else "a single value"
        raise ConfigError([f"{path}:{_line(root)}: the top level must be a mapping of sections, got {kind}"])
    base_dir = os.getcwd() if path == "<string>" else os.path.dirname(os.path.abspath(path))
    reader = _Reader(path, base_dir)
    config = _Builder(reader).config(root)
    if reader.problems:
        raise ConfigError(reader.problems)
    return config


# libyaml's composer, where PyYAML was built with it: ~10x faster than the
# pure-Python one on a large config, with the same nodes and line marks.
_FAST_LOADER = getattr(yaml, "CSafeLoader", None)


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
