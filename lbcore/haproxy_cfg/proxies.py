"""The keywords of defaults, frontend, backend and listen sections.

A proxy starts as a copy of the defaults section in force where it is
declared (HAProxy's rule: the last `defaults` above it, or the one named by
`from`), then each of its lines changes that copy. Once every file is read,
`Proxy.frontend()` and `Proxy.backend()` give the lb.yaml blocks.
"""

from __future__ import annotations

from typing import Callable, Optional

from . import values
from .lexer import Line, quote_word
from .tree import Map, Origin, Scalar, Seq

# Section capabilities, as HAProxy's PR_CAP_*.
DEF, FE, BE = 1, 2, 4
LISTEN = FE | BE
SECTION_CAPS = {"defaults": DEF, "frontend": FE, "backend": BE, "listen": LISTEN}

TIMEOUT_KEYS = {"connect": "connect", "client": "client", "server": "server",
                "http-request": "http_request", "http-keep-alive": "http_keep_alive",
                "tunnel": "tunnel", "queue": "queue", "check": "check"}
# Which sides use each timeout (HAProxy refuses the others where they
# cannot apply only with a warning; lbcore keeps them where they belong).
BALANCES = {"roundrobin", "leastconn", "source", "first", "uri"}
NO_TIMEOUT = "24d"  # what a `timeout X 0` (infinite in HAProxy) becomes: HAProxy's own timer limit


def origin(line: Line, keyword: Optional[str] = None) -> Origin:
    """Where a value of `line` came from; the line's own keyword's origin is
    made once per line (its values share it)."""
    if keyword is None or keyword == line.keyword:
        at = line.origin
        if at is None:
            at = line.origin = Origin(line.file, line.number, line.keyword)
        return at
    return Origin(line.file, line.number, keyword)


def condition(words: tuple[str, ...]) -> str:
    return " ".join(quote_word(word) for word in words)


