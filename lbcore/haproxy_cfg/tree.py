"""The lb.yaml-shaped tree a haproxy.cfg becomes, every piece with its origin.

The haproxy.cfg reader does not build specs itself: it builds the same
structure an lb.yaml holds, as YAML nodes whose marks name the haproxy.cfg
file, line and keyword, and hands it to the lb.yaml loader (config.py).
One loader means one meaning for every key, and its errors point at the
haproxy.cfg line that produced the value. The same tree is written out by
`lbcore convert` as lb.yaml text, with each block's origin as a comment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode


@dataclass(frozen=True)
class Origin:
    """Where a value came from: `file:line` and the keyword written there."""

    file: str
    line: int
    keyword: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class OriginMark(yaml.Mark):
    """A YAML mark that also names the haproxy.cfg keyword, so the loader's
    problems read `haproxy.cfg:12: 'server': backends.x.servers[0]...`."""

    def __init__(self, origin: Origin):
        super().__init__(origin.file, 0, origin.line - 1, 0, None, None)
        self.origin = origin


class Scalar:
    __slots__ = ("value", "origin")

    def __init__(self, value: Any, origin: Origin):
        self.value = value
        self.origin = origin


class Map(dict):
    """An ordered mapping of str -> Scalar | Map | Seq, with an origin."""

    def __init__(self, origin: Origin, comment: Optional[str] = None):
        super().__init__()
        self.origin = origin
        self.comment = comment  # written above the block by `convert`


class Seq(list):
    def __init__(self, origin: Origin):
        super().__init__()
        self.origin = origin


Tree = Union[Scalar, Map, Seq]

_TAGS = {bool: "bool", int: "int", float: "float", str: "str", type(None): "null"}
_MAP_TAG, _SEQ_TAG, _STR_TAG = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:str"


class ValueNode(ScalarNode):
    """A scalar that carries its Python value: the lb.yaml loader takes it
    as it is (config._Reader.scalar) rather than construct it from the text
    again, the value PyYAML would construct from that text and tag."""

    def __init__(self, tag: str, text: str, mark: yaml.Mark, python: Any):
        # ScalarNode's fields, set here: tens of thousands are made per read.
        self.tag = tag
        self.value = text
        self.start_mark = self.end_mark = mark
        self.style = None
        self.python = python


def to_node(tree: Tree) -> Node:
    """YAML nodes for the lb.yaml loader, marked with haproxy.cfg origins."""
    marks: dict[int, OriginMark] = {}  # id(origin) -> its mark: the values of one line share it

    def mark_of(origin: Origin) -> OriginMark:
        mark = marks[id(origin)] = OriginMark(origin)
        return mark

    def node(tree: Tree) -> Node:
        origin = tree.origin
        mark = marks.get(id(origin)) or mark_of(origin)
        if type(tree) is Scalar:
            value = tree.value
            kind = type(value)
            if kind is str:
                return ValueNode(_STR_TAG, value, mark, value)
            text = {True: "true", False: "false", None: "null"}[value] if kind is bool or value is None \
                else repr(value)
            return ValueNode("tag:yaml.org,2002:" + _TAGS[kind], text, mark, value)
        if isinstance(tree, Map):
            pairs = []
            for key, value in tree.items():
                key_origin = value.origin
                pairs.append((ValueNode(_STR_TAG, key, marks.get(id(key_origin)) or mark_of(key_origin), key),
                              node(value)))
            return MappingNode(_MAP_TAG, pairs, mark, mark)
        return SequenceNode(_SEQ_TAG, [node(item) for item in tree], mark, mark)

    return node(tree)


def to_plain(tree: Tree) -> Any:
    if isinstance(tree, Map):
        return {key: to_plain(value) for key, value in tree.items()}
    if isinstance(tree, Seq):
        return [to_plain(item) for item in tree]
    return tree.value


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
