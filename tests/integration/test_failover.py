"""Failover drills through the real lbcore process (issue 3's acceptance).

Several keep-alive clients (threads with http.client) GET continuously
through lbcore while backends are SIGKILLed, restarted on the same port,
made to answer 503 or to hang on /healthcheck. With `interval: 200ms,
fall: 2, rise: 2` a dead server must be DOWN in /stats.json within 1.5 s,
UP within 1.5 s of its return, and no client GET may fail.
"""

from __future__ import annotations

import collections
import http.client
import importlib.util
import threading
import time

import pytest

from tests.support import free_port, get_json, http_config

pytestmark = pytest.mark.skipif(importlib.util.find_spec("lbcore.server") is None,
                                reason="the lbcore process (lbcore.server) is not there yet")

HEALTH = {"type": "http", "path": "/healthcheck", "interval": "200ms", "timeout": "500ms",
          "fall": 2, "rise": 2}
WITHIN = 1.5  # seconds, the bound for DOWN after death and UP after return
CLIENTS = 4


class Load:
    """CLIENTS keep-alive clients doing GETs until stopped. Each answer is
    recorded with its time and the server that gave it (X-Server); any
    exception or non-200 status is a failed GET."""

    def __init__(self, port: int, path: str = "/echo", pause: float = 0.003):
        self.port = port
        self.path = path
        self.pause = pause
        self.served: list[tuple[float, str]] = []
        self.failures: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.running = False
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> "Load":
        self.running = True
        for i in range(CLIENTS):
            t = threading.Thread(target=self._client, name=f"client{i}", daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def __exit__(self, *exc) -> None:
        self.running = False
        for t in self.threads:
            t.join(10)

    def _client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while self.running:
            try:
                conn.request("GET", self.path)
                resp = conn.getresponse()
                resp.read()
                now = time.monotonic()
                with self.lock:
                    if resp.status == 200:
                        self.served.append((now, resp.getheader("X-Server", "?")))
                    else:
                        self.failures.append((now, f"status {resp.status}"))
                if resp.will_close:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            except (OSError, http.client.HTTPException) as exc:
                with self.lock:
                    self.failures.append((time.monotonic(), repr(exc)))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            time.sleep(self.pause)
        conn.close()

    def servers_between(self, start: float, end: float = float("inf")) -> collections.Counter:
        with self.lock:
            return collections.Counter(name for t, name in self.served if start <= t < end)

    def wait_served_by(self, name: str, since: float, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.servers_between(since)[name]:
                return time.monotonic()
            time.sleep(0.02)
        raise AssertionError(f"{name} served nothing within {timeout}s; saw {self.servers_between(since)}")


class Drill:
    """lbcore with the drill's health settings in front of `names` backends."""

    def __init__(self, start_backend, start_lbcore, names, backups=()):
        self.backends = {name: start_backend(name) for name in names}
        self.port = free_port()
        self.stats_port = free_port()
        config = http_config([b.address for b in self.backends.values()], self.port,
                             backend={"health": HEALTH}, stats={"bind": f"127.0.0.1:{self.stats_port}"})
        for server, name in zip(config["backends"]["pool"]["servers"], names):
            server["name"] = name
            server["backup"] = name in backups
        self.lb = start_lbcore(config)
        self.wait_status(names, "UP", 5.0)

    def rows(self) -> dict[str, dict]:
        stats = get_json(self.stats_port)
        return {row["name"]: row for row in stats["backends"]["pool"]["servers"]}

    def wait_status(self, names, status: str, timeout: float) -> float:
        """Seconds until every server in `names` shows `status` in /stats.json."""
        start = time.monotonic()
        while True:
            rows = self.rows()
            if all(rows[n]["status"] == status for n in names):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                states = {n: (rows[n]["status"], rows[n]["check_status"]) for n in names}
                raise AssertionError(f"{names} not {status} within {timeout}s: {states}\n"
                                     f"--- lbcore log, unusual lines ---\n{self.unusual_log_lines()}")
            time.sleep(0.02)

    def unusual_log_lines(self) -> str:
        """lbcore's log without the access lines of plain successful requests."""
        lines = [line for line in self.lb.logs().splitlines()
                 if not (" 200 " in line and " ---- " in line)]
        return "\n".join(lines[-40:])

    def assert_no_failures(self, load: Load) -> None:
        assert len(load.served) > 100, f"the load barely ran: {len(load.served)} answers"
        assert not load.failures, (f"{len(load.failures)} failed GETs out of "
                                   f"{len(load.served) + len(load.failures)}: {load.failures[:5]}\n"
                                   f"--- lbcore log, unusual lines ---\n{self.unusual_log_lines()}")


def test_sigkilled_server_leaves_and_returns_without_a_failed_get(start_backend, start_lbcore):
    drill = Drill(start_backend, start_lbcore, ["s1", "s2", "s3"])
    victim = drill.backends["s2"]
    with Load(drill.port) as load:
        time.sleep(0.5)
        assert set(load.servers_between(0)) == {"s1", "s2", "s3"}

        victim.kill()
        took = drill.wait_status(["s2"], "DOWN", WITHIN)
        down_at = time.monotonic()
        row = drill.rows()["s2"]
        # HANA: taken out by a failed request (passive check) before a probe
        # failed; otherwise the failed probe's own status.
        assert row["check_status"] in ("HANA", "L4CON", "SOCKERR", "L7RSP"), row
        time.sleep(0.5)
        assert set(load.servers_between(down_at)) == {"s1", "s3"}

        victim.start()  # same port
        back = drill.wait_status(["s2"], "UP", WITHIN)
        up_at = time.monotonic()
        load.wait_served_by("s2", up_at, WITHIN)
        time.sleep(0.3)
    drill.assert_no_failures(load)
    print(f"\nSIGKILL -> DOWN in {took:.2f}s; restart -> UP in {back:.2f}s; "
          f"{len(load.served)} GETs, 0 failed")


def test_server_answering_503_on_healthcheck_is_taken_out(start_backend, start_lbcore):
    drill = Drill(start_backend, start_lbcore, ["s1", "s2", "s3"])
    sick = drill.backends["s3"]
    with Load(drill.port) as load:
        time.sleep(0.3)
        sick.set_health(503)
        took = drill.wait_status(["s3"], "DOWN", WITHIN)
        row = drill.rows()["s3"]
        assert (row["check_status"], row["check_code"]) == ("L7STS", 503), row
        # Requests already sent to s3 may still finish; new ones go elsewhere.
        moved_at = time.monotonic() + 0.2
        time.sleep(0.8)
        after = load.servers_between(moved_at)
        assert set(after) == {"s1", "s2"}, after

        sick.set_health(None)
        back = drill.wait_status(["s3"], "UP", WITHIN)
        load.wait_served_by("s3", time.monotonic(), WITHIN)
    drill.assert_no_failures(load)
    print(f"\n503 -> DOWN in {took:.2f}s; 200 -> UP in {back:.2f}s")


def test_server_hanging_on_healthcheck_is_taken_out(start_backend, start_lbcore):
    drill = Drill(start_backend, start_lbcore, ["s1", "s2", "s3"])
    hung = drill.backends["s1"]
    with Load(drill.port) as load:
        time.sleep(0.3)
        hung.set_health("hang")
        # fall 2 probes, each waiting out its 500 ms timeout, 200 ms apart.
        took = drill.wait_status(["s1"], "DOWN", 2 * 0.5 + 2 * 0.2 * 1.1 + WITHIN)
        assert drill.rows()["s1"]["check_status"] == "L7TOUT"
        moved_at = time.monotonic() + 0.2
        time.sleep(0.8)
        assert set(load.servers_between(moved_at)) == {"s2", "s3"}
        hung.set_health(None)
        drill.wait_status(["s1"], "UP", 3.0)  # the hung probes time out first
    drill.assert_no_failures(load)
    print(f"\nhang -> DOWN in {took:.2f}s")


def test_backup_takes_over_when_every_primary_dies_and_hands_back(start_backend, start_lbcore):
    drill = Drill(start_backend, start_lbcore, ["s1", "s2", "b1"], backups=("b1",))
    with Load(drill.port) as load:
        time.sleep(0.5)
        assert set(load.servers_between(0)) == {"s1", "s2"}, "a backup serves nothing while primaries are UP"

        killed_at = time.monotonic()
        drill.backends["s1"].kill()
        drill.backends["s2"].kill()
        took_over = load.wait_served_by("b1", killed_at, WITHIN) - killed_at
        drill.wait_status(["s1", "s2"], "DOWN", WITHIN)

        drill.backends["s1"].start()
        drill.backends["s2"].start()
        drill.wait_status(["s1", "s2"], "UP", WITHIN)
        # The primaries take back new requests; in-flight ones may finish on b1.
        back_at = time.monotonic() + 0.2
        time.sleep(0.8)
        after = load.servers_between(back_at)
        assert set(after) == {"s1", "s2"}, after
    drill.assert_no_failures(load)
    print(f"\nbackup took over in {took_over:.2f}s")
