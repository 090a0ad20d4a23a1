"""The runtime API's input syntax (lbcore.stats.cli_parser): pure, no sockets."""

from __future__ import annotations

import random

from lbcore.stats.cli_parser import MAX_LINE, Command, LineReader, Request, split_commands


def test_words_and_semicolons():
    assert split_commands("get weight api/s1; disable server api/s1") == [
        ("get", "weight", "api/s1"), ("disable", "server", "api/s1")]
    assert split_commands("  show\tinfo  ") == [("show", "info")]
    assert split_commands(";;show stat;") == [("show", "stat")]
    assert split_commands("") == []


def test_backslash_escapes_separators():
    assert split_commands(r"set var a\;b c\ d \\") == [("set", "var", "a;b", "c d", "\\")]


def test_reader_splits_lines_across_reads():
    reader = LineReader()
    assert reader.feed(b"show in") == []
    assert reader.feed(b"fo\r\nget weight b/s; help\n") == [
        Request(commands=(Command(("show", "info")),)),
        Request(commands=(Command(("get", "weight", "b/s")), Command(("help",)))),
    ]


def test_empty_line():
    assert LineReader().feed(b"\n") == [Request(empty=True)]


def test_payload_until_empty_line():
    reader = LineReader()
    assert reader.feed(b"set ssl cert /x.pem <<\n-----BEGIN X-----\nAAAA\n") == []
    assert reader.in_payload
    [request] = reader.feed(b"-----END X-----\n\nshow info\n")[:1]
    assert request.commands == (Command(("set", "ssl", "cert", "/x.pem"), "-----BEGIN X-----\nAAAA\n-----END X-----\n"),)
    assert not reader.in_payload


def test_payload_goes_to_the_last_command_of_the_line():
    [request] = LineReader().feed(b"show info; set ssl cert /a <<\nPEM\n\n")
    assert request.commands == (Command(("show", "info")), Command(("set", "ssl", "cert", "/a"), "PEM\n"))


def test_overlong_line_is_refused_once_and_the_next_line_is_read():
    reader = LineReader()
    out = reader.feed(b"x" * (MAX_LINE + 10))
    out += reader.feed(b"y" * 100 + b"\nhelp\n")
    assert [r.error is not None for r in out] == [True, False]
    assert out[1].commands == (Command(("help",)),)


def test_not_utf8_is_an_error_not_a_crash():
    [request] = LineReader().feed(b"show \xff\xfe\n")
    assert request.error == "command line is not UTF-8 text"


def test_random_bytes_never_raise():
    rng = random.Random(7)
    alphabet = b"ab ;\\<\n\r\t\xff/"
    for _ in range(300):
        reader = LineReader()
        for _ in range(5):
            chunk = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 60)))
            for request in reader.feed(chunk):
                assert isinstance(request, Request)
                for command in request.commands:
                    assert command.words and all(isinstance(w, str) for w in command.words)