class Problems:
    """Errors and warnings, each naming file:line and keyword."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, line: Line, message: str, keyword: Optional[str] = None) -> None:
        self.errors.append(f"{line.where}: {keyword or line.keyword}: {message}")

    def warn(self, line: Line, message: str, keyword: Optional[str] = None) -> None:
        self.warnings.append(f"{line.where}: {keyword or line.keyword}: {message}")


class Proxy:
    """One defaults, frontend, backend or listen section being read, which
    starts with copies of what its `defaults` section (if any) hands down."""

    __slots__ = ("kind", "caps", "name", "line", "p", "settings", "timeouts", "options", "http_check",
                 "tcp_steps", "tcp_steps_inherited", "default_server", "binds", "servers", "acls",
                 "tcp_request", "http_request", "http_response", "use_backend", "stick_rules", "stats",
                 "prometheus", "error_files")

    def __init__(self, kind: str, name: str, line: Line, problems: Problems,
                 defaults: Optional["Proxy"] = None):
        self.kind = kind
        self.caps = SECTION_CAPS[kind]
        self.name = name
        self.line = line
        self.p = problems
        d = defaults
        self.settings: dict[str, tuple[object, Origin]] = dict(d.settings) if d else {}
        # What most sections keep as their defaults wrote it is shared with
        # the defaults: a line that changes one of these gives its section a
        # new dict or list, never changes the one it holds. (The proxies
        # that keep their defaults' timeouts share one block: see
        # Builder.timeouts.)
        self.timeouts: dict[str, tuple[str, Origin]] = d.timeouts if d else {}
        # name -> (args or False, origin)
        self.options: dict[str, tuple[object, Origin]] = d.options if d else {}
        self.http_check: list[Line] = d.http_check if d else []
        self.tcp_steps: list[tuple[str, str, Line]] = d.tcp_steps if d else []  # tcp-check send/expect
        self.tcp_steps_inherited = bool(d and d.tcp_steps)
        self.default_server: list[tuple[str, Optional[str], Line]] = d.default_server if d else []
        self.binds: list[Line] = []
        self.servers: list[Line] = []
        self.acls: dict[str, tuple[str, Origin]] = {}
        self.tcp_request: list[Map] = []
        self.http_request: list[Map] = []
        self.http_response: list[Map] = []
        self.use_backend: list[Map] = []
        self.stick_rules: list[Map] = []
        self.stats: dict[str, tuple[object, Line]] = d.stats if d else {}
        self.prometheus: Optional[Line] = None
        # status -> (path, origin)
        self.error_files: dict[str, tuple[str, Origin]] = d.error_files if d else {}

    def inherit(self, kind: str, name: str, line: Line) -> "Proxy":
        """A new proxy that starts with this defaults section's settings."""
        return Proxy(kind, name, line, self.p, self)

    # -- reading lines ------------------------------------------------------

    def read(self, line: Line) -> None:
        keyword = line.keyword
        if keyword == "no" and len(line.words) > 1 and line.words[1] == "option":
            self.option(line, negate=True)
            return
        entry = KEYWORDS.get(keyword)
        if entry is None:
            self.p.error(line, f"unknown keyword in '{self.kind}' section")
            return
        caps, handler = entry
        if not caps & self.caps:
            where = {DEF: "defaults", FE: "frontend", BE: "backend"}
            allowed = " or ".join(name for bit, name in where.items() if caps & bit)
            self.p.error(line, f"not allowed in a '{self.kind}' section (only in {allowed})")
            return
        try:
            handler(self, line)
        except ValueError as exc:
            self.p.error(line, str(exc))

    def set(self, key: str, value: object, line: Line, keyword: Optional[str] = None) -> None:
        self.settings[key] = (value, origin(line, keyword))

    def args(self, line: Line, count: int, usage: str) -> tuple[str, ...]:
        words = line.words[1:]
        if len(words) != count:
            raise ValueError(f"expected {usage}")
        return words

    # -- keyword handlers -----------------------------------------------------

    def mode(self, line: Line) -> None:
        (mode,) = self.args(line, 1, "'mode http' or 'mode tcp'")
        if mode not in ("http", "tcp"):
            raise ValueError(f"unsupported mode '{mode}' (lbcore runs http and tcp)")
        self.set("mode", mode, line)

    def balance(self, line: Line) -> None:
        words = line.words[1:]
        if not words:
            raise ValueError("expected an algorithm")
        algo = words[0]
        if algo == "static-rr":
            self.p.warn(line, "static-rr runs as roundrobin (weights stay changeable at run time)")
            algo = "roundrobin"
        if algo.startswith("hdr(") and algo.endswith(")") and len(words) == 1:
            self.set("balance", algo, line)
            return
        if algo == "url_param" and len(words) == 2:
            self.set("balance", f"url_param({words[1]})", line)
            return
        if algo not in BALANCES or len(words) != 1:
            raise ValueError(f"balance '{' '.join(words)}' is not supported (roundrobin, static-rr, leastconn, "
                             "source, first, uri, hdr(NAME), url_param NAME)")
        self.set("balance", algo, line)

    def hash_type(self, line: Line) -> None:
        words = line.words[1:]
        if not words or words[0] not in ("map-based", "consistent"):
            raise ValueError("expected map-based or consistent")
        if len(words) > 1 and words[1:] != ("sdbm",):
            raise ValueError(f"hash function '{' '.join(words[1:])}' is not supported (lbcore hashes keys with its own function)")
        self.set("hash", words[0], line)

    def maxconn(self, line: Line) -> None:
        (value,) = self.args(line, 1, "a number")
        number = values.integer(value)
        if number == 0:
            self.settings.pop("maxconn", None)  # 0: no limit of its own
            return
        self.set("maxconn", number, line)

    def retries(self, line: Line) -> None:
        (value,) = self.args(line, 1, "a number")
        self.set("retries", values.integer(value), line)

    def timeout(self, line: Line) -> None:
        words = line.words[1:]
        if len(words) != 2:
            raise ValueError("expected 'timeout NAME TIME'")
        name, value = words
        keyword = f"timeout {name}"
        if name not in TIMEOUT_KEYS:
            self.p.error(line, "not supported by lbcore (it has: "
                         + ", ".join(f"timeout {t}" for t in TIMEOUT_KEYS) + ")", keyword)
            return
        try:
            if values.is_zero_time(value):
                # HAProxy: no timeout at all (TripleO's RabbitMQ listen). lbcore
                # keeps a bound: the longest timer HAProxy itself can hold.
                self.p.warn(line, f"0 means no timeout in HAProxy; lbcore uses {NO_TIMEOUT}", keyword)
                value = NO_TIMEOUT
            entry = (values.duration(value), origin(line, keyword))
            self.timeouts = {**self.timeouts, TIMEOUT_KEYS[name]: entry}
        except ValueError as exc:
            self.p.error(line, str(exc), keyword)

    def option(self, line: Line, negate: bool = False) -> None:
        words = line.words[2:] if negate else line.words[1:]
        if not words:
            raise ValueError("expected an option name")
        name, rest = words[0], words[1:]
        keyword = ("no option " if negate else "option ") + name
        handler = OPTIONS.get(name)
        if handler is None:
            self.p.error(line, "not supported by lbcore", keyword)
            return
        if negate:
            if rest:
                self.p.error(line, "takes no argument after 'no option'", keyword)
                return
            self.options = {**self.options, name: (False, origin(line, keyword))}
            return
        try:
            value = handler(self, line, rest)
        except ValueError as exc:
            self.p.error(line, str(exc), keyword)
            return
        options = dict(self.options)
        if name in CHECK_OPTIONS:
            for other in CHECK_OPTIONS:
                options.pop(other, None)
        options[name] = (value, origin(line, keyword))
        self.options = options

    def http_check_line(self, line: Line) -> None:
        words = line.words[1:]
        if not words:
            raise ValueError("expected send, expect or disable-on-404")
        if words[0] == "send":
            pass
        elif words[0] == "expect":
            if len(words) != 3 or words[1] not in ("status", "rstatus"):
                raise ValueError("only 'http-check expect status CODES' and 'http-check expect rstatus REGEX' "
                                 "are supported")
        else:
            self.p.error(line, "not supported by lbcore", f"http-check {words[0]}")
            return
        if self.kind != "defaults" and self.http_check and self.http_check[0].file == "<defaults>":
            self.http_check = []
        self.http_check = self.http_check + [line]

    def tcp_check(self, line: Line) -> None:
        """tcp-check connect [port N] [ssl] | send TEXT | expect [!] string|rstring TEXT:
        the steps of a tcp check (health.steps), run when `option tcp-check` is on."""
        words = line.words[1:]
        keyword = "tcp-check " + (words[0] if words else "")
        if self.tcp_steps_inherited:  # a section's own rules replace its defaults', as HAProxy's
            self.tcp_steps, self.tcp_steps_inherited = [], False
        if words and words[0] == "connect":
            rest = list(words[1:])
            if self.tcp_steps:
                self.p.error(line, "a 'connect' after other steps (a second connection) is not supported "
                             "by lbcore", keyword)
                return
            while rest:
                word = rest.pop(0)
                if word == "port" and rest:
                    self.set("tcp_check_port", values.integer(rest.pop(0), 1, 65535), line, "tcp-check connect")
                elif word == "ssl":
                    self.p.warn(line, "accepted: the check speaks TLS when the servers have 'check-ssl' "
                                      "(as TripleO renders them)", "tcp-check connect ssl")
                elif word == "linger":
                    pass
                else:
                    self.p.error(line, f"'{word}' is not supported (port N, ssl)", keyword)
                    return
            return
        if len(words) == 2 and words[0] == "send":
            self.tcp_steps = self.tcp_steps + [("send", words[1], line)]
            return
        if len(words) == 3 and words[0] == "expect" and words[1] in ("string", "rstring"):
            self.tcp_steps = self.tcp_steps + [("expect" if words[1] == "string" else "expect_regex", words[2], line)]
            return
        if words and words[0] == "comment":
            return
        self.p.error(line, "not supported by lbcore (connect [port N] [ssl], send TEXT, "
                           "expect string TEXT, expect rstring REGEX)", keyword)

    def default_server_line(self, line: Line) -> None:
        self.default_server = self.default_server + parse_server_params(line, line.words[1:], self.p, default=True)

    def server(self, line: Line) -> None:
        if len(line.words) < 3:
            raise ValueError("expected 'server NAME ADDRESS [params]'")
        self.servers.append(line)

    def bind(self, line: Line) -> None:
        if len(line.words) < 2:
            raise ValueError("expected 'bind ADDRESS [params]'")
        self.binds.append(line)

    def default_backend(self, line: Line) -> None:
        (name,) = self.args(line, 1, "a backend name")
        self.set("default_backend", name, line)

    def use_backend_line(self, line: Line) -> None:
        words = line.words[1:]
        if not words:
            raise ValueError("expected 'use_backend NAME [if|unless COND]'")
        rule = Map(origin(line))
        rule["backend"] = Scalar(words[0], origin(line))
        self._condition(rule, line, words[1:])
        self.use_backend.append(rule)

    def _condition(self, rule: Map, line: Line, words: tuple[str, ...]) -> None:
        if not words:
            return
        if words[0] not in ("if", "unless") or len(words) < 2:
            raise ValueError(f"expected 'if CONDITION' or 'unless CONDITION', got '{' '.join(words)}'")
        rule[words[0]] = Scalar(condition(words[1:]), origin(line))

    def acl(self, line: Line) -> None:
        words = line.words[1:]
        if len(words) < 2:
            raise ValueError("expected 'acl NAME CRITERION [flags] [values]'")
        name, text = words[0], condition(words[1:])
        if name in self.acls:
            previous, first = self.acls[name]
            # HAProxy ORs repeated ACLs; in lb.yaml one name has one criterion,
            # so only repeats of the same criterion can be joined (their values).
            same_fetch = previous.split()[0] == words[1]
            if not same_fetch:
                raise ValueError(f"ACL '{name}' is declared again with another criterion (first at {first}); "
                                 "lbcore takes one criterion per ACL name")
            extra = condition(tuple(w for w in words[2:] if not w.startswith("-")))
            text = previous + " " + extra
            self.acls[name] = (text, first)
            return
        self.acls[name] = (text, origin(line))

    def http_request_line(self, line: Line) -> None:
        self.http_request.append(http_rule(self, line, response=False))

    def http_response_line(self, line: Line) -> None:
        self.http_response.append(http_rule(self, line, response=True))

    def redirect(self, line: Line) -> None:
        words = line.words[1:]
        split = next((i for i, w in enumerate(words) if w in ("if", "unless")), len(words))
        if not split:
            raise ValueError("expected 'redirect location|prefix|scheme ...'")
        rule = Map(origin(line))
        rule["redirect"] = Scalar(condition(words[:split]), origin(line))
        self._condition(rule, line, words[split:])
        self.http_request.append(rule)

    def tcp_request_line(self, line: Line) -> None:
        words = line.words[1:]
        if len(words) < 2 or words[0] not in ("connection", "content", "session"):
            if words and words[0] == "inspect-delay":
                self.p.error(line, "not supported by lbcore", "tcp-request inspect-delay")
                return
            raise ValueError("expected 'tcp-request connection|content ACTION [if|unless COND]'")
        keyword = f"tcp-request {words[0]} {words[1]}"
        action, rest = words[1], words[2:]
        rule = Map(origin(line, keyword))
        if action in ("accept", "reject"):
            rule[action] = Scalar(True, origin(line, keyword))
        elif action.startswith("track-sc") and rest:
            rule[action.replace("-", "_")] = Scalar(rest[0], origin(line, keyword))
            rest = rest[1:]
            if rest and rest[0] == "table":
                raise ValueError("'track-sc table NAME' in tcp-request is not supported")
        else:
            self.p.error(line, "not supported by lbcore", keyword)
            return
        self._condition(rule, line, rest)
        self.tcp_request.append(rule)

    def monitor_uri(self, line: Line) -> None:
        (uri,) = self.args(line, 1, "a path")
        self.set("monitor_uri", uri, line)

    def errorfile(self, line: Line) -> None:
        (code, path) = self.args(line, 2, "'errorfile CODE FILE'")
        self.error_files = {**self.error_files, code: (path, origin(line))}

    def log(self, line: Line) -> None:
        words = line.words[1:]
        if words == ("global",):
            self.set("log", "global", line)
        else:
            raise ValueError("only 'log global' is supported in proxies (lbcore has one log, set in 'global')")

    def stats_line(self, line: Line) -> None:
        words = line.words[1:]
        if not words:
            raise ValueError("expected a stats keyword")
        keyword = f"stats {words[0]}"
        sub, rest = words[0], words[1:]
        self.stats = dict(self.stats)  # (this section's own from now on)
        if sub in ("enable",) and not rest:
            self.stats["enable"] = (True, line)
        elif sub == "uri" and len(rest) == 1:
            self.stats["uri"] = (rest[0], line)
        elif sub == "refresh" and len(rest) == 1:
            self.stats["refresh"] = (values.duration(rest[0]), line)
        elif sub == "realm" and len(rest) == 1:
            self.stats["realm"] = (rest[0], line)
        elif sub == "auth" and len(rest) == 1:
            user, colon, password = rest[0].partition(":")
            if not colon or not user:
                raise ValueError("expected 'stats auth USER:PASSWORD'")
            auths = self.stats.get("auths", ([], line))[0]
            self.stats["auths"] = (auths + [(user, password, line)], line)
        elif sub == "admin" and rest in (("if", "TRUE"), ("if", "always_true")):
            self.stats["admin"] = (True, line)
        elif sub in ("hide-version", "show-node", "show-legends", "show-desc") and len(rest) <= 1:
            self.p.warn(line, "accepted: a display option of HAProxy's page; lbcore's stats page is its own",
                        keyword)
        else:
            self.p.error(line, "not supported by lbcore", keyword)

    def stick_table(self, line: Line) -> None:
        words = line.words[1:]
        table = Map(origin(line))
        i = 0
        store = None
        while i < len(words):
            key = words[i]
            if key in ("type", "size", "expire", "peers") and i + 1 < len(words):
                value = words[i + 1]
                if key == "expire":
                    value = values.duration(value)
                table[key] = Scalar(value, origin(line))
                i += 2
                if key == "type" and i < len(words) and words[i] == "len":
                    table["len"] = Scalar(values.integer(words[i + 1], 1), origin(line))
                    i += 2
            elif key == "store" and i + 1 < len(words):
                store = store or Seq(origin(line))
                for item in words[i + 1].split(","):
                    store.append(Scalar(item, origin(line)))
                i += 2
            elif key == "nopurge":
                raise ValueError("'nopurge' is not supported")
            else:
                raise ValueError(f"unexpected '{key}' (expected type, size, expire, peers, store)")
        if store is not None:
            table["store"] = store
        self.set("stick_table", table, line)

    def stick(self, line: Line) -> None:
        """stick on | match | store-request SAMPLE [table NAME]."""
        words = line.words[1:]
        kinds = {"on": {}, "match": {"store": False}, "store-request": {"match": False}}
        keyword = f"stick {words[0]}" if words else "stick"
        if not words or words[0] not in kinds:
            self.p.error(line, "not supported by lbcore (stick on, stick match, stick store-request)", keyword)
            return
        if len(words) not in (2, 4) or (len(words) == 4 and words[2] != "table"):
            self.p.error(line, f"expected '{keyword} SAMPLE [table NAME]' (conditions are not supported)",
                         keyword)
            return
        at = origin(line, keyword)
        rule = Map(at)
        rule["on"] = Scalar(words[1], at)
        for flag, value in kinds[words[0]].items():
            rule[flag] = Scalar(value, at)
        if len(words) == 4:
            rule["table"] = Scalar(words[3], at)
        self.stick_rules.append(rule)

    def cookie(self, line: Line) -> None:
        words = line.words[1:]
        if not words:
            raise ValueError("expected 'cookie NAME [insert|rewrite|prefix] [indirect] [nocache]'")
        spec = Map(origin(line))
        spec["name"] = Scalar(words[0], origin(line))
        rest = list(words[1:])
        # No mode word: HAProxy's passive cookie (the application sets it,
        # HAProxy only reads it); lb.yaml's default mode is insert.
        spec["mode"] = Scalar("passive", origin(line))
        while rest:
            word = rest.pop(0)
            if word in ("insert", "rewrite", "prefix"):
                spec["mode"] = Scalar(word, origin(line))
            elif word in ("indirect", "nocache", "preserve", "httponly", "secure"):
                spec[word] = Scalar(True, origin(line))
            elif word == "domain" and rest:
                spec["domain"] = Scalar(rest.pop(0), origin(line))
            else:
                raise ValueError(f"cookie option '{word}' is not supported (insert, rewrite, prefix, indirect, "
                                 "nocache, preserve, httponly, secure, domain)")
        self.set("cookie", spec, line)

    def disabled(self, line: Line) -> None:
        """disabled / enabled: a disabled proxy is not started (HAProxy)."""
        self.args(line, 0, f"no argument after '{line.keyword}'")
        if line.keyword == "disabled":
            self.set("disabled", True, line)
        else:
            self.settings.pop("disabled", None)

    def grace(self, line: Line) -> None:
        raise ValueError("the 'grace' keyword is not supported any more since HAProxy version 2.5 "
                         "(the global 'grace' is lbcore's global.stop_delay)")

    def accepted_warning(self, line: Line) -> None:
        self.p.warn(line, "accepted: tunes HAProxy's internals, nothing to do in lbcore")


