"""The command line as a user meets it: --version, --check, exit status 2
with file:line: key.path for every problem of a bad config, a clear exit on
a bind failure, clean exits on signals."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile

import pytest

import lbcore
from tests.support import ROOT, free_port, wait_port


def run_cli(*args, timeout=20) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "lbcore.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=tempfile.gettempdir())


def write(text: str) -> str:
    fd, path = tempfile.mkstemp(prefix="lbcore-cli-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


VALID = """\
global:
  log: {target: stdout, format: http}
frontends:
  web:
    bind: "127.0.0.1:{port}"
    mode: http
    backend: pool
backends:
  pool:
    mode: http
    servers:
      - name: s1
        address: "127.0.0.1:9"
"""


def valid_config(port: int) -> str:
    return VALID.replace("{port}", str(port))


def test_version():
    out = run_cli("--version")
    assert out.returncode == 0
    assert re.fullmatch(r"lbcore \S+\nfast path (cython|python); compiled core: .+\n", out.stdout), out.stdout
    assert lbcore.__version__ in out.stdout


def test_check_valid_config_exits_0_and_binds_nothing():
    port = free_port()
    out = run_cli("-c", write(valid_config(port)), "--check")
    assert out.returncode == 0, out.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # still free


@pytest.mark.parametrize("name", ["demo.yaml", "reference.yaml"])
def test_shipped_configs_pass_check(name):
    path = ROOT / "conf" / name
    out = run_cli("-c", str(path), "--check")
    assert out.returncode == 0, out.stderr


def test_missing_c_is_a_usage_error():
    out = run_cli()
    assert out.returncode == 2
    assert "-c" in out.stderr


def test_missing_file_exits_2():
    path = os.path.join(tempfile.mkdtemp(), "absent.yaml")
    out = run_cli("-c", path, "--check")
    assert out.returncode == 2
    assert path in out.stderr


# Each bad config: (YAML, [(key path, line), ...]) — every problem listed.
BAD = {
    "bad_address": ("""\
frontends:
  web: {bind: "127.0.0.1:8080", mode: http, backend: pool}
backends:
  pool:
    mode: http
    servers:
      - name: s1
        address: "10.0.0.1:99999"
""", [("backends.pool.servers[0].address", 8)]),
    "unknown_key_and_wrong_type": ("""\
frontends:
  web:
    bind: "127.0.0.1:8080"
    mode: http
    backend: pool
    bnd: 1
    maxconn: many
backends:
  pool:
    servers: [{name: s1, address: "10.0.0.1:80"}]
""", [("frontends.web.bnd", 6), ("frontends.web.maxconn", 7)]),
    "bad_duration": ("""\
defaults:
  timeouts:
    connect: 5x
frontends:
  web: {bind: "127.0.0.1:8080", mode: http, backend: pool}
backends:
  pool:
    servers: [{name: s1, address: "10.0.0.1:80"}]
""", [("defaults.timeouts.connect", 3)]),
    "missing_backend": ("""\
frontends:
  web:
    bind: "127.0.0.1:8080"
    mode: http
    backend: nowhere
""", [("frontends.web.backend", 5)]),
    "mode_mismatch": ("""\
frontends:
  web:
    bind: "127.0.0.1:8080"
    mode: http
    backend: pool
backends:
  pool:
    mode: tcp
    servers: [{name: s1, address: "10.0.0.1:80"}]
""", [("frontends.web", None)]),
    "duplicate_server_names": ("""\
frontends:
  web: {bind: "127.0.0.1:8080", mode: http, backend: pool}
backends:
  pool:
    servers:
      - {name: s1, address: "10.0.0.1:80"}
      - {name: s1, address: "10.0.0.2:80"}
""", [("backends.pool.servers[1].name", 7)]),
    "duplicate_frontend_names": ("""\
frontends:
  web: {bind: "127.0.0.1:8080", mode: http, backend: pool}
  web: {bind: "127.0.0.1:8081", mode: http, backend: pool}
backends:
  pool:
    servers: [{name: s1, address: "10.0.0.1:80"}]
""", [("frontends.web", 3)]),
    "bad_weight_and_balance": ("""\
frontends:
  web: {bind: "127.0.0.1:8080", mode: http, backend: pool}
backends:
  pool:
    balance: random
    servers:
      - {name: s1, address: "10.0.0.1:80", weight: 300}
""", [("backends.pool.balance", 5), ("backends.pool.servers[0].weight", 7)]),
    "broken_yaml": ("""\
