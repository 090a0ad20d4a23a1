"""The head scanners: compiled and pure-Python give the same answers, and
accept only heads that llhttp accepts too."""

import httptools
import pytest

from lbcore.proxy.h1_checks import CheckedRequestParser, check_head
from lbcore_ext import heads_py
from tests.corpus.generated_requests import CASES as GENERATED
from tests.corpus.hostile_requests import CASES

try:
    from lbcore_ext import heads as heads_c
except ImportError:  # extension not built: the parity tests have nothing to compare
    heads_c = None

IMPLS = [heads_py] + ([heads_c] if heads_c else [])

REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /x?y=1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nAccept: */*\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5x\r\n\r\nhello",
    b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nAccept: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n X: fold\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-private\r\nX-Private: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\nKeep-Alive: 5\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost:    spaced   \r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n",
    b"BAN /x HTTP/1.1\r\nHost: a\r\n\r\n",
    b"PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n",
    b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\nHost: a\n\n",
]

# The heads of the hostile request corpus (each up to its blank line).
CORPUS_HEADS = [c.raw[:c.raw.find(b"\r\n\r\n") + 4] for c in CASES if b"\r\n\r\n" in c.raw]

RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\nclose-delimited",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    b"HTTP/1.1 101 Switching\r\nUpgrade: websocket\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nKeep-Alive: timeout=5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: foo\r\n\r\nok",
    b"GARBAGE\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 999 Weird\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
]


def _end(data):
    return data.find(b"\r\n\r\n")


@pytest.mark.skipif(heads_c is None, reason="Cython extension not built")
@pytest.mark.parametrize("data", REQUESTS + CORPUS_HEADS)
@pytest.mark.parametrize("drop_xfp,own_xff", [(True, True), (False, False)])
def test_request_parity(data, drop_xfp, own_xff):
    assert heads_c.scan_request(data, _end(data), drop_xfp, own_xff) == \
        heads_py.scan_request(data, _end(data), drop_xfp, own_xff)


@pytest.mark.skipif(heads_c is None, reason="Cython extension not built")
def test_request_parity_on_the_generated_corpus():
    """The compiled and pure-Python scanners agree on every head of the
    generated corpus (about a thousand), and what they take the strict
    checks take too."""
    differ, unchecked = [], []
    for case in GENERATED:
        end = case.raw.find(b"\r\n\r\n")
        if end < 0:
            continue
        for flags in ((True, True), (False, False)):
            c = heads_c.scan_request(case.raw, end, *flags)
            if c != heads_py.scan_request(case.raw, end, *flags):
                differ.append(case.id)
            head = case.raw[:end + 4]
            if c is not None and check_head(head.lstrip(b"\r\n"))[0]:
                unchecked.append(case.id)
    assert differ == [] and unchecked == []


@pytest.mark.skipif(heads_c is None, reason="Cython extension not built")
@pytest.mark.parametrize("data", RESPONSES)
def test_response_parity(data):
    assert heads_c.scan_response(data, _end(data)) == heads_py.scan_response(data, _end(data))


class _Sink:
    def on_message_complete(self):
        pass


def _llhttp_accepts(data, response=False):
    """llhttp as lbcore runs it: requests behind the strict checks, which
    give llhttp a method it knows in place of one it does not."""
    parser = httptools.HttpResponseParser(_Sink()) if response else CheckedRequestParser(_Sink(), 65536)
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        return True
    except httptools.HttpParserError:
        return False
    return True


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.IMPLEMENTATION)
@pytest.mark.parametrize("data", REQUESTS)
def test_request_fast_path_is_a_subset_of_llhttp(impl, data):
    if impl.scan_request(data, _end(data), True, True) is not None:
        assert _llhttp_accepts(data)


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.IMPLEMENTATION)
@pytest.mark.parametrize("data", REQUESTS + CORPUS_HEADS)
def test_request_fast_path_is_a_subset_of_the_strict_checks(impl, data):
    """What the fast path takes, lbcore/proxy/h1_checks.py would have
    passed too: the fast path never accepts a request the strict path
    refuses."""
    if impl.scan_request(data, _end(data), True, True) is not None:
        assert check_head(data[:_end(data) + 4])[0] == 0


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.IMPLEMENTATION)
@pytest.mark.parametrize("data", [
    b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a:\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a,b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
])
def test_other_targets_and_hosts_take_the_strict_path(impl, data):
    assert impl.scan_request(data, _end(data), True, True) is None


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.IMPLEMENTATION)
@pytest.mark.parametrize("host", [b"a", b"api.example.com:5000", b"10.0.0.1:65535", b"x-y.z:1"])
def test_plain_hosts_stay_on_the_fast_path(impl, host):
    data = b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    assert impl.scan_request(data, _end(data), True, True) is not None


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.IMPLEMENTATION)
@pytest.mark.parametrize("data", RESPONSES)
def test_response_fast_path_is_a_subset_of_llhttp(impl, data):
    if impl.scan_response(data, _end(data)) is not None:
        assert _llhttp_accepts(data, response=True)


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.IMPLEMENTATION)
def test_request_rewrite(impl):
    data = (b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n"
            b"X-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n")
    method, target, minor, keep, length, lines = impl.scan_request(data, _end(data), True, True)
    assert (method, target, minor, keep, length) == (b"GET", b"/x", 1, True, 0)
    assert lines == b"Host: a\r\nAccept: */*\r\n"
    closing = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    assert impl.scan_request(closing, _end(closing), True, True)[3] is False


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.IMPLEMENTATION)
def test_response_rewrite(impl):
    data = b"HTTP/1.1 200 OK\r\nServer: n\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
    status, length, keep, head = impl.scan_response(data, _end(data))
    assert (status, length, keep) == (200, 2, True)
    assert head == b"HTTP/1.1 200 OK\r\nServer: n\r\nContent-Length: 2\r\n"
    assert impl.scan_response(b"HTTP/1.1 200 OK\r\n\r\n", 15) is None  # close-delimited: slow path


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.IMPLEMENTATION)
@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n X: fold\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
    # over HAProxy's limits: 101 field lines, a 256-byte name (the strict path refuses)
    b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(100)) + b"\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X" * 256 + b": v\r\n\r\n",
])
def test_unusual_requests_take_the_slow_path(impl, data):
    assert impl.scan_request(data, _end(data), True, True) is None


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.IMPLEMENTATION)
def test_heads_at_haproxys_limits_stay_on_the_fast_path(impl):
    many = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(99))
    assert impl.scan_request(many + b"\r\n", len(many) - 2, True, True) is not None
    long = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X" * 255 + b": v\r\n"
    assert impl.scan_request(long + b"\r\n", len(long) - 2, True, True) is not None


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.IMPLEMENTATION)
def test_a_204_with_a_length_takes_the_slow_path(impl):
    """The slow path drops the Content-Length a 204 must not carry."""
    data = b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"
    assert impl.scan_response(data, _end(data)) is None
