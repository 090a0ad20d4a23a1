"""Sample fetches and converters: HAProxy's `fetch(args),conv,conv(args)`.

A fetch reads one fact of the connection, request or response; converters
transform it. Both are looked up by name in registries (`FETCHES`,
`CONVERTERS`) that other modules extend with `fetch()` and `converter()`
(auth adds `http_auth`, stick tables add `sc_*`). Expressions are compiled
once into closures; evaluation is a few attribute reads and calls.

Values are bytes, int or bool; None means "no sample" (an absent header,
a query-less URL), which matches no pattern and renders as "".
"""

from __future__ import annotations

import os
from dataclasses import field
from typing import Any, Callable, Optional
from urllib.parse import unquote_to_bytes

from ..dataclass_code import dataclass
from .errors import RuleError
from .syntax import split_call, split_chain

# Where a fetch's data exists (a bit each): the connection (any rule),
# the request head (http_request, use_backend), the response head.
L4, REQ, RES = 1, 2, 4
PHASE_NAMES = {L4: "tcp_request", REQ: "http_request", RES: "http_response"}


@dataclass
class Context:
    """What compiling an expression may need: the phase it runs in, the
    directory relative files are read from, the userlists, and one cache
    of loaded map and pattern files for the whole config."""

    phase: int = REQ
    base_dir: str = "."
    userlists: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)  # (kind, path) -> loaded file
    where: str = "http_request"  # the rule list, for error messages
    section: str = ""  # the frontend or backend, e.g. auth's default realm
    error_files: dict = field(default_factory=dict)  # status -> answers.ErrorFile, for deny

    def path(self, name: str) -> str:
        return os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(name)))


@dataclass(frozen=True)
class FetchDef:
    """A registered fetch. `build(args, ctx)` returns (one, many): `one(msg)`
    gives the value (the last occurrence for headers), `many(msg)` every
    value an ACL tries, or None when there is only one."""

    name: str
    build: Callable[[list, Context], tuple]
    kind: str  # str | int | ip | bool: the default ACL match
    where: int
    min_args: int = 0
    max_args: int = 0


@dataclass(frozen=True)
class ConverterDef:
    name: str
    build: Callable[[list, Context], Callable[[Any], Any]]
    min_args: int = 0
    max_args: int = 0


FETCHES: dict[str, FetchDef] = {}
CONVERTERS: dict[str, ConverterDef] = {}


def fetch(name: str, kind: str, where: int, min_args: int = 0, max_args: int = 0):
    """Decorator registering a fetch builder under `name`."""
    def register(build):
        FETCHES[name] = FetchDef(name, build, kind, where, min_args, max_args)
        return build
    return register


def converter(name: str, min_args: int = 0, max_args: int = 0):
    def register(build):
        CONVERTERS[name] = ConverterDef(name, build, min_args, max_args)
        return build
    return register


def as_bytes(value: Any) -> Optional[bytes]:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return b"1" if value else b"0"
    return str(value).encode()


# -- layer 4 -------------------------------------------------------------------

def _simple(getter):
    return lambda args, ctx: (getter, None)


fetch("src", "ip", L4)(_simple(lambda m: m.conn.src_bytes()))
fetch("src_port", "int", L4)(_simple(lambda m: m.conn.src_port))
fetch("dst", "ip", L4)(_simple(lambda m: m.conn.dst_bytes()))
fetch("dst_port", "int", L4)(_simple(lambda m: m.conn.dst_port))
fetch("ssl_fc", "bool", L4)(_simple(lambda m: m.conn.ssl))
fetch("ssl_fc_sni", "str", L4)(_simple(lambda m: m.conn.sni))
fetch("always_true", "bool", L4)(_simple(lambda m: True))
fetch("always_false", "bool", L4)(_simple(lambda m: False))

# -- request -------------------------------------------------------------------

fetch("method", "str", REQ)(_simple(lambda m: m.method))
fetch("path", "str", REQ)(_simple(lambda m: m.path()))
fetch("query", "str", REQ)(_simple(lambda m: m.query()))
fetch("url", "str", REQ)(_simple(lambda m: m.target))
fetch("req.ver", "str", REQ)(_simple(lambda m: m.version))
fetch("req_ver", "str", REQ)(_simple(lambda m: m.version))


@fetch("base", "str", REQ)
def _base(args, ctx):
    def base(m):
        host = m.headers.last(b"host")
        return (host or b"") + m.path()
    return base, None


@fetch("url_param", "str", REQ, 1, 2)
def _url_param(args, ctx):
    name = args[0].encode()
    if not name:
        raise RuleError("url_param needs a parameter name")
    delim = args[1].encode() if len(args) > 1 and args[1] else b"&"
    prefix = name + b"="

    def values(m):
        query = m.query()
        if not query:
            return []
        return [part[len(prefix):] for part in query.split(delim) if part.startswith(prefix)]

    def one(m):
        found = values(m)
        return found[0] if found else None
    return one, values


