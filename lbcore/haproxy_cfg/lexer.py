"""haproxy.cfg lines -> words, with HAProxy 2.6's lexical rules.

- Indentation means nothing: a section starts at its keyword, wherever it
  is written, and lasts until the next section keyword.
- Words are split on spaces and tabs; `#` outside quotes starts a comment.
- Double quotes group words and keep escapes and `${VAR}` expansion working
  inside; single quotes group words and take everything literally.
- A backslash escapes the next character (`\\ `, `\\#`, `\\"`, `\\'`,
  `\\\\`), and `\\t`, `\\r`, `\\n`, `\\xHH` give the control characters.
- `${NAME}` (and `${NAME-default}`) is replaced by the environment
  variable inside double quotes only, as HAProxy 2.6 (an unset variable
  gives an empty string). Addresses (bind, server, log) expand it unquoted
  too, as HAProxy's address parser does: see expand_env().
  A quoted empty string ("" or '') is an (empty) word.
"""

from __future__ import annotations

import os
import re
from typing import Iterator, Mapping, Optional

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SIMPLE_ESCAPES = {" ": " ", "\\": "\\", "#": "#", "'": "'", '"': '"', "$": "$",
                   "t": "\t", "r": "\r", "n": "\n"}


class LexError(ValueError):
    """A line that cannot be split into words; the caller adds file:line."""


class Line:
    """One logical line: its words (the keyword first) and where it was.
    (A plain class: one is made per line of a file of thousands.)"""

    __slots__ = ("file", "number", "words", "keyword", "origin")

    def __init__(self, file: str, number: int, words: tuple[str, ...]):
        self.file = file
        self.number = number
        self.words = words
        self.keyword = words[0]
        self.origin = None  # its tree.Origin, made once (proxies.origin)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.number}"

    def __repr__(self) -> str:
        return f"Line({self.file!r}, {self.number}, {self.words!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Line) and (self.file, self.number, self.words) == \
            (other.file, other.number, other.words)

    def __hash__(self) -> int:
        return hash((self.file, self.number, self.words))


# Most lines hold no quote, backslash nor comment: their words are what
# lies between spaces and tabs (`$` expands only inside double quotes),
# which is what str.split() gives where the line holds no other character
# it splits on: the other ASCII separators (\v \f \x1c-\x1f) and Unicode
# spaces (an ASCII line has none). Any other line takes the full lexer.
_NOT_PLAIN = re.compile(r"[\\\"'#\x0b\x0c\x1c-\x1f]")


def split_words(text: str, env: Optional[Mapping[str, str]] = None) -> list[str]:
    """The words of one line, comments removed; LexError if it is broken."""
    if text.isascii() and not _NOT_PLAIN.search(text):
        return text.split()
    return split_words_fully(text, env)


def split_words_fully(text: str, env: Optional[Mapping[str, str]] = None) -> list[str]:
    """split_words() for any line, character by character."""
    env = os.environ if env is None else env
    words: list[str] = []
    word: list[str] = []
    in_word = False  # a quoted "" makes an empty word, so track it apart
    quote = ""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if quote == "'":
            if c == "'":
                quote = ""
            else:
                word.append(c)
            i += 1
            continue
        if c == "\\":
            if i + 1 >= n:
                raise LexError("a backslash ends the line (HAProxy has no line continuation)")
            nxt = text[i + 1]
            if nxt == "x":
                hexa = text[i + 2:i + 4]
                if len(hexa) != 2 or not all(h in "0123456789abcdefABCDEF" for h in hexa):
                    raise LexError(f"invalid escape '\\x{hexa}' (expected \\xHH)")
                word.append(chr(int(hexa, 16)))
                i += 4
            elif nxt in _SIMPLE_ESCAPES:
                word.append(_SIMPLE_ESCAPES[nxt])
                i += 2
            else:
                # HAProxy keeps an unknown escape as written (regexes rely on it).
                word.append(c + nxt)
                i += 2
            in_word = True
            continue
        if c == "$" and quote == '"' and text.startswith("${", i):
            end = text.find("}", i + 2)
            if end < 0:
                raise LexError("'${' without a closing '}'")
            body = text[i + 2:end]
            name, dash, default = body.partition("-")
            if not _ENV_NAME.fullmatch(name):
                raise LexError(f"invalid environment variable name in '${{{body}}}'")
            value = env.get(name)
            word.append(value if value is not None else (default if dash else ""))
            in_word = True
            i = end + 1
            continue
        if quote == '"':
            if c == '"':
                quote = ""
            else:
                word.append(c)
            i += 1
            continue
        if c in "\"'":
            quote = c
            in_word = True
            i += 1
            continue
        if c == "#":
            break
        if c in " \t\r\n":
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
            i += 1
            continue
        word.append(c)
        in_word = True
        i += 1
    if quote:
        raise LexError(f"unmatched {'single' if quote == chr(39) else 'double'} quote")
    if in_word:
        words.append("".join(word))
    return words


def expand_env(word: str, env: Optional[Mapping[str, str]] = None) -> str:
    """`${NAME}` in an address written without quotes."""
    if "${" not in word:
        return word
    return split_words('"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"', env)[0]


def read_lines(path: str, text: str, env: Optional[Mapping[str, str]] = None) -> Iterator[Line]:
    """Every non-empty line of a file; LexError carries the line number."""
    for number, raw in enumerate(text.splitlines(), 1):
        try:
            words = split_words(raw, env)
        except LexError as exc:
            raise LexError(f"{path}:{number}: {exc}") from None
        if words:
            yield Line(path, number, tuple(words))


def quote_word(word: str) -> str:
    """A word written back so that split_words gives it again (conditions
    and rule arguments are passed on as HAProxy text)."""
    if word and not any(c in word for c in " \t\"'#\\$"):
        return word
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'
