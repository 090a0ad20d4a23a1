"""lbcore: a TCP/HTTP load balancer with HAProxy's semantics."""

from __future__ import annotations

import importlib.machinery
import os
import sys

__version__ = "0.1.0"


def _no_ext() -> bool:
    return os.environ.get("LBCORE_NO_EXT", "").strip() not in ("", "0")


class _SourcesFirst:
    """LBCORE_NO_EXT=1: lbcore's modules load from their .py sources even
    where a compiled twin sits next to them (setup.py compiles the http
    proxy core from the same files), so the pure-Python build can be run
    and tested from one tree."""

    @staticmethod
    def find_spec(name, path, target=None):
        if not name.startswith(__name__ + ".") or path is None:
            return None
        import importlib.util  # (imported here: only LBCORE_NO_EXT=1 needs it)
        leaf = name.rpartition(".")[2]
        for entry in path:
            source = os.path.join(entry, leaf + ".py")
            if os.path.isfile(source):
                return importlib.util.spec_from_file_location(
                    name, source, loader=importlib.machinery.SourceFileLoader(name, source))
        return None


def compiled_modules() -> list[str]:
    """The lbcore modules (imported so far) that run compiled."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return sorted(name for name, module in list(sys.modules.items())
                  if name.startswith(__name__ + ".")
                  and (getattr(module, "__file__", None) or "").endswith(suffixes))


def build() -> str:
    """What runs compiled, for `--version` and the start-up log: a
    missing build of the extension should be visible, not silently slower."""
    import lbcore_ext
    from .proxy import http  # noqa: F401  (imports the whole http core)
    compiled = compiled_modules()
    return "fast path %s; compiled core: %s" % (
        lbcore_ext.IMPLEMENTATION, ", ".join(compiled) if compiled else "none (pure Python)")


if _no_ext() and not any(isinstance(f, _SourcesFirst) for f in sys.meta_path):
    sys.meta_path.insert(0, _SourcesFirst())
