"""A process that drops to `user` still runs what it imports once it
serves (the health checker), or later (a reload's reader, the stats
pages): those are imported before the drop, as before a chroot. Run here
from a tree only root may read, as a fresh clone in a `mktemp -d`
directory is (CI's): after setuid(nobody) nothing in it can be imported."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.support import ROOT, free_port, wait_port

CONFIG = """\
global
    user nobody
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    option httpchk GET /
    server s1 127.0.0.1:{server} check inter 100ms
"""


class CountingServer(threading.Thread):
    """Accepts and closes connections, counting them: http health checks
    (a tcp check ends with a reset, which the kernel may take back out of
    the accept queue)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            self.accepted += 1
            conn.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="user needs root")
def test_health_checks_run_after_dropping_to_a_user_who_cannot_read_the_tree(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    for package in ("lbcore", "lbcore_ext"):
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("*.c"))
    os.chmod(tree, 0o700)
    server = CountingServer()
    server.start()
    port = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(CONFIG.format(port=port, server=server.port))
    env = dict(os.environ, PYTHONPATH=str(tree))
    log_path = tmp_path / "lbcore.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "lbcore.cli", "-db", "-f", str(cfg)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path))
    try:
        wait_port(port, proc=proc)
        deadline = time.monotonic() + 10
        while server.accepted < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        text = log_path.read_text(errors="replace")
        assert server.accepted >= 3, f"no health checks after the drop to nobody:\n{text[-2000:]}"
        assert "Error" not in text, text[-2000:]
    finally:
        server.running = False
        proc.terminate()
        proc.wait(10)
