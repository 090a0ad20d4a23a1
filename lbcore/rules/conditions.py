"""Conditions in HAProxy's ACL syntax, compiled once into plain checks.

    acls: {api: "path_beg /api", internal: "src 10.0.0.0/8"}
    if: "api !internal or { hdr(host) -i admin.example.com }"

An ACL is `fetch[,converter...] [-i] [-m METHOD] [-f FILE] [--] [patterns...]`;
a condition is ACL names and anonymous `{ ... }` ACLs, each optionally
negated with `!`, ANDed when side by side, with `or` / `||` between groups.
A check is a function of the message (request, response or connection
facts) returning a bool.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional, Union

from .checks import Check  # noqa: F401
from .checks import BEG, END, OTHER, STR, SUB, AllOf, AnyOf, AttrCheck, CallCheck, HeaderCheck, IpCheck, Not, PathCheck
from .errors import RuleError
from .maps import pattern_file
from .matching import compile_matcher
from .samples import L4, REQ, RES, Context, compile_sample
from .syntax import split_call, split_words



class UnknownAcl(RuleError):
    """A condition names an ACL the section does not define."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name

# ACL keywords that are a fetch with another default match, as HAProxy's.
_SUFFIXES = {"_beg": "beg", "_end": "end", "_sub": "sub", "_reg": "reg", "_dom": "dom",
             "_dir": "dir", "_len": "len"}
ACL_KEYWORDS = {}
for _base in ("path", "url", "hdr", "req.hdr", "res.hdr", "fhdr", "ssl_fc_sni", "url_param", "base"):
    for _suffix, _method in _SUFFIXES.items():
        ACL_KEYWORDS[_base + _suffix] = (_base, _method)
ACL_KEYWORDS["hdr_val"] = ("hdr", "int")
ACL_KEYWORDS["hdr_ip"] = ("hdr", "ip")
ACL_KEYWORDS["url_ip"] = ("url", "ip")

# HAProxy's predefined ACLs.
PREDEFINED = {
    "TRUE": "always_true",
    "FALSE": "always_false",
    "LOCALHOST": "src 127.0.0.1/8 ::1",
    "HTTP_1.0": "req.ver 1.0",
    "HTTP_1.1": "req.ver 1.1",
    "METH_CONNECT": "method CONNECT",
    "METH_DELETE": "method DELETE",
    "METH_GET": "method GET HEAD",
    "METH_HEAD": "method HEAD",
    "METH_OPTIONS": "method OPTIONS",
    "METH_POST": "method POST",
    "METH_PUT": "method PUT",
    "METH_TRACE": "method TRACE",
    "HTTP_URL_ABS": "url_reg ^[^/:]*://",
    "HTTP_URL_SLASH": "url_beg /",
    "HTTP_URL_STAR": "url *",
}

_DEFAULT_MATCH = {"str": "str", "int": "int", "ip": "ip", "bool": "bool"}


def compile_acl(words: list, ctx: Context) -> Check:
    """One ACL expression, already split into words."""
    if not words:
        raise RuleError("empty ACL: expected a fetch such as 'path_beg /api'")
    expr = words[0]
    name, args, rest = split_call(expr)
    method = None
    alias = ACL_KEYWORDS.get(name)
    if alias is not None:
        base, method = alias
        expr = base + expr[len(name):]
    icase = False
    patterns: list = []
    files: list = []
    i = 1
    while i < len(words):
        word = words[i]
        if word == "--":
            i += 1
            break
        if not word.startswith("-") or len(word) < 2 or word[1:].lstrip("-").isdigit():
            break
        if word == "-i":
            icase = True
        elif word == "-m":
            if i + 1 >= len(words):
                raise RuleError("'-m' needs a match method, e.g. '-m beg'")
            method = words[i + 1]
            i += 1
        elif word == "-f":
            if i + 1 >= len(words):
                raise RuleError("'-f' needs a file name")
            files.append(words[i + 1])
            i += 1
        elif word in ("-n", "-u", "-M"):
            if word == "-u":
                i += 1
        else:
            raise RuleError(f"unknown ACL flag {word!r} (expected -i, -m, -f or --)")
        i += 1
    patterns.extend(words[i:])
    for name_of_file in files:
        patterns.extend(pattern_file(ctx, name_of_file))
    sample = compile_sample(expr, ctx)
    if method is None:
        method = _DEFAULT_MATCH.get(sample.fetch.kind, "str")
    match = compile_matcher(method, patterns, icase)
    fused = _fused(expr, method, patterns, icase, match)
    if fused is not None:
        return fused
    one, many = sample.one, sample.many
    if sample.multi:
        def test(msg):
            for value in many(msg):
                if match(value):
                    return True
            return False
        return CallCheck(test)

    def test_one(msg):
        return match(one(msg))
    return CallCheck(test_one)


# -- fused checks -----------------------------------------------------------------
#
# The fetches every request rule reads (path, url, method, a header, the
# source address) matched by string methods get one closure doing both the
# fetch and the match: same result as the generic fetch-then-match pair,
# a third of the calls.

