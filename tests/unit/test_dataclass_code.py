"""lbcore.dataclass_code: dataclasses.dataclass with its methods' code
read from a file written at build time. The classes must be exactly what
dataclasses makes (same code, same behaviour), and the file must spare
the compiling in a new process."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
from typing import Optional

import pytest

from lbcore import dataclass_code, spec_pickle
from lbcore.config import Address, BackendSpec, HealthSpec, ServerSpec
from tests.support import ROOT

METHODS = ("__init__", "__repr__", "__eq__", "__hash__", "__setattr__", "__delattr__")


def declare(decorator):
    @decorator(frozen=True)
    class Spec:
        """A spec."""

        name: str
        port: int = 80
        tags: tuple = ()
        extra: dict = dataclasses.field(default_factory=dict, hash=False)
        note: Optional[str] = dataclasses.field(default=None, compare=False)
    return Spec


def test_the_methods_are_dataclasses_own_code():
    ours, theirs = declare(dataclass_code.dataclass), declare(dataclasses.dataclass)
    for name in METHODS:
        a, b = getattr(ours, name).__code__, getattr(theirs, name).__code__
        assert (a.co_code, a.co_consts, a.co_names, a.co_varnames) == \
            (b.co_code, b.co_consts, b.co_names, b.co_varnames), name
        assert getattr(ours, name).__annotations__ == getattr(theirs, name).__annotations__, name
    assert ours.__doc__ == theirs.__doc__ and ours.__match_args__ == theirs.__match_args__
    assert [f.name for f in dataclasses.fields(ours)] == [f.name for f in dataclasses.fields(theirs)]
    assert ours.__dataclass_params__.frozen


def test_the_classes_behave_as_dataclasses():
    Spec = declare(dataclass_code.dataclass)
    a, b = Spec("web"), Spec("web", note="ignored by ==")
    assert a == b and hash(a) == hash(b) and a != Spec("web", 81)
    assert repr(a).endswith("Spec(name='web', port=80, tags=(), extra={}, note=None)")
    assert dataclasses.replace(a, port=8080).port == 8080 and a.extra is not Spec("x").extra
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.port = 1
    with pytest.raises(TypeError):
        Spec()


def test_lbcores_specs_travel_and_compare_as_before():
    backend = BackendSpec(name="be", health=HealthSpec(type="tcp"),
                          servers=(ServerSpec(name="s1", address=Address("127.0.0.1", 8080)),))
    copy = spec_pickle.loads(spec_pickle.dumps(backend))
    assert copy == backend and hash(copy.servers[0].address) == hash(Address("127.0.0.1", 8080))
    assert dataclasses.is_dataclass(copy) and copy.servers[0].weight == 1


def run(code: str, path: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    prelude = f"import lbcore.dataclass_code as d\nd.PATH = {path!r}\n"
    done = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True,
                          env=env, cwd=str(ROOT), timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_written_file_spares_every_compile_in_a_new_process():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "code.marshal")
        importing = "import lbcore.cli, lbcore.server\nprint(d.compiled)"
        assert int(run(importing, path)) > 20  # no file yet: compiled as dataclasses does
        assert int(run("print(d.write(d.PATH))", path)) > 20
        assert run(importing, path) == "0"
        # Another interpreter's file, or a broken one: ignored, compiled again.
        for content in (b"\0\0\r\nnot marshal", open(path, "rb").read()[:4] + b"garbage"):
            with open(path, "wb") as f:
                f.write(content)
            assert int(run(importing + "\nprint(lbcore.config.Timeouts().connect)", path).split()[0]) > 20


def test_write_refuses_a_process_that_made_the_classes_already():
    with pytest.raises(RuntimeError, match="fresh interpreter"):
        dataclass_code.write(os.path.join(tempfile.gettempdir(), "never-written.marshal"))
