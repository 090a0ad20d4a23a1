"""haproxy.cfg -> the same frozen specs as lb.yaml.

`load(["haproxy.cfg", "services.d/"])` reads HAProxy 2.6 configuration
syntax (a directory gives its `*.cfg` files in name order, as `haproxy -f
DIR`), builds the lb.yaml-shaped tree with every value marked with its
file, line and keyword (tree.py), and runs the lb.yaml loader on it, so the
two formats share one meaning and one set of checks. Every problem names
file:line and the keyword; keywords that only tune HAProxy's internals are
accepted with a warning each (`Loaded.warnings`).

Modules: lexer (words of a line), proxies (defaults/frontend/backend/listen
keywords), build (proxies -> lb.yaml blocks), tree (marked nodes, lb.yaml
text for `lbcore convert`).
"""

from __future__ import annotations

import copy
import gc
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional

from ..config import Config, ConfigError, load_tree
from . import values
from .build import Builder, Paths, TlsDefaults, tls_options
from .lexer import LexError, Line, expand_env, read_lines
from .proxies import BE, FE, Problems, Proxy, origin
from .tree import Map, Origin, Scalar, Seq, dump

__all__ = ["load", "convert", "expand_paths", "Loaded", "SYNTAX_VERSION"]

# The HAProxy version whose configuration language this reader follows.
SYNTAX_VERSION = "2.6"

PROXY_SECTIONS = frozenset(("defaults", "frontend", "backend", "listen"))
OTHER_SECTIONS = frozenset(("global", "userlist", "peers"))
SECTIONS = PROXY_SECTIONS | OTHER_SECTIONS
REFUSED_SECTIONS = frozenset(("resolvers", "mailers", "program", "cache", "ring", "http-errors", "fcgi-app",
                              "crt-store", "log-forward", "traces"))


@dataclass
class Loaded:
    config: Config
    warnings: list[str]
    daemon: bool
    master_worker: bool


