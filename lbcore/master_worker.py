"""HAProxy's master-worker mode (`-W`, `-Ws`) for `lbcore -f haproxy.cfg`.

The master keeps the privileges it was started with (root, no chroot) and
serves nothing: it reads the files, then forks one lbcore process (the
worker) that serves the Config the master read, and on SIGUSR2 or SIGHUP
reads the files again and forks a new worker with `-sf OLD`: it takes the
old worker's listening sockets and runtime socket (lbcore.takeover, as
HAProxy's `-x`), and once it serves tells the old one to finish its work
(SIGUSR1, the soft stop). No connection is refused. This is what lets a
worker chroot and drop to `user`/`group` and still be reloaded, as
kolla-ansible does with `haproxy -W -db` and `kill -USR2`.

A worker is forked, not started as a new interpreter: it has the modules
and the Config already, so the files are read once per start or reload,
not once by the master to check them and again by the worker (for 1,000
frontends that is most of the start-up time).

SIGTERM and SIGINT go to the worker(s); the master exits when they have.
If the serving worker dies on its own, the master exits with its status.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import traceback
from typing import Callable, Optional

from .pidfile import write as write_pidfile

log = logging.getLogger("lbcore")

SIGNALS = {signal.SIGHUP, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGCHLD}
READY_TIMEOUT = 60.0

# serve(soft_stop, hard_stop, report_ready) runs a worker to its end (its
# exit status): it takes the sockets of the `-sf` (soft_stop) and `-st`
# (hard_stop) processes and calls report_ready once it serves.
Serve = Callable[[list[int], list[int], Callable[[], None]], int]


class Worker:
    """A forked child that runs `serve` and writes b"1" to its ready pipe
    once it serves."""

    def __init__(self, serve: Serve, soft_stop: list[int], hard_stop: list[int] = ()):
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child leaves through os._exit
            os.close(read_end)
            _worker(serve, list(soft_stop), list(hard_stop), write_end)
        os.close(write_end)
        self.pid = pid
        self.ready_fd = read_end
        self.returncode: Optional[int] = None

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = 1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        while self.returncode is None:
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                self.returncode = 1
                break
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> bool:
        """True once the worker serves; False if it exits (or hangs) first."""
        try:
            readable, _, _ = select.select([self.ready_fd], [], [], timeout)
            return bool(readable) and os.read(self.ready_fd, 1) == b"1"
        finally:
            os.close(self.ready_fd)

    def signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


def _worker(serve: Serve, soft_stop: list[int], hard_stop: list[int], ready_fd: int) -> None:  # pragma: no cover - in the child
    code = 1
    try:
        # The master blocks the signals it waits for; its worker handles them.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
        os.environ.pop("NOTIFY_SOCKET", None)  # systemd hears the master only
        from .cli import report_ready
        code = serve(soft_stop, hard_stop, lambda: report_ready(ready_fd))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the worker's end, told on its stderr
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def run(serve: Serve, check: Callable[[], tuple[Optional[list[str]], Optional[Serve]]],
        started: list[Callable[[], None]], pidfile: Optional[str], first_soft_stop: tuple = (),
        first_hard_stop: tuple = ()) -> int:
    """Run workers until told to stop: the first one on `serve`. Before a
    reload, `check()` reads the files again: their problems, or None and
    the `serve` of the new worker. The first worker takes over from, and
    stops, the master's own -sf/-st processes."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    current = Worker(serve, list(first_soft_stop), list(first_hard_stop))
    del serve  # and with it the master's reference to the worker's config
    if not current.wait_ready():
        return current.wait() or 1
    if pidfile:
        write_pidfile(pidfile)
    for callback in started:
        callback()
    old: list[Worker] = []
    try:
        while True:
            info = signal.sigtimedwait(SIGNALS, 1.0)
            old = [w for w in old if w.poll() is None]
            if current.poll() is not None:
                print(f"lbcore master: worker {current.pid} exited with {current.returncode}",
                      file=sys.stderr)
                for worker in old:
                    worker.signal(signal.SIGTERM)
                return current.returncode or 1
            if info is None or info.si_signo == signal.SIGCHLD:
                continue
            sig = info.si_signo
            if sig in (signal.SIGHUP, signal.SIGUSR2):
                problems, serve_new = check()
                if problems or serve_new is None:
                    for problem in problems or ():
                        print(f"lbcore master: reload refused: {problem}", file=sys.stderr)
                    continue
                # The new worker takes the sockets over and soft-stops the old one.
                fresh = Worker(serve_new, [current.pid])
                serve_new = None
                if not fresh.wait_ready():
                    fresh.signal(signal.SIGKILL)
                    fresh.wait()
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
                    worker.wait()
                return 0
    finally:
        if pidfile:
            try:
                os.unlink(pidfile)
            except OSError:
                pass
