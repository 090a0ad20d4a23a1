"""Configs pickled so that the copy costs no more memory than the original.

A reload's config comes from a child process (config_reader.py), and a
worker's from its master (control.py), pickled. Unpickled the default way,
every spec object gets a real `__dict__` (CPython 3.11 otherwise keeps an
instance's attributes inline, without one), and every float and int is a
new object where the original shared one: the 1,000-pair config was 4.2 MB
unpickled against 1.9 MB as read, and each reload's heap grew by the
difference. Here lbcore's plain dataclasses travel as (class, attribute
names, values) and are rebuilt attribute by attribute, which keeps the
attributes inline; the numbers of one unpickling are shared again.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
from typing import Any

# class -> the names of its attributes, in the order its __init__ sets them,
# when it may travel as below; None when it pickles the usual way.
_SHAPES: dict = {}
_MISSING = object()
_NUMBERS: dict = {}  # the numbers of the unpickling under way (load)


def dumps(obj: Any) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


def load(file) -> Any:
    """pickle.Unpickler(file).load(), for what dumps() wrote (or plain pickle)."""
    try:
        return pickle.Unpickler(file).load()
    finally:
        _NUMBERS.clear()


def loads(data: bytes) -> Any:
    return load(io.BytesIO(data))


def _shape(cls: type):
    """Frozen dataclasses of lbcore only: their attributes are their fields,
    read without touching `__dict__` (which would give the original one
    too). Others (a custom reduce, slots) go the usual way."""
    try:
        return _SHAPES[cls]
    except KeyError:
        pass
    shape = None
    params = getattr(cls, "__dataclass_params__", None)
    if (cls.__module__.startswith("lbcore.") and params is not None and params.frozen
            and cls.__reduce_ex__ is object.__reduce_ex__ and cls.__reduce__ is object.__reduce__
            and cls.__getstate__ is object.__getstate__ and not hasattr(cls, "__setstate__")
            and not hasattr(cls, "__slots__")):
        shape = tuple(f.name for f in dataclasses.fields(cls))
    _SHAPES[cls] = shape
    return shape


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj):
        cls = type(obj)
        names = _shape(cls)
        if names is None:
            return NotImplemented
        values = tuple(getattr(obj, name, _MISSING) for name in names)
        if any(value is _MISSING for value in values):  # a field __init__ left unset: the usual way
            return NotImplemented
        return _rebuild, (cls, names, values)


def _rebuild(cls: type, names: tuple, values: tuple) -> Any:
    obj = object.__new__(cls)
    store = object.__setattr__  # frozen dataclasses refuse their own __setattr__
    share = _NUMBERS.setdefault
    for name, value in zip(names, values):
        kind = value.__class__
        if kind is float or kind is int:
            value = share(value, value)
        store(obj, name, value)
    return obj
