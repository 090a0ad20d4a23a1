"""The demo a new user runs first (`./demo.sh` = `python -m lbcore.demo`)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

from tests.support import ROOT, free_port, wait_port


def demo_config(port: int) -> str:
    servers = [{"name": f"app{i}", "address": f"127.0.0.1:{free_port()}"} for i in (1, 2)]
    config = {
        "global": {"log": {"target": "stdout", "format": "http"}, "grace": "2s"},
        "frontends": {"web": {"bind": f"127.0.0.1:{port}", "backend": "demo"}},
        "backends": {"demo": {"servers": servers}},
    }
    path = os.path.join(tempfile.mkdtemp(prefix="lbcore-demo-"), "demo.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.05)
    return False


def start_demo(port: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    demo = subprocess.Popen([sys.executable, "-m", "lbcore.demo", demo_config(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
    wait_port(port, proc=demo)
    return demo


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_stopping_the_demo_stops_lbcore(sig):
    """SIGTERM to the demo used to stop its backends only: lbcore stayed,
    reparented to init, holding the port, and the next demo failed."""
    port = free_port()
    demo = start_demo(port)
    [lb] = children(demo.pid)
    demo.send_signal(sig)
    demo.wait(15)
    assert gone(lb), "lbcore outlived the demo"
    deadline = time.monotonic() + 5
    while not port_free(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert port_free(port)


def test_default_config_is_found_when_installed_elsewhere():
    """`python -m lbcore.demo` without arguments looked for conf/demo.yaml
    next to site-packages; the config ships inside the package."""
    site = tempfile.mkdtemp(prefix="site-packages-")
    shutil.copytree(ROOT / "lbcore", os.path.join(site, "lbcore"),
                    ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__"))
    shutil.copytree(ROOT / "lbcore_ext", os.path.join(site, "lbcore_ext"),
                    ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__"))
    code = ("from lbcore.demo import DEFAULT_CONFIG, demo_servers; from lbcore.config import load; "
            "print(DEFAULT_CONFIG); print(demo_servers(load(DEFAULT_CONFIG)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                         env=dict(os.environ, PYTHONPATH=site, LBCORE_NO_EXT="1"), timeout=30)
    assert out.returncode == 0, out.stderr
    path, servers = out.stdout.splitlines()
    assert path.startswith(site)
    assert servers == "[('app1', 8081), ('app2', 8082), ('app3', 8083)]"