def expand_paths(paths: Iterable[str]) -> list[str]:
    """Files in the order HAProxy reads them: a directory gives its `*.cfg`
    files sorted by name (not recursing)."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.endswith(".cfg"))
            files.extend(os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n)))
        else:
            files.append(path)
    return files


class _Reader:
    def __init__(self, env: Optional[Mapping[str, str]]):
        self.env = env
        self.p = Problems()
        self.global_lines: list[Line] = []
        self.defaults: Optional[Proxy] = None
        self.named_defaults: dict[str, Proxy] = {}
        self.proxies: list[Proxy] = []
        self.proxies_named: dict[str, list[Proxy]] = {}  # for the same-name check, without a scan per section
        self.userlists: dict[str, tuple[Line, list[Line]]] = {}
        self.peers: dict[str, tuple[Line, list[Line]]] = {}
        # What takes the lines of the section being read (None: no section).
        self.section: Optional[Callable[[Line], None]] = None

    def read_file(self, path: str) -> None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            self.p.errors.append(f"{path}: cannot read config: {exc.strerror or exc}")
            return
        except UnicodeDecodeError as exc:
            self.p.errors.append(f"{path}: config is not UTF-8 text ({exc.reason} at byte {exc.start})")
            return
        # A section does not continue into the next file, as in HAProxy.
        self.section = None
        try:
            for line in read_lines(path, text, self.env):
                self.read_line(line)
        except LexError as exc:
            self.p.errors.append(str(exc))

    def read_line(self, line: Line) -> None:
        keyword = line.keyword
        if keyword in SECTIONS:
            self.start_section(line)
            return
        if keyword in REFUSED_SECTIONS:
            self.p.error(line, f"'{keyword}' sections are not supported by lbcore")
            self.section = _skip
            return
        if keyword.startswith("."):
            self.p.error(line, "conditional blocks and diagnostic directives are not supported by lbcore")
            return
        if self.section is None:
            self.p.error(line, "a keyword outside any section")
            return
        self.section(line)

    def start_section(self, line: Line) -> None:
        kind, args = line.keyword, line.words[1:]
        if kind == "global":
            if args:
                self.p.error(line, "takes no argument")
            self.section = self.global_lines.append
            return
        if kind in ("userlist", "peers"):
            if len(args) != 1:
                self.p.error(line, f"expected '{kind} NAME'")
                self.section = _skip
                return
            store = self.userlists if kind == "userlist" else self.peers
            if args[0] in store:
                self.p.error(line, f"{kind} '{args[0]}' is already defined at {store[args[0]][0].where}")
            store[args[0]] = (line, [])
            self.section = store[args[0]][1].append
            return
        name = args[0] if args else ""
        parent = self.defaults
        rest = args[1:]
        if rest[:1] == ("from",) and len(rest) == 2:
            parent = self.named_defaults.get(rest[1])
            if parent is None:
                self.p.error(line, f"defaults section '{rest[1]}' is not defined (above this line)")
            rest = ()
        if rest:
            self.p.error(line, f"unexpected '{' '.join(rest)}' (expected '{kind} NAME [from DEFAULTS]')")
        if kind != "defaults" and not name:
            self.p.error(line, f"a '{kind}' section needs a name")
        if parent is None:
            proxy = Proxy(kind, name, line, self.p)
        else:
            proxy = parent.inherit(kind, name, line)
        if kind == "defaults":
            self.defaults = proxy
            if name:
                self.named_defaults[name] = proxy
        else:
            named = self.proxies_named.setdefault(name, [])
            for other in named:
                if other.caps & proxy.caps:
                    self.p.error(line, f"'{name}' has the same name as the {other.kind} at {other.line.where}")
            named.append(proxy)
            self.proxies.append(proxy)
        self.section = proxy.read


def _skip(line: Line) -> None:
    """The lines of a section lbcore refuses (its keyword had the error)."""


class _Global:
    """The global section -> lb.yaml's `global` (and stats.socket)."""

    def __init__(self, lines: list[Line], p: Problems, paths: Paths, tls: TlsDefaults, env=None):
        self.p = p
        self.env = env
        self.block = Map(Origin(lines[0].file, lines[0].number, "global") if lines else Origin("", 0, "global"))
        self.daemon = False
        self.master_worker = False
        self.socket: Optional[Map] = None
        self.localpeer: Optional[str] = None
        self.log_lines: list[Line] = []
        for line in lines:
            try:
                self.read(line, paths, tls)
            except ValueError as exc:
                p.error(line, str(exc))

    def read(self, line: Line, paths: Paths, tls: TlsDefaults) -> None:
        keyword, args = line.keyword, line.words[1:]
        at = origin(line)
        block = self.block

        def one() -> str:
            if len(args) != 1:
                raise ValueError("expects one value")
            return args[0]

        if keyword in ("user", "group", "chroot", "pidfile"):
            block[keyword] = Scalar(one(), at)
        elif keyword in ("uid", "gid"):
            block["user" if keyword == "uid" else "group"] = Scalar(str(values.integer(one())), at)
        elif keyword == "daemon":
            self.daemon = True
        elif keyword == "master-worker":
            self.master_worker = True
        elif keyword == "maxconn":
            block["maxconn"] = Scalar(values.integer(one(), 1), at)
        elif keyword == "nbthread":
            count = values.integer(one(), 1)
            self.p.warn(line, f"lbcore runs {count} worker process{'es' if count > 1 else ''} "
                              "(global.workers) where HAProxy runs threads")
            block["workers"] = Scalar(count, at)
        elif keyword == "hard-stop-after":
            block["grace"] = Scalar(values.duration(one()), at)
        elif keyword == "grace":
            # HAProxy 2.6: keep serving this long after a soft stop while
            # monitor-uri fails, so the balancer above withdraws the node.
            block["stop_delay"] = Scalar(values.duration(one()), at)
        elif keyword == "log":
            self.log_lines.append(line)
        elif keyword == "ca-base":
            paths.ca_base = one()
        elif keyword == "crt-base":
            paths.crt_base = one()
        elif keyword == "localpeer":
            self.localpeer = one()
        elif keyword in ("ssl-default-bind-ciphers", "ssl-default-server-ciphers",
                         "ssl-default-bind-ciphersuites", "ssl-default-server-ciphersuites"):
            side = tls.bind if "-bind-" in keyword else tls.server
            side[keyword.rsplit("-", 1)[1]] = (one(), at)
        elif keyword in ("ssl-default-bind-options", "ssl-default-server-options"):
            side = tls.bind if "-bind-" in keyword else tls.server
            for key, value in tls_options(args, line, self.p, keyword).items():
                side[key] = (value, at)
        elif keyword == "ssl-server-verify":
            if one() not in ("none", "required"):
                raise ValueError("expected none or required")
            tls.server["verify"] = (args[0], at)
        elif keyword == "stats":
            self.stats(line, args, at)
        elif keyword.startswith("tune.") or keyword in ("cpu-map", "nbproc", "spread-checks",
                                                         "ssl-dh-param-file", "thread-groups",
                                                         "busy-polling", "max-spread-checks",
                                                         "maxsslconn", "maxsslrate", "maxconnrate",
                                                         "maxsessrate", "noepoll", "nopoll", "nosplice",
                                                         "ssl-engine", "ssl-mode-async", "stats-file",
                                                         "h1-case-adjust"):
            if keyword == "nbproc" and args != ("1",):
                raise ValueError("nbproc was removed in HAProxy 2.5; use nbthread (lbcore: workers)")
            self.p.warn(line, "accepted: tunes HAProxy's internals, nothing to do in lbcore")
        elif keyword in ("node", "description", "log-send-hostname", "log-tag"):
            self.p.warn(line, "accepted: lbcore does not show it")
        else:
            self.p.error(line, "unknown keyword in 'global' section")

    def stats(self, line: Line, args: tuple[str, ...], at: Origin) -> None:
        if not args:
            raise ValueError("expected 'stats socket' or 'stats timeout'")
        keyword = f"stats {args[0]}"
        if args[0] == "timeout" and len(args) == 2:
            values.duration(args[1])
            self.p.warn(line, "accepted: lbcore's runtime API has no idle timeout", keyword)
            return
        if args[0] != "socket" or len(args) < 2:
            self.p.error(line, "not supported by lbcore", keyword)
            return
        if self.socket is not None:
            self.p.error(line, f"lbcore opens one stats socket (the first is at {self.socket.origin})", keyword)
            return
        at = origin(line, keyword)
        sock = Map(at)
        target = args[1]
        if target.startswith("ipv4@"):
            sock["path"] = Scalar(target, at)
        elif target.startswith("/") or target.startswith("unix@"):
            sock["path"] = Scalar(target.removeprefix("unix@"), at)
        else:
            raise ValueError(f"stats socket '{target}': expected a unix path or ipv4@ADDRESS")
        rest = list(args[2:])
        while rest:
            key = rest.pop(0)
            if key in ("mode", "group", "level", "user") and rest:
                value = rest.pop(0)
                if key == "level" and value not in ("user", "operator", "admin"):
                    raise ValueError(f"level '{value}': expected user, operator or admin")
                sock[key] = Scalar(value, at)
            elif key in ("expose-fd",) and rest and rest[0] == "listeners":
                rest.pop(0)
                self.p.warn(line, "accepted: lbcore hands its listeners over by its own -sf mechanism",
                            "stats socket expose-fd")
            else:
                raise ValueError(f"stats socket option '{key}' is not supported (mode, group, user, level)")
        self.socket = sock

    def log(self, proxies_log: bool) -> None:
        """The first `log` line is lbcore's log; HAProxy sends to each."""
        if not self.log_lines:
            log = Map(self.block.origin)
            log["target"] = Scalar("stdout", self.block.origin)
            log["format"] = Scalar("none", self.block.origin)
            self.block["log"] = log
            return
        line = self.log_lines[0]
        for other in self.log_lines[1:]:
            self.p.error(other, f"lbcore writes one log (the first is at {line.where})")
        at = origin(line)
        words = list(line.words[1:])
        if not words:
            raise ValueError("expected 'log TARGET [len N] [format F] FACILITY [LEVEL]'")
        target = words.pop(0)
        log = Map(at)
        if target in ("stdout", "stderr"):
            log["target"] = Scalar(target, at)
        else:
            log["target"] = Scalar(values.syslog_address(expand_env(target, self.env)), at)
        while words and words[0] in ("len", "format", "sample"):
            key = words.pop(0)
            if not words:
                raise ValueError(f"'{key}' expects a value")
            value = words.pop(0)
            if key == "format" and value not in ("rfc3164", "raw", "local"):
                raise ValueError(f"log format '{value}' is not supported (rfc3164, raw, local)")
            if key == "sample":
                raise ValueError("log sampling is not supported")
        if words:
            facility = words.pop(0)
            log["facility"] = Scalar(facility, at)
        if words:
            words.pop(0)  # level: lbcore logs at info, as HAProxy's traffic lines
        if words:
            raise ValueError(f"unexpected '{' '.join(words)}'")
        log["format"] = Scalar("http" if proxies_log else "none", at)
        self.block["log"] = log


