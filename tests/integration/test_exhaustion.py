"""Exhaustion: running out of file descriptors, more clients than maxconn,
slow readers. lbcore degrades and recovers; it never crashes, spins, or
blames a server for its own shortage.

(Slowloris against http_request is in test_http_timeouts.py.)"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import subprocess
import sys
import time

from tests.lenient_backend import LenientBackend
from tests.support import ROOT, BackendProcess, LbcoreProcess, free_port, get_json, http_config, wait_port

from .rawhttp import WATCHED, RawClient, RssWatcher, check_no_crash


class LimitedLbcore(LbcoreProcess):
    """lbcore started with RLIMIT_NOFILE lowered (as `ulimit -n N`)."""

    def __init__(self, config, nofile: int):
        super().__init__(config)
        self.nofile = nofile

    def start(self, wait_ports=()):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self._log = open(self.log_path, "ab")
        limit = self.nofile
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lbcore.cli", "-c", self.path], stdout=self._log,
            stderr=subprocess.STDOUT, env=env, cwd=self.dir,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)))
        for port in self.ports():
            wait_port(port, proc=self.proc)
        WATCHED.append(self)
        return self


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get(port: int, path: str = "/echo") -> int:
    with RawClient(port, timeout=5) as c:
        c.request("GET", path)
        return c.read_response().status


def test_at_the_descriptor_limit_accepting_pauses_and_resumes():
    """`ulimit -n 256` and 400 clients: lbcore stops accepting at the limit
    with one log line, does not spin, does not mark the server DOWN for its
    own shortage (not by passive checks, not by its probes), and serves the
    clients that waited in the backlog once descriptors are free."""
    backend = BackendProcess("s1").start()
    port = free_port()
    config = http_config([backend.address], port, backend={
        "health": {"type": "http", "path": "/healthcheck", "interval": "300ms", "rise": 1, "fall": 1}})
    lb = LimitedLbcore(config, nofile=256).start()
    held = []
    try:
        assert get(port) == 200
        for _ in range(400):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            held.append(s)  # the ones past the limit wait in the backlog
        time.sleep(0.5)
        assert len(os.listdir(f"/proc/{lb.proc.pid}/fd")) >= 250
        before = cpu_seconds(lb.proc.pid)
        time.sleep(2)  # several probe intervals and accept retries at the limit
        assert cpu_seconds(lb.proc.pid) - before < 0.5, "busy at the descriptor limit"
        # A client that waited in the backlog is served once others leave.
        waiting = held.pop()
        waiting.sendall(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
        for s in held:
            s.close()
        held.clear()
        waiting.settimeout(5)
        assert waiting.recv(100).startswith(b"HTTP/1.1 200"), "a waiting client was not served"
        waiting.close()
        time.sleep(1.2)  # lbcore.listeners.FD_QUIET: the shortage is over
        assert get(port) == 200
        logs = lb.logs()
        assert logs.count("accepting paused until descriptors are free") == 1, logs[-2000:]
        assert "descriptors free again" in logs
        assert "is DOWN" not in logs, logs[-2000:]
    finally:
        for s in held:
            s.close()
        lb.stop()
        backend.stop()
    check_no_crash()


async def _one_request(port: int, results: list, sem: asyncio.Semaphore) -> None:
    async with sem:
        for attempt in range(3):
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), 30)
                writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                data = await asyncio.wait_for(reader.read(), 60)
                writer.close()
                results.append(data[:12])
                return
            except (OSError, asyncio.TimeoutError) as exc:
                if attempt == 2:
                    results.append(repr(exc).encode())


def test_20000_connections_against_maxconn_1000_are_served_in_turn():
    """More clients at once than maxconn: the excess waits in the backlog
    (never refused, never reset) and every one is answered; lbcore never
    holds more than maxconn."""
    backend = LenientBackend()
    port, stats = free_port(), free_port()
    config = http_config([backend.address], port, stats={"bind": f"127.0.0.1:{stats}"})
    config["global"]["maxconn"] = 1000
    config["global"]["log"] = {"target": "stdout", "format": "none"}
    lb = LbcoreProcess(config).start()
    WATCHED.append(lb)
    try:
        results: list = []

        async def run():
            sem = asyncio.Semaphore(3000)  # 3x maxconn in flight, within the backlog
            await asyncio.gather(*(_one_request(port, results, sem) for _ in range(20000)))

        started = time.monotonic()
        asyncio.run(run())
        elapsed = time.monotonic() - started
        bad = [r for r in results if not r.startswith(b"HTTP/1.1 200")]
        assert len(results) == 20000 and not bad, (len(bad), bad[:5])
        frontend = get_json(stats)["frontends"]["web"]
        assert frontend["max_sessions"] <= 1000, frontend
        assert frontend["total_sessions"] >= 20000
        print(f"20000 connections in {elapsed:.1f}s")
    finally:
        lb.stop()
        backend.close()
    check_no_crash()


def test_slow_readers_cost_bounded_memory_and_are_cut_by_the_client_timeout():
    """Twenty clients read a 10 MB answer at one byte a second: back-pressure
    holds the server, so lbcore's memory does not grow by the answers'
    size, and `timeouts.client` cuts each of them (what the kernel already
    buffered for a client is no longer lbcore's)."""
    backend = BackendProcess("s1").start()
    port = free_port()
    config = http_config([backend.address], port, defaults={"timeouts": {"client": "2s"}})
    lb = LbcoreProcess(config).start()
    WATCHED.append(lb)
    readers = []
    try:
        assert get(port) == 200
        fds_before = len(os.listdir(f"/proc/{lb.proc.pid}/fd"))
        with RssWatcher(lb.proc.pid) as rss:
            for _ in range(20):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
                s.settimeout(0.01)
                s.connect(("127.0.0.1", port))
                s.sendall(b"GET /size/10000000 HTTP/1.1\r\nHost: a\r\n\r\n")
                readers.append(s)
            started = time.monotonic()
            cut_at = None
            while time.monotonic() - started < 12:
                for s in readers:
                    try:
                        s.recv(1)
                    except (socket.timeout, ConnectionResetError):
                        pass
                time.sleep(1)  # one byte a second per reader
                cut = lb.logs().count('"GET /size/10000000 HTTP/1.1"')
                if cut == len(readers) and len(os.listdir(f"/proc/{lb.proc.pid}/fd")) <= fds_before + 2:
                    cut_at = time.monotonic() - started
                    break
        assert cut_at is not None, f"{lb.logs().count('/size/10000000')} of 20 slow readers cut"
        print(f"slow readers cut after {cut_at:.1f}s, RSS growth {rss.growth_mib:.1f} MiB")
        assert cut_at < 8, cut_at  # timeouts.client is 2s
        for line in lb.logs().splitlines():
            if "/size/10000000" in line:
                assert " 200 " in line and " cD" in line or " CD" in line, line
        # 20 x 10 MB would be 200 MB; back-pressure keeps it to the buffers.
        assert rss.growth_mib < 40, f"RSS grew {rss.growth_mib:.1f} MiB"
        assert get(port) == 200
    finally:
        for s in readers:
            s.close()
        lb.stop()
        backend.stop()
    check_no_crash()


def test_a_head_dripped_byte_by_byte_costs_linear_cpu():
    """A client sending a 16 KB head one byte per TCP segment: each read
    resumes the search for the blank line where the last one stopped.
    Before, each read rescanned the whole partial head: 1.5 s of lbcore's
    CPU for one such client (0.2 s now), so a few of them starved all."""
    backend = LenientBackend()
    port = free_port()
    config = http_config([backend.address], port)
    config["defaults"] = {"timeouts": {"http_request": "60s"}}
    proc = LbcoreProcess(config).start()
    try:
        head = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: " + b"v" * 16000 + b"\r\n\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            before = cpu_seconds(proc.proc.pid)
            for i in range(len(head)):
                sock.send(head[i:i + 1])
                time.sleep(0.0001)  # one segment each
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
            used = cpu_seconds(proc.proc.pid) - before
        assert used < 0.6, used
    finally:
        proc.stop()
        backend.close()
