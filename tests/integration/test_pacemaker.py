"""conf/pacemaker/lbcore, the OCF resource agent: validated by ocf-tester
(Debian's resource-agents: meta-data against ra-api-1.dtd, validate-all,
start/stop idempotence, monitor codes), then driven by hand the way
Pacemaker drives it: a killed lbcore is reported not running and started
again, a hung one fails its monitor, a bad config is refused on reload."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

from tests.support import ROOT, free_port, http_config

AGENT = ROOT / "conf" / "pacemaker" / "lbcore"
OCF_TESTER = shutil.which("ocf-tester") or "/usr/sbin/ocf-tester"
OCF_SUCCESS, OCF_ERR_GENERIC, OCF_ERR_CONFIGURED, OCF_NOT_RUNNING = 0, 1, 6, 7

pytestmark = pytest.mark.skipif(not os.path.exists(OCF_TESTER) or not os.path.isdir("/usr/lib/ocf"),
                                reason="ocf-tester is not installed (Debian's resource-agents)")


@pytest.fixture
def resource(start_backend):
    """(params, run(action) -> rc): the agent with its own copy of lbcore's
    command in a directory anyone may read (ocf-tester reads the meta-data
    as nobody)."""
    backend = start_backend("s1")
    port = free_port()
    work = tempfile.mkdtemp(prefix="lbcore-ocf-")
    os.chmod(work, 0o755)
    agent = os.path.join(work, "lbcore-agent")
    shutil.copy(AGENT, agent)
    os.chmod(agent, 0o755)
    binary = os.path.join(work, "lbcore")
    with open(binary, "w") as f:
        f.write(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m lbcore.cli \"$@\"\n")
    os.chmod(binary, 0o755)
    config = http_config([backend.address], port, frontend={"monitor_uri": "/healthz"})
    config["global"]["grace"] = "2s"
    path = os.path.join(work, "lb.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    params = {"binary": binary, "config": path, "pidfile": os.path.join(work, "lbcore.pid"),
              "logfile": os.path.join(work, "lbcore.log"), "monitor_url": f"http://127.0.0.1:{port}/healthz"}
    env = dict(os.environ, OCF_ROOT="/usr/lib/ocf", OCF_RESOURCE_INSTANCE="lbtest",
               **{f"OCF_RESKEY_{k}": v for k, v in params.items()})

    def run(action: str) -> int:
        return subprocess.run([agent, action], env=env, capture_output=True, timeout=60).returncode

    yield agent, params, run
    run("stop")
    shutil.rmtree(work, ignore_errors=True)


def pid_of(params) -> int:
    with open(params["pidfile"]) as f:
        return int(f.read())


def test_ocf_tester_passes(resource):
    agent, params, run = resource
    args = [OCF_TESTER, "-n", "lbtest"]
    for key, value in params.items():
        args += ["-o", f"{key}={value}"]
    result = subprocess.run([*args, agent], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed all tests" in result.stdout


def test_killed_hung_and_misconfigured_lbcore_as_pacemaker_sees_them(resource):
    agent, params, run = resource
    assert run("validate-all") == OCF_SUCCESS
    assert run("monitor") == OCF_NOT_RUNNING
    assert run("start") == OCF_SUCCESS
    assert run("monitor") == OCF_SUCCESS
    first = pid_of(params)

    # Killed: not running, so Pacemaker restarts it (start again).
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while run("monitor") != OCF_NOT_RUNNING and time.monotonic() < deadline:
        time.sleep(0.1)
    assert run("monitor") == OCF_NOT_RUNNING
    assert run("start") == OCF_SUCCESS
    assert run("monitor") == OCF_SUCCESS
    assert pid_of(params) != first

    # Hung: the process is there but monitor_url does not answer.
    os.kill(pid_of(params), signal.SIGSTOP)
    try:
        assert run("monitor") == OCF_ERR_GENERIC
    finally:
        os.kill(pid_of(params), signal.SIGCONT)
    assert run("monitor") == OCF_SUCCESS

    # A broken file: reload refused, lbcore keeps serving the old config.
    good = open(params["config"]).read()
    with open(params["config"], "w") as f:
        f.write("frontends: {web: {bind: nowhere}}\n")
    assert run("reload") == OCF_ERR_CONFIGURED
    assert run("validate-all") == OCF_ERR_CONFIGURED
    assert run("monitor") == OCF_SUCCESS
    with open(params["config"], "w") as f:
        f.write(good)
    assert run("reload") == OCF_SUCCESS
    assert run("monitor") == OCF_SUCCESS

    pid = pid_of(params)
    assert run("stop") == OCF_SUCCESS
    assert run("monitor") == OCF_NOT_RUNNING
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z"
    assert run("stop") == OCF_SUCCESS
