"""Compiled checks: what a condition becomes once parsed.

Every check has `test(msg) -> bool` (and is callable). The checks every
request meets (path, a header, the method, the client address, and/or/not)
are small classes that the compiled build turns into C calls on C fields
(checks.pxd); anything else is a `CallCheck` around the generic
fetch-convert-match function. Pure Python runs the same classes.
"""

from __future__ import annotations

from typing import Callable

from .message import conn_of

# PathCheck and HeaderCheck kinds
BEG, END, STR, SUB, OTHER = 0, 1, 2, 3, 4


class Check:
    __slots__ = ()

    def test(self, msg) -> bool:
        raise NotImplementedError

    def __call__(self, msg) -> bool:
        return self.test(msg)


class CallCheck(Check):
    """Any check, as a function of the message."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def test(self, msg) -> bool:
        return bool(self.fn(msg))


class PathCheck(Check):
    """path (without the query) against prefixes, suffixes, exact strings,
    or any other bytes test."""

    __slots__ = ("kind", "patterns", "table", "fn")

    def __init__(self, kind: int, patterns: tuple, fn: Callable) -> None:
        self.kind = kind
        self.patterns = patterns
        self.table = frozenset(patterns)
        self.fn = fn  # kind OTHER: a test of the path bytes

    def test(self, msg) -> bool:
        request = msg
        path = request._path
        if path is None:
            path = request.path()
        kind = self.kind
        if kind == BEG:
            return path.startswith(self.patterns)
        if kind == END:
            return path.endswith(self.patterns)
        if kind == STR:
            return path in self.table
        return bool(self.fn(path))


class AttrCheck(Check):
    """url or method (a plain attribute of the request) against a bytes test."""

    __slots__ = ("url", "fn")

    def __init__(self, url: bool, fn: Callable) -> None:
        self.url = url
        self.fn = fn

    def test(self, msg) -> bool:
        request = msg
        return bool(self.fn(request.target if self.url else request.method))


class HeaderCheck(Check):
    """Each value of one header (of the message the rule runs on) against a
    bytes test; with `icase` the values are lower-cased first."""

    __slots__ = ("key", "icase", "kind", "patterns", "table", "fn")

    def __init__(self, key: bytes, icase: bool, kind: int, patterns: tuple, fn: Callable) -> None:
        self.key = key  # b"\n" + lower-case name + b":"
        self.icase = icase
        self.kind = kind
        self.patterns = patterns
        self.table = frozenset(patterns)
        self.fn = fn

    def test(self, msg) -> bool:
        message = msg  # a request or a response (a C type check when compiled)
        headers = message.headers
        values = headers.lower_values_at(self.key) if self.icase else headers.values_at(self.key)
        if not values:
            return False
        kind = self.kind
        for value in values:
            if kind == BEG:
                if value.startswith(self.patterns):
                    return True
            elif kind == END:
                if value.endswith(self.patterns):
                    return True
            elif kind == STR:
                if value in self.table:
                    return True
            elif kind == SUB:
                for needle in self.patterns:
                    if needle in value:
                        return True
            elif self.fn(value):
                return True
        return False


class IpCheck(Check):
    """The client (or local) address in one of the networks, the address
    parsed once per connection."""

    __slots__ = ("source", "v4", "v6")

    def __init__(self, source: bool, v4: tuple, v6: tuple) -> None:
        self.source = source
        self.v4 = v4  # ((network, mask), ...) as ints
        self.v6 = v6

    def test(self, msg) -> bool:
        conn = conn_of(msg)
        address = conn.src_ip() if self.source else conn.dst_ip()
        version = address[0]
        number = address[1]
        for net, mask in (self.v4 if version == 4 else self.v6):
            if number & mask == net:
                return True
        return False


class Not(Check):
    __slots__ = ("check",)

    def __init__(self, check: Check) -> None:
        self.check = check

    def test(self, msg) -> bool:
        return not self.check.test(msg)


class AllOf(Check):
    """Terms side by side: (negated, check) each."""

    __slots__ = ("checks", "negated")

    def __init__(self, terms) -> None:
        self.checks = tuple(check for _, check in terms)
        self.negated = tuple(bool(negated) for negated, _ in terms)

    def test(self, msg) -> bool:
        negated = self.negated
        i = 0
        for check in self.checks:
            if check.test(msg) == negated[i]:
                return False
            i += 1
        return True


class AnyOf(Check):
    __slots__ = ("checks",)

    def __init__(self, checks) -> None:
        self.checks = tuple(checks)

    def test(self, msg) -> bool:
        for check in self.checks:
            if check.test(msg):
                return True
        return False