# -- options ----------------------------------------------------------------------

def _no_args(name: str) -> Callable:
    def handler(proxy: Proxy, line: Line, rest: tuple[str, ...]) -> object:
        if rest:
            raise ValueError(f"'option {name}' takes no argument")
        return True
    return handler


def _warned(name: str, message: str) -> Callable:
    def handler(proxy: Proxy, line: Line, rest: tuple[str, ...]) -> object:
        if rest:
            raise ValueError(f"'option {name}' takes no argument here")
        proxy.p.warn(line, message, f"option {name}")
        return True
    return handler


def _forwardfor(proxy: Proxy, line: Line, rest: tuple[str, ...]) -> object:
    value: dict = {}
    words = list(rest)
    while words:
        key = words.pop(0)
        if key == "except" and words:
            value["except"] = words.pop(0)
        elif key == "header" and words:
            if words[0].lower() != "x-forwarded-for":
                raise ValueError("'header NAME' is not supported (lbcore writes X-Forwarded-For)")
            words.pop(0)
        elif key == "if-none":
            raise ValueError("'if-none' is not supported (lbcore appends to X-Forwarded-For)")
        else:
            raise ValueError(f"unexpected '{key}' (expected except NETWORK)")
    return value


def _httpchk(proxy: Proxy, line: Line, rest: tuple[str, ...]) -> object:
    # option httpchk [URI] | [METHOD URI [VERSION]]: bare means OPTIONS / HTTP/1.0
    if len(rest) > 3:
        raise ValueError("expected 'option httpchk [METHOD] [URI] [VERSION]'")
    if len(rest) == 1:
        return ("OPTIONS", rest[0], "HTTP/1.0")
    if len(rest) >= 2:
        return (rest[0], rest[1], rest[2] if len(rest) == 3 else "HTTP/1.0")
    return ("OPTIONS", "/", "HTTP/1.0")


