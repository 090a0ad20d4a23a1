"""`global.workers: 2`: a master and two worker processes, all real.

Which worker served a connection is read from the master's /stats.json
(`process.workers[].http_requests`, per worker pid): a connection is
pinned to one worker, so the one whose count moved served it. That is how
these tests check that a state change reached *every* worker, not just
the one that happened to take a request.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.support import ROOT, LbcoreProcess, free_port, get_json, http_config

HEALTH = {"type": "http", "path": "/healthcheck", "interval": "200ms", "timeout": "500ms",
          "fall": 1, "rise": 1}
# Probes that will not run during a test: only traffic can take a server down.
NO_PROBES = {"type": "http", "path": "/healthcheck", "interval": "1h", "fall": 1, "rise": 1}
WAIT = 15.0  # generous bound for state to show up (shared 2-core machine)


def workers_config(servers, port, stats_port, health=HEALTH, workers=2) -> dict:
    config = http_config([s.address for s in servers], port, backend={"health": health})
    config["global"].update({"workers": workers, "grace": "5s"})
    config["stats"] = {"bind": f"127.0.0.1:{stats_port}", "admin": True}
    return config


def get(port, path="/echo", requests=1) -> list[tuple[int, str]]:
    """`requests` GETs on one new connection: [(status, X-Server)]."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        answers = []
        for _ in range(requests):
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            answers.append((resp.status, resp.getheader("X-Server")))
        return answers
    finally:
        conn.close()


def stats(stats_port) -> dict:
    return get_json(stats_port)


def server_row(snapshot, name) -> dict:
    return next(s for s in snapshot["backends"]["pool"]["servers"] if s["name"] == name)


def per_worker(snapshot) -> dict[int, int]:
    return {w["pid"]: w["http_requests"] for w in snapshot["process"]["workers"] if w["status"] == "running"}


