"""The hostile request corpus (tests/corpus/hostile_requests.py) against
lbcore and haproxy 2.6, each in front of its own lenient backend.

lbcore must refuse everything haproxy refuses, refuse every case RFC
9110/9112 says to refuse with its status and close the connection, pass
every valid case, and let no request reach the backend that a client did
not mean to send. Run `python -m tests.corpus.harness` to see the two side
by side."""

from __future__ import annotations

import time

import pytest

from tests.corpus.harness import haproxy_cfg, lbcore_cfg, run_cases, unintended
from tests.corpus.hostile_requests import ACCEPT, CASES, REFUSE
from tests.haproxy import HaproxyProcess, need_haproxy
from tests.lenient_backend import LenientBackend
from tests.support import free_port

from .rawhttp import start_watched

IDS = [c.id for c in CASES]


def _run(name: str) -> tuple[dict, list]:
    backend = LenientBackend()
    port = free_port()
    if name == "lbcore":
        proc = start_watched(lbcore_cfg(port, backend.address))
    else:
        need_haproxy()
        proc = HaproxyProcess(haproxy_cfg(port, backend.address)).start(wait_ports=[port])
    try:
        outcomes = run_cases(port, CASES)
        time.sleep(0.2)  # a smuggled request would have reached the backend by now
        return outcomes, backend.lines()
    finally:
        proc.stop()
        backend.close()


@pytest.fixture(scope="module")
def lbcore_run():
    return _run("lbcore")


@pytest.fixture(scope="module")
def haproxy_run():
    return _run("haproxy")


@pytest.mark.parametrize("case", [c for c in CASES if c.rfc == REFUSE], ids=lambda c: c.id)
def test_rfc_refusals(lbcore_run, case):
    out = lbcore_run[0][case.id]
    assert out.statuses and out.statuses[-1] == case.status, (case.why, out.short(), out.raw[:200])
    assert out.closed, out.short()


@pytest.mark.parametrize("case", [c for c in CASES if c.rfc == ACCEPT], ids=lambda c: c.id)
def test_valid_requests_pass(lbcore_run, case):
    out = lbcore_run[0][case.id]
    assert out.statuses == [200] * case.requests, (out.short(), out.raw[:300])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_lbcore_refuses_what_haproxy_refuses(lbcore_run, haproxy_run, case):
    ours, theirs = lbcore_run[0][case.id], haproxy_run[0][case.id]
    if theirs.refused:
        assert ours.refused, f"haproxy {theirs.short()}, lbcore {ours.short()}"


def test_every_refusal_closes_the_connection(lbcore_run):
    open_after_error = [cid for cid, out in lbcore_run[0].items()
                        if out.statuses and out.statuses[-1] >= 400 and not out.closed]
    assert open_after_error == []


def test_no_request_reaches_the_backend_unless_a_client_meant_it(lbcore_run):
    outcomes, seen = lbcore_run
    assert unintended(CASES, seen) == []
    assert not any(b"/smuggled" in line for line in seen)
    # Every request the backend read was answered to a client: none of its
    # answers was taken for the answer to another request.
    answered = sum(out.statuses.count(200) for out in outcomes.values())
    assert answered == len(seen), (answered, len(seen))
