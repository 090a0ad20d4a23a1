"""ACL pattern matching: `-m str|beg|end|sub|reg|dom|dir|len|int|ip|found|bool`,
`-i`, integer operators and ranges, IP networks.

`compile_matcher` turns a method and its patterns into one function of the
sample value, built once at load.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any, Callable, Optional

from .errors import RuleError

METHODS = ("str", "beg", "end", "sub", "reg", "dom", "dir", "len", "int", "ip", "found", "bool")
_INT_OPERATORS = ("eq", "ge", "gt", "le", "lt")
_DOM_DELIMS = frozenset(b"/?.:")
_DIR_DELIMS = frozenset(b"/?")


def compile_matcher(method: str, patterns: list, icase: bool) -> Callable[[Any], bool]:
    if method not in METHODS:
        raise RuleError(f"unknown match method {method!r} (expected one of {', '.join(METHODS)})")
    if method == "found":
        if patterns:
            raise RuleError("'-m found' takes no patterns")
        return _found
    if method == "bool":
        if patterns:
            raise RuleError("'-m bool' takes no patterns")
        return _truthy
    if not patterns:
        # As HAProxy: an ACL without patterns never matches.
        return _never
    if method == "int":
        return _int_matcher(_int_ranges(patterns))
    if method == "len":
        ranges = _int_ranges(patterns)
        inner = _int_matcher(ranges)
        return lambda v: v is not None and inner(len(_text(v)))
    if method == "ip":
        return _ip_matcher(patterns)
    if method == "reg":
        flags = re.IGNORECASE if icase else 0
        regexes = []
        for pattern in patterns:
            regexes.append(compile_regex(pattern, flags))
        return _reg_matcher(tuple(regexes))
    encoded = [p.encode() for p in patterns]
    if icase:
        encoded = [p.lower() for p in encoded]
    return _STRING_MATCHERS[method](encoded, icase)


def compile_regex(pattern: str, flags: int = 0):
    try:
        return re.compile(pattern.encode(), flags)
    except re.error as exc:
        raise RuleError(f"invalid regex {pattern!r}: {exc}") from None


def _found(value) -> bool:
    return value is not None


def _truthy(value) -> bool:
    if value is None:
        return False
    if value.__class__ is bytes:
        try:
            return int(value) != 0
        except ValueError:
            return bool(value)
    return bool(value)


def _never(value) -> bool:
    return False


def _text(value) -> Optional[bytes]:
    if value.__class__ is bytes or value is None:
        return value
    if value.__class__ is bool:
        return b"1" if value else b"0"
    return str(value).encode()


def _str_matcher(patterns, icase):
    table = frozenset(patterns)
    if icase:
        return lambda v: v is not None and _text(v).lower() in table
    if len(table) == 1:
        (only,) = table
        return lambda v: v == only if v.__class__ is bytes else (v is not None and _text(v) == only)
    return lambda v: v is not None and _text(v) in table


def _beg_matcher(patterns, icase):
    prefixes = tuple(patterns)
    if icase:
        return lambda v: v is not None and _text(v).lower().startswith(prefixes)
    return lambda v: v is not None and _text(v).startswith(prefixes)


def _end_matcher(patterns, icase):
    suffixes = tuple(patterns)
    if icase:
        return lambda v: v is not None and _text(v).lower().endswith(suffixes)
    return lambda v: v is not None and _text(v).endswith(suffixes)


def _sub_matcher(patterns, icase):
    needles = tuple(patterns)

    def match(v):
        if v is None:
            return False
        text = _text(v).lower() if icase else _text(v)
        for needle in needles:
            if needle in text:
                return True
        return False
    return match


def _delimited_matcher(delims):
    def build(patterns, icase):
        # As HAProxy: delimiters at the ends of a pattern are ignored.
        strip = bytes(delims)
        needles = tuple(p.strip(strip) for p in patterns)

        def match(v):
            if v is None:
                return False
            text = _text(v).lower() if icase else _text(v)
            size = len(text)
            for needle in needles:
                start = text.find(needle)
                while start >= 0:
                    end = start + len(needle)
                    if (start == 0 or text[start - 1] in delims) and (end == size or text[end] in delims):
                        return True
                    start = text.find(needle, start + 1)
            return False
        return match
    return build


_STRING_MATCHERS = {
    "str": _str_matcher,
    "beg": _beg_matcher,
    "end": _end_matcher,
    "sub": _sub_matcher,
    "dom": _delimited_matcher(_DOM_DELIMS),
    "dir": _delimited_matcher(_DIR_DELIMS),
}


def _reg_matcher(regexes):
    if len(regexes) == 1:
        search = regexes[0].search
        return lambda v: v is not None and search(_text(v)) is not None

    def match(v):
        if v is None:
            return False
        text = _text(v)
        for regex in regexes:
            if regex.search(text) is not None:
                return True
        return False
    return match


# -- integers --------------------------------------------------------------------

def _int_ranges(patterns: list) -> tuple:
    """`eq 5`, `gt 20`, `10:20`, `:5`, `7` -> inclusive (low, high) ranges
    (None = open)."""
    ranges = []
    words = list(patterns)
    i = 0
    while i < len(words):
        word = words[i]
        if word in _INT_OPERATORS:
            if i + 1 >= len(words):
                raise RuleError(f"operator {word!r} needs a number after it")
            number = _int(words[i + 1])
            ranges.append({"eq": (number, number), "ge": (number, None), "gt": (number + 1, None),
                           "le": (None, number), "lt": (None, number - 1)}[word])
            i += 2
            continue
        if ":" in word:
            low_text, high_text = word.split(":", 1)
            low = _int(low_text) if low_text else None
            high = _int(high_text) if high_text else None
            ranges.append((low, high))
        else:
            number = _int(word)
            ranges.append((number, number))
        i += 1
    return tuple(ranges)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise RuleError(f"expected an integer pattern, got {text!r}") from None


def _int_matcher(ranges: tuple) -> Callable[[Any], bool]:
    def match(v):
        if v is None:
            return False
        if v.__class__ is not int:
            if v.__class__ is bool:
                v = int(v)
            else:
                try:
                    v = int(v)
                except ValueError:
                    return False
        for low, high in ranges:
            if (low is None or v >= low) and (high is None or v <= high):
                return True
        return False
    return match


# -- IP addresses ------------------------------------------------------------------

def _ip_matcher(patterns: list) -> Callable[[Any], bool]:
    v4, v6 = [], []
    for pattern in patterns:
        try:
            network = ipaddress.ip_network(pattern, strict=False)
        except ValueError:
            raise RuleError(f"invalid IP address or network {pattern!r}") from None
        mask = int(network.netmask)
        entry = (int(network.network_address) & mask, mask)
        (v4 if network.version == 4 else v6).append(entry)
    v4_nets, v6_nets = tuple(v4), tuple(v6)

    def match(v):
        if v is None:
            return False
        address = parse_ip(v)
        if address is None:
            return False
        version, number = address
        for net, mask in (v4_nets if version == 4 else v6_nets):
            if number & mask == net:
                return True
        return False
    match.networks = {4: v4_nets, 6: v6_nets}  # for checks that have the address parsed already
    return match


def parse_ip(value) -> Optional[tuple]:
    """(4 or 6, address as int) of an address in text; an IPv4-mapped IPv6
    address counts as IPv4, as a dual-stack listener reports IPv4 clients."""
    text = value.decode("latin-1") if value.__class__ is bytes else str(value)
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
        return 4, int.from_bytes(packed, "big")
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, text.split("%", 1)[0])
    except OSError:
        return None
    if packed[:12] == b"\0" * 10 + b"\xff\xff":
        return 4, int.from_bytes(packed[12:], "big")
    return 6, int.from_bytes(packed, "big")
