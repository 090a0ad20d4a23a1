"""The strict request checks (lbcore/proxy/h1_checks.py), on their own."""

import pytest

from lbcore.proxy.h1_checks import (
    BODY_CHUNKED, BODY_LENGTH, BODY_NONE, BODY_TUNNEL, CheckedRequestParser, Refused,
    RequestChecker, check_chunk_line, check_head, host_valid, response_head_error,
    transfer_codings_chunked,
)
from tests.corpus.generated_requests import CASES as GENERATED
from tests.corpus.hostile_requests import CASES

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


@pytest.mark.parametrize("value,ok", [
    (b"a", True), (b"a.example", True), (b"a:80", True), (b"a:", True), (b"10.0.0.1:8080", True),
    (b"[::1]", True), (b"[::1]:443", True), (b"", True), (b"xn--caf-dma.example", True),
    (b"u@a", False), (b"a/b", False), (b"a?b", False), (b"a#b", False), (b"a,b", False),
    (b"a b", False), (b"a:http", False), (b"a:65536", False), (b"a:1:2", False), (b"a:+1", False),
    (b"[::1", False), (b"[::1]x", False), (b"[zz]", False), (b"caf\xc3\xa9", False), (b"a\\b", False),
])
def test_host_values(value, ok):
    assert host_valid(value) is ok


@pytest.mark.parametrize("head,body,length", [
    (GET, BODY_NONE, 0),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n\r\n", BODY_LENGTH, 7),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", BODY_CHUNKED, 0),
    (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", BODY_TUNNEL, 0),
    (b"GET / HTTP/1.0\r\n\r\n", BODY_NONE, 0),
])
def test_heads_that_pass_and_their_framing(head, body, length):
    assert check_head(head) == (0, "", body, length)


@pytest.mark.parametrize("line,status,size", [
    (b"5", 0, 5), (b"00a", 0, 10), (b"5;a=b", 0, 5), (b'5;a="x;y"', 0, 5), (b"0", 0, 0),
    (b"fffffffffffff", 0, 0xfffffffffffff), (b"10000000000000", 400, 0),
    (b"", 400, 0), (b"x", 400, 0), (b"5;", 400, 0), (b"5;=b", 400, 0), (b"5 ", 400, 0),
    (b'5;a="b', 400, 0), (b"5;a=b c", 400, 0), (b"-1", 400, 0),
])
def test_chunk_lines(line, status, size):
    got = check_chunk_line(line)
    assert got[0] == status and (status or got[2] == size)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_byte_by_byte_is_the_same_as_all_at_once(case):
    """Splitting the stream anywhere never changes the verdict."""
    whole = RequestChecker(16384).feed(case.raw)[0]
    checker = RequestChecker(16384)
    split = 0
    for i in range(len(case.raw)):
        split = checker.feed(case.raw[i:i + 1])[0]
        if split:
            break
    assert split == whole


def _fed_in_pieces(raw: bytes, size: int) -> int:
    checker = RequestChecker(16384)
    for i in range(0, len(raw), size):
        status = checker.feed(raw[i:i + size])[0]
        if status:
            return status
    return 0


def test_the_generated_corpus_gets_the_same_verdict_however_it_is_cut():
    """Every generated case, whole, byte by byte (small ones) and in
    pieces of a few to 4,093 bytes: one verdict."""
    differ = []
    for case in GENERATED:
        whole = RequestChecker(16384).feed(case.raw)[0]
        sizes = (1, 7, 1000) if len(case.raw) < 600 else (61, 1000, 4093)
        got = {size: _fed_in_pieces(case.raw, size) for size in sizes}
        if any(v != whole for v in got.values()):
            differ.append((case.id, whole, got))
    assert differ == []


@pytest.mark.parametrize("piece", [3, 100, 1 << 20])
def test_long_chunk_lines_and_trailers_are_refused_however_they_arrive(piece):
    """A chunk line over MAX_CHUNK_LINE or trailers over the head limit
    are refused whether they come in one read or many (they used to pass
    when whole in one read)."""
    head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    ext = head + b"5;a=" + b"b" * 5000 + b"\r\nhello\r\n0\r\n\r\n"
    trailers = head + b"5\r\nhello\r\n0\r\nX: " + b"v" * 17000 + b"\r\n\r\n"
    assert _fed_in_pieces(ext, piece) == 400
    assert _fed_in_pieces(trailers, piece) == 431
    ok = head + b"5;a=" + b"b" * 4000 + b"\r\nhello\r\n0\r\nX: " + b"v" * 16000 + b"\r\n\r\n"
    assert _fed_in_pieces(ok, piece) == 0


def test_the_requests_before_a_bad_one_are_still_parsed():
    bad = b"GET /a\x00 HTTP/1.1\r\nHost: a\r\n\r\n"
    status, good = RequestChecker(16384).feed(GET + GET + bad)
    assert (status, good) == (400, 2 * len(GET))


def test_a_body_error_refuses_the_message_it_is_in():
    head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    checker = RequestChecker(16384)
    assert checker.feed(GET + head + b"5\r\nhel") == (0, 0)
    assert checker.feed(b"loXX") == (400, 0)


def test_bodies_and_upgrades_are_not_read_as_heads():
    body = b"GET /not-a-request HTTP/1.1\r\n\r\n"
    post = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    assert RequestChecker(16384).feed(post + GET) == (0, 0)
    upgrade = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: ws\r\n\r\n\x00\x01binary"
    assert RequestChecker(16384).feed(upgrade) == (0, 0)


