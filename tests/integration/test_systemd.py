"""systemd: sd_notify datagrams (READY, RELOADING, STOPPING) to a real
NOTIFY_SOCKET, and socket activation (LISTEN_FDS/LISTEN_PID), with the
sockets passed the way systemd passes them (from fd 3, in an exec'd
process) or by systemd-socket-activate itself when it is installed."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from tests.support import ROOT, BackendProcess, LbcoreProcess, free_port, http_config, wait_port

# What systemd does between fork and exec: the sockets at fd 3.., then
# LISTEN_FDS and LISTEN_PID (this very process, which exec keeps).
ACTIVATE = ("import os, sys; os.dup2(int(sys.argv[1]), 3); "
            "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); "
            "os.execv(sys.executable, [sys.executable, '-m', 'lbcore.cli', '-c', sys.argv[2]])")


class NotifySocket:
    """A datagram socket standing in for systemd's notification socket."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="lbnotify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[dict[str, str]] = []

    def wait_for(self, field: str, timeout: float = 15.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                break
            message = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(message)
            if field in message:
                return message
        raise AssertionError(f"no {field} within {timeout}s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify_socket():
    sock = NotifySocket()
    yield sock
    sock.close()


@pytest.fixture
def backend():
    b = BackendProcess("s1").start()
    yield b
    b.stop()


def held_socket(port: int) -> socket.socket:
    """The listening socket systemd would hold (lbcore.socket)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    return sock


def activated(lb: LbcoreProcess, held: socket.socket, notify: NotifySocket) -> subprocess.Popen:
    env = dict(os.environ, NOTIFY_SOCKET=notify.path, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", ACTIVATE, str(held.fileno()), lb.path],
                            pass_fds=[held.fileno()], env=env, cwd=lb.dir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def get(port: int, timeout: float = 10.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/echo")
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_notify_and_a_restart_on_held_sockets_refuse_nothing(backend, notify_socket, workers):
    port = free_port()
    config = http_config([backend.address], port)
    config["global"]["workers"] = workers
    lb = LbcoreProcess(config)
    held = held_socket(port)
    procs = []
    try:
        procs.append(activated(lb, held, notify_socket))
        ready = notify_socket.wait_for("READY")
        assert get(port) == 200

        # Reload: RELOADING=1 with the monotonic clock, then READY=1 again.
        procs[-1].send_signal(signal.SIGHUP)
        reloading = notify_socket.wait_for("RELOADING")
        assert 0 < int(reloading["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        notify_socket.wait_for("READY")

        # A full restart (stop, then start) under a new-connection loop:
        # the held socket queues what arrives in between.
        failures, served = [], [0]
        stop = threading.Event()

        def loop():
            while not stop.is_set():
                try:
                    status = get(port)
                    if status == 200:
                        served[0] += 1
                    else:
                        failures.append(status)
                except (OSError, http.client.HTTPException) as exc:
                    failures.append(repr(exc))
                time.sleep(0.005)
        client = threading.Thread(target=loop)
        client.start()
        time.sleep(0.3)
        before = served[0]
        procs[-1].send_signal(signal.SIGTERM)
        notify_socket.wait_for("STOPPING")
        assert procs[-1].wait(20) == 0
        procs.append(activated(lb, held, notify_socket))
        notify_socket.wait_for("READY")
        time.sleep(0.3)
        stop.set()
        client.join(20)
        assert not failures, failures
        assert served[0] > before > 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        held.close()


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate not installed")
def test_systemd_socket_activate_starts_lbcore_on_its_socket(backend, notify_socket):
    port = free_port()
    lb = LbcoreProcess(http_config([backend.address], port))
    env = dict(os.environ, NOTIFY_SOCKET=notify_socket.path, PYTHONPATH=str(ROOT))
    # It passes on only the variables named with -E.
    proc = subprocess.Popen(["systemd-socket-activate", "-l", f"127.0.0.1:{port}",
                             "-E", "NOTIFY_SOCKET", "-E", "PYTHONPATH", "-E", "LBCORE_NO_EXT",
                             sys.executable, "-m", "lbcore.cli", "-c", lb.path],
                            env=env, cwd=lb.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc=proc)  # this first connection starts lbcore
        notify_socket.wait_for("READY")
        assert [get(port) for _ in range(5)] == [200] * 5
        proc.send_signal(signal.SIGTERM)
        notify_socket.wait_for("STOPPING")
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