def _userlist(name: str, head: Line, lines: list[Line], p: Problems) -> Seq:
    seq = Seq(origin(head))
    for line in lines:
        words = line.words
        at = origin(line)
        if words[0] == "user" and len(words) >= 4 and words[2] in ("password", "insecure-password"):
            item = Map(at)
            item["user"] = Scalar(words[1], at)
            key = "password" if words[2] == "password" else "insecure_password"
            item[key] = Scalar(words[3], at)
            if words[4:]:
                p.error(line, "user groups are not supported by lbcore", "user groups")
            seq.append(item)
        elif words[0] == "group":
            p.error(line, "userlist groups are not supported by lbcore")
        else:
            p.error(line, "unknown keyword in 'userlist' section (expected user NAME password|insecure-password X)")
    return seq


def _peers(name: str, head: Line, lines: list[Line], p: Problems, localpeer: Optional[str], env=None) -> Map:
    block = Map(origin(head), comment=f"{head.where} peers {name}")
    nodes = Seq(origin(head))
    import socket  # (only for a peers section: --check goes without it)
    local = localpeer or socket.gethostname()
    for line in lines:
        words = line.words
        at = origin(line)
        if words[0] in ("peer", "server") and len(words) >= 2:
            if len(words) > 3:
                p.error(line, f"'{' '.join(words[3:])}' is not supported")
            if len(words) == 2:
                continue  # `server NAME` without address: this node, named by `bind`
            try:
                address = values.server_address(expand_env(words[2], env))
            except ValueError as exc:
                p.error(line, str(exc))
                continue
            item = Map(at)
            item["name"] = Scalar(words[1], at)
            item["address"] = Scalar(address, at)
            nodes.append(item)
        elif words[0] in ("disabled", "enabled", "log", "bind", "default-server", "default-bind",
                          "shards", "table"):
            p.error(line, "not supported by lbcore in a 'peers' section")
        else:
            p.error(line, "unknown keyword in 'peers' section")
    block["local"] = Scalar(local, origin(head))
    block["nodes"] = nodes
    return block


