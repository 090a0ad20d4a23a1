"""A plain `lbcore -c lb.yaml` start (no TLS, no rules, no userlists, no
syslog, one process) does not import what only other configs, reloads or
workers use: each of those modules cost a start 0.5-9 ms (bench/README.md,
"Start-up of large configs"). Checked on a real process: the interpreter's
own list of what it imported (-X importtime) from start until serving, and
the stop after it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from tests.support import ROOT, LbcoreProcess, free_port, wait_until

# module -> who wanted it at every start before.
NOT_AT_A_PLAIN_START = {
    "argparse": "cli: `-c FILE` alone needs no parser",
    "shutil": "argparse's help formatter; certificates (temporary files)",
    "difflib": "config: suggestions for an unknown word",
    "hashlib": "rules.auth (userlists), certificates (fingerprints)",
    "hmac": "rules.auth (userlists)",
    "logging.handlers": "logs: syslog targets",
    "pickle": "spec_pickle (reloads, workers), logging.handlers",
    "lbcore.config_reader": "server: a reload's reader",
    "lbcore.spec_pickle": "control (workers), config_reader (reloads)",
    "ctypes": "heap: malloc_trim, which only a reload calls",
    "lbcore.state_file": "server: global.state_file (server-state-file)",
}

PLAIN = """\
global:
  log: {{target: stdout, format: none}}
frontends:
  web:
    bind: "127.0.0.1:{port}"
    backend: app
backends:
  app:
    health: {{type: tcp, interval: 2s}}
    servers:
      - {{name: s1, address: "127.0.0.1:{server}"}}
"""


def imported_by_a_start(config: str) -> set[str]:
    lb = LbcoreProcess(config)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    err_path = os.path.join(lb.dir, "importtime.txt")
    with open(lb.log_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "lbcore.cli", "-c", lb.path],
                                stdout=out, stderr=err, env=env, cwd=lb.dir)
    try:
        def serving() -> bool:
            assert proc.poll() is None, f"lbcore exited {proc.returncode}: {lb.logs()[-2000:]}"
            return "lbcore started" in lb.logs()
        wait_until(serving, 20, "lbcore started")
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with open(err_path) as f:
        report = f.read()
    assert proc.returncode == 0, lb.logs()[-2000:] + report[-2000:]
    return set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", report, re.M))


def test_a_plain_start_imports_nothing_it_does_not_use():
    modules = imported_by_a_start(PLAIN.format(port=free_port(), server=free_port()))
    assert "lbcore.server" in modules and "yaml" in modules  # the list is real
    unexpected = {name: why for name, why in NOT_AT_A_PLAIN_START.items() if name in modules}
    assert not unexpected, f"imported by a plain start: {unexpected}"


@pytest.mark.parametrize("extra, module", [
    ("userlists:\n  ops:\n    - {user: admin, insecure_password: secret}\n", "hmac"),
])
def test_a_config_that_uses_them_still_gets_them(extra, module):
    """The same check sees a module that is needed (the test above can fail)."""
    config = PLAIN.format(port=free_port(), server=free_port()) + extra
    assert module in imported_by_a_start(config)


def imported_by_a_check(config: str) -> set[str]:
    lb = LbcoreProcess(config)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "lbcore.cli", "-c", lb.path, "--check"],
                          capture_output=True, text=True, env=env, cwd=lb.dir, timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", done.stderr, re.M))


def test_reading_a_config_without_rules_imports_no_rules_engine():
    """What a start does before it binds (lbcore/bind_first.py), and all a
    --check does: the rules (and tracking) only for a config that has some."""
    plain = PLAIN.format(port=free_port(), server=free_port())
    modules = imported_by_a_check(plain)
    assert "lbcore.config" in modules and "yaml" in modules
    assert not {"lbcore.rules", "lbcore.tracking", "asyncio", "uvloop"} & modules
    with_acl = plain.replace("    backend: app\n", "    backend: app\n    acls: {api: \"path_beg /api\"}\n")
    assert {"lbcore.rules", "lbcore.tracking"} <= imported_by_a_check(with_acl)


PLAIN_CFG = """\
global
    maxconn 4000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend web
    bind 127.0.0.1:{port}
    default_backend app
backend app
    balance roundrobin
    server s1 127.0.0.1:{server} check inter 2s
"""


def imported_by_a_cfg_check(text: str, tmp_path) -> set[str]:
    """`lbcore -c -f haproxy.cfg`: HAProxy's check, the reading a start
    does before it binds."""
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "lbcore.cli", "-c", "-f", str(path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", done.stderr, re.M))


def test_reading_a_haproxy_cfg_without_rules_imports_no_rules_engine(tmp_path):
    """The haproxy.cfg reader imports the rules engine only where a line
    needs it (an acl, an errorfile), as the lb.yaml loader does."""
    plain = PLAIN_CFG.format(port=free_port(), server=free_port())
    modules = imported_by_a_cfg_check(plain, tmp_path)
    assert "lbcore.haproxy_cfg" in modules and "lbcore.config" in modules
    assert not {"lbcore.rules", "lbcore.tracking", "asyncio", "uvloop", "socket"} & modules
    with_acl = plain.replace("    default_backend app\n",
                             "    acl api path_beg /api\n    use_backend app if api\n    default_backend app\n")
    assert {"lbcore.rules", "lbcore.tracking"} <= imported_by_a_cfg_check(with_acl, tmp_path)
    (tmp_path / "503.http").write_bytes(b"HTTP/1.0 503 Service Unavailable\r\n\r\nbusy\n")
    with_errorfile = plain.replace("    mode http\n", "    mode http\n    errorfile 503 503.http\n")
    assert "lbcore.rules" in imported_by_a_cfg_check(with_errorfile, tmp_path)
