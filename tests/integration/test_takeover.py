"""`lbcore -c lb.yaml -sf OLDPID`: the new process takes the running one's
listening sockets over a unix socket (SCM_RIGHTS) and its server states
and counters; the old one drains and exits. Under three keep-alive
clients and a new-connection loop, no request fails."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.support import ROOT, Load, LbcoreProcess, free_port, get_json, http_config, wait_port, wait_until


class ConnectionLoop:
    """New connections, one GET each, until stopped; failures recorded."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ConnectionLoop":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(20)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/echo")
                resp = conn.getresponse()
                resp.read()
                conn.close()
                if resp.status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"status {resp.status}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.002)


def successor(lb: LbcoreProcess, old_pid: int, *flags: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    log = open(os.path.join(lb.dir, "successor.log"), "ab")
    return subprocess.Popen([sys.executable, "-m", "lbcore.cli", "-c", lb.path, *flags, "-sf", str(old_pid)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=lb.dir)


def admin(stats_port: int, server: str, body: dict) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", stats_port, timeout=10)
    conn.request("POST", f"/admin/backends/pool/servers/{server}", body=json.dumps(body),
                 headers={"Content-Type": "application/json"})
    status = conn.getresponse().status
    conn.close()
    return status


def frontend_requests(stats_port: int) -> int:
    return get_json(stats_port)["frontends"]["web"]["http_requests"]


@pytest.mark.parametrize("workers", [1, 2])
def test_sf_takes_over_under_load_and_loses_nothing(start_backend, workers):
    backends = [start_backend("s1"), start_backend("s2"), start_backend("s3")]
    port, stats_port = free_port(), free_port()
    config = http_config([b.address for b in backends], port, backend={
        "health": {"type": "http", "path": "/healthcheck", "interval": "300ms", "fall": 2, "rise": 2}})
    config["global"].update({"workers": workers, "grace": "10s", "log": {"target": "stdout", "format": "none"}})
    config["stats"] = {"bind": f"127.0.0.1:{stats_port}", "admin": True}
    lb = LbcoreProcess(config)
    config["global"]["pidfile"] = os.path.join(lb.dir, "lbcore.pid")
    lb.write_config(config)
    new = None
    try:
        lb.start()
        wait_until(lambda: all(s["status"] == "UP" for s in get_json(stats_port)["backends"]["pool"]["servers"]),
                 20, "every server UP")
        assert admin(stats_port, "s3", {"state": "maint"}) == 200
        assert admin(stats_port, "s2", {"weight": 7}) == 200
        with Load(port, clients=3) as load, ConnectionLoop(port) as loop:
            wait_until(lambda: load.ok > 50 and loop.ok > 20, 20, "traffic through the old process")
            before = frontend_requests(stats_port)
            new = successor(lb, lb.proc.pid)
            # The old one drains (SIGUSR1 from the new one, once it serves) and exits 0.
            assert lb.proc.wait(30) == 0
            served_by_old = load.ok + loop.ok
            wait_until(lambda: load.ok + loop.ok > served_by_old + 100, 20, "traffic through the new process")
        assert not load.failures, load.failures[:5]
        assert not loop.failures, loop.failures[:5]
        assert new.poll() is None

        snap = get_json(stats_port)
        assert snap["process"].get("master_pid", snap["process"]["pid"]) == new.pid
        servers = {s["name"]: s for s in snap["backends"]["pool"]["servers"]}
        assert servers["s3"]["status"] == "MAINT"
        assert servers["s2"]["weight"] == 7
        assert servers["s1"]["status"] == "UP" and servers["s2"]["status"] == "UP"
        # Counters carry over: the new process counts on from the old one's.
        assert snap["frontends"]["web"]["http_requests"] >= before
        # ... and what the old one served while draining is added when it exits.
        wait_until(lambda: "added the counters" in open(os.path.join(lb.dir, "successor.log")).read(),
                 20, "the final counters of the old process")
        snap = get_json(stats_port)
        served = load.ok + loop.ok
        if workers == 1:
            assert snap["frontends"]["web"]["http_requests"] >= served
        else:
            # An old master knows its exited workers' counts as last polled
            # (workers.COUNTER_POLL): the last moments of a drain may be missing.
            assert served >= snap["frontends"]["web"]["http_requests"] >= before
        assert sum(s["total_sessions"] for s in servers.values()) >= before
        with open(config["global"]["pidfile"]) as f:
            assert int(f.read()) == new.pid
        log = lb.logs()
        assert "handed" in log and "lbcore stopped" in log
    finally:
        if new is not None and new.poll() is None:
            new.send_signal(signal.SIGINT)
            try:
                new.wait(10)
            except subprocess.TimeoutExpired:
                new.kill()
        lb.stop()


def test_sf_of_a_pid_that_is_not_lbcore_binds_anew(start_backend):
    backend = start_backend("s1")
    port = free_port()
    lb = LbcoreProcess(http_config([backend.address], port))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    proc = successor(lb, sleeper.pid)
    try:
        wait_port(port, proc=proc)
        with open(os.path.join(lb.dir, "successor.log")) as f:
            assert f"no lbcore to take over at pid {sleeper.pid}" in f.read()
        # The -sf target still gets its soft-stop signal (as with haproxy).
        assert sleeper.wait(10) == -signal.SIGUSR1
    finally:
        sleeper.kill()
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
