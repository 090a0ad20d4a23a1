"""The byte searches header lookups make per request.

These are the definitions (what the pure-Python build runs); the compiled
build inlines their C twins from bytesearch.pxd instead, with the same
results: on a short request head, a bytes method call costs more than
the search itself.
"""

from __future__ import annotations


def find(hay: bytes, needle: bytes, start: int) -> int:
    """hay.find(needle, start), for start >= 0."""
    return hay.find(needle, start)


def lowered(block: bytes) -> bytes:
    """The lookup index of a header block: a newline, then the block with
    its ASCII letters lower-cased (as bytes.lower)."""
    return b"\n" + block.lower()