def _checks(name: str) -> Callable:
    def handler(proxy: Proxy, line: Line, rest: tuple[str, ...]) -> object:
        if name == "tcp-check" and rest:
            raise ValueError("'option tcp-check' takes no argument")
        if name != "tcp-check":
            raise ValueError(f"'option {name}' is not supported by lbcore "
                             "(health checks are tcp connect, http or mysql-check)")
        return True
    return handler


def _mysql_check(proxy: Proxy, line: Line, rest: tuple[str, ...]) -> object:
    """option mysql-check [user NAME [post-41|pre-41]] -> (user or None, client)."""
    if not rest:
        return (None, "post-41")
    if rest[0] != "user" or len(rest) not in (2, 3):
        raise ValueError("expected 'option mysql-check [user NAME [post-41|pre-41]]'")
    client = rest[2] if len(rest) == 3 else "post-41"
    if client not in ("post-41", "pre-41"):
        raise ValueError(f"'{client}': expected post-41 or pre-41")
    return (rest[1], client)


# The options that choose the check a backend runs: the last one set wins,
# as in HAProxy (each replaces the check rules of the ones before).
CHECK_OPTIONS = ("httpchk", "tcp-check", "mysql-check", "pgsql-check", "redis-check", "ssl-hello-chk",
                 "smtpchk", "ldap-check")


