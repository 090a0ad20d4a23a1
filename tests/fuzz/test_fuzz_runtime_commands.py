"""The runtime API's commands and the HTTP admin API, fuzzed against a live
lbcore: command lines built from the grammar (every registered verb, and
verbs that do not exist, with arguments that are right, almost right or
wild: backends and servers that exist and do not, weights, states, health
words, table names, keys and filters, huge numbers, unicode, empty fields,
`;` batches, `prompt` mode, `<<` payloads) sent to `stats.socket`, and
admin requests with random names and bodies sent to `stats.bind`.

Every command gets an answer (a clear error for bad input, never
"Internal error"), lbcore never logs a traceback and never exits, and after
each input `show info` or `show stat` answers as usual and a request through
the frontend is served (the servers are set back to ready first: a fuzzed
`set server ... state maint` is a legitimate outage).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import tempfile
import time
from urllib.parse import quote

import pytest
from hypothesis import given, settings, strategies as st

from lbcore.stats.runtime_api import REGISTRY
from tests.integration.rawhttp import check_no_crash, start_watched
from tests.integration.test_runtime_ssl import make_cert
from tests.support import BackendProcess, free_port, http_config, wait_unix

from .strategies import seeds

# Every registered command (a command added later is fuzzed too), and words
# that are not commands here (HAProxy's own, misspellings, other cases).
VERBS = sorted({" ".join(spec.words) for spec in REGISTRY})
NOT_VERBS = ["expert-mode on", "expert-mode off", "experimental-mode on", "debug dev exit", "show errors",
             "add server pool/s9 127.0.0.1:1", "del server pool/s1", "show fd", "show acl", "SHOW INFO",
             "show tabel", "set", "show", "get", "enable", "disable", "clear", "shutdown", "commit", "abort",
             "set maxconn global 1", "set rate-limit connections global 1", "disable frontend web"]
SERVER_REFS = ["pool/s1", "pool/s2", "other/t1", "pool/nope", "nope/s1", "pool/", "/s1", "/", "pool",
               "pool/s1/x", "POOL/S1", "pool/s\u00e9", "\u00e9/\u00e9", "pool/s1\x00", "a" * 3000 + "/s1"]
WORDS = ["state", "weight", "health", "agent", "addr", "ready", "drain", "maint", "up", "down", "stopping",
         "cli", "all", "key", "typed", "json", "desc", "no-maint", "-1", "1", "2", "4", "7", "web", "pool",
         "other", "<<", "", " ", "\\", "\\;", "#", "%"]
NUMBERS = ["0", "1", "100", "256", "257", "50%", "0%", "100%", "25600%", "25601%", "99999999999999999999%",
           "+5", "-1", "1e3", "0x10", "1.5", "5%%", "%", "10 ", "\u0661"]
TABLE_WORDS = ["pool", "other", "web", "nope", "key", "127.0.0.1", "::1", "10.0.0.256", "4294967295",
               "4294967296", "18446744073709551616", "data.conn_cur", "data.http_req_rate", "data.server_id",
               "data.server_key", "data.gpc0", "data.", "data.conn_cnt", "eq", "ne", "le", "ge", "lt", "gt",
               "gte"]
WORD = st.one_of(
    st.sampled_from(SERVER_REFS + WORDS + NUMBERS + TABLE_WORDS),
    st.integers(-(2 ** 70), 2 ** 70).map(str),
    st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=12),
)


@st.composite
def command(draw) -> str:
    verb = draw(st.one_of(st.sampled_from(VERBS), st.sampled_from(VERBS), st.sampled_from(NOT_VERBS)))
    words = [verb] + draw(st.lists(WORD, max_size=6))
    seps = draw(st.lists(st.sampled_from([" ", " ", " ", "\t", "  "]), min_size=len(words), max_size=len(words)))
    text = "".join(w + s for w, s in zip(words, seps))
    return text.rstrip(" \t") if draw(st.booleans()) else text


@st.composite
def command_line(draw) -> bytes:
    """One line of `;`-separated commands, maybe in prompt mode, maybe with
    a payload; then `quit`, so the answer ends with the connection."""
    commands = draw(st.lists(command(), min_size=1, max_size=4))
    line = draw(st.sampled_from([";", "; ", " ; ", ";;"])).join(commands)
    if draw(st.integers(0, 4)) == 0:
        line = "prompt; " + line
    if draw(st.integers(0, 9)) == 0:
        line = ";" + line
    payload = ""
    if draw(st.integers(0, 5)) == 0:
        line = draw(st.sampled_from(["set ssl cert CERT", "set ssl cert /nope.pem", "show info"])) + " <<"
        payload = draw(st.sampled_from(["PEM", "GARBAGE", "HALF", "TEXT"])) + "\n\n"
    return (line + "\n" + payload + "quit\n").encode("utf-8", "surrogatepass")


class Live:
    """lbcore with two checked servers, a stick table, a TLS frontend (for
    the certificate commands), the runtime socket at level admin and the
    HTTP admin API."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="lbcore-fuzz-rt-")
        self.cert = make_cert(self.dir, "fuzz.test")
        self.pem = open(self.cert).read()
        self.backends = [BackendProcess(f"s{i}").start() for i in (1, 2)]
        self.port, self.tls_port, self.stats = free_port(), free_port(), free_port()
        self.sock = os.path.join(self.dir, "admin.sock")
        config = http_config([b.address for b in self.backends], self.port, backend={
            "health": {"type": "http", "path": "/healthcheck", "interval": "500ms", "rise": 1, "fall": 3},
            "stick_table": {"type": "ip", "size": 1000, "expire": "30m",
                            "store": ["conn_cur", "conn_cnt", "http_req_rate(10s)"]},
            "stick_on": "src"})
        config["frontends"]["tls"] = {"bind": f"127.0.0.1:{self.tls_port}", "mode": "http", "backend": "other",
                                      "tls": {"cert": self.cert}}
        config["backends"]["other"] = {"mode": "http", "servers": [{"name": "t1", "address": self.backends[0].address}],
                                       "stick_table": {"type": "string", "size": 100, "store": ["http_req_cnt"]}}
        config["stats"] = {"bind": f"127.0.0.1:{self.stats}", "admin": True,
                           "socket": {"path": self.sock, "level": "admin"}}
        self.lb = start_watched(config)
        wait_unix(self.sock, proc=self.lb.proc)

    def expand(self, data: bytes) -> bytes:
        return (data.replace(b"CERT", self.cert.encode())
                .replace(b"HALF\n", self.pem[:len(self.pem) // 2].encode() + b"\n")
                .replace(b"PEM\n", self.pem.encode())
                .replace(b"GARBAGE", b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----")
                .replace(b"TEXT", "\u00e9t\u00e9 \x00 \\ ; <<".encode()))

    def cli(self, data: bytes, timeout: float = 15.0) -> bytes:
        """Send bytes to the runtime socket; everything it answers until it closes."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(self.sock)
        answer = b""
        deadline = time.monotonic() + timeout
        try:
            sock.sendall(data)
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    return answer
                answer += chunk
        finally:
            sock.close()
        raise AssertionError(f"the runtime socket kept the connection open after {data[:200]!r}")

    def restore(self) -> None:
        """Back to a serving state after whatever the fuzzed commands did."""
        cmds = []
        for ref in ("pool/s1", "pool/s2", "other/t1"):
            cmds += [f"set server {ref} state ready", f"set weight {ref} 100%"]
        for ref in ("pool/s1", "pool/s2"):
            cmds += [f"enable health {ref}", f"set server {ref} health up"]
        assert self.cli(("; ".join(cmds) + "\n").encode()) == b"\n" * len(cmds)

    def get(self, port=None) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=10)
        try:
            conn.request("GET", "/echo")
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def admin(self, method: str, path: str, body: bytes, headers=None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.stats, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def stop(self):
        self.lb.stop()
        for b in self.backends:
            b.stop()


@pytest.fixture(scope="module")
def live():
    target = Live()
    yield target
    target.stop()


def still_serving(live: Live, which: int) -> None:
    assert live.lb.proc.poll() is None, "lbcore exited"
    if which % 2:
        info = live.cli(b"show info\n").decode()
        assert info.startswith("Name: HAProxy\n") and info.endswith("\n\n"), info[:300]
    else:
        stat = live.cli(b"show stat\n").decode()
        assert stat.startswith("# pxname,svname,") and "pool,s1," in stat and stat.endswith("\n\n"), stat[:300]
    live.restore()
    assert live.get() == 200


@settings(max_examples=max(30, settings().max_examples // 2))
@given(command_line(), st.integers(0, 1))
def test_runtime_commands_always_answered(live, line, which):
    answer = live.cli(live.expand(line))
    # Each command answers at least its closing empty line, and an error
    # is a message, never an internal failure.
    assert answer.endswith(b"\n") or answer.endswith(b"> "), (line, answer[-200:])
    assert b"Internal error" not in answer, (line, answer)
    still_serving(live, which)
    check_no_crash(settle=0)


def test_runtime_corpus_lines_always_answered(live):
    """The seed corpus (tests/fuzz/corpus/runtime_api), each file as a session."""
    for i, data in enumerate(seeds("runtime_api")):
        answer = live.cli(live.expand(data.rstrip(b"\n") + b"\nquit\n"))
        assert b"Internal error" not in answer, (data, answer)
        still_serving(live, i)
    check_no_crash()


NAMES = st.one_of(st.sampled_from(["pool", "s1", "s2", "other", "t1", "nope", "", ".", "..", "%", "%2F",
                                   "s1/x", "\u00e9", "a" * 3000]),
                  st.text(max_size=10))
# Bodies the admin API must refuse with a 400 (or 413) like any other bad
# JSON: deep nesting (the JSON decoder's recursion limit), numbers too long
# for int(), non-finite numbers, bad UTF-8, truncation.
HOSTILE_BODIES = [b"", b"{", b"{}", b"null", b'{"weight": 1e999}', b'{"weight": NaN}', b'{"weight": -Infinity}',
                  b'{"state": "drain"', b"\xff\xfe", b'{"weight": ' + b"9" * 5000 + b"}",
                  b"[" * 30000 + b"]" * 30000, b'{"state":' * 7000, b'{"a":' * 3000 + b"1" + b"}" * 3000,
                  b"[" * 70000]
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), st.floats(),
              st.sampled_from(["ready", "drain", "maint", "READY", "Drain", "up", "down", "", "100%"]),
              st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)
ADMIN_BODIES = st.one_of(
    st.fixed_dictionaries({}, optional={"state": JSON_VALUES, "weight": JSON_VALUES,
                                        "x": JSON_VALUES}).map(lambda d: json.dumps(d).encode()),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.sampled_from(HOSTILE_BODIES),
    st.binary(max_size=64),
)
FORM_BODIES = st.lists(st.tuples(st.sampled_from(["b", "s", "action", "weight", "x"]),
                                 st.one_of(st.sampled_from(["pool", "s1", "s2", "other", "t1", "ready", "drain",
                                                            "maint", "weight", "shutdown", "dhlth", "ehlth",
                                                            "10", "-1", "999999999999999999999"]),
                                           st.text(max_size=8))),
                       max_size=6).map(lambda pairs: "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs).encode())


@settings(max_examples=max(30, settings().max_examples // 2))
@given(st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE", "PATCH"]), NAMES, NAMES, ADMIN_BODIES,
       FORM_BODIES, st.integers(0, 1))
def test_http_admin_always_answers_clearly(live, method, backend, server, body, form, which):
    path = f"/admin/backends/{quote(backend, safe='')}/servers/{quote(server, safe='')}"
    status, answer = live.admin(method, path, body, {"Content-Type": "application/json"})
    assert status in (200, 400, 404, 405, 413), (method, path, body[:200], status, answer[:300])
    if method == "POST" and backend and server and status in (400, 404):
        assert json.loads(answer).get("error"), answer  # a reason, in the API's own shape
    # The stats page's admin form (HAProxy's), same-origin as a browser would send it.
    status, answer = live.admin("POST", "/", form, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status in (303, 400, 413), (form, status, answer[:300])
    still_serving(live, which)
    check_no_crash(settle=0)


@pytest.mark.parametrize("body", HOSTILE_BODIES, ids=range(len(HOSTILE_BODIES)))
def test_http_admin_refuses_hostile_bodies(live, body):
    status, answer = live.admin("POST", "/admin/backends/pool/servers/s1", body,
                                {"Content-Type": "application/json"})
    assert status in (400, 413), (body[:100], status, answer[:300])
    still_serving(live, 0)
    check_no_crash(settle=0)
