"""Proxies read from haproxy.cfg -> the lb.yaml tree (frontends, backends,
stats, userlists, peers), with HAProxy 2.6's defaults where lb.yaml's differ."""

from __future__ import annotations

import os
from typing import Optional

from . import values
from .lexer import Line, expand_env
from .proxies import BE, FE, Problems, Proxy, origin, parse_server_params
from .tree import Map, Origin, Scalar, Seq

# Servers' check settings that lb.yaml holds once per backend.
PER_BACKEND = {"inter": "interval", "rise": "rise", "fall": "fall", "port": "port"}
# Server keywords lb.yaml keeps per backend (the servers of one backend must agree).
POOL_KEYS = {"pool-max-conn": "pool_max_conn", "pool-purge-delay": "pool_purge_delay"}
CHECK_DEFAULTS = {"inter": "2000", "rise": "2", "fall": "3"}
# Every check setting of a server line, in the order health() checks them.
CHECK_SETTINGS = tuple(PER_BACKEND) + ("fastinter", "downinter")
STATS_URIS = ("/", "/stats", "/haproxy?stats")


class Paths:
    """ca-base / crt-base: relative certificate paths resolve against them,
    else against the directory HAProxy runs in (lbcore: the first file's)."""

    def __init__(self, base_dir: str):
        self.base_dir = base_dir
        self.ca_base: Optional[str] = None
        self.crt_base: Optional[str] = None

    def ca(self, path: str) -> str:
        return self._resolve(path, self.ca_base)

    def crt(self, path: str) -> str:
        return self._resolve(path, self.crt_base)

    def relative(self, path: str) -> str:
        """A path other than a certificate's: against the working directory."""
        return self._resolve(path, None)

    def _resolve(self, path: str, base: Optional[str]) -> str:
        if os.path.isabs(path):
            return path
        return os.path.join(base or self.base_dir, path)


class TlsDefaults:
    """ssl-default-bind-* / ssl-default-server-* from the global section."""

    def __init__(self) -> None:
        self.bind: dict[str, tuple[object, Origin]] = {}
        self.server: dict[str, tuple[object, Origin]] = {}


def tls_options(words: tuple[str, ...], line: Line, p: Problems, keyword: str) -> dict[str, object]:
    """ssl-min-ver / no-tlsv1x / no-tls-tickets / prefer-client-ciphers."""
    out: dict[str, object] = {}
    i = 0
    versions = ("SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3")
    disabled = []
    while i < len(words):
        word = words[i]
        if word == "ssl-min-ver" and i + 1 < len(words):
            if words[i + 1] not in versions[1:]:
                raise ValueError(f"unknown TLS version '{words[i + 1]}'")
            out["min_version"] = "TLSv1" if words[i + 1] == "TLSv1.0" else words[i + 1]
            i += 2
            continue
        if word == "ssl-max-ver":
            raise ValueError("'ssl-max-ver' is not supported (lbcore offers up to TLS 1.3)")
        if word in ("no-sslv3", "no-tlsv10", "no-tlsv11", "no-tlsv12"):
            disabled.append(word)
        elif word in ("no-tls-tickets", "prefer-client-ciphers", "strict-sni"):
            p.warn(line, f"accepted: '{word}' is not applied by lbcore", keyword)
        elif word in ("force-tlsv12", "force-tlsv13"):
            out["min_version"] = "TLSv1.2" if word == "force-tlsv12" else "TLSv1.3"
        else:
            raise ValueError(f"TLS option '{word}' is not supported")
        i += 1
    # no-tlsv10 no-tlsv11 = at least TLSv1.2; lbcore never offers SSLv3.
    floor = {"no-tlsv10": "TLSv1.1", "no-tlsv11": "TLSv1.2", "no-tlsv12": "TLSv1.3"}
    chain = [w for w in ("no-tlsv10", "no-tlsv11", "no-tlsv12") if w in disabled]
    if chain and "min_version" not in out:
        # Only a prefix of old versions can be cut (TLS has no holes).
        if chain != ["no-tlsv10", "no-tlsv11", "no-tlsv12"][:len(chain)]:
            raise ValueError(f"disabling {' '.join(chain)} leaves a hole in the TLS versions; "
                             "use ssl-min-ver")
        out["min_version"] = floor[chain[-1]]
    return out


# Server keywords that make servers[].tls (see Builder.server_tls).
SERVER_TLS_OPTIONS = ("no-sslv3", "no-tlsv10", "no-tlsv11", "no-tlsv12", "force-tlsv12", "force-tlsv13",
                      "no-tls-tickets")
SERVER_TLS_FLAGS = ("ssl", "no-ssl", "check-ssl", "no-check-ssl", "no-verifyhost") + SERVER_TLS_OPTIONS
SERVER_TLS_VALUES = ("verify", "ca-file", "crl-file", "verifyhost", "sni", "alpn", "check-sni", "check-alpn",
                     "ssl-min-ver", "ciphers", "ciphersuites")


