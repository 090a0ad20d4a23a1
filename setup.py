"""Builds lbcore_ext.relay (Cython) when it can; lbcore works without it.

Metadata lives in pyproject.toml. The extension is optional: if Cython is
missing or the compiler fails, the build warns and the package installs
with the pure-Python relay (lbcore_ext.IMPLEMENTATION == "python").
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def _warn(message: str) -> None:
    sys.stderr.write(f"warning: lbcore_ext: {message}; using the pure-Python relay\n")


class OptionalBuildExt(build_ext):
    """A failed compile must not fail the install."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, missing headers...
            _warn(f"extension build failed ({exc})")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            _warn(f"building {ext.name} failed ({exc})")


EXTENSIONS = ("relay", "heads")  # lbcore_ext/<name>.pyx


def ext_modules():
    if os.environ.get("LBCORE_NO_EXT", "").strip() not in ("", "0"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        built = []
        for name in EXTENSIONS:
            generated = os.path.join("lbcore_ext", f"{name}.c")
            if os.path.exists(os.path.join(HERE, generated)):
                built.append(Extension(f"lbcore_ext.{name}", [generated]))
        if not built:
            _warn("Cython is not installed")
        return built
    try:
        return cythonize(
            [Extension(f"lbcore_ext.{name}", [os.path.join("lbcore_ext", f"{name}.pyx")],
                       extra_compile_args=["-O2"])
             for name in EXTENSIONS],
            compiler_directives={"language_level": "3"},
            quiet=True,
        )
    except Exception as exc:
        _warn(f"cythonize failed ({exc})")
        return []


setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