def wait_for(predicate, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def by_worker(port, stats_port, requests, path="/echo", attempts=80) -> dict[int, list[list[tuple[int, str]]]]:
    """New connections of `requests` GETs each until both workers have
    served some: worker pid -> the answers of each of its connections."""
    seen: dict[int, list] = {}
    for _ in range(attempts):
        before = per_worker(stats(stats_port))
        answers = get(port, path, requests)
        after = per_worker(stats(stats_port))
        moved = [pid for pid, count in after.items() if count != before.get(pid)]
        assert len(moved) == 1, f"one connection moved the counters of {moved}"
        assert after[moved[0]] - before.get(moved[0], 0) == requests
        seen.setdefault(moved[0], []).append(answers)
        if len(seen) == 2:
            return seen
    raise AssertionError(f"after {attempts} connections only workers {list(seen)} served any")


def running_pids(stats_port) -> list[int]:
    return [w["pid"] for w in stats(stats_port)["process"]["workers"] if w["status"] == "running"]


def alive(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: only its parent has not collected it yet.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def parent_of(pid) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


@pytest.fixture
def farm(start_backend, start_lbcore):
    """farm(n_servers, health) -> (lbcore, backends, port, stats_port), all workers running."""
    def start(servers=2, health=HEALTH):
        backends = [start_backend(f"s{i + 1}") for i in range(servers)]
        port, stats_port = free_port(), free_port()
        lb = start_lbcore(workers_config(backends, port, stats_port, health))
        wait_for(lambda: len(running_pids(stats_port)) == 2, "both workers to run")
        return lb, backends, port, stats_port
    return start


def test_requests_are_spread_over_workers_and_counted_once(farm):
    lb, backends, port, stats_port = farm()
    sent = 40
    answers = [a for _ in range(sent) for a in get(port)]
    assert [status for status, _ in answers] == [200] * sent
    assert {server for _, server in answers} == {"s1", "s2"}

    snap = stats(stats_port)
    process = snap["process"]
    assert process["processes"] == 2
    assert process["master_pid"] == lb.proc.pid
    pids = [w["pid"] for w in process["workers"]]
    assert sorted(pids) == sorted(process["pids"]) and len(set(pids)) == 2
    assert all(parent_of(pid) == lb.proc.pid for pid in pids)
    counts = per_worker(snap)
    # Connections are spread by the kernel (SO_REUSEPORT hash): 40 new
    # connections all landing on one worker has odds of 2**-39.
    assert all(count > 0 for count in counts.values()), counts
    assert sum(counts.values()) == sent
    assert snap["frontends"]["web"]["http_requests"] == sent
    assert sum(s["total_sessions"] for s in snap["backends"]["pool"]["servers"]) == sent
    assert snap["frontends"]["web"]["http_responses"]["2xx"] == sent

    metrics = http.client.HTTPConnection("127.0.0.1", stats_port, timeout=5)
    metrics.request("GET", "/metrics")
    text = metrics.getresponse().read().decode()
    assert "lbcore_processes 2.0" in text
    assert "haproxy_process_requests_total 40.0" in text


def test_a_killed_worker_is_restarted_and_no_request_fails(farm):
    lb, backends, port, stats_port = farm()
    victim = stats(stats_port)["process"]["workers"][0]
    os.kill(victim["pid"], signal.SIGKILL)
    # The master keeps the dead worker's listening socket open, so the
    # connections the kernel steers to it wait for the replacement.
    answers = [a for _ in range(30) for a in get(port)]
    assert [status for status, _ in answers] == [200] * 30

    def replaced():
        worker = stats(stats_port)["process"]["workers"][0]
        return worker["status"] == "running" and worker["pid"] != victim["pid"] and worker
    worker = wait_for(replaced, "worker 0 to be restarted")
    assert worker["restarts"] == 1
    assert not alive(victim["pid"])
    assert f"worker 0 (pid {victim['pid']}) died (killed by SIGKILL)" in lb.logs()

    served = by_worker(port, stats_port, 1)
    assert worker["pid"] in served
    answers = [a for _ in range(30) for a in get(port)]
    assert [status for status, _ in answers] == [200] * 30
    assert stats(stats_port)["process"]["processes"] == 2


def test_a_dead_backend_is_down_in_every_worker(farm):
    lb, backends, port, stats_port = farm()
    backends[1].kill()
    wait_for(lambda: server_row(stats(stats_port), "s2")["status"] == "DOWN", "s2 DOWN in /stats.json")
    tried = server_row(stats(stats_port), "s2")
    served = by_worker(port, stats_port, 4)
    for connections in served.values():
        for answers in connections:
            assert answers == [(200, "s1")] * 4
    after = server_row(stats(stats_port), "s2")
    assert after["total_sessions"] == tried["total_sessions"]
    assert after["connection_errors"] == tried["connection_errors"]


def test_a_failure_seen_by_one_worker_takes_the_server_out_of_all(farm):
    lb, backends, port, stats_port = farm(health=NO_PROBES)
    backends[1].kill()

    def down():
        answers = get(port, requests=2)
        # Connect refused: redispatched to s1, never a failed request.
        assert [status for status, _ in answers] == [200, 200]
        return server_row(stats(stats_port), "s2")["status"] == "DOWN"
    wait_for(down, "a worker's refused connect to take s2 DOWN")
    row = server_row(stats(stats_port), "s2")
    assert row["check_status"] == "HANA"
    # Logged once, by the master; the workers apply the verdict quietly.
    assert lb.logs().count("pool/s2 is DOWN") == 1
    served = by_worker(port, stats_port, 4)
    for connections in served.values():
        for answers in connections:
            assert answers == [(200, "s1")] * 4
    assert server_row(stats(stats_port), "s2")["connection_errors"] == row["connection_errors"]


def admin(stats_port, server, body) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", stats_port, timeout=10)
    conn.request("POST", f"/admin/backends/pool/servers/{server}", body=json.dumps(body),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def test_admin_drain_through_the_master_applies_in_every_worker(farm):
    lb, backends, port, stats_port = farm()
    for _ in range(10):
        get(port)
    status, row = admin(stats_port, "s2", {"state": "drain"})
    assert status == 200 and row["status"] == "DRAIN"
    # The answer carries every worker's counters, not the master's zeros.
    assert row["total_sessions"] == server_row(stats(stats_port), "s2")["total_sessions"] > 0

    for connections in by_worker(port, stats_port, 4).values():
        for answers in connections:
            assert answers == [(200, "s1")] * 4

    status, row = admin(stats_port, "s2", {"state": "ready", "weight": 3})
    assert status == 200 and row["status"] == "UP" and row["weight"] == 3
    # weights 1:3, smooth round robin: every 4 requests of a worker hit s1 once, s2 thrice.
    for connections in by_worker(port, stats_port, 4).values():
        for answers in connections:
            assert sorted(server for _, server in answers) == ["s1", "s2", "s2", "s2"]

    status, row = admin(stats_port, "nope", {"state": "drain"})
    assert status == 404


def test_reload_adds_a_server_and_a_bind_in_every_worker(farm, start_backend):
    lb, backends, port, stats_port = farm()
    pids = sorted(running_pids(stats_port))
    s3 = start_backend("s3")
    port2 = free_port()
    config = json.loads(json.dumps(lb.config))
    config["backends"]["pool"]["servers"].append({"name": "s3", "address": s3.address})
    config["frontends"]["web2"] = {"bind": f"127.0.0.1:{port2}", "mode": "http", "backend": "pool"}
    lb.reload(config)
    wait_for(lambda: any(s["name"] == "s3" and s["status"] == "UP"
                         for s in stats(stats_port)["backends"]["pool"]["servers"]), "s3 UP after reload")
    assert sorted(running_pids(stats_port)) == pids  # reloaded in place, not restarted

    # Round robin over three servers: three requests on one connection see
    # each once, in whichever worker took the connection.
    for connections in by_worker(port, stats_port, 3).values():
        for answers in connections:
            assert sorted(answers) == [(200, "s1"), (200, "s2"), (200, "s3")]
    # The new bind's sockets reached both workers over the control channel.
    for connections in by_worker(port2, stats_port, 1).values():
        for answers in connections:
            assert answers[0][0] == 200

    # Removing the bind closes it in the master and every worker.
    del config["frontends"]["web2"]
    lb.reload(config)
    wait_for(lambda: "web2" not in stats(stats_port)["frontends"], "web2 gone after reload")

    def refused():
        try:
            socket.create_connection(("127.0.0.1", port2), timeout=2).close()
        except ConnectionRefusedError:
            return True
        return False
    wait_for(refused, f"port {port2} to refuse connections")
    assert [status for _ in range(10) for status, _ in get(port)] == [200] * 10


def test_an_invalid_reload_is_refused_and_workers_keep_serving(farm):
    lb, backends, port, stats_port = farm()
    pids = sorted(running_pids(stats_port))
    lb.reload("frontends: {web: {bind: nowhere}}\n")
    wait_for(lambda: "reload refused" in lb.logs(), "the refusal in the log")
    assert lb.proc.poll() is None
    assert sorted(running_pids(stats_port)) == pids
    assert [status for _ in range(10) for status, _ in get(port)] == [200] * 10


def test_sigterm_finishes_in_flight_requests_and_exits_zero(farm):
    lb, backends, port, stats_port = farm()
    pids = running_pids(stats_port)
    slow: list = []
    thread = threading.Thread(target=lambda: slow.extend(get(port, "/sleep/1")))
    thread.start()
    wait_for(lambda: stats(stats_port)["frontends"]["web"]["current_sessions"] == 1, "the slow request")
    lb.signal(signal.SIGTERM)
    assert lb.wait(20) == 0
    thread.join(10)
    assert slow and slow[0][0] == 200
    assert not any(alive(pid) for pid in pids)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_workers_stop_when_the_master_is_killed(farm):
    lb, backends, port, stats_port = farm()
    pids = running_pids(stats_port)
    lb.proc.kill()
    lb.proc.wait()
    # Orphans are reaped by init; a worker is gone once it is not alive.
    wait_for(lambda: not any(alive(pid) for pid in pids), "orphaned workers to stop")


def test_a_busy_port_fails_the_start_with_exit_1(start_backend):
    backend = start_backend("s1")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        lb = LbcoreProcess(workers_config([backend], port, free_port()))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        result = subprocess.run([sys.executable, "-m", "lbcore.cli", "-c", lb.path],
                                capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 1
    assert f"cannot bind frontend web to 127.0.0.1:{port}" in result.stderr


def test_tcp_mode_is_served_by_every_worker(start_backend, start_lbcore):
    echo = start_backend("e1", tcp_echo=True)
    port, stats_port = free_port(), free_port()
    config = {
        "global": {"workers": 2, "grace": "5s"},
        "stats": {"bind": f"127.0.0.1:{stats_port}"},
        "frontends": {"db": {"bind": f"127.0.0.1:{port}", "mode": "tcp", "backend": "pool"}},
        "backends": {"pool": {"mode": "tcp", "servers": [{"name": "e1", "address": echo.address}]}},
    }
    start_lbcore(config)
    wait_for(lambda: len(running_pids(stats_port)) == 2, "both workers to run")
    before = {w["pid"]: w["total_sessions"] for w in stats(stats_port)["process"]["workers"]}
    for i in range(30):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            payload = f"hello {i}\n".encode() * 100
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := conn.recv(65536):
                received += chunk
            assert received == payload
    snap = stats(stats_port)
    after = {w["pid"]: w["total_sessions"] for w in snap["process"]["workers"]}
    assert sum(after.values()) - sum(before.values()) == 30
    assert all(after[pid] > before[pid] for pid in after), (before, after)
    page = http.client.HTTPConnection("127.0.0.1", stats_port, timeout=5)
    page.request("GET", "/")
    html = page.getresponse().read().decode()
    assert all(str(pid) in html for pid in after)


def test_a_stopped_or_killed_worker_strands_no_waiting_connection(farm):
    """A worker that stops accepting (hung: SIGSTOP; dead: SIGKILL, until
    the master replaces it) leaves nothing waiting for it: the other worker
    empties its SO_REUSEPORT queue too. Before, about half of these
    connections sat in the stopped worker's own queue and timed out. Each
    signal is sent between two requests of the loop, so the victim holds no
    connection of its own: what a SIGKILLed worker had already accepted
    dies with it, and is not what this test is about."""
    lb, backends, port, stats_port = farm()
    failures: list[str] = []
    served = 0

    def loop(count):
        nonlocal served
        for _ in range(count):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
                conn.request("GET", "/echo")
                resp = conn.getresponse()
                resp.read()
                conn.close()
                if resp.status != 200:
                    failures.append(f"status {resp.status}")
                else:
                    served += 1
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    for round_ in range(3):
        victim = running_pids(stats_port)[round_ % 2]
        os.kill(victim, signal.SIGSTOP)
        loop(30)  # the stopped worker's share would wait for it
        os.kill(victim, signal.SIGKILL)
        loop(30)  # dead, and being replaced
        assert not failures, failures
        wait_for(lambda: len(running_pids(stats_port)) == 2 and victim not in running_pids(stats_port),
                 "the master to replace the killed worker")
        loop(10)
    assert not failures, failures
    assert served == 3 * 70
    assert lb.logs().count("died (killed by SIGKILL)") == 3
    # Killed, not crashed: brought back at once, no back-off.
    assert "restarting it in" not in lb.logs()