def _last_of(words: dict, *names: str) -> Optional[str]:
    """Which of `names` came last among the keywords (dicts keep insertion
    order; a word given again moves to the end, see Builder.server)."""
    present = [w for w in words if w in names]
    return present[-1] if present else None


class Builder:
    def __init__(self, problems: Problems, paths: Paths, tls: TlsDefaults, env=None):
        self.p = problems
        self.paths = paths
        self.tls = tls
        self.env = env
        self.checked_error_files: dict[tuple[str, int], bool] = {}
        # Proxy.timeouts dicts (by id: the proxies hold them while the
        # tree is built) -> the block made of them; see timeouts().
        self.timeouts_made: dict[int, Optional[Map]] = {}
        # Proxy.settings entries (by id, as above) -> their Scalar.
        self.setting_scalars: dict[int, Scalar] = {}

    def setting(self, entry: tuple[object, Origin]) -> Scalar:
        """The Scalar of a proxy's setting: one per line that set it, which
        the proxies that keep it from their defaults share."""
        scalar = self.setting_scalars.get(id(entry))
        if scalar is None:
            scalar = self.setting_scalars[id(entry)] = Scalar(*entry)
        return scalar

    def address(self, word: str) -> str:
        """Addresses expand ${NAME} even unquoted, as HAProxy's do."""
        return expand_env(word, self.env)

    # -- frontends --------------------------------------------------------------

    def frontends(self, proxy: Proxy, backends: dict[str, Proxy]) -> list[tuple[str, Map]]:
        """The frontend blocks of a frontend or listen section: one per TLS
        setting of its binds, as lbcore sets TLS per frontend. A listen with
        a plain internal bind and a TLS public one (TripleO's endpoints)
        gives NAME and NAME.ssl, with the same rules and backend."""
        groups = self.bind_groups(proxy)
        if groups is None:
            return []
        out = []
        for index, (binds, tls) in enumerate(groups):
            name = proxy.name
            if index:
                name = f"{proxy.name}.ssl" if index == 1 else f"{proxy.name}.ssl{index}"
            out.append((name, self.frontend(proxy, backends, binds, tls)))
        return out

    def frontend(self, proxy: Proxy, backends: dict[str, Proxy], binds: Seq, tls: Optional[Map]) -> Map:
        where = origin(proxy.line, f"{proxy.kind} {proxy.name}")
        fe = Map(where, comment=_comment(proxy))
        s = proxy.settings
        fe["bind"] = binds
        if tls is not None:
            fe["tls"] = tls
        fe["mode"] = self.mode(proxy, where)
        if "default_backend" in s:
            name, at = s["default_backend"]
            fe["backend"] = Scalar(name, at)
        elif proxy.caps & BE:
            fe["backend"] = Scalar(proxy.name, where)
        if "maxconn" in s:
            fe["maxconn"] = self.setting(s["maxconn"])
        # X-Forwarded-For: `option forwardfor` on the frontend or on its
        # default backend, as HAProxy adds it when either side asks.
        forward = proxy.options.get("forwardfor")
        target = backends.get(s["default_backend"][0]) if "default_backend" in s else None
        if (not forward or forward[0] is False) and target is not None:
            forward = target.options.get("forwardfor")
        if forward and forward[0] is not False:
            fe["forwarded_for"] = Scalar(True, forward[1])
            if forward[0].get("except"):
                fe["forwarded_for_except"] = Scalar(forward[0]["except"], forward[1])
        else:
            fe["forwarded_for"] = Scalar(False, where)
        # HAProxy never adds X-Forwarded-Proto by itself: configs set it by rule.
        fe["forwarded_proto"] = Scalar(False, where)
        if "monitor_uri" in s:
            fe["monitor_uri"] = self.setting(s["monitor_uri"])
        self.error_files(proxy, fe, where)
        timeouts = self.timeouts(proxy, where, frontend=True)
        if timeouts:
            fe["timeouts"] = timeouts
        self.rules(proxy, fe, where, frontend=True)
        if proxy.caps == FE and "stick_table" in s:
            fe["stick_table"] = s["stick_table"][0]
        return fe

    def mode(self, proxy: Proxy, where: Origin) -> Scalar:
        if "mode" in proxy.settings:
            return self.setting(proxy.settings["mode"])
        return Scalar("tcp", where)  # HAProxy's default mode

    def bind_groups(self, proxy: Proxy) -> Optional[list[tuple[Seq, Optional[Map]]]]:
        """The binds grouped by their TLS setting, in the order first seen."""
        if not proxy.binds:
            self.p.error(proxy.line, f"{proxy.kind} '{proxy.name}' has no 'bind' line", proxy.kind)
            return None
        groups: list[tuple[object, Seq, Optional[Map]]] = []
        for line in proxy.binds:
            words = line.words[1:]
            try:
                addresses = values.bind_addresses(self.address(words[0]))
            except ValueError as exc:
                self.p.error(line, str(exc))
                continue
            tls, transparent, interface = self.bind_params(line, words[1:])
            key = to_plain_tls(tls)
            group = next((g for g in groups if g[0] == key), None)
            if group is None:
                group = (key, Seq(origin(line)), tls)
                groups.append(group)
            at = origin(line)
            for address in addresses:
                if transparent or interface:
                    item = Map(at)
                    item["address"] = Scalar(address, at)
                    if transparent:
                        item["transparent"] = Scalar(True, at)
                    if interface:
                        item["interface"] = Scalar(interface, origin(line, "bind interface"))
                    group[1].append(item)
                else:
                    group[1].append(Scalar(address, at))
        if not groups:
            return None
        return [(seq, tls) for _, seq, tls in groups]

    def bind_params(self, line: Line, words: tuple[str, ...]) -> tuple[Optional[Map], bool, Optional[str]]:
        """(TLS, transparent, interface) of a bind line's parameters."""
        if not words:
            return None, False, None  # (most binds)
        at = origin(line)
        ssl = False
        certs: list[str] = []
        tls: dict[str, object] = {}
        transparent = False
        interface = None
        i = 0
        while i < len(words):
            word = words[i]
            value = words[i + 1] if i + 1 < len(words) else None
            keyword = f"bind {word}"
            if word == "ssl":
                ssl = True
            elif word == "transparent":
                transparent = True
            elif word == "interface" and value is not None:
                interface = value
                i += 1
            elif word == "crt" and value is not None:
                certs.append(self.paths.crt(value))
                i += 1
            elif word == "alpn" and value is not None:
                protocols = value.split(",")
                if "h2" in protocols:
                    self.p.warn(line, "h2 is not offered: lbcore speaks HTTP/1.1 only for now", "bind alpn")
                    protocols = [p for p in protocols if p != "h2"]
                if not protocols:
                    self.p.error(line, "no protocol left to offer once h2 is removed", keyword)
                tls["alpn"] = protocols
                i += 1
            elif word in ("ciphers", "ciphersuites") and value is not None:
                tls[word] = value
                i += 1
            elif word in ("ssl-min-ver", "no-sslv3", "no-tlsv10", "no-tlsv11", "no-tlsv12", "no-tls-tickets",
                          "prefer-client-ciphers", "strict-sni", "force-tlsv12", "force-tlsv13"):
                take = 2 if word == "ssl-min-ver" else 1
                try:
                    tls.update(tls_options(words[i:i + take], line, self.p, keyword))
                except ValueError as exc:
                    self.p.error(line, str(exc), keyword)
                i += take - 1
            elif word == "verify" and value == "none":
                i += 1
            elif word == "name" and value is not None:
                i += 1
            else:
                self.p.error(line, "not supported by lbcore", keyword)
                if value is not None and not value.startswith("-") and word in (
                        "ca-file", "crl-file", "verify", "crt-list", "maxconn", "process",
                        "thread", "mss", "level", "mode", "user", "group", "npn", "ecdhe", "tcp-ut",
                        "id", "nice", "backlog"):
                    i += 1
            i += 1
        if certs and not ssl:
            self.p.error(line, "'crt' without 'ssl'", "bind crt")
        if not ssl:
            return None, transparent, interface
        if not certs:
            self.p.error(line, "'ssl' needs a certificate ('crt PATH')", "bind ssl")
            return None, transparent, interface
        if len(certs) > 1:
            self.p.error(line, "more than one 'crt' per bind: put the PEMs in one directory and name it",
                         "bind crt")
        spec = Map(at)
        spec["cert"] = Scalar(certs[0], at)
        defaults = self.tls.bind
        for key in ("alpn", "min_version", "ciphers", "ciphersuites"):
            if key in tls:
                value = tls[key]
            elif key in defaults:
                value, at_default = defaults[key]
                spec[key] = _scalar_or_seq(value, at_default)
                continue
            else:
                continue
            spec[key] = _scalar_or_seq(value, at)
        return spec, transparent, interface

    # -- backends ---------------------------------------------------------------

    def backend(self, proxy: Proxy) -> Map:
        where = origin(proxy.line, f"{proxy.kind} {proxy.name}")
        be = Map(where, comment=_comment(proxy))
        s = proxy.settings
        be["mode"] = self.mode(proxy, where)
        if "balance" in s:
            be["balance"] = self.setting(s["balance"])
        else:
            be["balance"] = Scalar("roundrobin", where)
        if "hash" in s:
            be["hash"] = self.setting(s["hash"])
        be["retries"] = self.setting(s["retries"]) if "retries" in s else Scalar(3, where)
        redispatch = proxy.options.get("redispatch")
        # HAProxy does not redispatch unless told to; lb.yaml's default is true.
        be["redispatch"] = Scalar(bool(redispatch and redispatch[0]), redispatch[1] if redispatch else where)
        timeouts = self.timeouts(proxy, where, frontend=False)
        if timeouts:
            be["timeouts"] = timeouts
        servers, health, per_backend = self.servers(proxy, where, be["mode"].python == "http")
        be["health"] = health
        if per_backend.get("on-marked-down"):
            be["on_marked_down"] = per_backend["on-marked-down"]
        for key, lb_key in POOL_KEYS.items():
            if key in per_backend:
                be[lb_key] = per_backend[key]
        self.error_files(proxy, be, where)
        if proxy.options.get("allbackups", (False,))[0]:
            be["all_backups"] = Scalar(True, proxy.options["allbackups"][1])
        for key in ("stick_table", "cookie"):
            if key in s:
                value, at = s[key]
                be[key] = value if isinstance(value, Map) else Scalar(value, at)
        rules = proxy.stick_rules
        if len(rules) == 1 and list(rules[0]) == ["on"]:
            be["stick_on"] = rules[0]["on"]  # the plain `stick on SAMPLE`
        elif rules:
            seq = Seq(rules[0].origin)
            seq.extend(rules)
            be["stick_on"] = seq
        if proxy.caps == BE:
            self.rules(proxy, be, where, frontend=False)
        else:
            self.rules(proxy, be, where, frontend=False, only_backend=True)
        be["servers"] = servers
        return be

    def timeouts(self, proxy: Proxy, where: Origin, frontend: bool) -> Optional[Map]:
        """HAProxy's fallbacks made explicit: http-request -> client,
        http-keep-alive -> http-request, queue -> connect, tunnel -> the
        longer of client and server."""
        # A thousand proxies that keep their defaults' timeouts share one
        # block: they share the defaults' dict of them (Proxy.timeouts).
        key = id(proxy.timeouts)
        if key in self.timeouts_made:
            return self.timeouts_made[key]
        self.timeouts_made[key] = out = self._timeouts(proxy, where)
        return out

    def _timeouts(self, proxy: Proxy, where: Origin) -> Optional[Map]:
        t = dict(proxy.timeouts)
        if "http_request" not in t and "client" in t:
            t["http_request"] = t["client"]
        if "http_keep_alive" not in t and "http_request" in t:
            t["http_keep_alive"] = t["http_request"]
        if "queue" not in t and "connect" in t:
            t["queue"] = t["connect"]
        if "tunnel" not in t and ("client" in t or "server" in t):
            sides = [t[k] for k in ("client", "server") if k in t]
            t["tunnel"] = max(sides, key=lambda item: values.seconds(item[0]))
        if not t:
            return None
        out = Map(where)
        for key in ("connect", "client", "server", "http_request", "http_keep_alive", "tunnel", "queue", "check"):
            if key in t:
                out[key] = Scalar(*t[key])
        return out

    def error_files(self, proxy: Proxy, block: Map, where: Origin) -> None:
        """errorfile lines (the defaults' too) -> error_files, read by the
        loader, which names the line of a file it cannot use."""
        if not proxy.error_files:
            return
        files = Map(where)
        for code, (path, at) in proxy.error_files.items():
            if self.error_file_ok(code, path, at):
                files[code] = Scalar(path, at)
        if files:
            block["error_files"] = files

    def error_file_ok(self, code: str, path: str, at: Origin) -> bool:
        """Each errorfile line checked once, however many proxies inherit it
        from a defaults section: one error per line, as haproxy -c."""
        key = (at.file, at.line)
        if key not in self.checked_error_files:
            # lbcore.rules (~9 ms of imports) only for a file that has
            # errorfile lines: a plain config's start binds without it.
            from ..rules import answers
            problem = None
            if not code.isdigit() or int(code) not in answers.ERROR_FILE_CODES:
                problem = f"status code '{code}' not handled (one of " \
                          f"{', '.join(map(str, answers.ERROR_FILE_CODES))})"
            else:
                try:
                    with open(self.paths.relative(path), "rb") as f:
                        answers.parse_error_file(f.read(answers.MAX_ERROR_FILE + 1))
                except OSError as exc:
                    problem = f"cannot read error file {path}: {exc.strerror or exc}"
                except ValueError as exc:
                    problem = f"error file {path}: {exc}"
            if problem is not None:
                self.p.errors.append(f"{at}: {at.keyword}: {problem}")
            self.checked_error_files[key] = problem is None
        return self.checked_error_files[key]

    def rules(self, proxy: Proxy, block: Map, where: Origin, frontend: bool, only_backend: bool = False) -> None:
        """acls and rules go to the frontend side of a listen section, except
        those that act on the backend (none yet: HAProxy runs a listen's
        rules once, as its frontend's)."""
        if only_backend or not (proxy.acls or proxy.tcp_request or proxy.http_request or proxy.http_response
                                 or proxy.use_backend):
            return  # (most proxies)
        if proxy.acls:
            acls = Map(where)
            for name, (text, at) in proxy.acls.items():
                acls[name] = Scalar(text, at)
            block["acls"] = acls
        for key, rules in (("tcp_request", proxy.tcp_request), ("http_request", proxy.http_request),
                           ("http_response", proxy.http_response), ("use_backend", proxy.use_backend)):
            rules = [rule for rule in rules if rule is not None]
            if not rules:
                continue
            if key == "use_backend" and not frontend:
                continue
            seq = Seq(rules[0].origin)
            seq.extend(rules)
            block[key] = seq

    def servers(self, proxy: Proxy, where: Origin, http: bool) -> tuple[Seq, Map, dict[str, Scalar]]:
        seq = Seq(where)
        checked: list[tuple[dict, Line]] = []
        marked: list[tuple[Optional[tuple], Line]] = []
        per_backend: dict[str, Scalar] = {}
        pooled: list[tuple[dict, Line]] = []
        for line in proxy.servers:
            params = parse_server_params(line, line.words[3:], self.p)
            if proxy.default_server:
                params = proxy.default_server + params
            server, settings = self.server(line, params, http)
            if server is None:
                continue
            seq.append(server)
            marked.append((settings.pop("on-marked-down", None), line))
            pool = {}
            for key in POOL_KEYS:
                if key in settings:
                    pool[key] = settings.pop(key)
            pooled.append((pool, line))
            if settings.pop("check", False):
                checked.append((settings, line))
        # on-marked-down is per server in HAProxy, per backend in lbcore.
        values_seen = {value[0] if value else None for value, _ in marked}
        if len(values_seen) > 1:
            with_it = next(line for value, line in marked if value)
            without = next(line for value, line in marked if not value)
            self.p.error(without, f"other servers of '{proxy.name}' set 'on-marked-down' ({with_it.where}): "
                         "lbcore sets it once per backend", "server")
        elif marked and marked[0][0]:
            per_backend["on-marked-down"] = _kept("on-marked-down", marked[0][0])
        for key in POOL_KEYS:
            # Per server in HAProxy, per backend in lbcore: every server says
            # the same (or, through default-server, they all inherit it).
            seen = [(pool[key], line) for pool, line in pooled if key in pool]
            if not seen:
                continue
            (value, _), first_line = seen[0]
            other = next((line for pool, line in pooled if pool.get(key, (None,))[0] != value), None)
            if other is not None:
                self.p.error(other, f"servers of '{proxy.name}' disagree on '{key}' ({first_line.where} says "
                             f"{value}): lbcore sets it once per backend", f"server {key}")
            elif value is not None:
                per_backend[key] = _kept(key, seen[0][0])
        health = self.health(proxy, where, checked, per_backend)
        return seq, health, per_backend

    def server(self, line: Line, params: list, http: bool = True) -> tuple[Optional[Map], dict]:
        at = origin(line)
        name = line.words[1]
        try:
            address = values.server_address(self.address(line.words[2]))
        except ValueError as exc:
            self.p.error(line, str(exc))
            return None, {}
        server = Map(at)
        server["name"] = Scalar(name, at)
        server["address"] = Scalar(address, at)
        # The settings lbcore keeps once per backend: word -> (value, the
        # line that set it); see _kept().
        settings: dict[str, tuple[object, Line]] = {}
        tls_words: dict[str, tuple[Optional[str], Origin]] = {}  # the last of each wins, as HAProxy
        check = False
        for word, value, where_line in params:
            if word == "check":  # (the most common word, and it needs no origin)
                check = True
                continue
            try:
                # (the check settings first: most servers have them)
                if word in ("inter", "fastinter", "downinter"):
                    settings[word] = (values.duration(value), where_line)
                elif word in ("rise", "fall"):
                    settings[word] = (values.integer(value, 1), where_line)
                elif word == "port":
                    settings[word] = (values.integer(value, 1, 65535), where_line)
                elif word == "pool-max-conn":
                    number = values.integer(value, -1)
                    settings[word] = (None if number == -1 else number, where_line)  # -1: no limit of its own
                elif word == "pool-purge-delay":
                    settings[word] = (values.duration(value), where_line)
                elif word == "on-marked-down":
                    if value != "shutdown-sessions":
                        raise ValueError(f"'on-marked-down {value}' is not supported (only shutdown-sessions)")
                    settings[word] = ("shutdown_sessions", where_line)
                else:
                    kat = origin(where_line, f"{where_line.keyword} {word}")
                    if word == "no-check":
                        check = False
                    elif word in ("backup", "no-backup"):
                        server["backup"] = Scalar(word == "backup", kat)
                    elif word == "weight":
                        server["weight"] = Scalar(values.integer(value, 0, 256), kat)
                    elif word == "maxconn":
                        number = values.integer(value)
                        if number:
                            server["maxconn"] = Scalar(number, kat)
                    elif word == "send-proxy":
                        server["send_proxy"] = Scalar("v1", kat)
                    elif word == "send-proxy-v2":
                        server["send_proxy"] = Scalar("v2", kat)
                    elif word in ("no-send-proxy", "no-send-proxy-v2"):
                        server.pop("send_proxy", None)
                    elif word == "cookie":
                        server["cookie"] = Scalar(value, kat)
                    elif word in SERVER_TLS_FLAGS or word in SERVER_TLS_VALUES:
                        tls_words.pop(word, None)  # the server line's word comes after default-server's
                        tls_words[word] = (value, kat)
                    elif word in ("disabled", "enabled"):
                        server["disabled"] = Scalar(word == "disabled", kat)
                    else:
                        raise ValueError("not supported by lbcore")
            except ValueError as exc:
                self.p.error(where_line, str(exc), f"{where_line.keyword} {word}")
        if tls_words:
            tls = self.server_tls(line, tls_words, http)
            if tls is not None:
                server["tls"] = tls
        if not check:
            server["check"] = Scalar(False, at)
        settings["check"] = check
        return server, settings

    def server_tls(self, line: Line, words: dict, http: bool) -> Optional[Map]:
        """servers[].tls from a server's TLS keywords (default-server's
        first), with the global ssl-default-server-* and ssl-server-verify."""
        if not words:
            return None  # (most servers)
        ssl = _last_of(words, "ssl", "no-ssl") == "ssl"
        check_ssl = _last_of(words, "check-ssl", "no-check-ssl")
        if not ssl and check_ssl != "check-ssl":
            given = [w for w in words if w not in ("no-ssl", "no-check-ssl")]
            if given:
                self.p.warn(line, f"{', '.join(given)} without 'ssl' or 'check-ssl': not used (as HAProxy)",
                            "server")
            return None
        spec = Map(origin(line, "server ssl" if ssl else "server check-ssl"))
        if not ssl:
            spec["traffic"] = Scalar(False, words["check-ssl"][1])
        if check_ssl is not None:
            spec["checks"] = Scalar(check_ssl == "check-ssl", words[check_ssl][1])
        defaults = self.tls.server
        try:
            options = tls_options(tuple(w for w in words if w in SERVER_TLS_OPTIONS) + (
                ("ssl-min-ver", words["ssl-min-ver"][0]) if "ssl-min-ver" in words else ()),
                line, self.p, "server")
        except ValueError as exc:
            self.p.error(line, str(exc), "server")
            options = {}
        for key, lb_key in (("verify", "verify"), ("ciphers", "ciphers"), ("ciphersuites", "ciphersuites")):
            if key in words:
                spec[lb_key] = Scalar(words[key][0], words[key][1])
            elif key in defaults:
                spec[lb_key] = Scalar(*defaults[key])
        if "min_version" in options:
            at = next((words[w][1] for w in ("ssl-min-ver", *SERVER_TLS_OPTIONS) if w in words), spec.origin)
            spec["min_version"] = Scalar(options["min_version"], at)
        elif "min_version" in defaults:
            spec["min_version"] = Scalar(*defaults["min_version"])
        for key, lb_key in (("ca-file", "ca"), ("crl-file", "crl")):
            if key in words:
                value, at = words[key]
                spec[lb_key] = Scalar(value if value == "@system-ca" else self.paths.ca(value), at)
        if "verifyhost" in words and "no-verifyhost" not in words:
            spec["verifyhost"] = Scalar(*words["verifyhost"])
        for key, lb_key in (("sni", "sni"), ("check-sni", "check_sni")):
            if key in words:
                value, at = words[key]
                if key == "sni":
                    if not (value.startswith("str(") and value.endswith(")")):
                        self.p.error(line, f"'sni {value}': only a constant str(NAME) is supported", "server sni")
                        continue
                    value = value[4:-1]
                spec[lb_key] = Scalar(value, at)
        for key, lb_key in (("alpn", "alpn"), ("check-alpn", "check_alpn")):
            if key in words:
                value, at = words[key]
                protocols = value.split(",")
                if http and "h2" in protocols:
                    self.p.warn(line, "h2 is not offered: lbcore speaks HTTP/1.1 to servers", f"server {key}")
                    protocols = [p for p in protocols if p != "h2"]
                if not protocols:
                    self.p.error(line, "no protocol left to offer once h2 is removed", f"server {key}")
                    continue
                seq = Seq(at)
                seq.extend(Scalar(protocol, at) for protocol in protocols)
                spec[lb_key] = seq
        return spec

    def health(self, proxy: Proxy, where: Origin, checked: list, per_backend: dict) -> Map:
        health = Map(where)
        if not checked:
            health["type"] = Scalar("none", where)
            return health
        # The settings lb.yaml keeps per backend must agree between servers:
        # (setting, server line) of each key, in server order.
        seen_by_key: dict[str, list[tuple[tuple, Line]]] = {}
        for settings, line in checked:
            for key, setting in settings.items():
                seen_by_key.setdefault(key, []).append((setting, line))
        for key in CHECK_SETTINGS:
            seen = seen_by_key.get(key)
            if seen is None:
                continue
            first = seen[0]
            other = None
            for item in seen:
                if item[0][0] != first[0][0]:
                    other = item
                    break
            if other is not None:
                self.p.error(other[1], f"servers of '{proxy.name}' disagree ({first[1].where} says "
                             f"{first[0][0]}, this line {other[0][0]}): lbcore sets it once per backend",
                             f"server {key}")
                continue
            if len(seen) != len(checked) and key == "port":
                missing = next(line for s, line in checked if key not in s)
                self.p.error(missing, f"other servers of '{proxy.name}' set '{key}' "
                             f"({first[1].where}): lbcore sets it once per backend", "server")
            per_backend[key] = _kept(key, first[0])
        inter = per_backend.get("inter")
        for key in ("fastinter", "downinter"):
            other = per_backend.pop(key, None)
            if other is None:
                continue
            interval = inter.python if inter else values.duration(CHECK_DEFAULTS["inter"])
            if values.seconds(other.python) != values.seconds(interval):
                self.p.errors.append(f"{other.origin}: {other.origin.keyword}: a check interval other than "
                                     "'inter' is not supported by lbcore")
        httpchk = proxy.options.get("httpchk")
        mysql = proxy.options.get("mysql-check")
        if httpchk and httpchk[0]:
            self.http_health(proxy, health, httpchk)
        elif mysql and mysql[0]:
            (user, client), at = mysql
            health["type"] = Scalar("mysql", at)
            if user is not None:
                health["user"] = Scalar(user, at)
                health["client"] = Scalar(client, at)
        else:
            health["type"] = Scalar("tcp", where)
            if "tcp_check_port" in proxy.settings and "port" not in per_backend:
                per_backend["port"] = Scalar(*proxy.settings["tcp_check_port"])
            tcp_check = proxy.options.get("tcp-check")
            if tcp_check and tcp_check[0] and proxy.tcp_steps:
                steps = Seq(tcp_check[1])
                for kind, text, line in proxy.tcp_steps:
                    at = origin(line, f"tcp-check {kind.split('_')[0]}")
                    step = Map(at)
                    step[kind] = Scalar(text, at)
                    steps.append(step)
                health["steps"] = steps
        for key, lb_key in PER_BACKEND.items():
            if key in per_backend:
                health[lb_key] = per_backend[key]
            elif key in CHECK_DEFAULTS:
                value = CHECK_DEFAULTS[key]
                health[lb_key] = Scalar(values.duration(value) if key == "inter" else int(value), where)
        if "check" not in proxy.timeouts:
            # Without `timeout check`, HAProxy gives a probe `inter` to finish.
            health["timeout"] = Scalar(health["interval"].python, health["interval"].origin)
        # Every server starts UP in HAProxy until its first check says otherwise.
        health["initial_state"] = Scalar("up", where)
        return health

    def http_health(self, proxy: Proxy, health: Map, httpchk: tuple) -> None:
        (method, uri, version), at = httpchk
        health["type"] = Scalar("http", at)
        headers: dict[str, str] = {}
        if "\r\n" in version:
            # Old style: "HTTP/1.1\r\nHost:\ example" smuggles headers in.
            version, *extra = version.split("\r\n")
            for header in extra:
                name, _, value = header.partition(":")
                if name:
                    headers[name.strip()] = value.strip()
        expect: object = ["2xx", "3xx"]  # bare httpchk passes on 2xx and 3xx
        expect_at = at
        for line in proxy.http_check:
            words = line.words[1:]
            lat = origin(line, f"http-check {words[0]}")
            if words[0] == "send":
                rest = list(words[1:])
                while rest:
                    key = rest.pop(0)
                    if key in ("meth", "uri", "ver") and rest:
                        value = rest.pop(0)
                        method, uri, version = (value if key == "meth" else method,
                                                value if key == "uri" else uri,
                                                value if key == "ver" else version)
                        at = lat
                    elif key == "hdr" and len(rest) >= 2:
                        name = rest.pop(0)
                        headers[name] = rest.pop(0)
                    else:
                        self.p.error(line, f"'{key}' is not supported (meth, uri, ver, hdr)", "http-check send")
                        break
            else:
                try:
                    if words[1] == "rstatus":
                        expect = values.status_regex(words[2])
                    else:
                        expect = values.status_codes(words[2])
                except ValueError as exc:
                    self.p.error(line, str(exc), "http-check expect")
                expect_at = lat
        health["method"] = Scalar(method, at)
        health["path"] = Scalar(uri, at)
        host = next((v for k, v in headers.items() if k.lower() == "host"), None)
        if host is not None:
            health["host"] = Scalar(host, at)
        others = {k: v for k, v in headers.items() if k.lower() != "host"}
        if others:
            mapping = Map(at)
            for name, value in others.items():
                mapping[name] = Scalar(value, at)
            health["headers"] = mapping
        if isinstance(expect, list) and len(expect) == 1:
            expect = expect[0]
        health["expect_status"] = _scalar_or_seq(expect, expect_at)

    # -- stats --------------------------------------------------------------------

    def metrics_binds(self, proxy: Proxy) -> list[Scalar]:
        """The binds of an exporter-only listen, served by lbcore's stats
        endpoint code with /metrics alone and no auth."""
        out = []
        for bind in proxy.binds:
            params = [w for w in bind.words[2:] if w != "transparent"]
            if params:
                self.p.error(bind, f"'{' '.join(params)}' on an exporter listener is not supported", "bind")
                continue
            try:
                addresses = values.bind_addresses(self.address(bind.words[1]))
            except ValueError as exc:
                self.p.error(bind, str(exc))
                continue
            out.extend(Scalar(address, origin(bind)) for address in addresses)
        if not proxy.binds:
            self.p.error(proxy.line, f"{proxy.kind} '{proxy.name}' has no 'bind' line", proxy.kind)
        for rules in (proxy.http_request, proxy.use_backend, proxy.tcp_request, proxy.http_response):
            rule = next((r for r in rules if r is not None), None)
            if rule is not None:
                self.p.errors.append(f"{rule.origin}: {rule.origin.keyword}: rules in an exporter listen are "
                                     "not supported (lbcore serves /metrics there and nothing else)")
        return out

    def stats(self, proxy: Proxy) -> Optional[Map]:
        where = origin(proxy.line, f"{proxy.kind} {proxy.name}")
        stats = Map(where, comment=_comment(proxy))
        if len(proxy.binds) != 1 or len(values.bind_addresses(self.address(proxy.binds[0].words[1]))) != 1:
            self.p.error(proxy.line, "lbcore's stats endpoint listens on exactly one address", proxy.kind)
            return None
        bind = proxy.binds[0]
        tls, transparent, interface = self.bind_params(bind, bind.words[2:])
        if interface:
            self.p.error(bind, "'interface' on the stats listener is not supported", "bind interface")
        if transparent:
            self.p.warn(bind, "the stats endpoint binds without IP_TRANSPARENT: its address must be "
                              "this host's (as it is for TripleO's per-node stats listen)", "bind transparent")
        stats["bind"] = Scalar(values.bind_addresses(self.address(bind.words[1]))[0], origin(bind))
        if tls is not None:
            stats["tls"] = tls
        st = proxy.stats
        if "uri" in st:
            uri, line = st["uri"]
            if uri not in STATS_URIS:
                self.p.error(line, f"lbcore serves its stats page at one of {', '.join(STATS_URIS)} "
                             f"(with ';csv' for the CSV), not '{uri}'", "stats uri")
        auths = st.get("auths", ([], None))[0]
        if len(auths) > 1:
            self.p.error(auths[1][2], "lbcore's stats endpoint has one user", "stats auth")
        if auths:
            user, password, line = auths[0]
            auth = Map(origin(line, "stats auth"))
            auth["user"] = Scalar(user, origin(line, "stats auth"))
            auth["password"] = Scalar(password, origin(line, "stats auth"))
            stats["auth"] = auth
        admin = st.get("admin")
        stats["admin"] = Scalar(bool(admin), origin(admin[1], "stats admin") if admin else where)
        if "refresh" in st:
            stats["refresh"] = Scalar(st["refresh"][0], origin(st["refresh"][1], "stats refresh"))
        if proxy.servers:
            self.p.error(proxy.servers[0], "a stats listen with servers is not supported "
                         "(lbcore's stats endpoint serves only the stats)", "server")
        for rules in (proxy.http_request, proxy.use_backend):
            rule = next((r for r in rules if r is not None), None)
            if rule is not None:
                self.p.errors.append(f"{rule.origin}: {rule.origin.keyword}: rules in a stats "
                                     "listen are not supported (lbcore's stats endpoint serves only the stats)")
        return stats


def _comment(proxy: Proxy) -> str:
    """The comment `convert` writes above a proxy's block: where it was."""
    line = proxy.line
    return f"{line.file}:{line.number} {proxy.kind} {proxy.name}"


def _kept(key: str, setting: tuple[object, Line]) -> Scalar:
    """A server setting lbcore keeps once per backend, marked with the line
    and keyword that set it (made only for the value kept: a backend's
    servers repeat them)."""
    value, line = setting
    return Scalar(value, origin(line, f"{line.keyword} {key}"))


def to_plain_tls(tls: Optional[Map]) -> object:
    if tls is None:
        return None
    return {k: (v.python if isinstance(v, Scalar) else [i.python for i in v]) for k, v in tls.items()}


def _scalar_or_seq(value: object, at: Origin):
    if isinstance(value, (list, tuple)):
        seq = Seq(at)
        for item in value:
            seq.append(Scalar(item, at))
        return seq
    return Scalar(value, at)
