"""A real MariaDB server as a test daemon, for the mysql-check drills.

`MariadbProcess().start()` makes a data directory in a temporary directory
(mariadb-install-db, a few seconds), runs mariadbd on a free loopback port
(no networking beyond 127.0.0.1, no binary log, a small buffer pool) and
`sql()` runs statements as root through its unix socket. `stop()` ends it
and removes everything. Tests skip when mariadbd is absent (test.sh installs
Debian's mariadb-server).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from typing import Optional

import pytest

from tests.support import free_port, wait_port

MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
CLIENT = shutil.which("mariadb") or "/usr/bin/mariadb"


def need_mariadb() -> None:
    if not (os.path.exists(MARIADBD) and os.path.exists(INSTALL_DB) and os.path.exists(CLIENT)):
        pytest.skip("mariadb-server is not installed (test.sh installs Debian's mariadb-server)")


class MariadbProcess:
    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="mariadb-")
        self.datadir = os.path.join(self.dir, "data")
        self.socket = os.path.join(self.dir, "sock")
        self.log_path = os.path.join(self.dir, "error.log")
        self.proc: Optional[subprocess.Popen] = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "MariadbProcess":
        need_mariadb()
        user = ["--user=root"] if os.getuid() == 0 else []
        subprocess.run([INSTALL_DB, "--no-defaults", f"--datadir={self.datadir}", *user,
                        "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"],
                       check=True, capture_output=True, timeout=60)
        self.run()
        return self

    def run(self) -> None:
        """Start (or restart, after `kill()`) the server on the same port and data."""
        user = ["--user=root"] if os.getuid() == 0 else []
        self.proc = subprocess.Popen(
            [MARIADBD, "--no-defaults", f"--datadir={self.datadir}", *user, f"--port={self.port}",
             f"--bind-address={self.host}", f"--socket={self.socket}",
             f"--pid-file={os.path.join(self.dir, 'pid')}", f"--log-error={self.log_path}",
             "--skip-name-resolve", "--skip-log-bin", "--innodb-buffer-pool-size=16M",
             "--max-connect-errors=1000000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, host=self.host, timeout=30, proc=self.proc)

    def sql(self, statement: str) -> str:
        out = subprocess.run([CLIENT, "--no-defaults", "-S", self.socket, "-uroot", "-N", "-B",
                              "-e", statement], check=True, capture_output=True, text=True, timeout=10)
        return out.stdout

    def status(self, name: str) -> int:
        """A global status counter (Aborted_clients, Aborted_connects...)."""
        return int(self.sql(f"SHOW GLOBAL STATUS LIKE '{name}'").split()[1])

    def kill(self) -> None:
        """SIGKILL, as a crashed node."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