def _occurrence(args: list, index: int) -> Optional[int]:
    if len(args) <= index or args[index] == "":
        return None
    try:
        occ = int(args[index])
    except ValueError:
        raise RuleError(f"occurrence must be an integer, got {args[index]!r}") from None
    return occ


def _header_fetch(attr: str, full: bool):
    """hdr(name[,occ]) and friends over the request's or response's headers;
    `attr` picks whose ("" = the message being evaluated)."""
    def build(args, ctx):
        if not args or not args[0]:
            raise RuleError("needs a header name, e.g. hdr(host)")
        lname = args[0].lower().encode()
        occ = _occurrence(args, 1)
        pick_all = (lambda h: h.full_values(lname)) if full else (lambda h: h.values(lname))
        pick_last = (lambda h: h.last_full(lname)) if full else (lambda h: h.last(lname))
        headers_of = _headers_of(attr)
        key = b"\n" + lname + b":"
        if occ is None and not full:
            # the common case, on the request path of every request
            def one(m):
                return m.headers.last_at(key)
            return one, (lambda m: m.headers.values_at(key))
        if occ is None or occ == -1:
            def one(m):
                return pick_last(headers_of(m))
        else:
            def one(m):
                found = pick_all(headers_of(m))
                try:
                    return found[occ - 1 if occ > 0 else occ]
                except IndexError:
                    return None
        if occ is not None:
            return one, None
        return one, (lambda m: pick_all(headers_of(m)))
    return build


def _headers_of(attr: str):
    # req.hdr is a request-only fetch, so the message is the request then.
    return _message_headers


def _message_headers(m):
    return m.headers


def _header_count(attr: str, full: bool):
    def build(args, ctx):
        if not args or not args[0]:
            raise RuleError("needs a header name, e.g. hdr_cnt(host)")
        lname = args[0].lower().encode()
        headers_of = _headers_of(attr)
        if full:
            return (lambda m: len(headers_of(m).full_values(lname))), None
        return (lambda m: len(headers_of(m).values(lname))), None
    return build


# `hdr` reads the message the rule runs on: the request in http_request,
# the response in http_response, as in HAProxy.
fetch("hdr", "str", REQ | RES, 1, 2)(_header_fetch("", False))
fetch("fhdr", "str", REQ | RES, 1, 2)(_header_fetch("", True))
fetch("hdr_cnt", "int", REQ | RES, 1, 1)(_header_count("", False))
fetch("req.hdr", "str", REQ, 1, 2)(_header_fetch("request", False))
fetch("req.fhdr", "str", REQ, 1, 2)(_header_fetch("request", True))
fetch("req.hdr_cnt", "int", REQ, 1, 1)(_header_count("request", False))
fetch("res.hdr", "str", RES, 1, 2)(_header_fetch("", False))
fetch("res.fhdr", "str", RES, 1, 2)(_header_fetch("", True))
fetch("res.hdr_cnt", "int", RES, 1, 1)(_header_count("", False))
fetch("status", "int", RES)(_simple(lambda m: m.status))


# -- converters ----------------------------------------------------------------

def _lower(value):
    value = as_bytes(value)
    return value.lower() if value is not None else None


def _upper(value):
    value = as_bytes(value)
    return value.upper() if value is not None else None


def _url_dec(value):
    value = as_bytes(value)
    if value is None:
        return None
    return unquote_to_bytes(value.replace(b"+", b" ") if b"+" in value else value)


converter("lower")(lambda args, ctx: _lower)
converter("upper")(lambda args, ctx: _upper)
converter("url_dec", 0, 1)(lambda args, ctx: _url_dec)


# -- expressions ---------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    """A compiled `fetch(args),conv,...`."""

    text: str
    fetch: FetchDef
    one: Callable  # msg -> value or None
    many: Callable  # msg -> list of values
    multi: bool  # whether an ACL may see several values (header occurrences)


def _build_fetch(text: str, ctx: Context, allow_alias: bool = False) -> tuple:
    name, args, rest = split_call(text)
    if rest:
        raise RuleError(f"unexpected {rest!r} after {name}(...)")
    definition = FETCHES.get(name)
    if definition is None:
        raise RuleError(f"unknown fetch {name!r}")
    if not definition.min_args <= len(args) <= definition.max_args:
        if definition.max_args == 0:
            raise RuleError(f"fetch {name!r} takes no arguments")
        raise RuleError(f"fetch {name!r} takes {definition.min_args}"
                        + (f" to {definition.max_args}" if definition.max_args != definition.min_args else "")
                        + f" argument(s), got {len(args)}")
    if not definition.where & (ctx.phase | L4):
        raise RuleError(f"fetch {name!r} reads the {_data_name(definition.where)}, "
                        f"which {ctx.where} rules cannot see")
    try:
        one, many = definition.build(args, ctx)
    except RuleError as exc:
        raise RuleError(f"{name}: {exc}") from None
    return definition, one, many


