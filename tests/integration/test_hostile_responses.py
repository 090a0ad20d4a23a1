"""The hostile response corpus (tests/corpus/hostile_responses.py, about
200 answers) through lbcore and haproxy 2.6, each in front of its own raw
server (tests/hostile_backend.py), all answers at once, 24 at a time.

For lbcore: a bad answer gives the client a 502 or a clean cut (what was
relayed, then the connection closes), a valid one its status; the forged
second answer some carry (`STOLEN!`) never reaches a client; the server
connection of a bad answer, or of one with bytes after its end, never
serves another request; clean requests sent afterwards each get their own
answer; and lbcore refuses every answer haproxy refuses, but those listed
in DIVERGENCES with the reason. `python -m tests.corpus.hostile_responses`
prints the two side by side.
"""

from __future__ import annotations

import pytest

from tests.corpus.hostile_responses import (
    ANSWERS, BAD, CUT, DIVERGENCES, EITHER, reused_after, run,
)
from tests.haproxy import need_haproxy

from .rawhttp import start_watched


@pytest.fixture(scope="module")
def lbcore_run():
    return run("lbcore", start=start_watched)


@pytest.fixture(scope="module")
def haproxy_run():
    need_haproxy()
    return run("haproxy")


def refused(out) -> bool:
    """A 502, or a cut: the connection closed without a complete answer
    other than a 502 (interim answers aside)."""
    finals = [s for s in out.statuses if s >= 200]
    return out.closed and (finals == [502] or not finals or b"STOLEN" not in out.raw)


def test_bad_answers_get_a_502_or_a_clean_cut(lbcore_run):
    wrong = []
    for a in ANSWERS:
        out = lbcore_run.outcomes[a.path]
        finals = [s for s in out.statuses if s >= 200]
        if a.expect == BAD and not (out.closed and finals in ([502], [])):
            wrong.append((a.path, out.short()))
        elif a.expect == CUT and not refused(out):
            wrong.append((a.path, out.short()))
        elif a.expect not in (BAD, CUT, EITHER) and finals[:1] != [a.expect]:
            wrong.append((a.path, out.short()))
    assert not wrong, wrong


def test_no_forged_answer_reaches_a_client(lbcore_run):
    stolen = [p for p, o in lbcore_run.outcomes.items() if b"STOLEN" in o.raw]
    stolen += [p for p, o in lbcore_run.nexts.items() if b"STOLEN" in o.raw]
    assert not stolen, stolen


def test_a_connection_is_never_reused_after_a_bad_answer(lbcore_run):
    reused = [(a.path, reused_after(lbcore_run, a.path)) for a in ANSWERS
              if a.no_reuse and reused_after(lbcore_run, a.path)]
    assert not reused, reused


def test_clean_requests_after_get_their_own_answers(lbcore_run):
    wrong = [(p, o.short(), o.raw[-40:]) for p, o in lbcore_run.nexts.items()
             if o.statuses != [200] or not o.raw.endswith(p.encode())]
    assert not wrong, wrong


def test_lbcore_refuses_what_haproxy_refuses(lbcore_run, haproxy_run):
    relayed = []
    for a in ANSWERS:
        ours, theirs = lbcore_run.outcomes[a.path], haproxy_run.outcomes[a.path]
        their_finals = [s for s in theirs.statuses if s >= 200]
        our_finals = [s for s in ours.statuses if s >= 200]
        if their_finals == [502] and our_finals and our_finals != [502] \
                and a.path not in DIVERGENCES:
            relayed.append((a.path, ours.short(), theirs.short()))
    assert not relayed, relayed


def test_the_divergences_listed_are_still_divergences(lbcore_run, haproxy_run):
    stale = [p for p in DIVERGENCES
             if [s for s in haproxy_run.outcomes[p].statuses if s >= 200] != [502]
             or [s for s in lbcore_run.outcomes[p].statuses if s >= 200] in ([502], [])]
    assert not stale, stale
