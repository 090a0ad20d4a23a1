"""Map files (`map_str`, `map_beg`, `map_dom`, `map_reg`, ...) and pattern
files (an ACL's `-f FILE`), read once per config load.

A map file has one `key value` per line (the value is the rest of the
line); a pattern file one pattern per line. Blank lines and lines starting
with `#` are skipped, as HAProxy does.
"""

from __future__ import annotations

from typing import Callable, Optional

from .errors import RuleError
from .matching import _DOM_DELIMS, _text, compile_regex
from .samples import Context, converter

# Lookups other than exact ones walk the file in order (the first match
# wins, as HAProxy's list matching); their results are remembered, up to
# this many distinct inputs per map, like HAProxy's pattern cache.
MEMO_SIZE = 10000


def read_lines(path: str, what: str) -> list[tuple[int, str]]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise RuleError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from None
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            lines.append((number, line))
    return lines


def pattern_file(ctx: Context, name: str) -> list[str]:
    path = ctx.path(name)
    key = ("patterns", path)
    if key not in ctx.files:
        ctx.files[key] = [line for _, line in read_lines(path, "pattern file")]
    return ctx.files[key]


def map_entries(ctx: Context, name: str) -> tuple[str, list[tuple[int, bytes, bytes]]]:
    path = ctx.path(name)
    key = ("map", path)
    if key not in ctx.files:
        entries = []
        for number, line in read_lines(path, "map file"):
            parts = line.split(None, 1)
            entries.append((number, parts[0].encode(), parts[1].encode() if len(parts) > 1 else b""))
        ctx.files[key] = entries
    return path, ctx.files[key]


def _memoized(lookup: Callable[[bytes], Optional[bytes]]) -> Callable[[bytes], Optional[bytes]]:
    memo: dict = {}
    missing = object()

    def cached(key: bytes) -> Optional[bytes]:
        found = memo.get(key, missing)
        if found is missing:
            if len(memo) >= MEMO_SIZE:
                memo.clear()
            found = memo[key] = lookup(key)
        return found
    return cached


def _exact(entries):
    table: dict = {}
    for _, key, value in entries:
        table.setdefault(key, value)
    return table.get


def _beg(entries):
    pairs = tuple((key, value) for _, key, value in entries)

    def lookup(text):
        for key, value in pairs:
            if text.startswith(key):
                return value
        return None
    return _memoized(lookup)


def _end(entries):
    pairs = tuple((key, value) for _, key, value in entries)

    def lookup(text):
        for key, value in pairs:
            if text.endswith(key):
                return value
        return None
    return _memoized(lookup)


def _sub(entries):
    pairs = tuple((key, value) for _, key, value in entries)

    def lookup(text):
        for key, value in pairs:
            if key in text:
                return value
        return None
    return _memoized(lookup)


def _dom(entries):
    strip = bytes(_DOM_DELIMS)
    pairs = tuple((key.strip(strip), value) for _, key, value in entries)

    def lookup(text):
        size = len(text)
        for key, value in pairs:
            start = text.find(key)
            while start >= 0:
                end = start + len(key)
                if (start == 0 or text[start - 1] in _DOM_DELIMS) and (end == size or text[end] in _DOM_DELIMS):
                    return value
                start = text.find(key, start + 1)
        return None
    return _memoized(lookup)


def _make_reg(path):
    def build(entries):
        pairs = []
        for number, key, value in entries:
            try:
                regex = compile_regex(key.decode())
            except RuleError as exc:
                raise RuleError(f"{path}:{number}: {exc}") from None
            pairs.append((regex.search, value))
        pairs = tuple(pairs)

        def lookup(text):
            for search, value in pairs:
                if search(text) is not None:
                    return value
            return None
        return _memoized(lookup)
    return build


_KINDS = {"str": _exact, "beg": _beg, "end": _end, "sub": _sub, "dom": _dom}


def _map_converter(kind: str):
    def build(args, ctx):
        if not args or not args[0]:
            raise RuleError("needs a map file, e.g. map_str(/etc/lbcore/hosts.map)")
        path, entries = map_entries(ctx, args[0])
        lookup = _make_reg(path)(entries) if kind == "reg" else _KINDS[kind](entries)
        default = args[1].encode() if len(args) > 1 else None

        def convert(value):
            found = lookup(_text(value))
            return default if found is None else found
        return convert
    return build


for _kind in ("str", "beg", "end", "sub", "dom", "reg"):
    converter(f"map_{_kind}", 1, 2)(_map_converter(_kind))
converter("map", 1, 2)(_map_converter("str"))
