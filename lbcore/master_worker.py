"""HAProxy's master-worker mode (`-W`, `-Ws`) for `lbcore -f haproxy.cfg`.

The master keeps the privileges it was started with (root, no chroot) and
serves nothing: it runs one lbcore process (the worker) on the same files,
and on SIGUSR2 or SIGHUP checks the files and starts a new worker with
`-sf OLD`: it takes the old worker's listening sockets and runtime socket
(lbcore.takeover, as HAProxy's `-x`), and once it serves tells the old one
to finish its work (SIGUSR1, the soft stop). No connection is refused. This is what lets a worker chroot and
drop to `user`/`group` and still be reloaded, as kolla-ansible does with
`haproxy -W -db` and `kill -USR2`.

SIGTERM and SIGINT go to the worker(s); the master exits when they have.
If the serving worker dies on its own, the master exits with its status.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
from typing import Callable, Optional

log = logging.getLogger("lbcore")

SIGNALS = {signal.SIGHUP, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGCHLD}
READY_TIMEOUT = 60.0


class Worker:
    def __init__(self, argv: list[str]):
        read_end, write_end = os.pipe()
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)  # systemd hears the master only
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lbcore.cli", *argv, "--ready-fd", str(write_end)],
            pass_fds=(write_end,), env=env,
            # The master blocks the signals it waits for; a child must not
            # inherit that mask across exec.
            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS))
        os.close(write_end)
        self.ready_fd = read_end

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> bool:
        """True once the worker serves; False if it exits (or hangs) first."""
        try:
            readable, _, _ = select.select([self.ready_fd], [], [], timeout)
            return bool(readable) and os.read(self.ready_fd, 1) == b"1"
        finally:
            os.close(self.ready_fd)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass


def run(worker_argv: list[str], check: Callable[[], Optional[list[str]]],
        started: list[Callable[[], None]], pidfile: Optional[str], first_argv: tuple = ()) -> int:
    """Run workers on `worker_argv` until told to stop. `check()` validates
    the files before a reload (problems, or None when they load);
    `first_argv` goes to the first worker only (the master's own -sf)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    current = Worker(worker_argv + list(first_argv))
    if not current.wait_ready():
        current.proc.wait()
        return current.proc.returncode or 1
    if pidfile:
        with open(pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    for callback in started:
        callback()
    old: list[Worker] = []
    try:
        while True:
            info = signal.sigtimedwait(SIGNALS, 1.0)
            old = [w for w in old if w.proc.poll() is None]
            if current.proc.poll() is not None:
                print(f"lbcore master: worker {current.pid} exited with {current.proc.returncode}",
                      file=sys.stderr)
                for worker in old:
                    worker.signal(signal.SIGTERM)
                return current.proc.returncode or 1
            if info is None or info.si_signo == signal.SIGCHLD:
                continue
            sig = info.si_signo
            if sig in (signal.SIGHUP, signal.SIGUSR2):
                problems = check()
                if problems:
                    for problem in problems:
                        print(f"lbcore master: reload refused: {problem}", file=sys.stderr)
                    continue
                # The new worker takes the sockets over and soft-stops the old one.
                fresh = Worker(worker_argv + ["-sf", str(current.pid)])
                if not fresh.wait_ready():
                    fresh.signal(signal.SIGKILL)
                    fresh.proc.wait()
                    print("lbcore master: reload refused: the new worker did not start; keeping the "
                          "running one", file=sys.stderr)
                    continue
                old.append(current)
                current = fresh
            else:
                # SIGTERM, SIGUSR1: finish in-flight work; SIGINT: at once.
                for worker in [current, *old]:
                    worker.signal(sig)
                for worker in [current, *old]:
                    worker.proc.wait()
                return 0
    finally:
        if pidfile:
            try:
                os.unlink(pidfile)
            except OSError:
                pass
