"""The generated hostile request corpus (tests/corpus/generated_requests.py,
about a thousand cases) through lbcore and haproxy 2.6, each in front of
its own recording lenient backend (tests/corpus/compare.py).

lbcore must refuse every case RFC 9110/9112 says to refuse, with its
status, and close; pass every valid case; answer or close every case
(never leave a client waiting); refuse everything haproxy refuses, unless
the case is listed in DIVERGENCES with the reason; and whatever both pass
on must reach the backend as the same requests with the same bodies and
framing. No request may reach lbcore's backend that a client did not send.

Both proxies get the whole corpus at once, 48 connections at a time: the
module takes about ten seconds. `python -m tests.corpus.compare` prints the
two side by side.
"""

from __future__ import annotations

import pytest

from tests.corpus.compare import compare, run
from tests.corpus.generated_requests import ACCEPT, ANY_4XX, CASES, DIVERGENCES, REFUSE, WAITS
from tests.haproxy import need_haproxy

from .rawhttp import start_watched


@pytest.fixture(scope="module")
def lbcore_run():
    return run("lbcore", CASES, start=start_watched, waits=WAITS)


@pytest.fixture(scope="module")
def haproxy_run():
    need_haproxy()
    return run("haproxy", CASES, waits=WAITS)


def _fmt(rows) -> str:
    return "\n".join(str(r) for r in rows)


def test_refusals_have_their_status_and_close(lbcore_run):
    wrong = []
    for case in CASES:
        if case.rfc != REFUSE:
            continue
        out = lbcore_run.outcomes[case.id]
        last = out.statuses[-1] if out.statuses else None
        ok_status = (last is not None and last >= 400) if case.status == ANY_4XX \
            else last == case.status
        if not (ok_status and out.closed):
            wrong.append((case.id, case.status, out.short(), out.raw[:120]))
    assert not wrong, _fmt(wrong)


def test_valid_requests_pass(lbcore_run):
    wrong = [(c.id, lbcore_run.outcomes[c.id].short()) for c in CASES
             if c.rfc == ACCEPT and lbcore_run.outcomes[c.id].statuses != [200] * c.requests]
    assert not wrong, _fmt(wrong)


def test_every_case_is_answered_or_closed(lbcore_run):
    hung = [c.id for c in CASES if c.id not in WAITS
            and not lbcore_run.outcomes[c.id].statuses and not lbcore_run.outcomes[c.id].closed]
    assert not hung, hung


def test_no_request_reaches_the_backend_unless_a_client_sent_it(lbcore_run):
    assert lbcore_run.untagged == []


def test_refused_cases_reach_the_backend_only_up_to_the_bad_message(lbcore_run):
    """A refused single request never reaches the server at all."""
    leaked = [(c.id, lbcore_run.views.get(i)) for i, c in enumerate(CASES)
              if c.rfc == REFUSE and not c.also and not c.answers and lbcore_run.views.get(i)]
    assert not leaked, _fmt(leaked)


def test_lbcore_refuses_what_haproxy_refuses_and_frames_alike(lbcore_run, haproxy_run):
    verdicts = compare(CASES, lbcore_run, haproxy_run, DIVERGENCES)
    holes = [(cid, v.why) for cid, v in verdicts.items() if v.kind == "hole"]
    assert not holes, _fmt(holes)


def test_the_divergences_listed_are_still_divergences(lbcore_run, haproxy_run):
    """A listed divergence that no longer happens is taken off the list."""
    verdicts = compare(CASES, lbcore_run, haproxy_run, {})
    stale = [cid for cid in DIVERGENCES if verdicts[cid].kind != "hole"]
    assert not stale, stale