frontends:
  web:
    bind: ["127.0.0.1:8080"
    mode: http
""", [("", None)]),
}


# Without --check the same problems, the same status: a few cases suffice.
CASES = [(name, True) for name in sorted(BAD)] + [
    (name, False) for name in ("bad_address", "missing_backend", "broken_yaml")]


@pytest.mark.parametrize("name,check", CASES, ids=[f"{'check' if c else 'run'}-{n}" for n, c in CASES])
def test_bad_config_exits_2_naming_file_keypath_and_line(name, check):
    text, problems = BAD[name]
    path = write(text)
    out = run_cli("-c", path, *(["--check"] if check else []))
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    for keypath, lineno in problems:
        matching = [line for line in lines if path in line and keypath in line]
        assert matching, f"no line names {path} and {keypath!r}:\n{out.stderr}"
        if lineno is not None:
            assert any(re.search(rf"\b{lineno}\b", line) for line in matching), out.stderr
    if name == "broken_yaml":
        assert re.search(r"\b[34]\b", out.stderr), out.stderr  # where the YAML breaks
    # One line per problem, no traceback.
    assert "Traceback" not in out.stderr
    assert len(lines) >= len(problems)


def test_bad_config_does_not_bind_the_good_frontend():
    port = free_port()
    text = valid_config(port).replace('address: "127.0.0.1:9"', 'address: "127.0.0.1:0x"')
    out = run_cli("-c", write(text))
    assert out.returncode == 2
    assert "backends.pool.servers[0].address" in out.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def spawn(path: str) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-m", "lbcore.cli", "-c", path], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_bind_failure_exits_nonzero_naming_the_address():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        proc = spawn(write(valid_config(port)))
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("lbcore kept running although its bind failed")
        assert proc.returncode not in (0, None)
        assert f"127.0.0.1:{port}" in err + out, err
        assert "Traceback" not in err
    finally:
        holder.close()


def test_bind_failure_of_a_later_frontend_releases_the_earlier_ones():
    free, taken = free_port(), socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    text = valid_config(free) + ""
    text = text.replace("backends:", f"""  second:
    bind: "127.0.0.1:{taken.getsockname()[1]}"
    mode: http
    backend: pool
backends:""")
    try:
        proc = spawn(write(text))
        out, err = proc.communicate(timeout=10)
        assert proc.returncode not in (0, None), err
        with socket.socket() as s:
            s.bind(("127.0.0.1", free))
    finally:
        taken.close()


def test_unassignable_bind_address_exits_nonzero():
    text = valid_config(8080).replace("127.0.0.1:8080", "192.0.2.1:8080")
    proc = spawn(write(text))
    out, err = proc.communicate(timeout=10)
    assert proc.returncode not in (0, None)
    assert "192.0.2.1:8080" in err + out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_cleanly_with_status_0(sig):
    port = free_port()
    proc = spawn(write(valid_config(port)))
    try:
        wait_port(port, proc=proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err + out
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_console_script_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^\[project\.scripts\]\s*\nlbcore\s*=\s*"lbcore\.cli:main"', text, re.M), text


def test_check_refuses_a_server_host_that_does_not_resolve():
    """haproxy -c refuses it; lbcore used to accept it and only mark the server DOWN at run time."""
    config = valid_config(free_port()) + '      - {name: ghost, address: "nosuchhost.invalid:80"}\n'
    out = run_cli("-c", write(config), "--check")
    assert out.returncode == 2
    assert "servers[1].address: cannot resolve host 'nosuchhost.invalid' of server ghost" in out.stderr


def test_a_haproxy_cfg_given_to_c_is_named_as_such():
    path = os.path.join(tempfile.mkdtemp(), "haproxy.cfg")
    with open(path, "w") as f:
        f.write("# kolla\nglobal\n    maxconn 100\n    stats socket ipv4@127.0.0.1:9999 level admin\n"
                "defaults\n    mode http\nfrontend fe\n    bind :80\n")
    out = run_cli("-c", path, "--check")
    assert out.returncode == 2
    assert f"{path}:2: this looks like HAProxy configuration syntax" in out.stderr
    assert f"lbcore -f {path}" in out.stderr


def test_python_dash_m_lbcore_runs_the_same_command_line():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-m", "lbcore", "--version"], capture_output=True,
                         text=True, env=env, timeout=20, cwd=tempfile.gettempdir())
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"lbcore {lbcore.__version__}\n")
