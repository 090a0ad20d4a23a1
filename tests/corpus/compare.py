"""Run a request corpus through lbcore and haproxy 2.6 and compare them.

Each proxy stands in front of its own lenient backend
(tests/lenient_backend.py), which frames bodies only by the headers it
gets and records every request with the connection it came on. Generated
cases (tests/corpus/generated_requests.py) carry an `X-Case: N` field, so
each recorded request is put back with its case; a request without a tag
of its own is one nobody sent: something the proxy let a body turn into.

For every case the comparison gives one `Verdict`:

- `hole`: lbcore passed on something haproxy refused, a request reached
  lbcore's backend that no client sent, or both passed the case on but the
  backend read different requests from them (a different framing);
- `stricter`: lbcore refused what haproxy passed on;
- `same`: both refused, or both passed on the same requests.

`python -m tests.corpus.compare [substring...]` prints every case that is
not `same`, then the counts. tests/integration/test_generated_requests.py
asserts the same over the whole corpus.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

from tests.corpus.harness import haproxy_cfg, lbcore_cfg, run_cases

# What of a forwarded request the comparison looks at: the request line,
# the body as the backend framed it, and the fields that frame it or name
# the site. Other fields differ by design (each proxy adds its own).
VIEW_FIELDS = (b"host", b"content-length", b"transfer-encoding")


@dataclass
class Run:
    outcomes: dict  # case id -> harness.Outcome
    views: dict  # case number -> [forwarded request view, ...]
    untagged: list  # views of requests that carried no tag


def view(first: bytes, headers: dict, body: bytes, tagged: bool = True) -> tuple:
    return (first, body) + tuple(headers.get(f) for f in VIEW_FIELDS) + (tagged,)


def backend_views(records) -> tuple[dict, list]:
    """Group the backend's records by their X-Case tag; an untagged record
    goes with the request before it on the same connection."""
    views: dict = defaultdict(list)
    untagged = []
    last_on_conn: dict = {}
    for conn, first, headers, body in records:
        tag = headers.get(b"x-case")
        if tag is not None and tag.isdigit():
            number = int(tag)
            views[number].append(view(first, headers, body))
            last_on_conn[conn] = number
        else:
            v = view(first, headers, body, tagged=False)
            untagged.append(v)
            if conn in last_on_conn:
                views[last_on_conn[conn]].append(v)
    return views, untagged


def run(name: str, cases, parallel: int = 48, limit: float = 8.0, start=None,
        waits: frozenset = frozenset()) -> Run:
    """Send every case to a fresh `name` ("lbcore" or "haproxy"); the cases
    in `waits` wait for bytes that never come and are read for 3 s only."""
    from tests.haproxy import HaproxyProcess
    from tests.lenient_backend import LenientBackend
    from tests.support import LbcoreProcess, free_port

    backend = LenientBackend()
    port = free_port()
    if name == "lbcore":
        proc = (start or (lambda cfg: LbcoreProcess(cfg).start()))(lbcore_cfg(port, backend.address))
    else:
        proc = HaproxyProcess(haproxy_cfg(port, backend.address)).start(wait_ports=[port])
    try:
        outcomes = run_cases(port, cases, parallel=parallel, limit=limit, short=waits)
        time.sleep(0.3)  # a smuggled request would have reached the backend by now
        with backend.lock:
            records = list(backend.records)
    finally:
        proc.stop()
        backend.close()
    views, untagged = backend_views(records)
    return Run(outcomes, views, untagged)


@dataclass
class Verdict:
    kind: str  # "hole", "stricter", "same"
    why: str


def passed(out) -> bool:
    """The proxy passed the case on: it answered 200 to the first request."""
    return out.first == 200


def judge(number: int, case, lb: Run, ha: Run, known: dict) -> Verdict:
    ours, theirs = lb.outcomes[case.id], ha.outcomes[case.id]
    our_views, their_views = lb.views.get(number, []), ha.views.get(number, [])
    if any(not v[-1] for v in our_views):
        return Verdict("hole", "lbcore's backend read a request nobody sent: %r" % (our_views,))
    if theirs.refused and not ours.refused and not passed(theirs):
        if case.id not in known:
            return Verdict("hole", "haproxy %s, lbcore %s" % (theirs.short(), ours.short()))
    if passed(ours) and passed(theirs) and our_views != their_views[:len(our_views)]:
        if case.id not in known:
            return Verdict("hole", "different requests reached the backend:\n  lbcore  %r\n"
                                   "  haproxy %r" % (our_views, their_views))
    if passed(theirs) and not passed(ours):
        return Verdict("stricter", "haproxy %s, lbcore %s" % (theirs.short(), ours.short()))
    return Verdict("same", "")


def compare(cases, lb: Run, ha: Run, known: dict) -> dict:
    return {case.id: judge(i, case, lb, ha, known) for i, case in enumerate(cases)}


def main() -> None:
    import sys

    from tests.corpus.generated_requests import CASES, DIVERGENCES, WAITS

    only = sys.argv[1:]
    lb, ha = run("lbcore", CASES, waits=WAITS), run("haproxy", CASES, waits=WAITS)
    verdicts = compare(CASES, lb, ha, DIVERGENCES)
    counts: dict = defaultdict(int)
    for i, case in enumerate(CASES):
        v = verdicts[case.id]
        counts[v.kind] += 1
        if v.kind != "same" and (not only or any(o in case.id for o in only)):
            ours, theirs = lb.outcomes[case.id], ha.outcomes[case.id]
            print(f"{v.kind:8} {case.id:44} {case.rfc:7} lbcore {ours.short():12} "
                  f"haproxy {theirs.short():12}")
            if v.kind == "hole":
                print("        ", v.why)
    print(dict(counts), "cases:", len(CASES))
    print("untagged at lbcore's backend:", lb.untagged)
    print("untagged at haproxy's backend:", ha.untagged[:10])


if __name__ == "__main__":
    main()
