"""Builds the Cython fast path when it can; lbcore works without it.

Two kinds of compiled modules:
- lbcore_ext/<name>.pyx: the splice relay and the head scanners, each with
  a pure-Python twin in lbcore_ext/<name>_py.py.
- the http proxy core (CORE below) compiled from its own .py source, with
  the .pxd next to it declaring C fields, so there is one source for both
  builds. Python imports the compiled module in preference to the .py;
  LBCORE_NO_EXT=1 makes lbcore load the sources instead (lbcore/__init__.py).

Metadata lives in pyproject.toml. The extensions are optional: if Cython is
missing or the compiler fails, the build warns and the package installs
pure Python (lbcore_ext.IMPLEMENTATION == "python").
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def _warn(message: str) -> None:
    sys.stderr.write(f"warning: lbcore_ext: {message}; using pure Python\n")


class OptionalBuildExt(build_ext):
    """A failed compile must not fail the install."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, missing headers...
            _warn(f"extension build failed ({exc})")
        if self.inplace:
            _byte_compile()

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            _warn(f"building {ext.name} failed ({exc})")


def _byte_compile() -> None:
    """A checkout built in place gets the bytecode pip writes on install:
    where Python may not write it (PYTHONDONTWRITEBYTECODE=1, a read-only
    tree) every start would compile each module again, ~60 ms of lbcore's
    start-up. Python ignores a .pyc whose source has changed since."""
    import compileall

    for package in ("lbcore", "lbcore_ext"):
        if not compileall.compile_dir(os.path.join(HERE, package), quiet=2):
            sys.stderr.write(f"warning: byte-compiling {package} failed; it runs from source\n")
    # The same for the methods dataclasses writes for lbcore's specs at
    # every import (lbcore/dataclass_code.py): ~10 ms of each start.
    import subprocess
    done = subprocess.run([sys.executable, "-m", "lbcore.dataclass_code"], cwd=HERE,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        sys.stderr.write(f"warning: lbcore.dataclass_code not written; specs compile at start "
                         f"({done.stderr.strip().splitlines()[-1:]})\n")


EXTENSIONS = ("relay", "heads", "probesock")  # lbcore_ext/<name>.pyx
CORE = ("lbcore/balance.py", "lbcore/batch.py", "lbcore/model.py", "lbcore/timers.py", "lbcore/upstream.py",
        "lbcore/proxy/stream.py", "lbcore/proxy/http.py", "lbcore/adoption.py",
        # what rules run per request: the request view, checks, the rule loop
        "lbcore/rules/message.py", "lbcore/rules/checks.py", "lbcore/rules/engine.py",
        "lbcore/rules/frontend.py")


def _sources():
    """(module name, source path) of every compiled module."""
    for name in EXTENSIONS:
        yield f"lbcore_ext.{name}", os.path.join("lbcore_ext", f"{name}.pyx")
    for path in CORE:
        yield path[:-3].replace("/", "."), path


def ext_modules():
    if os.environ.get("LBCORE_NO_EXT", "").strip() not in ("", "0"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        built = []
        for module, source in _sources():
            generated = os.path.splitext(source)[0] + ".c"
            if os.path.exists(os.path.join(HERE, generated)):
                built.append(Extension(module, [generated]))
        if not built:
            _warn("Cython is not installed")
        return built
    try:
        return cythonize(
            [Extension(module, [source], extra_compile_args=["-O2"])
             for module, source in _sources()],
            # Types come from the .pxd files, not from the annotations of
            # the core's .py sources (an `int` there is any Python int).
            compiler_directives={"language_level": "3", "annotation_typing": False},
            quiet=True,
        )
    except Exception as exc:
        _warn(f"cythonize failed ({exc})")
        return []


setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
