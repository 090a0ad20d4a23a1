"""use_backend: content switching, first matching rule wins.

A name may be dynamic (`%[req.hdr(host),lower,map_dom(hosts.map)]`): one
that names no backend sends the request to the default backend, as
HAProxy does."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

from .engine import choose_backend  # noqa: F401  (the per-request loop, compiled)
from .samples import Format


class UseBackend(NamedTuple):
    when: Optional[Any]  # a checks.Check, or None for always
    name: Optional[str]  # a fixed backend name, or
    fmt: Optional[Format]  # a dynamic one

    def __repr__(self) -> str:
        return f"UseBackend({self.name or self.fmt.text})"