TCPKA = "accepted: lbcore does not set SO_KEEPALIVE; idle connections end by the timeouts"

OPTIONS: dict[str, Callable] = {
    "redispatch": _no_args("redispatch"),
    "allbackups": _no_args("allbackups"),
    "forwardfor": _forwardfor,
    "httpchk": _httpchk,
    "tcp-check": _checks("tcp-check"),
    "mysql-check": _mysql_check,
    "pgsql-check": _checks("pgsql-check"),
    "redis-check": _checks("redis-check"),
    "ssl-hello-chk": _checks("ssl-hello-chk"),
    "smtpchk": _checks("smtpchk"),
    "ldap-check": _checks("ldap-check"),
    "httplog": _no_args("httplog"),
    "tcplog": _no_args("tcplog"),
    "dontlognull": _no_args("dontlognull"),
    "http-keep-alive": _no_args("http-keep-alive"),
    "httpclose": _warned("httpclose", "accepted: lbcore keeps client and server connections alive "
                                      "(requests are still balanced one by one)"),
    "http-server-close": _warned("http-server-close", "accepted: lbcore keeps server connections "
                                                      "pooled (requests are still balanced one by one)"),
    "clitcpka": _warned("clitcpka", TCPKA),
    "srvtcpka": _warned("srvtcpka", TCPKA),
    "tcpka": _warned("tcpka", TCPKA),
    "splice-auto": _warned("splice-auto", "accepted: lbcore splices large tcp transfers by itself"),
    "splice-request": _warned("splice-request", "accepted: lbcore splices large tcp transfers by itself"),
    "splice-response": _warned("splice-response", "accepted: lbcore splices large tcp transfers by itself"),
}


