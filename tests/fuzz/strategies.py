"""Hypothesis strategies for the fuzz targets: HTTP requests built from
pieces that are often almost right (the inputs parsers disagree on), and
byte-level mutations of the seed corpora in tests/fuzz/corpus and
tests/corpus/hostile_requests.py."""

from __future__ import annotations

from pathlib import Path

from hypothesis import strategies as st

from tests.corpus.hostile_requests import CASES, SMUGGLED

CORPUS = Path(__file__).resolve().parent / "corpus"


def seeds(kind: str) -> list[bytes]:
    """The files of tests/fuzz/corpus/<kind>, as bytes (sorted by name)."""
    return [p.read_bytes() for p in sorted((CORPUS / kind).glob("*")) if p.is_file()]


REQUEST_SEEDS = [c.raw for c in CASES] + seeds("requests")

# -- structured requests ------------------------------------------------------

EOL = st.sampled_from([b"\r\n"] * 8 + [b"\n", b"\r", b"\r\r\n", b"\n\r"])
SP = st.sampled_from([b" "] * 8 + [b"  ", b"\t", b"", b" \t"])
METHOD = st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS", b"DELETE", b"CONNECT",
                          b"get", b"G@T", b"PATCH", b"TRACE", b"PURGE", b""])
TARGET = st.one_of(
    st.sampled_from([b"/", b"/a?b=c", b"*", b"http://a/x", b"http://b/x", b"a:80", b"/a#f",
                     b"http://u@a/", b"//a", b""]),
    st.binary(max_size=12).map(lambda b: b"/" + b),
)
VERSION = st.sampled_from([b"HTTP/1.1"] * 6 + [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"http/1.1",
                                                 b"HTTP/1.10", b"HTTP/1", b""])
NAME = st.sampled_from([b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection",
                        b"Upgrade", b"Expect", b"X-Forwarded-For", b"Trailer", b"TE", b"X-A",
                        b"content-length", b"transfer-encoding", b"Content-Length ",
                        b" Transfer-Encoding", b"Transfer_Encoding", b"Keep-Alive", b""])
VALUE = st.one_of(
    st.sampled_from([b"a", b"chunked", b"gzip, chunked", b"chunked, gzip", b"identity", b"0",
                     b"5", b"-1", b"+5", b"5, 5", b"5,6", b"close", b"keep-alive",
                     b"upgrade", b"websocket", b"Content-Length", b"100-continue", b"a, b",
                     b"u@a", b"a:99999", b"[::1]", b"\x00", b"a\rb", b"a\nb"]),
    st.binary(max_size=8),
)
SEP = st.sampled_from([b": "] * 6 + [b":", b" : ", b":\t", b"\x00: "])


@st.composite
def header_lines(draw) -> bytes:
    out = b""
    for _ in range(draw(st.integers(0, 6))):
        out += draw(NAME) + draw(SEP) + draw(VALUE) + draw(EOL)
        if draw(st.integers(0, 15)) == 0:
            out += draw(st.sampled_from([b" folded", b"\tfolded", b"no-colon"])) + draw(EOL)
    return out


@st.composite
def bodies(draw) -> bytes:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return b""
    if kind == 1:
        return SMUGGLED
    if kind == 2:
        return b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
    if kind == 3:
        size = draw(st.sampled_from([b"5", b"5;a=b", b"5;", b"5 ", b"x", b"ffffffffffffffffff",
                                     b"0", b"-1", b"5;a\x00"]))
        return size + draw(EOL) + b"hello" + draw(EOL) + b"0" + draw(EOL) + draw(
            st.sampled_from([b"", b"Content-Length: 5\r\n", b"X: y\r\n"])) + b"\r\n"
    return draw(st.binary(max_size=40))


@st.composite
def http_requests(draw) -> bytes:
    """One request, often almost valid, sometimes with a second one behind."""
    line = draw(METHOD) + draw(SP) + draw(TARGET) + draw(SP) + draw(VERSION) + draw(EOL)
    host = draw(st.sampled_from([b"Host: a\r\n"] * 4 + [b"", b"Host: a\r\nHost: b\r\n"]))
    raw = line + host + draw(header_lines()) + draw(EOL) + draw(bodies())
    if draw(st.integers(0, 5)) == 0:
        raw += SMUGGLED
    return raw


@st.composite
def valid_requests(draw) -> bytes:
    """A valid request with a correctly framed body of any kind."""
    body = draw(st.binary(max_size=30))
    target = b"/" + draw(st.sampled_from([b"", b"a", b"b?c=d"]))
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % target
    if kind == 1:
        return b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (
            target, len(body), body)
    if kind == 2:
        chunks = b""
        rest = body
        while rest:
            n = draw(st.integers(1, len(rest)))
            ext = draw(st.sampled_from([b"", b";a", b";a=b", b';a="x y"']))
            chunks += b"%x%s\r\n%s\r\n" % (n, ext, rest[:n])
            rest = rest[n:]
        trailer = draw(st.sampled_from([b"", b"X-T: 1\r\n"]))
        return b"POST %s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n%s0\r\n%s\r\n" % (
            target, chunks, trailer)
    if kind == 3:
        return b"GET / HTTP/1.0\r\n\r\n"
    return (b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n" + body)


@st.composite
def valid_pipelines(draw) -> bytes:
    """Several valid requests back to back, sometimes with empty lines between."""
    out = b""
    for _ in range(draw(st.integers(1, 4))):
        out += draw(st.sampled_from([b"", b"", b"\r\n"])) + draw(valid_requests())
    return out


# -- mutations of seeds --------------------------------------------------------

INTERESTING = [b"\r", b"\n", b"\r\n", b" ", b"\t", b"\x00", b":", b";", b",", b"0", b"\x7f",
               b"\xff", b"chunked", b"Content-Length: 1\r\n", b"Transfer-Encoding: chunked\r\n",
               b"\r\n\r\n", SMUGGLED]


@st.composite
def mutated(draw, pool: list[bytes]) -> bytes:
    """A seed from `pool` with a few byte-level edits: insert, delete,
    replace, duplicate or truncate."""
    data = bytearray(draw(st.sampled_from(pool)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 4))
        at = draw(st.integers(0, len(data)))
        if op == 0:
            piece = draw(st.one_of(st.sampled_from(INTERESTING), st.binary(min_size=1, max_size=4)))
            data[at:at] = piece
        elif op == 1 and data:
            n = draw(st.integers(1, 8))
            del data[at:at + n]
        elif op == 2 and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == 3 and data:
            n = draw(st.integers(1, 16))
            data[at:at] = data[at:at + n]
        elif op == 4:
            del data[at:]
    return bytes(data)


@st.composite
def mutated_pipelines(draw) -> bytes:
    return draw(mutated([draw(valid_pipelines())]))


def request_streams() -> st.SearchStrategy:
    """Valid pipelines, near-valid requests, mutated seeds and pipelines,
    and plain random bytes."""
    return st.one_of(valid_pipelines(), http_requests(), mutated(REQUEST_SEEDS),
                     mutated_pipelines(), st.binary(max_size=200))


@st.composite
def splits(draw, data: bytes) -> list[bytes]:
    """`data` cut into pieces at random points (as reads would deliver it)."""
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=6))))
    pieces, start = [], 0
    for cut in cuts + [len(data)]:
        pieces.append(data[start:cut])
        start = cut
    return [p for p in pieces if p]
