"""The lb.yaml-shaped tree a haproxy.cfg becomes, every piece with its origin.

The haproxy.cfg reader does not build specs itself: it builds the same
structure an lb.yaml holds and hands it to the lb.yaml loader (config.py).
One loader means one meaning for every key, and its errors point at the
haproxy.cfg line that produced the value. The same tree is written out by
`lbcore convert` as lb.yaml text, with each block's origin as a comment.

The tree's pieces are YAML nodes themselves (a Scalar is a ScalarNode, a
Map a MappingNode, a Seq a SequenceNode), so the loader walks them as
they are: no second tree of nodes is made (at 1,000 pairs that copy took
~45 ms and as many objects again). A scalar carries its Python value,
which the loader takes as it is (config._Reader.scalar); a node's YAML
mark is made only when the loader asks for one, to report a problem.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode


class Origin:
    """Where a value came from: `file:line` and the keyword written there.
    (A plain class: tens of thousands are made per read of a large file.)"""

    __slots__ = ("file", "line", "keyword")

    def __init__(self, file: str, line: int, keyword: str):
        self.file = file
        self.line = line
        self.keyword = keyword

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"

    def __repr__(self) -> str:
        return f"Origin({self.file!r}, {self.line}, {self.keyword!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Origin) and (self.file, self.line, self.keyword) == \
            (other.file, other.line, other.keyword)

    def __hash__(self) -> int:
        return hash((self.file, self.line, self.keyword))


class OriginMark(yaml.Mark):
    """A YAML mark that also names the haproxy.cfg keyword, so the loader's
    problems read `haproxy.cfg:12: 'server': backends.x.servers[0]...`."""

    def __init__(self, origin: Origin):
        super().__init__(origin.file, 0, origin.line - 1, 0, None, None)
        self.origin = origin


class _Marked:
    """start_mark / end_mark, made from the origin when the loader asks."""

    @property
    def start_mark(self) -> OriginMark:
        return OriginMark(self.origin)

    end_mark = start_mark


_TAG_PREFIX = "tag:yaml.org,2002:"
_TAGS = {bool: _TAG_PREFIX + "bool", int: _TAG_PREFIX + "int", float: _TAG_PREFIX + "float",
         str: _TAG_PREFIX + "str", type(None): _TAG_PREFIX + "null"}


class Scalar(_Marked, ScalarNode):
    """A value and its origin. As a YAML node it holds the value's YAML
    text too (`value`), for PyYAML's constructor where the loader uses it
    (rule arguments); the loader itself takes `python` as it is."""

    style = None
    tag = _TAGS[str]  # (most values; others set their own)

    def __init__(self, python: Any, origin: Origin):
        kind = type(python)
        self.python = python
        self.origin = origin
        if kind is str:
            self.value = python
            return
        self.tag = _TAGS[kind]
        if kind is bool:
            self.value = "true" if python else "false"
        elif python is None:
            self.value = "null"
        else:
            self.value = repr(python)


class Key(_Marked, ScalarNode):
    """A key of a Map, as the loader sees it: a string marked with the
    origin of its value."""

    tag = _TAGS[str]
    style = None

    def __init__(self, key: str, origin: Origin):
        self.value = self.python = key
        self.origin = origin


class Map(_Marked, dict, MappingNode):
    """An ordered mapping of str -> Scalar | Map | Seq, with an origin; as a
    YAML node its `value` is the (key node, value node) pairs."""

    tag = _TAG_PREFIX + "map"
    flow_style = None

    # A node is itself, whatever it holds (PyYAML's constructor keys its
    # cache by node); the builder compares the plain values, never Maps.
    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__

    def __init__(self, origin: Origin, comment: Optional[str] = None):
        self.origin = origin
        self.comment = comment  # written above the block by `convert`

    @property
    def value(self) -> list[tuple["Key", "Tree"]]:
        # Made once, when the loader first reads the block (it reads some
        # more than once: their checks, and the fingerprints of blocks that
        # every backend repeats). The loader runs once the tree is built.
        pairs = self.__dict__.get("_pairs")
        if pairs is None or len(pairs) != len(self):
            # A key is marked with its value's origin: the line that set it.
            pairs = self._pairs = [(Key(key, item.origin), item) for key, item in self.items()]
        return pairs


class Seq(_Marked, list, SequenceNode):
    tag = _TAG_PREFIX + "seq"
    flow_style = None

    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__

    def __init__(self, origin: Origin):
        self.origin = origin

    @property
    def value(self) -> "Seq":
        return self


Tree = Union[Scalar, Map, Seq]


def to_plain(tree: Tree) -> Any:
    if isinstance(tree, Map):
        return {key: to_plain(value) for key, value in tree.items()}
    if isinstance(tree, Seq):
        return [to_plain(item) for item in tree]
    return tree.python


# -- lb.yaml text for `lbcore convert` -----------------------------------------

def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20, sort_keys=False,
                          allow_unicode=True)
    text = text.rstrip("\n")
    if text.endswith("\n..."):
        text = text[:-4].rstrip("\n")
    return text


def _is_small(tree: Tree) -> bool:
    """Written on one line: scalars and mappings/lists of scalars."""
    if isinstance(tree, Scalar):
        return True
    return all(isinstance(item, Scalar) for item in (tree.values() if isinstance(tree, Map) else tree))


def dump(tree: Map, header: str = "") -> str:
    """lb.yaml text of `tree`: block style, a comment naming the origin of
    each block that came from a haproxy.cfg section or keyword."""
    out: list[str] = [header] if header else []
    _dump_map(tree, 0, out)
    return "\n".join(out) + "\n"


def _comment(tree: Tree, indent: int, out: list[str]) -> None:
    comment = getattr(tree, "comment", None)
    if comment:
        out.append(" " * indent + "# " + comment)


def _dump_map(tree: Map, indent: int, out: list[str]) -> None:
    pad = " " * indent
    for key, value in tree.items():
        _comment(value, indent, out)
        if isinstance(value, Scalar) or (_is_small(value) and len(_flow(to_plain(value))) < 100):
            out.append(f"{pad}{_flow(key)}: {_flow(to_plain(value))}")
        elif isinstance(value, Map):
            out.append(f"{pad}{_flow(key)}:")
            _dump_map(value, indent + 2, out)
        else:
            out.append(f"{pad}{_flow(key)}:")
            _dump_seq(value, indent + 2, out)


def _dump_seq(tree: Seq, indent: int, out: list[str]) -> None:
    pad = " " * indent
    for item in tree:
        _comment(item, indent, out)
        if isinstance(item, Scalar) or (_is_small(item) and len(_flow(to_plain(item))) < 100):
            out.append(f"{pad}- {_flow(to_plain(item))}")
        elif isinstance(item, Map):
            lines: list[str] = []
            _dump_map(item, indent + 2, lines)
            lines[0] = pad + "- " + lines[0][indent + 2:]
            out.extend(lines)
        else:
            out.append(f"{pad}-")
            _dump_seq(item, indent + 2, out)