def _stats_backend(proxy: Proxy, backends: dict[str, Proxy]) -> Optional[Proxy]:
    """The backend section that serves `proxy`'s stats, if its default
    backend is one with `stats enable` (or `stats uri`) and no servers."""
    if not proxy.caps & FE or proxy.caps & BE or "default_backend" not in proxy.settings:
        return None
    backend = backends.get(proxy.settings["default_backend"][0])
    if backend is None or backend.servers or not (backend.stats.get("enable") or backend.stats.get("uri")):
        return None
    return backend


def _with_stats_of(frontend: Proxy, backend: Proxy) -> Proxy:
    """The frontend's binds with the backend's stats settings over its own."""
    merged = copy.copy(frontend)
    merged.stats = {**frontend.stats, **backend.stats}
    merged.settings = {k: v for k, v in frontend.settings.items() if k != "default_backend"}
    return merged


def build_tree(paths: list[str], env: Optional[Mapping[str, str]] = None,
               localpeer: Optional[str] = None) -> tuple[Map, Problems, _Global]:
    files = expand_paths(paths)
    reader = _Reader(env)
    if not files:
        reader.p.errors.append(f"{', '.join(paths)}: no configuration file found")
    for path in files:
        reader.read_file(path)
    p = reader.p
    first = files[0] if files else "haproxy.cfg"
    base = Paths(os.getcwd())  # HAProxy resolves relative paths from where it runs
    tls = TlsDefaults()
    glob = _Global(reader.global_lines, p, base, tls, env)
    builder = Builder(p, base, tls, env)
    root = Map(Origin(first, 1, "haproxy.cfg"))
    root["global"] = glob.block
    backends = {proxy.name: proxy for proxy in reader.proxies if proxy.caps & BE}
    frontends = Map(root.origin)
    back = Map(root.origin)
    stats: Optional[Map] = None
    metrics_binds: list[Scalar] = []
    logs = False
    for proxy in reader.proxies:
        if "disabled" in proxy.settings:
            _, at = proxy.settings["disabled"]
            if proxy.kind == "backend":
                p.errors.append(f"{at}: disabled: a disabled backend is not supported by lbcore (remove the "
                                "section, or disable its servers)")
            else:
                p.warnings.append(f"{at}: disabled: {proxy.kind} '{proxy.name}' is not started, as in HAProxy")
            continue
        if "log" in proxy.settings:
            logs = True
        is_stats = bool(proxy.stats.get("enable") or proxy.stats.get("uri")) and proxy.caps & FE \
            and not proxy.servers and "default_backend" not in proxy.settings
        stats_backend = _stats_backend(proxy, backends)
        if stats_backend is not None:
            # TripleO's haproxy_backend_syntax: a frontend whose default
            # backend holds the stats and no servers serves the stats page.
            proxy = _with_stats_of(proxy, stats_backend)
            is_stats = True
        if not is_stats and proxy.prometheus is not None and not proxy.servers and proxy.caps & FE \
                and "default_backend" not in proxy.settings:
            # An exporter-only listen (kolla's `listen metrics`): its own port,
            # no auth, /metrics only.
            metrics_binds.extend(builder.metrics_binds(proxy))
            continue
        if is_stats and proxy.caps & FE:
            if stats is not None:
                p.error(proxy.line, f"lbcore serves one stats endpoint (the first is '{stats.origin.keyword}' "
                        f"at {stats.origin})", proxy.kind)
                continue
            try:
                stats = builder.stats(proxy)
            except ValueError as exc:
                p.error(proxy.binds[0] if proxy.binds else proxy.line, str(exc))
            continue
        if proxy.prometheus is not None:
            p.error(proxy.prometheus, "the prometheus exporter is served by lbcore's stats endpoint "
                    "(/metrics), not inside a proxy with servers", "http-request use-service")
        if proxy.caps & FE:
            for name, fe in builder.frontends(proxy, backends):
                if "backend" not in fe:
                    # A frontend with no backend (monitor-uri, redirects only)
                    # answers what its rules do not with 503, as HAProxy.
                    none = f"{proxy.name}.none"
                    if none not in back:
                        empty = Map(fe.origin)
                        empty["mode"] = fe["mode"]
                        empty["health"] = Map(fe.origin)
                        empty["health"]["type"] = Scalar("none", fe.origin)
                        back[none] = empty
                    fe["backend"] = Scalar(none, fe.origin)
                frontends[name] = fe
        if proxy.caps & BE:
            back[proxy.name] = builder.backend(proxy)
    try:
        glob.log(logs)
    except ValueError as exc:
        p.error(glob.log_lines[0], str(exc))
    if glob.socket is not None:
        if stats is None:
            stats = Map(glob.socket.origin)  # the runtime API alone, no HTTP endpoint
        stats["socket"] = glob.socket
    if metrics_binds:
        if stats is None:
            stats = Map(metrics_binds[0].origin)
        seq = Seq(metrics_binds[0].origin)
        seq.extend(metrics_binds)
        stats["metrics_bind"] = seq
    if stats is not None:
        root["stats"] = stats
    if reader.userlists:
        block = Map(root.origin)
        for name, (head, lines) in reader.userlists.items():
            block[name] = _userlist(name, head, lines, p)
        root["userlists"] = block
    if reader.peers:
        block = Map(root.origin)
        for name, (head, lines) in reader.peers.items():
            block[name] = _peers(name, head, lines, p, localpeer or glob.localpeer, env)
        root["peers"] = block
    root["frontends"] = frontends
    root["backends"] = back
    return root, p, glob


