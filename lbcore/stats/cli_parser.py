"""The runtime API's input syntax, as HAProxy 2.6's CLI reads it. Pure: no I/O.

A client sends lines. A line holds one or more commands separated by `;`;
a command is words separated by spaces or tabs; a backslash makes the next
character literal (`\\;`, `\\ `, `\\\\`). A line whose last word is `<<`
announces a payload: the lines that follow, up to an empty line, belong to
the line's last command (`set ssl cert PATH <<` + a PEM).

`LineReader.feed(data)` takes bytes as they arrive and returns the complete
requests they finish; it never raises on any input: a line too long, or a
payload too large, becomes a `Request` with `error` set, and the reader
goes on with the next line. This module is fuzzed: keep it free of I/O
and of anything but the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

MAX_LINE = 16 * 1024  # HAProxy's default bufsize bounds one command line
MAX_PAYLOAD = 1024 * 1024  # a certificate bundle is a few KiB
PAYLOAD_MARK = "<<"


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    payload: Optional[str] = None


@dataclass(frozen=True)
class Request:
    """What one input line (and its payload) asked for. `empty` is a blank
    line; `error` a line the reader refused (too long, bad encoding)."""

    commands: tuple[Command, ...] = ()
    empty: bool = False
    error: Optional[str] = None


def split_commands(line: str) -> list[tuple[str, ...]]:
    """The commands of one line, each as its words. Empty commands (`;;`,
    a trailing `;`) are dropped, as HAProxy does."""
    commands: list[tuple[str, ...]] = []
    words: list[str] = []
    word: list[str] = []
    in_word = False
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c == "\\" and i + 1 < n:
            word.append(line[i + 1])
            in_word = True
            i += 2
            continue
        if c in " \t":
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
        elif c == ";":
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
            if words:
                commands.append(tuple(words))
            words = []
        else:
            word.append(c)
            in_word = True
        i += 1
    if in_word:
        words.append("".join(word))
    if words:
        commands.append(tuple(words))
    return commands


def parse_line(line: str, payload: Optional[str] = None) -> Request:
    """One request from a line (without its newline) and its payload, if any."""
    commands = split_commands(line)
    if not commands:
        return Request(empty=True)
    if payload is not None:
        last = commands[-1]
        if last and last[-1] == PAYLOAD_MARK:
            last = last[:-1]
        commands[-1] = last
        built = [Command(words) for words in commands[:-1]] + [Command(commands[-1], payload)]
        return Request(commands=tuple(c for c in built if c.words))
    return Request(commands=tuple(Command(words) for words in commands))


def announces_payload(line: str) -> bool:
    commands = split_commands(line)
    return bool(commands) and commands[-1][-1] == PAYLOAD_MARK


@dataclass
class LineReader:
    """Bytes in, complete requests out (see the module docstring)."""

    _buffer: bytearray = field(default_factory=bytearray)
    _pending_line: Optional[str] = None  # a `<<` line waiting for its payload
    _payload: list = field(default_factory=list)
    _payload_size: int = 0
    _skipping: bool = False  # discarding the rest of an over-long line
    _payload_error: Optional[str] = None

    @property
    def in_payload(self) -> bool:
        return self._pending_line is not None

    def feed(self, data: bytes) -> list[Request]:
        self._buffer += data
        requests: list[Request] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE and not self.in_payload:
                    if not self._skipping:
                        requests.append(Request(error=f"command line longer than {MAX_LINE} bytes"))
                    self._skipping = True
                    self._buffer.clear()
                elif self.in_payload and len(self._buffer) > MAX_PAYLOAD:
                    self._payload_error = f"payload larger than {MAX_PAYLOAD} bytes"
                    self._buffer.clear()
                return requests
            raw = bytes(self._buffer[:end])
            del self._buffer[:end + 1]
            if self._skipping:
                self._skipping = False  # this newline ends the over-long line
                continue
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            request = self._line(raw)
            if request is not None:
                requests.append(request)

    def _line(self, raw: bytes) -> Optional[Request]:
        if self.in_payload:
            if raw:
                self._payload_size += len(raw) + 1
                if self._payload_size > MAX_PAYLOAD:
                    self._payload_error = f"payload larger than {MAX_PAYLOAD} bytes"
                    self._payload.clear()
                elif self._payload_error is None:
                    self._payload.append(raw)
                return None
            line, error = self._pending_line, self._payload_error
            payload = b"\n".join(self._payload) + b"\n" if self._payload else b""
            self._pending_line, self._payload, self._payload_size, self._payload_error = None, [], 0, None
            if error is not None:
                return Request(error=error)
            try:
                return parse_line(line, payload.decode("utf-8"))
            except UnicodeDecodeError:
                return Request(error="payload is not UTF-8 text")
        if len(raw) > MAX_LINE:
            return Request(error=f"command line longer than {MAX_LINE} bytes")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            return Request(error="command line is not UTF-8 text")
        if announces_payload(line):
            self._pending_line = line
            return None
        return parse_line(line)