@pytest.mark.parametrize("fields,name,status", [
    (99, 255, 0), (100, 1, 400), (1, 256, 400), (1000, 1, 400),
])
def test_haproxys_limits_on_field_lines_and_names(fields, name, status):
    """HAProxy answers 400 to more than 100 field lines or a name over 255
    bytes; so does lbcore (a server behind must not get what haproxy's
    would never pass on)."""
    head = (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(fields - 1))
            + b"Y" * name + b": v\r\n\r\n")
    assert check_head(head)[0] == status


@pytest.mark.parametrize("framing", [b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n"])
def test_an_upgrade_request_with_a_body_is_refused(framing):
    """httptools switches protocols right after such a head: the body
    would wait as tunnel bytes while the server waits for the body."""
    head = (b"POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n" + framing + b"\r\n")
    assert check_head(head)[0] == 400
    assert check_head(head.replace(framing, b"Content-Length: 0\r\n"))[2] == BODY_TUNNEL


KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"


@pytest.mark.parametrize("fields,status", [
    (b"Connection: Upgrade\r\nUpgrade: websocket\r\n" + KEY, 0),
    (b"Connection: Upgrade\r\nUpgrade: WebSocket\r\n" + KEY + KEY, 0),
    (b"Connection: Upgrade\r\nUpgrade: websocket\r\n", 400),
    (b"Connection: keep-alive, Upgrade\r\nUpgrade: foo, websocket\r\n", 400),
    (b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: x\r\n", 400),
    (b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: \r\n", 400),
    (b"Connection: Upgrade\r\nUpgrade: websocket\r\n" + KEY
     + b"Sec-WebSocket-Key: x\r\n", 400),
    (b"Connection: Upgrade\r\nUpgrade: h2c\r\n", 0),
    (b"Upgrade: websocket\r\n", 0),  # no upgrade asked of this hop
])
def test_websocket_handshakes_need_a_key(fields, status):
    """RFC 6455 4.1/4.2.1, as haproxy: a WebSocket upgrade without a valid
    Sec-WebSocket-Key gets 400."""
    assert check_head(b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n")[0] == status


@pytest.mark.parametrize("target,status", [
    (b"http://a/x?y", 0), (b"http://a", 0), (b"http://a?x", 400), (b"http://a:80?x", 400),
])
def test_absolute_form_paths(target, status):
    """An absolute-form target with a query but no path: haproxy refuses it."""
    assert check_head(b"GET %s HTTP/1.1\r\nHost: a%s\r\n\r\n" % (
        target, b":80" if b":80" in target else b""))[0] == status


def test_heads_over_the_limit_get_431():
    big = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"x" * 200
    assert RequestChecker(100).feed(big)[0] == 431


class _Recorder:
    def __init__(self):
        self.urls = []

    def on_url(self, url):
        self.urls.append(url)


def test_checked_parser_parses_what_came_before_a_refusal():
    rec = _Recorder()
    parser = CheckedRequestParser(rec, 16384)
    with pytest.raises(Refused) as exc:
        parser.feed_data(GET + b"GET  /double-space HTTP/1.1\r\nHost: a\r\n\r\n")
    assert exc.value.status == 400
    assert rec.urls == [b"/"]


@pytest.mark.parametrize("version,status,interims,bad", [
    ("1.1", 200, 0, False), ("1.0", 404, 0, False), ("1.1", 100, 15, False),
    ("1.1", 100, 16, True), ("1.1", 999, 0, True), ("1.1", 600, 0, True),
    ("2.0", 200, 0, True), ("0.9", 200, 0, True), ("1.1", 99, 0, True), ("1.1", 0, 0, True),
])
def test_response_heads(version, status, interims, bad):
    assert bool(response_head_error(version, status, interims)) is bad


@pytest.mark.parametrize("reason,bad", [
    (b"OK", False), (b"", False), (b"O\tK", False), (b"caf\xc3\xa9", False),
    (b"O\x00K", True), (b"O\x01K", True), (b"O\x7fK", True), (b"O\x1bK", True),
])
def test_response_reason_phrases(reason, bad):
    assert bool(response_head_error("1.1", 200, 0, reason)) is bad


@pytest.mark.parametrize("value,chunked", [
    (b"chunked", True), (b"CHUNKED", True), (b" chunked ", True), (b"gzip, chunked", True),
    (b"chunked, chunked", False), (b"chunked,chunked", False), (b"xchunked", False),
    (b"chunked, gzip", False), (b"identity", False), (b"", False), (b"chunked,", False),
])
def test_response_transfer_codings(value, chunked):
    assert transfer_codings_chunked(value) is chunked


def _cpu_byte_by_byte(data: bytes) -> float:
    import time

    checker = RequestChecker(1 << 20)
    start = time.process_time()
    for i in range(len(data)):
        checker.feed(data[i:i + 1])
    return time.process_time() - start


@pytest.mark.parametrize("prefix", [
    b"GET / HTTP/1.1\r\nHost: a\r\nX-A: ",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-A: ",
])
def test_a_head_or_trailers_trickled_byte_by_byte_cost_linear_time(prefix):
    """Each read resumes the search where the last one stopped: eight times
    the bytes cost about eight times the time (it was 64 times: a client
    dripping a 16 KiB head cost lbcore 1.5 s of CPU)."""
    small = min(_cpu_byte_by_byte(prefix + b"v" * 4000) for _ in range(3))
    large = min(_cpu_byte_by_byte(prefix + b"v" * 32000) for _ in range(3))
    assert large < 20 * max(small, 1e-3), (small, large)
