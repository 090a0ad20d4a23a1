"""A generated corpus of hostile and broken server answers.

Each `Answer` is what a server writes back for one request path (bytes, or
a callable writing to the socket as it likes), with what the client of a
proxy must see:

- `BAD`: nothing of it may be relayed as a valid answer: a 502 (or, once a
  body started, a cut: what was relayed, then the connection closes);
- `CUT`: a 502 or a clean cut;
- a status (int): relayed with that status;
- `EITHER`: relayed or refused; only compared with haproxy.

And always: the server connection that gave a bad answer, or bytes after
the end of an answer, is never used for another request, and nothing of
one answer reaches the answer to another request. Every answer here that
forges a second answer carries the body `STOLEN!`.

tests/integration/test_hostile_responses.py runs every answer through lbcore
and haproxy 2.6, each in front of its own tests/hostile_backend.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

BAD, CUT, EITHER = "bad", "cut", "either"

STOLEN = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nSTOLEN!"
OK_BODY = b"Content-Length: 2\r\n\r\nok"


@dataclass(frozen=True)
class Answer:
    path: str
    answer: object  # bytes, or callable(conn, seen) -> "close" or None
    expect: object  # BAD, CUT, EITHER or a status
    method: bytes = b"GET"
    # The connection must not serve another request after this answer
    # (a framing error, or bytes after the end of the answer).
    no_reuse: bool = True
    why: str = ""


def endless(prefix: bytes, unit: bytes, total: int = 4 << 20):
    """An answer that never ends: `prefix`, then `unit` until `total`
    bytes or until the proxy gives up and closes."""
    def answer(conn, seen):
        conn.sendall(prefix)
        sent = 0
        try:
            while sent < total:
                conn.sendall(unit * 64)
                sent += len(unit) * 64
        except OSError:
            pass
        return "close"
    return answer


def then_close(data: bytes):
    """Writes `data`, then closes the connection."""
    def answer(conn, seen):
        conn.sendall(data)
        return "close"
    return answer


def early(conn, seen):
    conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nnope")


early.early = True


def _ctl_name(b: int) -> str:
    return "%02x" % b


ANSWERS: list[Answer] = []


def _a(path, answer, expect, **kw):
    ANSWERS.append(Answer("/" + path, answer, expect, **kw))


def _status_lines():
    for cid, line, expect in [
        ("ok", b"HTTP/1.1 200 OK", 200), ("no-reason", b"HTTP/1.1 200", 200),
        ("empty-reason", b"HTTP/1.1 200 ", 200), ("reason-obs-text", b"HTTP/1.1 200 caf\xc3\xa9", 200),
        ("reason-tab", b"HTTP/1.1 200 O\tK", 200), ("status-599", b"HTTP/1.1 599 Odd", 599),
        ("status-299", b"HTTP/1.1 299 Odd", 299), ("http10", b"HTTP/1.0 200 OK", 200),
        ("status-099", b"HTTP/1.1 099 Low", BAD), ("status-000", b"HTTP/1.1 000 Zero", BAD),
        ("status-600", b"HTTP/1.1 600 High", BAD), ("status-999", b"HTTP/1.1 999 High", BAD),
        ("status-1000", b"HTTP/1.1 1000 Four", BAD), ("status-abc", b"HTTP/1.1 abc Letters", BAD),
        ("status-20", b"HTTP/1.1 20 Two", BAD), ("status-2-0-0", b"HTTP/1.1 2 00 Split", BAD),
        ("status-minus", b"HTTP/1.1 -200 Neg", BAD), ("status-plus", b"HTTP/1.1 +200 Pos", BAD),
        ("status-hex", b"HTTP/1.1 0xc8 Hex", BAD), ("status-empty", b"HTTP/1.1  OK", BAD),
        ("version-2", b"HTTP/2.0 200 OK", BAD), ("version-0.9", b"HTTP/0.9 200 OK", BAD),
        ("version-1.2", b"HTTP/1.2 200 OK", EITHER), ("version-lower", b"http/1.1 200 OK", BAD),
        ("version-1.10", b"HTTP/1.10 200 OK", BAD), ("version-none", b"200 OK", BAD),
        ("version-junk", b"FOO/1.1 200 OK", BAD), ("icy", b"ICY 200 OK", BAD),
        ("double-space", b"HTTP/1.1  200 OK", BAD), ("tab-separator", b"HTTP/1.1\t200 OK", BAD),
        ("leading-space", b" HTTP/1.1 200 OK", BAD), ("reason-nul", b"HTTP/1.1 200 O\x00K", BAD),
        ("reason-ctl", b"HTTP/1.1 200 O\x01K", BAD), ("reason-bare-cr", b"HTTP/1.1 200 O\rK", BAD),
        ("reason-del", b"HTTP/1.1 200 O\x7fK", EITHER),
        ("overlong-reason", b"HTTP/1.1 200 " + b"r" * 70000, BAD),
    ]:
        _a("line-" + cid, line + b"\r\n" + OK_BODY, expect,
           no_reuse=expect not in (200, 299, 599) and expect != EITHER)
    _a("line-bare-lf", b"HTTP/1.1 200 OK\n" + OK_BODY, BAD)
    _a("line-all-bare-lf", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", BAD)
    _a("line-garbage-before", b"garbage\r\nHTTP/1.1 200 OK\r\n" + OK_BODY, BAD)
    _a("line-crlf-before", b"\r\nHTTP/1.1 200 OK\r\n" + OK_BODY, EITHER, no_reuse=False)
    _a("line-nothing-close", then_close(b""), BAD, why="closed without a byte: 502")
    _a("line-partial-close", then_close(b"HTTP/1.1 200"), BAD)
    _a("line-endless", endless(b"HTTP/1.1 200 ", b"reason"), BAD)


def _fields():
    for b in list(range(0x20)) + [0x7f]:
        if b in (0x09, 0x0a, 0x0d):
            continue
        _a("value-byte-" + _ctl_name(b), b"HTTP/1.1 200 OK\r\nX: a" + bytes([b]) + b"b\r\n" + OK_BODY,
           BAD if b != 0x7f else EITHER, no_reuse=b != 0x7f)
    for b in b' ()<>@,;\\"/[]?={}\x00\x01\x7f\x80\xff':
        _a("name-byte-%02x" % b, b"HTTP/1.1 200 OK\r\nX" + bytes([b]) + b"Y: a\r\n" + OK_BODY, BAD)
    for cid, lines, expect in [
        ("value-bare-cr", b"X: a\rb\r\n", BAD), ("value-bare-lf", b"X: a\nb: c\r\n", BAD),
        ("obs-fold", b"X: a\r\n b\r\n", BAD), ("obs-fold-tab", b"X: a\r\n\tb\r\n", BAD),
        ("obs-fold-cl", b"Content-Length:\r\n 2\r\n", BAD),
        ("ws-before-colon", b"X : a\r\n", BAD), ("ws-before-colon-cl", b"Content-Length : 2\r\n", BAD),
        ("first-line-ws", b" X: a\r\n", BAD), ("empty-name", b": a\r\n", BAD),
        ("no-colon", b"X-No-Colon\r\n", BAD), ("value-obs-text", b"X: caf\xc3\xa9\r\n", 200),
        ("value-empty", b"X:\r\n", 200), ("long-value-8k", b"X: " + b"v" * 8000 + b"\r\n", 200),
        ("many-fields-50", b"".join(b"X-%d: v\r\n" % i for i in range(50)), 200),
        ("connection-names-cl", b"Connection: Content-Length\r\n", 200),
        ("connection-names-te", b"Connection: Transfer-Encoding\r\n", 200),
    ]:
        _a("field-" + cid, b"HTTP/1.1 200 OK\r\n" + lines + OK_BODY, expect,
           no_reuse=expect != 200)
    _a("field-endless", endless(b"HTTP/1.1 200 OK\r\n", b"X-Filler: aaaaaaaaaaaaaaaaaaaa\r\n"), BAD)
    _a("field-endless-value", endless(b"HTTP/1.1 200 OK\r\nX: ", b"aaaaaaaaaaaaaaaa"), BAD)
    _a("field-head-70k", b"HTTP/1.1 200 OK\r\n" + b"X: " + b"v" * 70000 + b"\r\n" + OK_BODY, BAD)


def _lengths():
    def resp(fields: bytes, body: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n" + body

    for cid, value, body, expect in [
        ("plain", b"2", b"ok", 200), ("zeros", b"0002", b"ok", 200), ("ows", b" 2 ", b"ok", 200),
        ("zero", b"0", b"", 200),
        ("plus", b"+2", b"ok", BAD), ("minus", b"-1", b"ok", BAD), ("hex", b"0x2", b"ok", BAD),
        ("alpha", b"2a", b"ok", BAD), ("empty", b"", b"ok", BAD), ("space-inside", b"1 0", b"ok", BAD),
        ("decimal", b"2.0", b"ok", BAD), ("list-same", b"2, 2", b"ok", BAD),
        ("list-differ", b"2, 7", b"ok", BAD), ("overflow", b"9" * 30, b"ok", BAD),
        ("2^64+2", b"18446744073709551618", b"ok", BAD), ("nul", b"2\x00", b"ok", BAD),
        ("unicode-digit", b"\xd9\xa2", b"ok", BAD),
    ]:
        _a("cl-" + cid, resp(b"Content-Length: " + value + b"\r\n", body + STOLEN), expect)
    for cid, fields, expect in [
        ("dup-same", b"Content-Length: 2\r\nContent-Length: 2\r\n", BAD),
        ("dup-differ", b"Content-Length: 2\r\nContent-Length: 9\r\n", BAD),
        ("and-te", b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", BAD),
        ("te-and-cl", b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n", BAD),
    ]:
        _a("cl-" + cid, resp(fields, b"2\r\nok\r\n0\r\n\r\n" + STOLEN), expect)
    _a("cl-short-body-close", then_close(resp(b"Content-Length: 10\r\n", b"hello")), CUT)
    _a("cl-long-body", resp(b"Content-Length: 2\r\n", b"ok" + b"x" * 100), 200,
       why="bytes after the end: relayed up to the length, connection closed")
    _a("close-delimited", then_close(resp(b"", b"all until close")), 200, no_reuse=False)
    _a("close-delimited-http10", then_close(b"HTTP/1.0 200 OK\r\n\r\nall until close"), 200,
       no_reuse=False)
    _a("extra-after", resp(b"Content-Length: 2\r\n", b"ok") + STOLEN, 200)
    _a("extra-after-http10-keepalive", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n"
       b"Connection: keep-alive\r\n\r\nok" + STOLEN, 200)
    # (Bytes sent while the connection is idle, after a delay, are left to
    # test_hostile_backends.py, one request at a time: here the connection
    # may have been given a new request in the meantime, and a server may
    # answer a request it got with whatever it likes.)


def _chunked():
    te = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    for cid, fields, expect in [
        ("upper", b"Transfer-Encoding: CHUNKED\r\n", 200),
        ("chunked-chunked", b"Transfer-Encoding: chunked, chunked\r\n", BAD),
        ("two-fields", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", BAD),
        ("gzip-chunked", b"Transfer-Encoding: gzip, chunked\r\n", 200),
        ("chunked-gzip", b"Transfer-Encoding: chunked, gzip\r\n", BAD),
        ("identity", b"Transfer-Encoding: identity\r\n", BAD),
        ("xchunked", b"Transfer-Encoding: xchunked\r\n", BAD),
        ("empty", b"Transfer-Encoding: \r\n", BAD),
        # RFC 9112 6.1: faulty framing; relayed as chunked, then the connection closes
        ("http10", None, EITHER),
    ]:
        if fields is None:
            raw = b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" + STOLEN
        else:
            raw = b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n2\r\nok\r\n0\r\n\r\n" + STOLEN
        _a("te-" + cid, raw, expect, no_reuse=True)
    for cid, body, expect in [
        ("size-zz", b"zz\r\nok\r\n0\r\n\r\n", BAD), ("size-minus", b"-2\r\nok\r\n0\r\n\r\n", BAD),
        ("size-0x", b"0x2\r\nok\r\n0\r\n\r\n", BAD), ("size-plus", b"+2\r\nok\r\n0\r\n\r\n", BAD),
        ("size-empty", b"\r\nok\r\n0\r\n\r\n", BAD),
        ("size-overflow", b"10000000000000002\r\nok\r\n0\r\n\r\n", BAD),
        ("size-lead-sp", b" 2\r\nok\r\n0\r\n\r\n", BAD),
        ("size-bare-lf", b"2\nok\r\n0\r\n\r\n", BAD),
        ("ext-nul", b"2;a\x00\r\nok\r\n0\r\n\r\n", BAD),
        ("ext-ok", b"2;a=b\r\nok\r\n0\r\n\r\n", 200),
        ("data-no-crlf", b"2\r\nokXX0\r\n\r\n", BAD),
        ("data-bare-lf", b"2\r\nok\n0\r\n\r\n", BAD),
        ("data-long", b"1\r\nok\r\n0\r\n\r\n", BAD),
        ("second-chunk-bad", b"2\r\nok\r\nzz\r\n", CUT),
        # framing in trailers: dropped (never relayed) or refused
        ("trailer-cl", b"2\r\nok\r\n0\r\nContent-Length: 7\r\n\r\n", EITHER),
        ("trailer-te", b"2\r\nok\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n", EITHER),
        ("trailer-nul", b"2\r\nok\r\n0\r\nX: a\x00\r\n\r\n", CUT),
        ("trailer-ok", b"2\r\nok\r\n0\r\nX: a\r\n\r\n", 200),
    ]:
        _a("chunk-" + cid, te + body + STOLEN, expect, no_reuse=True)
    _a("chunk-close-mid-chunk", then_close(te + b"a\r\nhello"), CUT)
    _a("chunk-close-before-last", then_close(te + b"2\r\nok\r\n"), CUT)
    _a("chunk-close-in-trailers", then_close(te + b"2\r\nok\r\n0\r\nX: a\r\n"), CUT)
    _a("chunk-endless-line", endless(te, b"f"), BAD)
    _a("chunk-extra-after", te + b"2\r\nok\r\n0\r\n\r\n" + STOLEN, 200)


def _interim():
    ok = b"HTTP/1.1 200 OK\r\n" + OK_BODY
    _a("1xx-100", b"HTTP/1.1 100 Continue\r\n\r\n" + ok, 200, no_reuse=False)
    _a("1xx-103", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ok, 200, no_reuse=False)
    _a("1xx-two", b"HTTP/1.1 100 Continue\r\n\r\n" * 2 + ok, 200, no_reuse=False)
    _a("1xx-flood-17", b"HTTP/1.1 100 Continue\r\n\r\n" * 17 + ok, BAD)
    _a("1xx-flood-2000", b"HTTP/1.1 100 Continue\r\n\r\n" * 2000 + ok, BAD)
    _a("1xx-103-flood", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" * 2000 + ok, BAD)
    _a("1xx-endless", endless(b"", b"HTTP/1.1 100 Continue\r\n\r\n"), BAD)
    _a("1xx-endless-head-after", endless(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
                                         b"X-Filler: aaaaaaaaaaaaaaaaaaaa\r\n"), BAD)
    _a("1xx-with-cl", b"HTTP/1.1 100 Continue\r\nContent-Length: 7\r\n\r\n" + ok, EITHER,
       no_reuse=False, why="an interim answer has no body whatever it says")
    _a("1xx-then-close", then_close(b"HTTP/1.1 100 Continue\r\n\r\n"), BAD)
    _a("1xx-199", b"HTTP/1.1 199 Odd\r\n\r\n" + ok, EITHER, no_reuse=False)
    _a("101-unasked", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
       b"Connection: upgrade\r\n\r\n" + STOLEN, BAD)
    _a("101-unasked-bare", b"HTTP/1.1 101 Switching Protocols\r\n\r\n" + STOLEN, BAD)


def _bodiless():
    _a("204-with-cl-body", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello" + STOLEN, 204)
    _a("204-with-te", b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"
       b"2\r\nok\r\n0\r\n\r\n" + STOLEN, EITHER)
    _a("204-with-body", b"HTTP/1.1 204 No Content\r\n\r\nhello" + STOLEN, 204)
    _a("304-with-cl", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", 304, no_reuse=False,
       why="a 304 may carry the length of the representation; no body follows")
    _a("304-with-body", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello" + STOLEN, 304)
    _a("304-with-te", b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"
       b"0\r\n\r\n" + STOLEN, EITHER)
    _a("head-with-body", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + STOLEN, 200,
       method=b"HEAD")
    _a("head-with-chunked-body", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
       b"2\r\nok\r\n0\r\n\r\n" + STOLEN, 200, method=b"HEAD")
    _a("head-ok", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 200, method=b"HEAD",
       no_reuse=False)
    _a("early-answer", early, 413, method=b"POST", no_reuse=True,
       why="an answer before the request body ended: relayed, both connections close")


for _family in (_status_lines, _fields, _lengths, _chunked, _interim, _bodiless):
    _family()


def by_path() -> dict:
    return {a.path: a for a in ANSWERS}


assert len(by_path()) == len(ANSWERS), "duplicate paths"


# Answers haproxy 2.6 refuses (502) and lbcore relays, with the reason.
DIVERGENCES = {
    "/te-gzip-chunked": "valid (RFC 9112 6.1): framed by its final chunked, relayed with its "
                        "codings; haproxy 2.6 refuses any coding but chunked in an answer",
}


# -- running the corpus --------------------------------------------------------------

@dataclass
class Run:
    outcomes: dict  # path -> harness.Outcome of the request that got the answer
    nexts: dict  # "/next-N" -> Outcome of a clean request sent after all answers
    seen: list  # the backend's Seen records, in order


def request_for(a: Answer) -> bytes:
    if a.method == b"POST":
        return (b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" % a.path.encode()
                + b"x" * 1000)
    return b"%s %s HTTP/1.1\r\nHost: a\r\n\r\n" % (a.method, a.path.encode())


def run(name: str, answers=ANSWERS, nexts: int = 40, start=None) -> Run:
    """Every answer through a fresh `name` ("lbcore" or "haproxy") in
    front of its own hostile backend, 24 at a time; then `nexts` clean
    requests, which must each get their own answer."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.corpus.harness import send_case
    from tests.haproxy import HaproxyProcess, http_cfg
    from tests.hostile_backend import HostileBackend
    from tests.support import LbcoreProcess, free_port, http_config

    close_after = frozenset(a.path for a in answers if callable(a.answer) and a.answer is not early)
    backend = HostileBackend({a.path: a.answer for a in answers}, close_after)
    port = free_port()
    if name == "lbcore":
        config = http_config([backend.address], port)
        config["defaults"] = {"timeouts": {"server": "3s", "http_request": "3s"}}
        proc = (start or (lambda cfg: LbcoreProcess(cfg).start()))(config)
    else:
        cfg = http_cfg(port, [backend.address], extra_frontend="    timeout http-request 3s"
                       ).replace("timeout server 30s", "timeout server 3s")
        proc = HaproxyProcess(cfg).start(wait_ports=[port])
    try:
        with ThreadPoolExecutor(24) as pool:
            got = list(pool.map(lambda a: send_case(port, request_for(a), limit=6), answers))
            time.sleep(0.5)  # bytes a server sends while idle reach the proxy
            paths = ["/next-%d" % i for i in range(nexts)]
            after = list(pool.map(lambda p: send_case(
                port, b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % p.encode(), limit=6), paths))
        with backend.lock:
            seen = list(backend.seen)
    finally:
        proc.stop()
        backend.close()
    return Run({a.path: o for a, o in zip(answers, got)}, dict(zip(paths, after)), seen)


