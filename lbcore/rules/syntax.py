"""Words and argument lists, split the way haproxy.cfg splits them."""

from __future__ import annotations

from .errors import RuleError

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", " ": " ", "\\": "\\", '"': '"', "'": "'", "#": "#"}


def split_words(text: str) -> list[str]:
    """Whitespace-separated words; '...' is taken literally, "..." and bare
    words honour backslash escapes (as haproxy.cfg)."""
    words = []
    word = []
    in_word = False
    quote = ""
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if quote == "'":
            if c == "'":
                quote = ""
            else:
                word.append(c)
        elif c == "\\" and i + 1 < n:
            nxt = text[i + 1]
            word.append(_ESCAPES.get(nxt, "\\" + nxt))
            in_word = True
            i += 1
        elif quote == '"':
            if c == '"':
                quote = ""
            else:
                word.append(c)
        elif c in "'\"":
            quote = c
            in_word = True
        elif c.isspace():
            if in_word:
                words.append("".join(word))
                word = []
                in_word = False
        else:
            word.append(c)
            in_word = True
        i += 1
    if quote:
        raise RuleError(f"unterminated {quote} quote in {text!r}")
    if in_word:
        words.append("".join(word))
    return words


def split_call(text: str) -> tuple[str, list[str], str]:
    """`name(arg1,arg2)rest` -> (name, [arg1, arg2], rest). Arguments may be
    quoted; a name without parentheses has no arguments."""
    i = 0
    n = len(text)
    while i < n and text[i] not in "(,":
        i += 1
    name = text[:i]
    if i >= n or text[i] != "(":
        return name, [], text[i:]
    i += 1
    args = []
    current = []
    quote = ""
    while i < n:
        c = text[i]
        if quote:
            if c == quote:
                quote = ""
            elif c == "\\" and i + 1 < n:
                i += 1
                current.append(text[i])
            else:
                current.append(c)
        elif c in "'\"":
            quote = c
        elif c == "\\" and i + 1 < n:
            i += 1
            current.append(text[i])
        elif c == ",":
            args.append("".join(current))
            current = []
        elif c == ")":
            args.append("".join(current))
            if args == [""]:
                args = []
            return name, args, text[i + 1:]
        else:
            current.append(c)
        i += 1
    raise RuleError(f"missing ')' in {text!r}")


def split_chain(text: str) -> list[str]:
    """`fetch(a,b),conv1,conv2(x)` -> ['fetch(a,b)', 'conv1', 'conv2(x)']:
    commas inside parentheses belong to the arguments."""
    parts = []
    depth = 0
    quote = ""
    start = 0
    for i, c in enumerate(text):
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts
