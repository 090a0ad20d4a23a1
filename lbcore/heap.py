"""What keeps lbcore's memory flat across reloads and failures.

The long-lived objects (the code, the config and runtime a reload builds)
are frozen out of the cyclic collector's reach (`settle_heap`), so a full
collection walks only what the traffic made since. Frozen objects are
never collected: nothing that is already garbage may be frozen, and what
the traffic drops must be freed by reference counting, not left in cycles
(`without_traceback` for the exceptions of failed connects; connections
break their own cycles when they close). A regression test counts the
objects across reloads and server kills: tests/integration/test_heap.py.
"""

from __future__ import annotations

import gc


def settle_heap() -> None:
    """Move every object alive now (the config and runtime just built, the
    code) out of the cyclic collector's reach: with a thousand frontends a
    full collection walks some 10^6 objects, ~0.2 s with the loop stopped,
    and these live until the next reload anyway. What a reload drops is
    freed by reference counting.

    A full collection first: frozen garbage is never freed. Whatever cyclic
    garbage the traffic left waiting for a collection (a connection closed
    mid-exchange, an exception and its frames) was otherwise frozen with
    the rest at every reload, and lbcore grew by it for good (the 30-minute
    soak: +9 MiB over 163 reloads). The frozen objects are not walked, so
    this costs what the objects made since the last freeze cost (the new
    config and runtime, the connections open now): a few ms for 1,000
    frontend/backend pairs."""
    gc.collect()
    gc.freeze()


# Whether the collector is held off until the start-up's heap settles
# (hold_collections): False when nothing is held, or when it was off anyway.
_held = False


def hold_collections() -> None:
    """No cyclic collection until `release_collections` (after the start's
    settle_heap). The config just read and the runtime built from it are
    young objects: each collection their allocations start walks them all
    again (the first right after the config is read, then those of
    generations 1 and 2), ~10 ms of CPU at 1,000 frontend/backend pairs
    before the first request is served. They are acyclic and live on; the
    start-up's garbage waits for the settle's full collection."""
    global _held
    if gc.isenabled():
        gc.disable()
        _held = True


def release_collections() -> None:
    """Collect as before hold_collections (if it turned the collector off)."""
    global _held
    if _held:
        _held = False
        gc.enable()


_malloc_trim = None  # glibc's malloc_trim, once a reload looks it up; False where there is none (musl)


def release_free_memory() -> None:
    """Hand the heap pages a reload freed (the previous config and runtime)
    back to the system: glibc keeps them otherwise, and the resident size
    would step up at each of the first reloads. About a millisecond.
    (ctypes is imported here, by the first reload: 1.5 ms no start needs.)"""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes
            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


def without_traceback(exc: BaseException) -> BaseException:
    """`exc` with its traceback (and those of the exceptions it was raised
    from) dropped. A failed connect's exception is held by the task that
    wait_for ran it in (and by uvloop's create_connection frame), and holds
    those frames through its traceback: cycles that only a full collection
    frees, so every refused connect to a dead server was kept until one (or
    for good, once a reload froze it: settle_heap). Raised again, it
    carries the raiser's frames only."""
    chain = [exc]
    while chain:
        link = chain.pop()
        if link.__context__ is not None:
            chain.append(link.__context__)
        if link.__cause__ is not None and link.__cause__ is not link.__context__:
            chain.append(link.__cause__)
        link.__traceback__ = link.__context__ = link.__cause__ = None
    return exc
