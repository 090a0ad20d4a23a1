"""The header lookups' byte searches (lbcore/rules/bytesearch.py, inlined
in C from bytesearch.pxd by the compiled build) give what bytes methods
give: checked through the request view in whichever build runs, against
answers worked out here with plain bytes methods."""

import pytest

from lbcore.rules import bytesearch
from lbcore.rules.message import Connection, Headers, Request

BLOCKS = [
    b"",
    b"Host: a\r\n",
    b"HOST: A\r\nX-Debug: 1\r\n",
    b"host: a\r\nUser-Agent: Mozilla NIKTO\r\nX-\xc4\xd6: \xc4\r\n",  # non-ASCII stays as is
    b"Accept: a, b\r\naccept: C\r\nX-Last: z",  # no final CRLF
    b"X-A:1\r\nX-AB: 2\r\n",
    b"A: 1\r\nB:",  # a name as the very last bytes
    b"\n\n\nB: 1\r\nb: 2\r\n",  # many false starts for a needle beginning with a newline
]
NAMES = [b"host", b"x-debug", b"user-agent", b"accept", b"x-last", b"x-a", b"x-ab", b"x-\xc4\xd6", b"b",
         b"missing"]


def lines(block: bytes):
    out = []
    for line in block.split(b"\n"):  # a line starts after any newline
        line = line.rstrip(b"\r")
        if b":" in line:
            name, _, value = line.partition(b":")
            out.append((name.lower(), value.strip(b" \t")))
    return out


@pytest.mark.parametrize("block", BLOCKS)
def test_lookups_match_a_plain_parse(block):
    for name in NAMES:
        key = b"\n" + name + b":"
        found = [v for n, v in lines(block) if n == name]
        headers = Headers(block)
        assert headers.has_at(key) == bool(found)
        split = [part.strip(b" \t") for v in found for part in v.split(b",")]
        assert headers.values_at(key) == split
        assert headers.lower_values_at(key) == [v.lower() for v in split]
        assert headers.last_at(key) == (split[-1] if split else None)


def test_edits_keep_the_lookups_right():
    headers = Headers(b"Host: a\r\nX-Debug: 1\r\n")
    assert headers.has_at(b"\nx-debug:")
    headers.add(b"X-Forwarded-Port", b"8080")
    assert headers.values_at(b"\nx-forwarded-port:") == [b"8080"]
    headers.delete(b"x-debug")
    assert not headers.has_at(b"\nx-debug:")
    assert headers.block == b"Host: a\r\nX-Forwarded-Port: 8080\r\n"


@pytest.mark.parametrize("target, path, query", [
    (b"/", b"/", None),
    (b"/a/b?x=1&y", b"/a/b", b"x=1&y"),
    (b"/a?", b"/a", b""),
    (b"/a?b?c", b"/a", b"b?c"),
    (b"http://h:80/p/q?z", b"/p/q", b"z"),
    (b"http://h", b"", None),
    (b"HTTP://h/x", b"/x", None),
    (b"*", b"*", None),
    (b"http://", b"", None),
    (b"x://h?q", b"", None),
    (b"a?b", b"a", b"b"),
    (b"?", b"", b""),
])
def test_path_and_query(target, path, query):
    request = Request(Connection(), b"GET", target, b"1.1", b"")
    assert (request.path(), request.query()) == (path, query)


def test_the_definitions_are_the_bytes_methods():
    for hay in (b"", b"abc", b"a\nb\nc", bytes(range(256))):
        for needle in (b"", b"a", b"\n", b"bc", b"\xff", b"zz"):
            for start in range(len(hay) + 2):
                assert bytesearch.find(hay, needle, start) == hay.find(needle, start)
        assert bytesearch.lowered(hay) == b"\n" + hay.lower()
