"""The http proxy core (balance, batch, model, timers, upstream,
proxy.http, proxy.stream and what rules run per request) is compiled by setup.py from its own .py sources;
LBCORE_NO_EXT=1 runs those sources."""

import os
import subprocess
import sys

import lbcore_ext

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORE = ["lbcore.adoption", "lbcore.balance", "lbcore.batch", "lbcore.model", "lbcore.proxy.http", "lbcore.proxy.stream",
        "lbcore.rules.checks", "lbcore.rules.engine", "lbcore.rules.frontend", "lbcore.rules.message",
        "lbcore.timers", "lbcore.upstream"]
PROBE = ("import lbcore, lbcore.proxy.http as h, lbcore.rules.frontend, lbcore_ext; "
         "print(lbcore_ext.IMPLEMENTATION, h.__file__.rsplit('.', 1)[-1], *lbcore.compiled_modules())")


def probe(**env) -> list[str]:
    environ = dict(os.environ)
    environ.pop("LBCORE_NO_EXT", None)
    environ.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE], env=environ, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_no_ext_runs_every_module_from_source():
    assert probe(LBCORE_NO_EXT="1") == ["python", "py"]


def test_default_runs_the_core_compiled_whenever_the_extension_was_built():
    # One build makes both, so a compiled relay with a pure core is a broken build.
    found = probe()
    if found[0] == "cython":
        assert found[1] == "so"
        assert found[2:] == CORE
    else:
        assert found == ["python", "py"]


def test_the_running_suite_uses_the_selected_build():
    import lbcore
    import lbcore.proxy.http  # noqa: F401
    import lbcore.rules.frontend  # noqa: F401
    expected = CORE if lbcore_ext.IMPLEMENTATION == "cython" else []
    assert lbcore.compiled_modules() == expected
