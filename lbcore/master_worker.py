"""HAProxy's master-worker mode (`-W`, `-Ws`) for `lbcore -f haproxy.cfg`.

The master keeps the privileges it was started with (root, no chroot) and
serves nothing: it starts one lbcore process (the worker) and, on SIGUSR2
or SIGHUP, starts a new worker with `-sf OLD`: the new one reads the files,
takes the old worker's listening sockets and runtime socket
(lbcore.takeover, as HAProxy's `-x`), and once it serves tells the old one
to finish its work (SIGUSR1, the soft stop). No connection is refused. A
file the new worker cannot read leaves the old one serving. This is what
lets a worker chroot and drop to `user`/`group` and still be reloaded, as
kolla-ansible does with `haproxy -W -db` and `kill -USR2`.

The first worker is forked. Run in the foreground (-W -db, -Ws), the
master needs nothing from the files but the pidfile: the worker is
forked before anything is read, reads them itself, as later workers do,
and reports their pidfile with its "ready" (its problems, if any, are on
stderr and its exit status is the master's). Otherwise the master reads
them first (it needs `daemon` and `master-worker` from them) and the
worker serves that Config. Once it serves (SUPERVISE_AFTER later: its first
answers go first), the master replaces itself (exec) with a small
interpreter that only supervises (`python -m lbcore.master_worker`, some
12 MB): as HAProxy's master, it holds no config, and its memory stays the
same across reloads. Every later worker is a new lbcore process
(`lbcore -f ... --ready-fd N -sf OLD`) that reads the files itself: a
master that read them would grow by each reading (a 1,000-pair file leaves
~20 MB of freed but held heap) and hand that heap to each forked worker.

SIGTERM and SIGINT go to the worker(s); the master exits when they have.
If the serving worker dies on its own, the master exits with its status.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
import traceback
from typing import Callable, Optional

from .pidfile import write as write_pidfile

SIGNALS = {signal.SIGHUP, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGCHLD}
READY_TIMEOUT = 60.0
_PIPE_BUF = 4096  # POSIX's least PIPE_BUF: a write of this many bytes or fewer is not split
SUPERVISE_AFTER = 0.5  # seconds from the first worker's start to the master's exec (run())

# serve(soft_stop, hard_stop, report_ready) runs a worker to its end (its
# exit status): it takes the sockets of the `-sf` (soft_stop) and `-st`
# (hard_stop) processes and calls report_ready(pidfile=None) once it
# serves (with the pidfile its files name, if it read them).
Serve = Callable[[list[int], list[int], Callable[..., None]], int]


# A new interpreter runs `-m lbcore...`, which would put the working
# directory first on sys.path: an `lbcore` directory there (a checkout of
# another version, say) would be imported in place of this one. Python
# 3.11's -P leaves it out; PYTHONPATH (_package_env) says where this is.
PYTHON = [sys.executable, "-P"] if sys.version_info >= (3, 11) else [sys.executable]


def _package_env(**changes: Optional[str]) -> dict:
    """This environment, with `changes` applied (None: removed). A new
    interpreter must import this same lbcore: run from a source tree, that
    tree goes first on PYTHONPATH (an installed lbcore is found as it was;
    a site directory put before the standard library could shadow it)."""
    import site

    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sites = {os.path.abspath(p) for p in site.getsitepackages() + [site.getusersitepackages()]}
    if root not in sites:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


class Worker:
    """A child lbcore process that writes b"1" to its ready pipe once it
    serves: forked (fork()), started anew (spawn()) or, in a master that
    replaced itself, one it already had (Worker(pid))."""

    def __init__(self, pid: int, ready_fd: Optional[int] = None) -> None:
        self.pid = pid
        self.ready_fd = ready_fd
        self.returncode: Optional[int] = None
        self.pidfile: Optional[str] = None  # what it reported with "ready" (report_ready)

    @classmethod
    def fork(cls, serve: Serve, soft_stop: list[int], hard_stop: list[int] = ()) -> "Worker":
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child leaves through os._exit
            os.close(read_end)
            _worker(serve, list(soft_stop), list(hard_stop), write_end)
        os.close(write_end)
        return cls(pid, read_end)

    @classmethod
    def spawn(cls, argv: list[str]) -> "Worker":
        """`lbcore argv --ready-fd N`, a new interpreter. It runs with no
        signal blocked (the master's mask would be inherited) and without
        NOTIFY_SOCKET (systemd hears the master only). OSError if it
        cannot be started."""
        read_end, write_end = os.pipe()
        try:
            os.set_inheritable(write_end, True)
            command = [*PYTHON, "-m", "lbcore", *argv, "--ready-fd", str(write_end)]
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.posix_spawn(sys.executable, command, _package_env(NOTIFY_SOCKET=None), setsigmask=())
        except OSError:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        return cls(pid, read_end)

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
            said = os.read(self.ready_fd, _PIPE_BUF) if readable else b""
            self.pidfile = os.fsdecode(said[1:]) or None
            return said[:1] == b"1"
        finally:
            os.close(self.ready_fd)
            self.ready_fd = None

    def signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


def report_ready(fd: int, pidfile: Optional[str] = None) -> None:
    """A worker serves: it tells its master through the pipe `fd` (forked:
    _worker; started anew: `--ready-fd`, lbcore.cli), with the pidfile its
    files name, for a master that did not read them (Worker.pidfile). Here,
    not in the cli module: run as `python -m lbcore.cli`, that module is
    __main__, and a forked worker importing it would run it again before
    it binds."""
    try:
        # One write, within PIPE_BUF: the master reads it whole.
        os.write(fd, b"1" + (os.fsencode(pidfile)[:_PIPE_BUF - 1] if pidfile else b""))
        os.close(fd)
    except OSError:
        pass


def _worker(serve: Serve, soft_stop: list[int], hard_stop: list[int], ready_fd: int) -> None:  # pragma: no cover - in the child
    code = 1
    try:
        # The master blocks the signals it waits for; its worker handles them.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
        os.environ.pop("NOTIFY_SOCKET", None)  # systemd hears the master only
        code = serve(soft_stop, hard_stop, lambda pidfile=None: report_ready(ready_fd, pidfile))
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


def run(serve: Serve, worker_argv: list[str], started: list[Callable[[], None]], pidfile: Optional[str],
        first_soft_stop: tuple = (), first_hard_stop: tuple = ()) -> int:
    """Fork the first worker on `serve` (it takes over from, and stops, the
    master's own -sf/-st processes); once it serves, become the small
    supervising master (supervise()). Later workers run `lbcore
    worker_argv`."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    current = Worker.fork(serve, list(first_soft_stop), list(first_hard_stop))
    del serve  # and with it the master's reference to the worker's config
    if not current.wait_ready():
        return current.wait() or 1
    if pidfile is None:  # a first worker that read the files itself names it
        pidfile = current.pidfile
    if pidfile:
        write_pidfile(pidfile)
    for callback in started:
        callback()
    # The new interpreter's start (some 25 ms of CPU) waits until the
    # worker has served what queued during its own start: on a small
    # machine it would take a core from it. Signals stay blocked meanwhile;
    # those that come are handled by the supervisor (exec keeps them pending).
    time.sleep(SUPERVISE_AFTER)
    _become_supervisor(current.pid, worker_argv, pidfile)
    # exec failed (logged): supervise from this process as it is, collecting
    # as usual. Until now the master held the collections the command line
    # held (lbcore.cli): one over its heap would have copied the pages it
    # shares with the worker, while the worker started.
    from .heap import release_collections
    release_collections()
    return supervise(current, worker_argv, pidfile)


def _become_supervisor(worker: int, worker_argv: list[str], pidfile: Optional[str]) -> None:
    """Replace this process (same pid, same children, signals still
    blocked and pending ones kept) with `python -m lbcore.master_worker`."""
    state = json.dumps({"worker": worker, "argv": worker_argv, "pidfile": pidfile})
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [*PYTHON, "-m", "lbcore.master_worker", state], _package_env())
    except OSError as exc:
        print(f"lbcore master: cannot become a small supervisor ({exc}); supervising from here",
              file=sys.stderr)


def supervise(current: Worker, worker_argv: list[str], pidfile: Optional[str]) -> int:
    """Run workers until told to stop. SIGHUP/SIGUSR2: a new worker
    (`lbcore worker_argv -sf CURRENT`) reads the files, takes over and
    soft-stops the current one; if it does not start, the current one
    goes on."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
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
                try:
                    fresh = Worker.spawn([*worker_argv, "-sf", str(current.pid)])
                except OSError as exc:
                    print(f"lbcore master: reload refused: cannot start a worker: {exc}", file=sys.stderr)
                    continue
                if not fresh.wait_ready():
                    fresh.signal(signal.SIGKILL)
                    code = fresh.wait()
                    # Its reasons (the file's problems) are on stderr already.
                    print(f"lbcore master: reload refused: the new worker did not start (exit status {code}); "
                          "keeping the running one", file=sys.stderr)
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


def main(argv: list[str]) -> int:
    """The master after _become_supervisor: argv[0] is its state."""
    state = json.loads(argv[0])
    return supervise(Worker(int(state["worker"])), list(state["argv"]), state["pidfile"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
