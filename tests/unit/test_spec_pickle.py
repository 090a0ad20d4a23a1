"""lbcore/spec_pickle.py: a config that travels pickled (a reload's child,
a worker's master) is the same config, and costs no more memory than the
one read from the file (plain pickle: twice as much)."""

import gc
import pickle
import tracemalloc

from lbcore import spec_pickle
from lbcore.config import loads


def pairs(n):
    text = ["defaults:\n  timeouts: {connect: 5s, client: 60s, server: 60s}\nfrontends:\n"]
    text += [f"  fe{i}: {{bind: \"127.0.0.1:{20000 + i}\", backend: be{i}}}\n" for i in range(n)]
    text.append("backends:\n")
    for i in range(n):
        text.append(f"  be{i}:\n    health: {{type: tcp, interval: 2s}}\n    servers:\n")
        # (Servers of their own: the loader makes one spec of a server
        # that backends repeat, which either copy keeps as one.)
        text += [f"      - {{name: s{s}, address: \"127.0.0.1:{30000 + 3 * i + s}\"}}\n" for s in range(3)]
    return "".join(text)


def retained(make):
    """make()'s result, and the bytes it keeps allocated."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        made = make()
        gc.collect()
        return made, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_a_config_pickled_this_way_is_the_same_and_no_larger_than_read():
    text = pairs(200)
    config, read = retained(lambda: loads(text))
    copy, copied = retained(lambda: spec_pickle.loads(spec_pickle.dumps(config)))
    assert copy == config
    assert copy.backends["be7"].servers[2].address == config.backends["be7"].servers[2].address
    assert copied <= read * 1.05, (copied, read)
    # What it avoids: plain pickle's copy is much larger.
    plain, plainly = retained(lambda: pickle.loads(pickle.dumps(config)))
    assert plain == config and plainly > copied * 1.4, (plainly, copied)


def test_what_is_not_a_plain_spec_travels_as_plain_pickle_would():
    value = {"a": [1, 2.5, ("x", frozenset({3}))], "b": None}
    assert spec_pickle.loads(spec_pickle.dumps(value)) == value
    assert spec_pickle.loads(pickle.dumps(value)) == value
