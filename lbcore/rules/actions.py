"""Rule actions and rule lists: tcp_request, http_request, http_response,
use_backend, with HAProxy 2.6's order and semantics.

A rule is a condition (or None) and an action; `engine.run(rules, msg)`
applies the rules in order (see engine.py for what an action returns). `TCP_REQUEST_ACTIONS`,
`HTTP_REQUEST_ACTIONS` and `HTTP_RESPONSE_ACTIONS` map an action's key in
lb.yaml to its parser; other modules add theirs (track_sc0, ...).
"""

from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple, Optional

from . import answers
from .answers import DENY_CODES, REDIRECT_CODES, Answer
from .engine import (REJECT, STOP, Action, CallAction, CallRenderer, ConnectionText, Constant,  # noqa: F401
                     ConstantText, DelHeader, Renderer, SetHeader, run)
from .errors import RuleError
from .matching import compile_regex
from .samples import Context, Format, compile_format


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class Rule(NamedTuple):
    """One rule: `when` (a checks.Check, or None for always) and `act` (an
    engine.Action). A tuple: engine.run reads it by index."""

    when: Optional[Any]
    act: Any
    name: str

    def __repr__(self) -> str:
        return f"Rule({self.name})"




# -- value helpers ---------------------------------------------------------------

def _header_name(value: Any) -> bytes:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise RuleError(f"invalid header name {value!r}")
    return value.encode()


def _pair(value: Any, what: str) -> tuple:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise RuleError(f"{what} takes [NAME, VALUE], got {value!r}")
    return value[0], value[1]


def _text(value: Any, what: str) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise RuleError(f"{what} takes a string, got {value!r}")
    return str(value)