# -- http-request / http-response rules -------------------------------------------

def _split_condition(words: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    split = next((i for i, w in enumerate(words) if w in ("if", "unless")), len(words))
    return words[:split], words[split:]


def http_rule(proxy: Proxy, line: Line, response: bool) -> Map:
    words = line.words[1:]
    if not words:
        raise ValueError("expected an action")
    action, args = words[0], words[1:]
    keyword = f"{line.keyword} {action}"
    where = origin(line, keyword)
    args, cond = _split_condition(args)
    rule = Map(where)

    def need(count: int, usage: str) -> None:
        if len(args) != count:
            raise ValueError(f"'{keyword}' expects {usage}")

    if action in ("set-header", "add-header"):
        if len(args) < 2:
            raise ValueError(f"'{keyword}' expects NAME FORMAT")
        header = Seq(where)
        header.append(Scalar(args[0], where))
        header.append(Scalar(" ".join(args[1:]), where))
        rule[action.replace("-", "_")] = header
    elif action == "del-header":
        need(1, "NAME")
        rule["del_header"] = Scalar(args[0], where)
    elif action in ("replace-header", "replace-value"):
        need(3, "NAME REGEX REPLACEMENT")
        seq = Seq(where)
        for arg in args:
            seq.append(Scalar(arg, where))
        rule[action.replace("-", "_")] = seq
    elif action == "deny":
        status = 502 if response else 403  # HAProxy's defaults
        rest = list(args)
        if rest[:1] == ["deny_status"] and len(rest) >= 2:
            status = values.integer(rest[1], 200, 599)
            rest = rest[2:]
        if rest:
            raise ValueError(f"'{keyword}' options '{' '.join(rest)}' are not supported (only deny_status)")
        rule["deny"] = Scalar(status, where)
    elif action == "allow" and not args:
        rule["allow"] = Scalar(True, where)
    elif action == "redirect" and not response and args:
        rule["redirect"] = Scalar(condition(args), where)
    elif action == "return":
        ret = Map(where)
        rest = list(args)
        while rest:
            key = rest.pop(0)
            if key == "status" and rest:
                ret["status"] = Scalar(values.integer(rest.pop(0), 200, 599), where)
            elif key == "content-type" and rest:
                ret["content_type"] = Scalar(rest.pop(0), where)
            elif key == "string" and rest:
                ret["body"] = Scalar(rest.pop(0), where)
            elif key == "hdr" and len(rest) >= 2:
                headers = ret["headers"] if "headers" in ret else Map(where)
                name, value = rest.pop(0), rest.pop(0)
                headers[name] = Scalar(value, where)
                ret["headers"] = headers
            else:
                raise ValueError(f"'return' option '{key}' is not supported (status, content-type, string, hdr)")
        rule["return"] = ret
    elif action in ("set-path", "set-query", "set-uri") and not response:
        need(1, "FORMAT")
        rule[action.replace("-", "_")] = Scalar(args[0], where)
    elif action.startswith("track-sc") and not response and args:
        if len(args) == 1:
            rule[action.replace("-", "_")] = Scalar(args[0], where)
        elif len(args) == 3 and args[1] == "table":
            track = Map(where)
            track["key"] = Scalar(args[0], where)
            track["table"] = Scalar(args[2], where)
            rule[action.replace("-", "_")] = track
        else:
            raise ValueError(f"'{keyword}' expects KEY [table NAME]")
    elif action == "auth" and not response:
        auth = Map(where)
        rest = list(args)
        if rest[:1] == ["realm"] and len(rest) == 2:
            auth["realm"] = Scalar(rest[1], where)
        elif rest:
            raise ValueError(f"'{keyword}' expects [realm NAME]")
        rule["auth"] = auth
    elif action == "use-service" and not response:
        if args != ("prometheus-exporter",):
            raise ValueError("only 'use-service prometheus-exporter' is supported")
        if proxy.prometheus is not None:
            raise ValueError("a second prometheus-exporter service in the same proxy")
        if cond not in ((), ("if", "{", "path", "/metrics", "}")):
            raise ValueError("lbcore serves the exporter at /metrics only: expected "
                             "'use-service prometheus-exporter if { path /metrics }'")
        proxy.prometheus = line
        return None  # served by the stats endpoint, not a rule
    else:
        proxy.p.error(line, "not supported by lbcore", keyword)
        return None
    proxy._condition(rule, line, cond)
    return rule


# -- server lines -----------------------------------------------------------------

SERVER_FLAGS = frozenset(("check", "backup", "disabled", "send-proxy", "send-proxy-v2", "ssl", "check-ssl",
                "no-check", "no-backup", "no-ssl", "no-send-proxy", "no-send-proxy-v2", "enabled",
                "no-check-ssl", "no-tls-tickets", "allow-0rtt", "no-verifyhost", "no-sslv3", "no-tlsv10",
                "no-tlsv11", "no-tlsv12", "force-tlsv12", "force-tlsv13"))
SERVER_VALUES = frozenset(("inter", "fastinter", "downinter", "rise", "fall", "port", "weight", "maxconn", "cookie",
                 "on-marked-down", "on-marked-up", "verify", "ca-file", "crl-file", "verifyhost", "sni",
                 "alpn", "check-alpn", "check-sni", "addr", "minconn", "maxqueue", "slowstart", "id",
                 "observe", "error-limit", "on-error", "init-addr", "resolvers", "agent-check", "agent-port",
                 "agent-inter", "proto", "ssl-min-ver", "ssl-max-ver", "ciphers", "ciphersuites", "crt",
                 "source", "usesrc", "pool-max-conn", "pool-purge-delay", "max-reuse", "tfo", "track"))


def parse_server_params(line: Line, words: tuple[str, ...], problems: Problems,
                        default: bool = False) -> list[tuple[str, Optional[str], Line]]:
    """(keyword, value or None for a flag, line) of each server parameter,
    in order."""
    out = []
    i = 0
    count = len(words)
    while i < count:
        word = words[i]
        if word in SERVER_FLAGS:
            out.append((word, None, line))
            i += 1
        elif word in SERVER_VALUES:
            if i + 1 >= count:
                problems.error(line, f"'{word}' expects a value", f"server {word}")
                return out
            out.append((word, words[i + 1], line))
            i += 2
        else:
            problems.error(line, "unknown server parameter", f"{'default-server' if default else 'server'} {word}")
            i += 1
    return out


# -- the keyword table: name -> (capabilities, handler) -------------------------------

KEYWORDS: dict[str, tuple[int, Callable[[Proxy, Line], None]]] = {
    "mode": (DEF | LISTEN, Proxy.mode),
    "balance": (DEF | BE, Proxy.balance),
    "hash-type": (DEF | BE, Proxy.hash_type),
    "maxconn": (DEF | FE, Proxy.maxconn),
    "retries": (DEF | BE, Proxy.retries),
    "timeout": (DEF | LISTEN, Proxy.timeout),
    "option": (DEF | LISTEN, Proxy.option),
    "http-check": (DEF | BE, Proxy.http_check_line),
    "tcp-check": (DEF | BE, Proxy.tcp_check),
    "default-server": (DEF | BE, Proxy.default_server_line),
    "server": (BE, Proxy.server),
    "bind": (FE, Proxy.bind),
    "default_backend": (DEF | FE, Proxy.default_backend),
    "use_backend": (FE, Proxy.use_backend_line),
    "acl": (LISTEN, Proxy.acl),
    "http-request": (LISTEN, Proxy.http_request_line),
    "http-response": (LISTEN, Proxy.http_response_line),
    "redirect": (LISTEN, Proxy.redirect),
    "tcp-request": (LISTEN, Proxy.tcp_request_line),
    "monitor-uri": (DEF | FE, Proxy.monitor_uri),
    "errorfile": (DEF | LISTEN, Proxy.errorfile),
    "log": (DEF | LISTEN, Proxy.log),
    "stats": (DEF | LISTEN, Proxy.stats_line),
    "stick-table": (LISTEN, Proxy.stick_table),
    "stick": (BE, Proxy.stick),
    "cookie": (DEF | BE, Proxy.cookie),
    "disabled": (DEF | LISTEN, Proxy.disabled),
    "grace": (DEF | LISTEN, Proxy.grace),
    "enabled": (DEF | LISTEN, Proxy.disabled),
}
