"""Reading the configuration again (SIGHUP) without holding up the event loop.

A forked child reads and validates the file and sends the Config back
pickled; the serving process only unpickles it. The YAML node tree (about
14 MB for 1,000 frontend/backend pairs, against 3 MB for the Config made
from it) and every temporary of the validation then live and die in the
child: the server's heap does not grow by them at each reload (pymalloc
keeps arenas that a few long-lived objects still pin), and the loop does
not share the GIL with a loader for the whole read.

Where fork is not possible, or the child gives no answer, the file is read
on a thread of this process instead, as before (read_on_thread).
"""

from __future__ import annotations

import gc
import io
import logging
import os
import select
import signal
import sys
import time
from . import config as config_mod
from . import spec_pickle
from .config import Config, ConfigError

log = logging.getLogger("lbcore")

CHILD_TIMEOUT = 120.0  # seconds a child may take before it is killed and a thread reads instead
CHILD_NICENESS = 10
_LOADER_SWITCH_INTERVAL = 0.0005  # seconds; CPython's default is 0.005
_SIGNALS = ("SIGHUP", "SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2", "SIGQUIT", "SIGTTOU", "SIGTTIN")


class ChildFailed(Exception):
    """The child gave no Config nor ConfigError (no fork, a crash, a timeout)."""


def read(config: Config) -> Config:
    """`config` read again from its files; blocking, to run on a thread
    (server.load_off_loop). ConfigError as config.reread()."""
    try:
        return read_in_child(config)
    except ChildFailed as exc:
        log.warning("reading the configuration in a child process failed (%s); reading it here", exc)
    return read_on_thread(config)


def read_in_child(config: Config, timeout: float = CHILD_TIMEOUT) -> Config:
    rfd, wfd = os.pipe()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(rfd)
        os.close(wfd)
        raise ChildFailed(f"fork: {exc.strerror or exc}") from None
    if pid == 0:  # pragma: no cover - the child leaves through os._exit
        os.close(rfd)
        _child(config, wfd)
    os.close(wfd)
    try:
        data = _read_all(rfd, time.monotonic() + timeout)
    finally:
        os.close(rfd)
        _reap(pid, kill=True)
    if not data:
        raise ChildFailed("the child ended without an answer")
    kind, value = _unpickle(data)
    if kind == "config":
        return value
    if kind == "problems":
        raise ConfigError(value)
    raise ChildFailed(value)


def _child(config: Config, wfd: int) -> None:  # pragma: no cover - runs in the child
    code = 1
    try:
        # The parent's sockets must not stay open through this process: a
        # connection the server closes meanwhile would otherwise send no
        # FIN (nor RST) until this child exits.
        os.closerange(3, wfd)
        os.closerange(wfd + 1, _max_fd())
        # The parent's signal handlers write to its wake-up fd, which this
        # process shares: a signal meant for this child must not reach the
        # parent's loop as if it were its own.
        signal.set_wakeup_fd(-1)
        for name in _SIGNALS:
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), signal.SIG_DFL)
        gc.disable()  # short-lived, and collections would copy the parent's pages
        try:
            # Background work: on a busy machine the serving process goes first.
            os.nice(CHILD_NICENESS)
        except OSError:
            pass
        try:
            answer = ("config", config_mod.reread(config))
        except ConfigError as exc:
            answer = ("problems", list(exc.problems))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which logs it
            answer = ("failed", f"{type(exc).__name__}: {exc}")
        data = spec_pickle.dumps(answer)
        view = memoryview(data)
        while view:
            view = view[os.write(wfd, view):]
        code = 0
    finally:
        os._exit(code)


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        return 65536


def _read_all(fd: int, deadline: float) -> bytes:
    chunks = []
    poller = select.poll()  # not select(): a busy server's descriptors pass 1024
    poller.register(fd, select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            raise ChildFailed("no answer in time")
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _reap(pid: int, kill: bool) -> None:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == 0 and kill:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    except (ChildProcessError, ProcessLookupError):
        pass  # reaped already (a SIGCHLD handler of the embedding program)


class _Chunks(io.RawIOBase):
    """The pickle, handed to the unpickler a frame at a time: each read is
    Python code, where the event loop's thread can take the GIL back (the C
    unpickler alone would hold it for the whole Config, tens of ms)."""

    def __init__(self, data: bytes) -> None:
        self.view = memoryview(data)
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), len(self.view) - self.pos)
        buffer[:n] = self.view[self.pos:self.pos + n]
        self.pos += n
        return n


def _unpickle(data: bytes):
    interval = sys.getswitchinterval()
    sys.setswitchinterval(_LOADER_SWITCH_INTERVAL)
    try:
        return spec_pickle.load(_Chunks(data))
    finally:
        sys.setswitchinterval(interval)


def read_on_thread(config: Config) -> Config:
    """The file read by this process, on the calling thread. The cyclic
    garbage collector is paused meanwhile: the YAML node tree is acyclic and
    freed by reference counting, and a collection started by its
    allocations would walk the whole heap with the GIL held."""
    interval = sys.getswitchinterval()
    collecting = gc.isenabled()
    sys.setswitchinterval(_LOADER_SWITCH_INTERVAL)
    gc.disable()
    try:
        return config_mod.reread(config)
    finally:
        if collecting:
            gc.enable()
        sys.setswitchinterval(interval)