def _status(value: Any, allowed: tuple, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuleError(f"{what}: expected a status code, got {value!r}")
    if value not in allowed:
        raise RuleError(f"{what}: status {value} is not one of {', '.join(map(str, allowed))}")
    return value


def _no_crlf(rendered: bytes) -> bytes:
    # A sample copied into a header must not start a new header line.
    if b"\n" in rendered or b"\r" in rendered:
        return rendered.replace(b"\r", b"").replace(b"\n", b"")
    return rendered


def _truth(value: Any, what: str) -> None:
    if value is not True:
        raise RuleError(f"{what} takes true, got {value!r}")


# -- header actions (both directions) ----------------------------------------------

def set_header(value, ctx):
    name, fmt = _pair(value, "set_header")
    name = _header_name(name)
    return SetHeader(name, _header_renderer(compile_format(_text(fmt, "set_header"), ctx)), True)


def _header_renderer(fmt: Format) -> Renderer:
    """fmt's value for a header line: samples that may carry CR or LF (a
    url_dec'ed path) cannot start a new line."""
    if fmt.constant is not None:
        return ConstantText(_no_crlf(fmt.constant))
    if fmt.only in ("src", "dst", "dst_port"):
        return ConnectionText(fmt.only)
    render = fmt.render
    if fmt.clean:
        return CallRenderer(render)
    return CallRenderer(lambda msg: _no_crlf(render(msg)))


def add_header(value, ctx):
    name, fmt = _pair(value, "add_header")
    name = _header_name(name)
    return SetHeader(name, _header_renderer(compile_format(_text(fmt, "add_header"), ctx)), False)


def del_header(value, ctx):
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    return DelHeader(_header_name(value).lower())


def _replace(value, ctx, what: str, per_value: bool):
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise RuleError(f"{what} takes [NAME, REGEX, REPLACEMENT], got {value!r}")
    name, pattern, replacement = value
    lname = _header_name(name).lower()
    regex = compile_regex(_text(pattern, what))
    fmt = compile_format(_text(replacement, what), ctx)

    def act(msg):
        if not msg.headers.has(lname):
            return None
        template = fmt.render(msg)

        def rewrite_one(text: bytes) -> Optional[bytes]:
            # As HAProxy: the whole value becomes the replacement, with \1..
            # standing for the groups of the regex's match in it.
            found = regex.search(text)
            if found is None:
                return None
            return _no_crlf(_expand(template, found))

        if per_value:
            def rewrite(text: bytes) -> Optional[bytes]:
                parts = [part.strip(b" \t") for part in text.split(b",")]
                out = [rewrite_one(part) or part for part in parts]
                # as HAProxy: the values joined again by bare commas
                return b",".join(out) if out != parts else None
        else:
            rewrite = rewrite_one
        msg.headers.rewrite(lname, rewrite)
        msg.changed = True
        return None
    return act


_BACKREF = re.compile(rb"\\([0-9])")


def _expand(template: bytes, found) -> bytes:
    if b"\\" not in template:
        return template
    return _BACKREF.sub(lambda m: found.group(int(m.group(1))) or b"", template)


def replace_header(value, ctx):
    return _replace(value, ctx, "replace_header", per_value=False)


def replace_value(value, ctx):
    return _replace(value, ctx, "replace_value", per_value=True)


# -- request-only actions ----------------------------------------------------------

def set_path(value, ctx):
    fmt = compile_format(_text(value, "set_path"), ctx)

    def act(msg):
        msg.set_path(_no_crlf(fmt.render(msg)).replace(b" ", b"%20"))
    return act


def set_query(value, ctx):
    fmt = compile_format(_text(value, "set_query"), ctx)

    def act(msg):
        msg.set_query(_no_crlf(fmt.render(msg)).replace(b" ", b"%20"))
    return act


def set_uri(value, ctx):
    fmt = compile_format(_text(value, "set_uri"), ctx)

    def act(msg):
        msg.set_target(_no_crlf(fmt.render(msg)).replace(b" ", b"%20"))
    return act


def allow(value, ctx):
    _truth(value, "allow")
    return Constant(STOP)


def deny_request(value, ctx):
    return _deny(value, ctx, 403, "deny")


def deny_response(value, ctx):
    return _deny(value, ctx, 502, "deny")


def _deny(value, ctx, default: int, what: str):
    """deny: true | STATUS | {status, content_type, body}."""
    if value is True or (isinstance(value, int) and not isinstance(value, bool)):
        status = default if value is True else _status(value, DENY_CODES, what)
        # The section's errorfile for the status, as HAProxy's deny uses it.
        error_file = ctx.error_files.get(status)
        answer = error_file.answer("deny") if error_file is not None else answers.error_page(status, "deny")
    elif isinstance(value, dict):
        answer = _custom_answer(value, ctx, "deny", default, DENY_CODES)
    else:
        raise RuleError(f"{what} takes true, a status code or {{status, content_type, body}}, got {value!r}")
    if isinstance(answer, Answer):
        return Constant(answer)
    return answer


_RETURN_KEYS = ("status", "content_type", "body", "headers")


def return_(value, ctx):
    """return: true | {status: 200, content_type, body, headers}."""
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise RuleError(f"return takes {{status, content_type, body, headers}}, got {value!r}")
    answer = _custom_answer(value, ctx, "return", 200, None)
    return Constant(answer) if isinstance(answer, Answer) else answer


def _custom_answer(value: dict, ctx: Context, kind: str, default: int, allowed):
    for key in value:
        if key not in _RETURN_KEYS:
            raise RuleError(f"{kind}: unknown key {key!r} (expected {', '.join(_RETURN_KEYS)})")
    status = value.get("status", default)
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        raise RuleError(f"{kind}: status must be a code in 200..599, got {status!r}")
    if allowed is not None:
        _status(status, allowed, kind)
    content_type = value.get("content_type")
    body = value.get("body")
    if body is not None and content_type is None:
        content_type = "text/plain"
    ctype = _text(content_type, "content_type").encode() if content_type is not None else None
    body_bytes = _text(body, "body").encode() if body is not None else b""
    header_formats = []
    headers = value.get("headers") or {}
    if isinstance(headers, dict):
        headers = list(headers.items())
    if not isinstance(headers, list):
        raise RuleError(f"{kind}: headers takes a mapping of NAME: VALUE, got {headers!r}")
    for item in headers:
        name, fmt = _pair(item, f"{kind} headers")
        header_formats.append((_header_name(name), compile_format(_text(fmt, "header value"), ctx)))
    if all(fmt.constant is not None for _, fmt in header_formats):
        lines = b"".join(b"%s: %s\r\n" % (name, fmt.constant) for name, fmt in header_formats)
        return answers.custom(status, kind, lines, ctype, body_bytes)

    def act(msg):
        lines = b"".join(b"%s: %s\r\n" % (name, _no_crlf(fmt.render(msg))) for name, fmt in header_formats)
        return answers.custom(status, kind, lines, ctype, body_bytes)
    return act


def redirect(value, ctx):
    """redirect: "scheme https|location URL|prefix URL [code N] [drop-query] [append-slash]
    [set-cookie NAME[=VALUE]] [clear-cookie NAME]" (HAProxy's words)."""
    from .syntax import split_words
    if isinstance(value, dict):
        words = []
        for key, item in value.items():
            words.append(key.replace("_", "-"))
            if item is not True:
                words.append(str(item))
    else:
        words = split_words(_text(value, "redirect"))
    if len(words) < 2 or words[0] not in ("scheme", "location", "prefix"):
        raise RuleError(f"redirect takes 'scheme|location|prefix TARGET [code N] [options]', got {value!r}")
    kind, target = words[0], compile_format(words[1], ctx)
    code = 302
    drop_query = append_slash = False
    cookie = b""
    i = 2
    while i < len(words):
        word = words[i]
        if word == "code":
            if i + 1 >= len(words) or not words[i + 1].isdigit():
                raise RuleError("redirect: 'code' needs a status, e.g. 'code 301'")
            code = _status(int(words[i + 1]), REDIRECT_CODES, "redirect code")
            i += 2
            continue
        if word == "drop-query":
            drop_query = True
        elif word == "append-slash":
            append_slash = True
        elif word in ("set-cookie", "clear-cookie") and i + 1 < len(words):
            name = words[i + 1]
            if word == "set-cookie":
                cookie = b"set-cookie: %s; path=/\r\n" % name.encode()
            else:
                cookie = b"set-cookie: %s; path=/; max-age=0\r\n" % name.split("=")[0].encode()
            i += 2
            continue
        else:
            raise RuleError(f"redirect: unknown option {word!r} (expected code, drop-query, "
                            "append-slash, set-cookie, clear-cookie)")
        i += 1
    return _redirector(kind, target, code, drop_query, append_slash, cookie)


def _redirector(kind: str, target: Format, code: int, drop_query: bool, append_slash: bool,
                cookie: bytes):
    def tail(msg) -> bytes:
        path = msg.path()
        if append_slash and not path.endswith(b"/"):
            path += b"/"
        query = msg.query()
        if query is not None and not drop_query:
            return path + b"?" + query
        return path

    if kind == "location":
        def act(msg):
            return answers.redirect(code, _no_crlf(target.render(msg)), cookie)
    elif kind == "prefix":
        def act(msg):
            prefix = target.render(msg)
            # "prefix /" redirects to the same path (HAProxy adds nothing).
            location = tail(msg) if prefix == b"/" else prefix + tail(msg)
            return answers.redirect(code, _no_crlf(location), cookie)
    else:
        def act(msg):
            host = msg.headers.last_full(b"host") or b""
            location = target.render(msg) + b"://" + host + tail(msg)
            return answers.redirect(code, _no_crlf(location), cookie)
    return act


def auth(value, ctx):
    """auth: true | REALM | {realm: REALM}: answer 401 asking for Basic
    credentials (used with `unless: "{ http_auth(LIST) }"`)."""
    if value is True:
        realm = ctx.section or "lbcore"
    elif isinstance(value, str) and value:
        realm = value
    elif isinstance(value, dict) and set(value) <= {"realm"} and isinstance(value.get("realm", ""), str):
        realm = value.get("realm") or ctx.section or "lbcore"
    else:
        raise RuleError(f"auth takes true, a realm or {{realm: NAME}}, got {value!r}")
    if '"' in realm or "\\" in realm or any(ord(c) < 32 for c in realm):
        raise RuleError(f"invalid realm {realm!r}")
    answer = answers.error_page(401, "auth", b'www-authenticate: Basic realm="%s"\r\n' % realm.encode())
    return Constant(answer)


# -- tcp_request ---------------------------------------------------------------------

def accept(value, ctx):
    _truth(value, "accept")
    return Constant(STOP)


def reject(value, ctx):
    _truth(value, "reject")
    return Constant(REJECT)


# -- registries: lb.yaml key -> parser(value, ctx) -> act(msg) ------------------------

TCP_REQUEST_ACTIONS: dict[str, Callable] = {"accept": accept, "reject": reject}

HTTP_REQUEST_ACTIONS: dict[str, Callable] = {
    "allow": allow,
    "deny": deny_request,
    "return": return_,
    "redirect": redirect,
    "auth": auth,
    "set_header": set_header,
    "add_header": add_header,
    "del_header": del_header,
    "replace_header": replace_header,
    "replace_value": replace_value,
    "set_path": set_path,
    "set_query": set_query,
    "set_uri": set_uri,
}

HTTP_RESPONSE_ACTIONS: dict[str, Callable] = {
    "allow": allow,
    "deny": deny_response,
    "set_header": set_header,
    "add_header": add_header,
    "del_header": del_header,
    "replace_header": replace_header,
    "replace_value": replace_value,
}
