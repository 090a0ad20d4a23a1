"""A real single-node Pacemaker cluster (corosync on loopback inside a
network namespace) running conf/pacemaker/lbcore: started, monitored, and
restarted by Pacemaker after a SIGKILL.

Slow (Pacemaker elects its DC after 20-40 s) and it writes Pacemaker's own
state (/var/lib/pacemaker, the agent under /usr/lib/ocf/resource.d/lbcore),
so it runs only when asked:

    LBCORE_PACEMAKER_DRILL=1 python -m pytest tests/integration/test_pacemaker_cluster.py -s

It refuses to run on a machine where a cluster is already configured."""

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

from tests.netns import Lan, skip_reason
from tests.support import BACKEND_SCRIPT, ROOT, http_config, wait_until

AGENT_DIR = "/usr/lib/ocf/resource.d/lbcore"
CIB_DIR = "/var/lib/pacemaker/cib"
COROSYNC = """\
totem {
    version: 2
    cluster_name: lbcoretest
    transport: knet
    crypto_cipher: none
    crypto_hash: none
}
nodelist {
    node {
        ring0_addr: 127.0.0.1
        name: node1
        nodeid: 1
    }
}
quorum {
    provider: corosync_votequorum
}
logging {
    to_stderr: yes
    to_syslog: no
}
"""


def why_not() -> str | None:
    if os.environ.get("LBCORE_PACEMAKER_DRILL") != "1":
        return "slow drill: set LBCORE_PACEMAKER_DRILL=1 to run it"
    reason = skip_reason("corosync", "pacemakerd", "crm_mon", "cibadmin", "crm_attribute", "curl")
    if reason:
        return reason
    if os.path.isdir(CIB_DIR) and os.listdir(CIB_DIR):
        return f"a Pacemaker cluster is configured here ({CIB_DIR} is not empty)"
    return None


pytestmark = pytest.mark.skipif(why_not() is not None, reason=why_not() or "")


def test_pacemaker_starts_monitors_and_restarts_a_killed_lbcore():
    work = tempfile.mkdtemp(prefix="lbcore-pcmk-")
    os.chmod(work, 0o755)
    installed_agent = not os.path.exists(AGENT_DIR)
    pacemaker = None
    with Lan("pcmk") as lan:
        try:
            lan.add_host("node1")
            ns = lan.hosts["node1"]
            os.makedirs(AGENT_DIR, exist_ok=True)
            shutil.copy(ROOT / "conf" / "pacemaker" / "lbcore", os.path.join(AGENT_DIR, "lbcore"))
            os.chmod(os.path.join(AGENT_DIR, "lbcore"), 0o755)
            binary = os.path.join(work, "lbcore")
            with open(binary, "w") as f:
                f.write(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m lbcore.cli \"$@\"\n")
            os.chmod(binary, 0o755)
            config = http_config(["127.0.0.1:18081"], 18080, frontend={"monitor_uri": "/healthz"})
            with open(os.path.join(work, "lb.yaml"), "w") as f:
                yaml.safe_dump(config, f)
            with open(os.path.join(work, "corosync.conf"), "w") as f:
                f.write(COROSYNC)
            lan.popen("node1", [sys.executable, str(BACKEND_SCRIPT), "--port", "18081", "--name", "s1"],
                      stdout=subprocess.DEVNULL)
            lan.popen("node1", ["corosync", "-f", "-c", os.path.join(work, "corosync.conf")],
                      stdout=open(os.path.join(work, "corosync.log"), "ab"), stderr=subprocess.STDOUT)
            time.sleep(1)
            pacemaker = lan.popen("node1", ["pacemakerd"], stdout=open(os.path.join(work, "pacemaker.log"), "ab"),
                                  stderr=subprocess.STDOUT)

            def node(*args: str) -> str:
                return subprocess.run(["ip", "netns", "exec", ns, *args], capture_output=True, text=True,
                                      timeout=30).stdout

            wait_until(lambda: "Current DC: node1" in node("crm_mon", "-1"), 90, "a DC", 0.5)
            node("crm_attribute", "-t", "crm_config", "-n", "stonith-enabled", "-v", "false")
            node("crm_attribute", "-t", "crm_config", "-n", "no-quorum-policy", "-v", "ignore")
            pidfile = os.path.join(work, "lbcore.pid")
            params = {"binary": binary, "config": os.path.join(work, "lb.yaml"), "pidfile": pidfile,
                      "logfile": os.path.join(work, "lbcore.log"), "monitor_url": "http://127.0.0.1:18080/healthz"}
            pairs = "".join(f'<nvpair id="lb-{k}" name="{k}" value="{v}"/>' for k, v in params.items())
            node("cibadmin", "-C", "-o", "resources", "-X",
                 f'<primitive id="lb" class="ocf" provider="lbcore" type="lbcore">'
                 f'<instance_attributes id="lb-ia">{pairs}</instance_attributes>'
                 f'<operations><op id="lb-mon" name="monitor" interval="2s" timeout="10s"/></operations>'
                 f'</primitive>')

            def serving():
                return subprocess.run(["ip", "netns", "exec", ns, "curl", "-fs", "-m", "1", "-o", "/dev/null",
                                       "http://127.0.0.1:18080/healthz"]).returncode == 0

            wait_until(lambda: "Started node1" in node("crm_mon", "-1"), 60, "lbcore started by Pacemaker", 0.5)
            wait_until(serving, 30, "lbcore serving", 0.2)
            first = int(open(pidfile).read())

            os.kill(first, signal.SIGKILL)
            killed = time.monotonic()
            wait_until(lambda: os.path.exists(pidfile) and open(pidfile).read().strip() not in ("", str(first))
                       and serving(), 60, "Pacemaker to restart lbcore", 0.2)
            restarted = time.monotonic() - killed
            status = node("crm_mon", "-1")
            print(f"lbcore restarted by Pacemaker {restarted:.1f} s after SIGKILL\n{status}")
            assert "Started node1" in status
            assert "monitor on node1 returned 'not running'" in status
            pacemaker.send_signal(signal.SIGTERM)  # stops lb (the agent's stop) and the cluster
            pacemaker.wait(60)
            assert not os.path.exists(f"/proc/{int(open(pidfile).read())}") if os.path.exists(pidfile) else True
        finally:
            if pacemaker is not None and pacemaker.poll() is None:
                # SIGTERM: Pacemaker stops its resources and every daemon it
                # started (SIGKILL would orphan them).
                pacemaker.send_signal(signal.SIGTERM)
                try:
                    pacemaker.wait(60)
                except subprocess.TimeoutExpired:
                    pass
            for name in os.listdir(CIB_DIR) if os.path.isdir(CIB_DIR) else []:
                os.unlink(os.path.join(CIB_DIR, name))
            pengine = "/var/lib/pacemaker/pengine"
            for name in os.listdir(pengine) if os.path.isdir(pengine) else []:
                os.unlink(os.path.join(pengine, name))
            if installed_agent:
                shutil.rmtree(AGENT_DIR, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