def _data_name(where: int) -> str:
    if where & REQ:
        return "request"
    if where & RES:
        return "response"
    return "connection"


def _build_converter(text: str, ctx: Context) -> Callable:
    name, args, rest = split_call(text)
    if rest:
        raise RuleError(f"unexpected {rest!r} after converter {name}(...)")
    definition = CONVERTERS.get(name)
    if definition is None:
        raise RuleError(f"unknown converter {name!r}")
    if not definition.min_args <= len(args) <= definition.max_args:
        raise RuleError(f"converter {name!r} takes {definition.min_args}"
                        + (f" to {definition.max_args}" if definition.max_args != definition.min_args else "")
                        + f" argument(s), got {len(args)}")
    try:
        return definition.build(args, ctx)
    except RuleError as exc:
        raise RuleError(f"{name}: {exc}") from None


def compile_sample(text: str, ctx: Context) -> Sample:
    text = text.strip()
    if not text:
        raise RuleError("empty sample expression")
    parts = split_chain(text)
    definition, one, many = _build_fetch(parts[0], ctx)
    convs = [_build_converter(part.strip(), ctx) for part in parts[1:]]
    multi = many is not None
    if convs:
        one = _chain_one(one, convs)
        many = _chain_many(many, convs) if many is not None else None
    if many is None:
        single = one

        def many(m):
            value = single(m)
            return () if value is None else (value,)
    return Sample(text, definition, one, many, multi)


def _chain_one(one, convs):
    if len(convs) == 1:
        conv = convs[0]

        def converted(m):
            value = one(m)
            return conv(value) if value is not None else None
        return converted

    def chained(m):
        value = one(m)
        for conv in convs:
            if value is None:
                return None
            value = conv(value)
        return value
    return chained


def _chain_many(many, convs):
    def chained(m):
        out = []
        for value in many(m):
            for conv in convs:
                if value is None:
                    break
                value = conv(value)
            if value is not None:
                out.append(value)
        return out
    return chained


# -- log-format strings: literal text with %[sample] --------------------------

@dataclass(frozen=True)
class Format:
    """A header value, redirect target or backend name with `%[...]` parts.
    `constant` is set when there is none."""

    text: str
    constant: Optional[bytes]
    parts: tuple  # bytes, or Sample.one callables
    render: Callable = field(compare=False)  # msg -> bytes
    # No CR or LF can come out: the text has none, and no sample is
    # url-decoded (request targets and header values never hold them raw).
    clean: bool = True
    only: Optional[str] = None  # the expression, when the text is exactly one %[...]


def _renderer(constant: Optional[bytes], parts: tuple) -> Callable:
    if constant is not None:
        return lambda msg: constant
    if len(parts) == 1:
        (one,) = parts

        def render_one(msg):
            value = one(msg)
            if value.__class__ is bytes:
                return value
            return b"" if value is None else as_bytes(value)
        return render_one

    def render(msg):
        out = []
        for part in parts:
            if part.__class__ is bytes:
                out.append(part)
            else:
                value = part(msg)
                if value is not None:
                    out.append(value if value.__class__ is bytes else as_bytes(value))
        return b"".join(out)
    return render


def compile_format(text: str, ctx: Context) -> Format:
    parts: list = []
    literal = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "%" and i + 1 < n and text[i + 1] == "%":
            literal.append("%")
            i += 2
            continue
        if c == "%" and i + 1 < n and text[i + 1] == "[":
            end = _closing_bracket(text, i + 2)
            if end < 0:
                raise RuleError(f"missing ']' after '%[' in {text!r}")
            if literal:
                parts.append("".join(literal).encode())
                literal = []
            expr = text[i + 2:end].strip()
            parts.append(_TEXT_OF.get(expr) or compile_sample(expr, ctx).one)
            i = end + 1
            continue
        literal.append(c)
        i += 1
    if literal:
        parts.append("".join(literal).encode())
    clean = "url_dec" not in text and "\r" not in text and "\n" not in text
    if all(part.__class__ is bytes for part in parts):
        constant = b"".join(parts)
        return Format(text, constant, (), _renderer(constant, ()), clean)
    stripped = text.strip()
    only = stripped[2:-1].strip() if len(parts) == 1 and stripped.startswith("%[") else None
    return Format(text, None, tuple(parts), _renderer(None, tuple(parts)), clean, only)


# Connection facts copied into headers on every request: their text is
# made once per connection (Connection caches it).
_TEXT_OF = {
    "src": lambda m: m.conn.src_bytes(),
    "dst": lambda m: m.conn.dst_bytes(),
    "dst_port": lambda m: m.conn.dst_port_bytes(),
}


def _closing_bracket(text: str, start: int) -> int:
    depth = 0
    quote = ""
    for i in range(start, len(text)):
        c = text[i]
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "]" and depth <= 0:
            return i
    return -1
