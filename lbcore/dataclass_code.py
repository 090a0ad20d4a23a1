"""`dataclass`: dataclasses.dataclass, with the methods it writes compiled
once at build time rather than at every start.

dataclasses writes each class's __init__, __repr__, __eq__, __hash__ and,
for a frozen one, __setattr__ and __delattr__ as Python source and compiles
it: ~0.4 ms a class, 13 ms of every lbcore start for the config's specs
and the rules' classes, two thirds of it compiling. Here the compiled code
of each source text is kept in a file beside the bytecode of the modules
(written by `setup.py build_ext --inplace`, as their .pyc are, or by
`python -m lbcore.dataclass_code`), and dataclasses is given that code for
a text it compiled before. Nothing else changes: the classes are
dataclasses.dataclass's own (fields, replace, equality, hashing, repr,
pickling), from the same source text, and a text not in the file (another
Python, a changed class) is compiled as before.
"""

import dataclasses
import marshal
import os
import sys

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__",
                    f"dataclass_code.{sys.implementation.cache_tag}.marshal")
# The modules whose classes use it: what `write` imports to fill the file.
USERS = ("lbcore.config", "lbcore.rules.samples", "lbcore.rules.answers", "lbcore.health.state", "lbcore.cli")

_known = None  # source text -> code object, from PATH (loaded on first use; taken out as used)
_used = None  # source text -> code object of this process's classes, while write() records
compiled = 0  # how many texts this process had to compile (tests/unit/test_dataclass_code.py)


def _load() -> dict:
    global _known
    if _known is None:
        from importlib.util import MAGIC_NUMBER  # the bytecode's version, as in a .pyc
        _known = {}
        try:
            with open(PATH, "rb") as f:
                if f.read(len(MAGIC_NUMBER)) == MAGIC_NUMBER:
                    known = marshal.load(f)
                    if isinstance(known, dict):
                        _known = known
        except (OSError, EOFError, ValueError, TypeError):  # no file, or a broken one
            pass
    return _known


def _exec(source, globals=None, locals=None) -> None:
    """exec() as dataclasses calls it (a string, in its own module, which
    has no __future__ imports: hence dont_inherit)."""
    global compiled
    if not isinstance(source, str):
        return exec(source, globals, locals)
    code = _known.pop(source, None)
    if code is None:
        code = compile(source, "<string>", "exec", dont_inherit=True)
        compiled += 1
    if _used is not None:
        _used[source] = code
    exec(code, globals, locals)


def dataclass(cls=None, /, **options):
    """@dataclass / @dataclass(frozen=True, ...), as dataclasses.dataclass."""
    def wrap(cls):
        _load()
        # dataclasses calls exec() by its global name: this one, while it
        # makes this class (a call from elsewhere meanwhile compiles alike).
        dataclasses.exec = _exec
        try:
            return dataclasses.dataclass(cls, **options)
        finally:
            dataclasses.__dict__.pop("exec", None)
    return wrap if cls is None else wrap(cls)


def write(path: str = PATH) -> int:
    """Import the modules that use it and write the code of all their
    classes to `path` (atomically); the number of source texts kept. In
    a fresh interpreter: a class made before is not seen again."""
    import importlib
    global _used
    made = [name for name in USERS if name in sys.modules]
    if made:
        raise RuntimeError(f"{', '.join(made)} already imported: write() needs a fresh interpreter")
    _used = {}
    for name in USERS:
        importlib.import_module(name)
    codes, _used = _used, None
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.{os.getpid()}"
    from importlib.util import MAGIC_NUMBER
    with open(partial, "wb") as f:
        f.write(MAGIC_NUMBER)
        marshal.dump(codes, f)
    os.replace(partial, path)
    return len(codes)


if __name__ == "__main__":
    from lbcore import dataclass_code  # the module the classes used, not this __main__ copy
    print(f"{dataclass_code.write()} methods' code in {dataclass_code.PATH}")
