"""lbcore's byte-moving fast path, with a pure-Python fallback.

`Relay` relays a tcp connection (see relay_py.py for the contract). The
Cython build (relay.pyx, splice(2) for large transfers) is used when it was
compiled; otherwise, or when LBCORE_NO_EXT=1 is set, the pure-Python module
with the same API and behaviour is. `IMPLEMENTATION` names the one in use.
The head scanners (`scan_request`, `scan_response`) and the health-probe
sockets (`probesock`) follow the same choice.
"""

from __future__ import annotations

import os
from types import ModuleType

from . import relay_py


def _load_cython() -> ModuleType | None:
    try:
        from . import relay as compiled  # built by setup.py (cythonize)
    except ImportError:
        return None
    return compiled


def implementations() -> dict[str, ModuleType]:
    """Every importable implementation by name, for tests and benchmarks."""
    found = {"python": relay_py}
    compiled = _load_cython()
    if compiled is not None:
        found["cython"] = compiled
    return found


def _select() -> ModuleType:
    if os.environ.get("LBCORE_NO_EXT", "").strip() not in ("", "0"):
        return relay_py
    return _load_cython() or relay_py


_active = _select()

IMPLEMENTATION: str = _active.IMPLEMENTATION
Relay = _active.Relay
configure = _active.configure
splice_available = _active.splice_available


def _load_heads() -> ModuleType:
    """The http head scanners (heads.pyx, or heads_py.py with the same results)."""
    from . import heads_py
    if _active is relay_py:  # the fallback is chosen as a whole
        return heads_py
    try:
        from . import heads as compiled
    except ImportError:
        return heads_py
    return compiled


_heads = _load_heads()
scan_request = _heads.scan_request
scan_response = _heads.scan_response


def _load_probesock() -> ModuleType:
    """Health-probe sockets (probesock.pyx, or probesock_py.py, the same API)."""
    from . import probesock_py
    if _active is relay_py:
        return probesock_py
    try:
        from . import probesock as compiled
    except ImportError:
        return probesock_py
    return compiled


probesock = _load_probesock()

__all__ = ["IMPLEMENTATION", "Relay", "configure", "splice_available", "implementations",
           "scan_request", "scan_response", "probesock"]
