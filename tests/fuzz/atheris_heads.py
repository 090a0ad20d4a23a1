"""A libFuzzer harness (atheris) for the head scanners, beside the
hypothesis targets in test_fuzz_heads.py: coverage-guided, on the Python
twin (instrumented), checking on every input that

- the compiled and Python scanners give the same answer (requests, with
  every X-Forwarded-* option, and responses);
- a request head the fast path takes is one the strict checks
  (h1_checks) and llhttp take; a response head, one llhttp takes.

The Python twin matches with regular expressions, which coverage cannot
see into (atheris' regex hook does not take `pattern.match(buf, pos)`),
so the scratch corpus starts from the hostile-request corpus and the fuzz
seeds (each input is a flags byte, then the head) and libFuzzer mutates
from there. Run it with a scratch corpus
first (libFuzzer writes what it finds into the first directory):

    python tests/fuzz/atheris_heads.py --seed /tmp/heads-corpus     # writes the seeds, once
    python tests/fuzz/atheris_heads.py /tmp/heads-corpus -max_total_time=600

A crash leaves crash-<hash> in the current directory: the input that broke
a property, which belongs in tests/fuzz/corpus/requests/ once fixed.
tests/fuzz/test_atheris_smoke.py runs it for a few thousand inputs in CI
when atheris is installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports():
    from lbcore_ext import heads_py

from lbcore.proxy.h1_checks import check_head  # noqa: E402
from tests.fuzz.test_fuzz_heads import as_head, heads_c, llhttp_accepts  # noqa: E402  (heads_c: not instrumented)


def one_input(data: bytes) -> None:
    if not data:
        return
    flags, head = data[0], as_head(data[1:])
    end = len(head) - 4
    if flags & 4:
        fast = heads_py.scan_response(head, end)
        assert heads_c is None or heads_c.scan_response(head, end) == fast, head
        if fast is not None:
            assert llhttp_accepts(head, response=True), head
        return
    drop_xfp, own_xff = bool(flags & 1), bool(flags & 2)
    fast = heads_py.scan_request(head, end, drop_xfp, own_xff)
    assert heads_c is None or heads_c.scan_request(head, end, drop_xfp, own_xff) == fast, head
    if fast is not None:
        assert check_head(head)[0] == 0, (head, check_head(head))
        assert llhttp_accepts(head), head


def write_seeds(directory: str) -> None:
    from tests.fuzz.strategies import REQUEST_SEEDS, seeds

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for i, raw in enumerate(REQUEST_SEEDS):
        for flags in (0, 3):
            (out / f"request-{i}-{flags}").write_bytes(bytes([flags]) + raw)
    for i, raw in enumerate(seeds("responses")):
        (out / f"response-{i}").write_bytes(b"\x04" + raw)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--seed":
        write_seeds(sys.argv[2])
        return
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