def reused_after(run_: Run, path: str) -> list:
    """Requests the backend read on the connection after `path`'s answer."""
    out = []
    for i, s in enumerate(run_.seen):
        if s.line.split(b" ")[1] == path.encode():
            out += [t.line for t in run_.seen[i + 1:] if t.conn == s.conn]
    return out


def main() -> None:
    import sys

    only = sys.argv[1:]
    answers = [a for a in ANSWERS if not only or any(o in a.path for o in only)]
    lb, ha = run("lbcore", answers), run("haproxy", answers)
    for a in answers:
        o, h = lb.outcomes[a.path], ha.outcomes[a.path]
        flag = ""
        if b"STOLEN" in o.raw:
            flag = "  <-- STOLEN reached the client"
        elif a.no_reuse and reused_after(lb, a.path):
            flag = "  <-- connection reused"
        print(f"{a.path:34} {str(a.expect):7} lbcore {o.short():14} haproxy {h.short():14}{flag}")
    for name, r in (("lbcore", lb), ("haproxy", ha)):
        bad = [p for p, o in r.nexts.items() if o.statuses != [200] or not o.raw.endswith(p.encode())]
        print(name, "clean requests after:", len(r.nexts) - len(bad), "of", len(r.nexts), bad[:5])


if __name__ == "__main__":
    main()
