"""The head scanners (lbcore_ext heads, compiled and Python) agree on every
input, and the fast path never takes a head the strict path (h1_checks)
or llhttp would refuse."""

import httptools
import pytest
from hypothesis import given, strategies as st

from lbcore.proxy.h1_checks import CheckedRequestParser, check_head
from lbcore_ext import heads_py

from .strategies import REQUEST_SEEDS, http_requests, mutated, seeds

try:
    from lbcore_ext import heads as heads_c
except ImportError:
    heads_c = None

RESPONSE_SEEDS = seeds("responses") + [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nETag: x\r\nContent-Length: 9\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 503 Service Unavailable\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n",
]


def as_head(data: bytes) -> bytes:
    """Up to and including the first blank line (one is added if none)."""
    end = data.find(b"\r\n\r\n")
    return data + b"\r\n\r\n" if end < 0 else data[:end + 4]


REQUEST_HEADS = st.one_of(http_requests(), mutated(REQUEST_SEEDS), st.binary(max_size=120)).map(as_head)
RESPONSE_HEADS = st.one_of(mutated(RESPONSE_SEEDS), st.binary(max_size=120)).map(as_head)


class _Sink:
    pass


def llhttp_accepts(head: bytes, response: bool = False) -> bool:
    """llhttp as lbcore runs it: requests behind the strict checks, which
    give llhttp a method it knows in place of one it does not."""
    parser = httptools.HttpResponseParser(_Sink()) if response else CheckedRequestParser(_Sink(), 65536)
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        return True
    except httptools.HttpParserError:
        return False
    return True


@pytest.mark.skipif(heads_c is None, reason="the Cython extension is not built")
@given(REQUEST_HEADS, st.booleans(), st.booleans())
def test_request_scanners_agree(head, drop_xfp, own_xff):
    end = len(head) - 4
    assert heads_c.scan_request(head, end, drop_xfp, own_xff) == \
        heads_py.scan_request(head, end, drop_xfp, own_xff)


@pytest.mark.skipif(heads_c is None, reason="the Cython extension is not built")
@given(RESPONSE_HEADS)
def test_response_scanners_agree(head):
    end = len(head) - 4
    assert heads_c.scan_response(head, end) == heads_py.scan_response(head, end)


@given(REQUEST_HEADS)
def test_the_fast_path_takes_only_what_the_strict_path_takes(head):
    if heads_py.scan_request(head, len(head) - 4, True, False) is not None:
        assert check_head(head)[0] == 0, check_head(head)
        assert llhttp_accepts(head)


@given(RESPONSE_HEADS)
def test_the_response_fast_path_takes_only_what_llhttp_takes(head):
    if heads_py.scan_response(head, len(head) - 4) is not None:
        assert llhttp_accepts(head, response=True)
