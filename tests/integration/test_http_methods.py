"""Methods llhttp does not know, lbcore beside haproxy 2.6, each in front
of its own lenient backend (tests/lenient_backend.py).

Any token is a method (RFC 9110 9.1): haproxy passes one it does not know
on to the server, which answers (501 if it implements no such method);
lbcore does the same, on the fast path (lbcore_ext heads) and on the
strict one (httptools behind lbcore.proxy.h1_checks, which gives llhttp a
method it knows in place of the real one). A method that is not a token
is refused with 400 by both.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.corpus.harness import haproxy_cfg, lbcore_cfg, parse_statuses, send_case
from tests.haproxy import HaproxyProcess, need_haproxy
from tests.lenient_backend import LenientBackend
from tests.support import free_port

from .rawhttp import start_watched

H = b"Host: a\r\n"
CHUNKED_POST = b"POST /c HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"

# (id, bytes, requests): each on its own connection.
PASSED = [
    ("word", b"FOO / HTTP/1.1\r\n" + H + b"\r\n", 1),
    ("lowercase", b"get / HTTP/1.1\r\n" + H + b"\r\n", 1),
    ("every-tchar", b"X!#$%&'*+-.^_`|~1 /t HTTP/1.1\r\n" + H + b"\r\n", 1),
    ("one-letter", b"X / HTTP/1.1\r\n" + H + b"\r\n", 1),
    ("long", b"M" * 300 + b" / HTTP/1.1\r\n" + H + b"\r\n", 1),
    ("http10", b"FOO / HTTP/1.0\r\n\r\n", 1),
    ("content-length", b"FOO /b HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nxyz", 1),
    # The strict path: chunked, absolute-form, X-Forwarded-For to merge.
    ("chunked", b"FOO /c HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n", 1),
    ("absolute-form", b"FOO http://a/x HTTP/1.1\r\n" + H + b"\r\n", 1),
    ("after-chunked", CHUNKED_POST + b"BAR /2 HTTP/1.1\r\n" + H + b"Content-Length: 2\r\n\r\nhi", 2),
    ("pipelined", b"FOO /1 HTTP/1.1\r\n" + H + b"\r\nGET /2 HTTP/1.1\r\n" + H + b"\r\n", 2),
]
REFUSED = [
    ("separator-" + name, sep) for name, sep in
    [("paren", b"("), ("at", b"@"), ("colon", b":"), ("quote", b'"'), ("slash", b"/"), ("brace", b"{"),
     ("obs-text", b"\x80"), ("del", b"\x7f")]
]


def _run(name: str, backend: LenientBackend, sender) -> tuple:
    port = free_port()
    if name == "lbcore":
        proc = start_watched(lbcore_cfg(port, backend.address))
    else:
        need_haproxy()
        proc = HaproxyProcess(haproxy_cfg(port, backend.address)).start(wait_ports=[port])
    try:
        outcomes = sender(port)
        time.sleep(0.2)  # whatever was passed on has reached the backend
        return outcomes, backend.requests
    finally:
        proc.stop()


def _send_all(port):
    cases = {cid: send_case(port, raw, n, 5.0).short() for cid, raw, n in PASSED}
    for cid, sep in REFUSED:
        cases[cid] = send_case(port, b"F" + sep + b"O / HTTP/1.1\r\n" + H + b"\r\n", 1, 5.0).short()
    cases["split"] = _send_split(port)
    return cases


def _send_split(port) -> str:
    """A chunked POST, then an unknown method arriving in three reads, the
    first ending inside the method: the strict path holds what it cannot
    parse yet."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for piece in (CHUNKED_POST + b"FO", b"O /s HTTP/1.1\r\nHo", b"st: a\r\n\r\n"):
            sock.sendall(piece)
            time.sleep(0.1)
        data = b""
        deadline = time.monotonic() + 5
        while len([s for s in parse_statuses(data) if s >= 200]) < 2 and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return ",".join(str(s) for s in parse_statuses(data))


@pytest.fixture(scope="module")
def runs():
    result = {}
    for name in ("haproxy", "lbcore"):
        backend = LenientBackend()
        try:
            result[name] = _run(name, backend, _send_all)
        finally:
            backend.close()
    return result


@pytest.mark.parametrize("cid", [c[0] for c in PASSED] + ["split"])
def test_an_unknown_token_method_is_passed_on_like_haproxy(runs, cid):
    ours, theirs = runs["lbcore"][0][cid], runs["haproxy"][0][cid]
    assert ours == theirs, f"haproxy {theirs}, lbcore {ours}"
    assert ours.startswith("200"), ours


@pytest.mark.parametrize("cid", [c[0] for c in REFUSED])
def test_a_method_that_is_not_a_token_is_refused_like_haproxy(runs, cid):
    ours, theirs = runs["lbcore"][0][cid], runs["haproxy"][0][cid]
    assert ours == theirs == "400/closed", (theirs, ours)


def test_the_server_gets_the_same_methods_targets_and_bodies(runs):
    def seen(requests):
        return sorted((line, body) for line, _, body in requests)
    ours, theirs = seen(runs["lbcore"][1]), seen(runs["haproxy"][1])
    assert ours == theirs
    lines = [line for line, _ in ours]
    for expected in (b"FOO / HTTP/1.1", b"get / HTTP/1.1", b"X!#$%&'*+-.^_`|~1 /t HTTP/1.1",
                     b"FOO /c HTTP/1.1", b"BAR /2 HTTP/1.1", b"FOO /s HTTP/1.1"):
        assert expected in lines
    assert (b"FOO /c HTTP/1.1", b"xyz") in ours and (b"BAR /2 HTTP/1.1", b"hi") in ours


def test_a_pipelined_head_split_across_reads_waits_for_its_end():
    """The start of the next head arrives while the answer before it is
    out, the rest later: the connection is not idle meanwhile (it used to
    get the short idle deadline, then a 408 for the half head)."""
    backend = LenientBackend()
    port = free_port()
    proc = start_watched(lbcore_cfg(port, backend.address))
    try:
        for method in (b"GET", b"FOO"):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                for piece in (b"GET /1 HTTP/1.1\r\n" + H + b"\r\n" + method[:2], method[2:] + b" /2 HTTP/1.1\r\nHo",
                              b"st: a\r\n\r\n"):
                    sock.sendall(piece)
                    time.sleep(0.3)  # the first answer is out before the rest comes
                data = b""
                while len(parse_statuses(data)) < 2:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            assert parse_statuses(data) == [200, 200], data
        assert [line for line, _, _ in backend.requests][-2:] == [b"GET /1 HTTP/1.1", b"FOO /2 HTTP/1.1"]
    finally:
        proc.stop()
        backend.close()