def load(paths: list[str], env: Optional[Mapping[str, str]] = None,
         localpeer: Optional[str] = None) -> Loaded:
    """The Config for haproxy.cfg files; ConfigError lists every problem.
    `localpeer` is `-L`: this node's name in `peers` sections."""
    # No cyclic collection while the files are read: what the reader makes
    # (lines, proxies, the tree, its YAML nodes) holds no cycle and is freed
    # by reference counting, but the tens of thousands of objects a large
    # config makes would start collections that walk them again and again:
    # at 1,000 pairs that was 0.15 s of a 0.37 s read, at start-up and at
    # every reload (the lb.yaml command line does the same in cli.py).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _load(paths, env, localpeer)
    finally:
        if enabled:
            gc.enable()


def _load(paths: list[str], env: Optional[Mapping[str, str]], localpeer: Optional[str]) -> Loaded:
    root, p, glob = build_tree(paths, env, localpeer)
    files = expand_paths(paths)
    if not files:
        raise ConfigError(p.errors)
    # The loader runs even after the reader's own errors, so one check
    # names every problem, as haproxy -c does.
    try:
        config = load_tree(root, files[0], sources=tuple(paths), base_dir=os.getcwd())
    except ConfigError as exc:
        problems = exc.problems
        if p.errors:
            # A frontend dropped for its own error is not missing too.
            problems = [q for q in problems if "at least one frontend is required" not in q]
        raise ConfigError(_ordered(p.errors + problems)) from None
    if p.errors:
        raise ConfigError(_ordered(p.errors))
    return Loaded(config, _ordered(p.warnings), glob.daemon, glob.master_worker)


def convert(paths: list[str], env: Optional[Mapping[str, str]] = None) -> tuple[str, list[str]]:
    """lb.yaml text equivalent to the haproxy.cfg files, and the warnings.
    The result is checked by loading it first; ConfigError if it fails."""
    loaded = load(paths, env)
    root, _, _ = build_tree(paths, env)
    header = ("# lb.yaml converted by `lbcore convert` from " + " ".join(paths)
              + f" (HAProxy {SYNTAX_VERSION} syntax).\n# Each block names the haproxy.cfg line it came from.")
    return dump(root, header), loaded.warnings


def _ordered(problems: list[str]) -> list[str]:
    """Problems in file order, each once."""
    def key(problem: str):
        head = problem.split(": ", 1)[0]
        file, _, line = head.rpartition(":")
        return (file, int(line)) if line.isdigit() else (head, 0)
    return sorted(dict.fromkeys(problems), key=key)
