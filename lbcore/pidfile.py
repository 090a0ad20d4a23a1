"""The pidfile: written whole or not at all, removed only by its owner."""

from __future__ import annotations

import os


def write(path: str) -> None:
    """Write this process's id to `path` through a renamed temporary file:
    a reader (systemd, a test, `kill $(cat ...)`) that sees the file at all
    sees the whole number, never an empty file still being written."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(temporary, path)


def remove(path: str) -> None:
    """Remove the pidfile if it still names this process: after an -sf
    upgrade it names the successor, which must keep it."""
    try:
        with open(path) as f:
            if f.read().strip() != str(os.getpid()):
                return
        os.unlink(path)
    except OSError:
        pass
