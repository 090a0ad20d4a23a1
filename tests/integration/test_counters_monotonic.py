"""Counters never go backwards: with `workers: 2`, a SIGKILLed worker's
counts stay in the totals (/stats.json, the CSV, Prometheus counters), and
so do they across a reload. Real worker kill under real load."""

from __future__ import annotations

import http.client
import os
import re
import signal
import time

from tests.integration.test_workers import running_pids, wait_for, workers_config
from tests.support import Load, free_port, get_json


def totals(stats_port) -> dict[str, int]:
    snap = get_json(stats_port)
    servers = snap["backends"]["pool"]["servers"]
    conn = http.client.HTTPConnection("127.0.0.1", stats_port, timeout=5)
    conn.request("GET", "/metrics")
    metrics = conn.getresponse().read().decode()
    conn.request("GET", "/stats.csv")
    csv_rows = [r.split(",") for r in conn.getresponse().read().decode().splitlines()[1:]]
    conn.close()
    prom = re.search(r'^haproxy_frontend_http_requests_total\{proxy="web"\} (\S+)$', metrics, re.M)
    prom_servers = re.findall(r'^haproxy_server_sessions_total\{proxy="pool",server="s\d"\} (\S+)$', metrics, re.M)
    return {
        "json_requests": snap["frontends"]["web"]["http_requests"],
        "json_server_sessions": sum(s["total_sessions"] for s in servers),
        "json_bytes_out": snap["frontends"]["web"]["bytes_out"],
        "csv_stot": next(int(r[7]) for r in csv_rows if r[1] == "BACKEND"),
        "prom_requests": int(float(prom.group(1))),
        "prom_server_sessions": int(sum(float(v) for v in prom_servers)),
    }


def test_totals_survive_a_killed_worker_and_a_reload(start_backend, start_lbcore):
    backends = [start_backend(f"s{i}") for i in (1, 2)]
    port, stats_port = free_port(), free_port()
    lb = start_lbcore(workers_config(backends, port, stats_port))
    wait_for(lambda: len(running_pids(stats_port)) == 2, "both workers to run")
    samples: list[dict] = []

    def sample_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            samples.append(totals(stats_port))
            time.sleep(0.05)

    with Load(port, clients=4) as load:
        sample_for(1.5)
        before_kill = samples[-1]
        victim = running_pids(stats_port)[0]
        os.kill(victim, signal.SIGKILL)
        sample_for(1.5)
        wait_for(lambda: len(running_pids(stats_port)) == 2 and victim not in running_pids(stats_port),
                 "the killed worker to be replaced")
        sample_for(1.0)
        lb.reload()
        sample_for(1.5)
    samples.append(totals(stats_port))

    assert before_kill["json_requests"] > 50, "the load did not get going"
    for key in samples[0]:
        series = [s[key] for s in samples]
        drops = [(a, b) for a, b in zip(series, series[1:]) if b < a]
        assert not drops, f"{key} went backwards: {drops[:3]}"
    # What the clients got answered was counted, but for what the killed
    # worker served in its last poll interval (half a second at most).
    final = samples[-1]["json_requests"]
    assert final <= load.ok + len(load.failures) + 8
    assert final >= load.ok * 0.8, (final, load.ok)
