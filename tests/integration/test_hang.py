"""A server that hangs (SIGSTOP: it accepts nothing and answers nothing)
is marked DOWN by its checks, and the GETs that were waiting on it are
replayed on another server at that moment: clients see no error."""

import os
import signal
import time

from tests.support import Load, free_port, get_json, http_config

HEALTH = {"type": "http", "path": "/healthcheck", "interval": "200ms", "timeout": "300ms",
          "rise": 2, "fall": 2}


def _status(stats_port, name):
    rows = get_json(stats_port)["backends"]["pool"]["servers"]
    return {r["name"]: r for r in rows}[name]["status"]


def test_hung_server_costs_no_get(start_backend, start_lbcore):
    backends = [start_backend(f"s{i}") for i in (1, 2, 3)]
    port, stats_port = free_port(), free_port()
    config = http_config([b.address for b in backends], port, backend={"health": HEALTH},
                         stats={"bind": f"127.0.0.1:{stats_port}"})
    config["defaults"] = {"timeouts": {"server": "30s"}}
    start_lbcore(config)
    hung = backends[0]
    with Load(port, clients=6) as load:
        time.sleep(0.5)
        os.kill(hung.proc.pid, signal.SIGSTOP)
        try:
            stopped_at = time.monotonic()
            while _status(stats_port, "s1") != "DOWN":
                assert time.monotonic() - stopped_at < 5, "hung server not marked DOWN"
                time.sleep(0.05)
            down_after = time.monotonic() - stopped_at
            time.sleep(1.0)  # traffic goes on without s1
            served_before = load.ok
            time.sleep(0.5)
            assert load.ok > served_before, "clients stalled"
        finally:
            os.kill(hung.proc.pid, signal.SIGCONT)
    assert load.failures == [], load.failures[:5]
    assert down_after < 3.0
    print(f"\nhung server DOWN after {down_after:.2f}s, {load.ok} GETs, 0 failed")
