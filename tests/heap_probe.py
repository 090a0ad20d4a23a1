"""lbcore (`lbcore.cli`) with a probe thread that reports what its heap
holds, for tests/integration/test_heap.py.

    python tests/heap_probe.py -c lb.yaml      # with LBCORE_HEAP_PROBE=DIR

The test writes DIR/ask; the probe thread answers in DIR/answer.json
(written whole, then renamed): the cyclic garbage a full collection finds
outside the frozen set, the garbage inside the frozen set (which
lbcore/heap.py must never let in: frozen objects are never collected), and
counts of live objects by type (frozen or not). Answering collects and freezes again, as a
reload does (heap.settle_heap); nothing else of lbcore changes.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WATCHED = ("Config", "ServerSpec", "UpstreamConnection", "ClientConnection", "TCPTransport", "Exchange",
           "HttpResponseParser", "Task", "frame", "traceback")


def garbage() -> Counter:
    """The types of what a full collection finds unreachable now; freed."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = Counter(type(o).__name__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.collect()  # what DEBUG_SAVEALL kept is freed for good now
    return found


def report() -> dict:
    collecting = gc.isenabled()  # before garbage(), which collects
    loose = garbage()
    frozen = gc.get_freeze_count()
    gc.unfreeze()
    try:
        frozen_garbage = garbage()
        alive = Counter(type(o).__name__ for o in gc.get_objects())  # the frozen ones too
    finally:
        gc.freeze()
    return {"collecting": collecting, "garbage": sum(loose.values()), "garbage_types": dict(loose.most_common(15)),
            "frozen": frozen, "frozen_garbage": sum(frozen_garbage.values()),
            "frozen_garbage_types": dict(frozen_garbage.most_common(15)),
            "alive": {name: alive[name] for name in WATCHED}}


def serve(where: Path) -> None:
    ask, answer = where / "ask", where / "answer.json"
    while True:
        if ask.exists():
            ask.unlink()
            text = json.dumps(report())
            tmp = where / "answer.tmp"
            tmp.write_text(text)
            tmp.rename(answer)
        time.sleep(0.02)


if __name__ == "__main__":
    threading.Thread(target=serve, args=(Path(os.environ["LBCORE_HEAP_PROBE"]),), daemon=True).start()
    from lbcore.cli import main
    sys.exit(main(sys.argv[1:]))
