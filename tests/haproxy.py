"""haproxy 2.6 beside lbcore, for tests that compare the two on one input.

`HaproxyProcess(cfg_text).start(wait_ports=[...])` runs `haproxy -db -f`
on the text in a temporary directory; `stop()` ends it. Tests that need it
skip when the binary is absent (test.sh installs Debian's haproxy).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Optional

import pytest

from tests.support import wait_port

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def need_haproxy() -> None:
    if not os.path.exists(HAPROXY):
        pytest.skip("haproxy is not installed (test.sh installs Debian's haproxy)")


class HaproxyProcess:
    def __init__(self, cfg: str):
        self.dir = tempfile.mkdtemp(prefix="haproxy-")
        self.path = os.path.join(self.dir, "haproxy.cfg")
        self.log_path = os.path.join(self.dir, "haproxy.log")
        with open(self.path, "w") as f:
            f.write(cfg)
        self.proc: Optional[subprocess.Popen] = None

    def start(self, wait_ports=()) -> "HaproxyProcess":
        need_haproxy()
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", self.path], stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=self.dir)
        for port in wait_ports:
            wait_port(port, proc=self.proc)
        return self

    def logs(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def http_cfg(frontend_port: int, servers: list[str], extra_frontend: str = "",
             extra_backend: str = "") -> str:
    """A minimal http-mode haproxy.cfg: one frontend, one roundrobin backend."""
    lines = "\n".join(f"    server s{i} {addr}" for i, addr in enumerate(servers, 1))
    return f"""global
    maxconn 1000
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:{frontend_port}
{extra_frontend}
    default_backend be
backend be
{extra_backend}
{lines}
"""


def start_on_file(name: str, path: str, cwd: str, env: Optional[dict] = None):
    """haproxy (name "haproxy") or lbcore (any other name) in the foreground
    on the haproxy.cfg `path`, its output in `cwd`/NAME.log: (proc, log)."""
    if name == "haproxy":
        need_haproxy()
        cmd = [HAPROXY, "-db", "-f", path]
    else:
        cmd = [sys.executable, "-m", "lbcore.cli", "-db", "-f", path]
    log = open(os.path.join(cwd, f"{name}.log"), "wb")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd), log


def stop_on_file(proc: subprocess.Popen, log) -> None:
    """Ends what start_on_file started (SIGTERM, then SIGKILL after 5 s)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()