def _fused(expr: str, method: str, patterns: list, icase: bool, match) -> Optional[Check]:
    if not patterns or method in ("found", "bool", "int", "len"):
        return None
    name, args, rest = split_call(expr)
    if rest:
        return None  # converters: the generic path
    if name in ("src", "dst") and method == "ip" and not args:
        nets = match.networks
        return IpCheck(name == "src", nets[4], nets[6])
    if method not in ("str", "beg", "end", "sub", "reg"):
        return None
    encoded = tuple(p.encode().lower() if icase else p.encode() for p in patterns)
    kind = {"beg": BEG, "end": END, "str": STR, "sub": SUB}.get(method, OTHER)
    test = _bytes_test(method, encoded, icase, patterns)
    if name == "path" and not args:
        if icase or kind == SUB:
            return PathCheck(OTHER, encoded, test)
        return PathCheck(kind, encoded, test)
    if name in ("url", "method") and not args:
        return AttrCheck(name == "url", test)
    if name in ("hdr", "req.hdr") and len(args) == 1 and args[0]:
        key = b"\n" + args[0].lower().encode() + b":"
        # the values are lower-cased by the check itself with -i
        return HeaderCheck(key, icase, kind, encoded, _bytes_test(method, encoded, False, patterns))
    return None


def _bytes_test(method: str, encoded: tuple, icase: bool, patterns: list):
    """A match of a bytes value (never None) for string methods."""
    if method == "str":
        table = frozenset(encoded)
        return (lambda v: v.lower() in table) if icase else (lambda v: v in table)
    if method == "beg":
        return (lambda v: v.lower().startswith(encoded)) if icase else (lambda v: v.startswith(encoded))
    if method == "end":
        return (lambda v: v.lower().endswith(encoded)) if icase else (lambda v: v.endswith(encoded))
    if method == "sub":
        def sub(v):
            if icase:
                v = v.lower()
            for needle in encoded:
                if needle in v:
                    return True
            return False
        return sub
    return compile_matcher("reg", patterns, icase)


class AclTable:
    """One section's named ACLs: texts checked once, compiled per phase on
    first use (an ACL reading the path is fine in http_request, an error
    in tcp_request). A name given several definitions matches if any does,
    as repeated `acl` lines in haproxy.cfg."""

    def __init__(self, definitions: Mapping[str, Union[str, Iterable[str]]], ctx: Context) -> None:
        self.texts: dict[str, tuple[str, ...]] = {}
        self.ctx = ctx
        self._compiled: dict = {}
        for name, text in definitions.items():
            self.texts[name] = (text,) if isinstance(text, str) else tuple(text)

    def check(self, name: str) -> None:
        """Raise RuleError for a definition that compiles in no phase."""
        for text in self.texts[name]:
            words = split_words(text)
            self._compile(words, L4 | REQ | RES, "any")

    def get(self, name: str, ctx: Context) -> Optional[Check]:
        texts = self.texts.get(name)
        if texts is None:
            predefined = PREDEFINED.get(name)
            if predefined is None:
                return None
            texts = (predefined,)
        key = (name, ctx.phase)
        found = self._compiled.get(key)
        if found is None:
            try:
                checks = [self._compile(split_words(text), ctx.phase, ctx.where) for text in texts]
            except RuleError as exc:
                raise RuleError(f"ACL '{name}': {exc}") from None
            found = self._compiled[key] = checks[0] if len(checks) == 1 else AnyOf(checks)
        return found

    def _compile(self, words: list, phase: int, where: str) -> Check:
        ctx = Context(phase=phase, base_dir=self.ctx.base_dir, userlists=self.ctx.userlists,
                      files=self.ctx.files, where=where, section=self.ctx.section)
        return compile_acl(words, ctx)


def compile_condition(text: str, acls: Optional[AclTable], ctx: Context, negate: bool = False) -> Check:
    """An `if` (or, with negate, `unless`) condition."""
    words = split_words(text)
    if not words:
        raise RuleError("empty condition")
    groups: list[list] = [[]]
    i = 0
    n = len(words)
    while i < n:
        word = words[i]
        negated = False
        while word.startswith("!"):
            negated = not negated
            word = word[1:]
            if not word:
                i += 1
                if i >= n:
                    raise RuleError("'!' at the end of the condition")
                word = words[i]
        if word in ("or", "||"):
            if negated:
                raise RuleError("'!' before 'or'")
            if not groups[-1]:
                raise RuleError("'or' without a condition before it")
            groups.append([])
            i += 1
            continue
        if word == "{":
            try:
                end = words.index("}", i + 1)
            except ValueError:
                raise RuleError("'{' without a matching '}'") from None
            check = compile_acl(words[i + 1:end], ctx)
            i = end + 1
        elif word == "}":
            raise RuleError("'}' without a matching '{'")
        else:
            check = acls.get(word, ctx) if acls is not None else AclTable({}, ctx).get(word, ctx)
            if check is None:
                known = sorted(acls.texts) if acls is not None else []
                hint = f" (defined: {', '.join(known)})" if known else ""
                raise UnknownAcl(f"unknown ACL '{word}'{hint}", word)
            i += 1
        groups[-1].append((negated, check))
    if not groups[-1]:
        raise RuleError("'or' without a condition after it")
    check = _combine(groups)
    return Not(check) if negate else check


def _combine(groups: list) -> Check:
    if len(groups) == 1:
        return _all_of(groups[0])
    return AnyOf(_all_of(group) for group in groups)


def _all_of(terms: list) -> Check:
    if len(terms) == 1:
        negated, check = terms[0]
        return Not(check) if negated else check
    return AllOf(terms)
