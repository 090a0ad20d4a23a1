"""use_backend: content switching, first matching rule wins.

A name may be dynamic (`%[req.hdr(host),lower,map_dom(hosts.map)]`): one
that names no backend sends the request to the default backend, as
HAProxy does."""

from __future__ import annotations

from typing import Optional

from .samples import Format


class UseBackend:
    __slots__ = ("when", "name", "fmt")

    def __init__(self, when, name: Optional[str], fmt: Optional[Format]) -> None:
        self.when = when  # a check, or None for always
        self.name = name  # a fixed backend name, or
        self.fmt = fmt  # a dynamic one

    def __repr__(self) -> str:
        return f"UseBackend({self.name or self.fmt.text})"


def choose_backend(rules: tuple, msg) -> Optional[str]:
    """The name the first matching rule gives (None: the default backend)."""
    for rule in rules:
        when = rule.when
        if when is None or when(msg):
            if rule.fmt is None:
                return rule.name
            name = rule.fmt.render(msg)
            return name.decode("latin-1") if name else None
    return None
