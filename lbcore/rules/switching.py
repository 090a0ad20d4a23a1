"""use_backend: content switching, first matching rule wins.

A name may be dynamic (`%[req.hdr(host),lower,map_dom(hosts.map)]`): one
that names no backend sends the request to the default backend, as
HAProxy does."""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

from .samples import Format


class UseBackend(NamedTuple):
    when: Optional[Callable]  # a check, or None for always
    name: Optional[str]  # a fixed backend name, or
    fmt: Optional[Format]  # a dynamic one

    def __repr__(self) -> str:
        return f"UseBackend({self.name or self.fmt.text})"


def choose_backend(rules: tuple, msg) -> Optional[str]:
    """The name the first matching rule gives (None: the default backend)."""
    for when, name, fmt in rules:
        if when is None or when(msg):
            if fmt is None:
                return name
            rendered = fmt.render(msg)
            return rendered.decode("latin-1") if rendered else None
    return None
