"""The runtime API with the tools operators point at HAProxy's stats socket:
Ansible's community.general.haproxy module (openstack-ansible's drain
playbooks) and hatop, each checked against where requests then go."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.test_runtime_api import cli, runtime_config, served_by
from tests.support import BackendProcess, LbcoreProcess, free_port, wait_unix

ANSIBLE = Path(sys.executable).parent / "ansible"


@pytest.fixture
def lb():
    servers = [BackendProcess(f"s{i}").start() for i in (1, 2)]
    workdir = tempfile.mkdtemp(prefix="lbcore-clients-")
    sock = os.path.join(workdir, "admin.sock")
    port = free_port()
    proc = LbcoreProcess(runtime_config(servers, port, free_port(), sock), workdir=workdir).start()
    wait_unix(sock, proc=proc.proc)
    proc.sock, proc.port = sock, port
    yield proc
    proc.stop()
    for s in servers:
        s.stop()


def ansible_haproxy(sock: str, **params) -> dict:
    """One run of `ansible localhost -m community.general.haproxy -a ...`."""
    args = " ".join(f"{k}={v}" for k, v in dict(socket=sock, backend="pool", **params).items())
    env = dict(os.environ, ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
               ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOAD_CALLBACK_PLUGINS="True",
               ANSIBLE_HOME=tempfile.mkdtemp(prefix="ansible-"))
    result = subprocess.run(
        [str(ANSIBLE), "localhost", "-c", "local", "-i", "localhost,",
         "-e", f"ansible_python_interpreter={sys.executable}",
         "-m", "community.general.haproxy", "-a", args],
        capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    return report["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_ansible_haproxy_module_disable_drain_weight_enable(lb):
    if not ANSIBLE.exists():
        pytest.skip("ansible is not installed (pip install ansible: the test extra)")
    assert served_by(lb.port) == {"s1", "s2"}

    result = ansible_haproxy(lb.sock, state="disabled", host="s1", wait="true", shutdown_sessions="true")
    assert result["changed"] and result["state_after"][0]["status"] == "MAINT"
    assert served_by(lb.port) == {"s2"}

    result = ansible_haproxy(lb.sock, state="enabled", host="s1", wait="true", weight="3")
    assert result["state_after"][0]["status"] == "UP" and result["state_after"][0]["weight"] == "3"
    assert cli(lb, "get weight pool/s1") == "3 (initial 1)\n\n"
    assert served_by(lb.port) == {"s1", "s2"}

    result = ansible_haproxy(lb.sock, state="drain", host="s2", wait="true")
    assert result["changed"] and result["state_after"][0]["status"] == "DRAIN"
    assert served_by(lb.port) == {"s1"}

    ansible_haproxy(lb.sock, state="enabled", host="s2", wait="true")
    assert served_by(lb.port) == {"s1", "s2"}
    assert "Server pool/s2 set to DRAIN by runtime API." in lb.logs()


def test_hatop_starts_and_shows_the_servers(lb):
    hatop, tmux = shutil.which("hatop"), shutil.which("tmux")
    if not hatop or not tmux:
        pytest.skip("hatop and tmux are needed (test.sh installs them)")
    session = f"hatop-{os.getpid()}"
    err = os.path.join(os.path.dirname(lb.sock), "hatop.err")
    subprocess.run([tmux, "new-session", "-d", "-s", session, "-x", "200", "-y", "50",
                    f"{hatop} -s {lb.sock} 2>{err}"], check=True, timeout=10)
    try:
        screen = ""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            screen = subprocess.run([tmux, "capture-pane", "-p", "-t", session], capture_output=True,
                                    text=True, timeout=10).stdout
            if "BACKEND" in screen:
                break
            time.sleep(0.2)
        assert "HAProxy Version: 2.6" in screen, screen + open(err).read()
        lines = screen.splitlines()
        assert any(line.startswith("s1 ") and " UP " in line for line in lines), screen
        assert any(line.startswith("s2 ") and " UP " in line for line in lines), screen
        cli(lb, "disable server pool/s2")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            screen = subprocess.run([tmux, "capture-pane", "-p", "-t", session], capture_output=True,
                                    text=True, timeout=10).stdout
            if any(line.startswith("s2 ") and "MAINT" in line for line in screen.splitlines()):
                break
            time.sleep(0.3)
        assert any(line.startswith("s2 ") and "MAINT" in line for line in screen.splitlines()), screen
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], timeout=10)
