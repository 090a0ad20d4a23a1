"""Memory that stays flat: no garbage is frozen by a reload, and servers
that die under traffic leave no cycles behind (lbcore/heap.py).

Counts objects in lbcore's own heap (tests/heap_probe.py) rather than its
resident size, so it neither waits for growth nor depends on the machine's
load. Before the fix the 30-minute soak (bench/soak.py) grew 5 KiB/s:
every reload froze the cyclic garbage its server kills had left, for good.
"""

import json
import os
import time

from tests.support import ROOT, BackendProcess, LbcoreProcess, Load, free_port, http_config, wait_until

ROUNDS = 4


def ask_heap(where) -> dict:
    """The answer of the heap probe (tests/heap_probe.py) that watches `where`."""
    answer = where / "answer.json"
    if answer.exists():
        answer.unlink()
    (where / "ask").write_text("")
    wait_until(answer.exists, 20, "the heap probe's answer")
    return json.loads(answer.read_text())


class ProbedLbcore(LbcoreProcess):
    entry = [str(ROOT / "tests" / "heap_probe.py")]

    def heap(self, where) -> dict:
        return ask_heap(where)

    def reloads(self) -> int:
        return self.logs().count("INFO reloaded ")


def test_reloads_amid_server_kills_freeze_no_garbage_and_leave_none(start_backend, tmp_path):
    servers = [start_backend("s1"), start_backend("s2")]
    port = free_port()
    config = http_config([s.address for s in servers], port, backend={
        "health": {"type": "http", "path": "/healthcheck", "interval": "200ms", "timeout": "1s",
                   "rise": 1, "fall": 1}})
    config["global"]["log"] = {"target": "stdout", "format": "none"}
    config["defaults"] = {"timeouts": {"connect": "1s"}, "retries": 3, "redispatch": True}
    lb = ProbedLbcore(config, env={"LBCORE_HEAP_PROBE": str(tmp_path)}).start()
    restarted = []
    try:
        # Its ports answer before the start-up is over (and the heap settled).
        wait_until(lambda: "lbcore started" in lb.logs(), 20, "lbcore's start")
        # The start-up's heap settles shortly after the server serves
        # (lbcore.server.SETTLE_AFTER), and a probe's answer settles it too
        # (tests/heap_probe.py): an answer after one that froze counts a
        # settled start-up.
        wait_until(lambda: lb.heap(tmp_path)["frozen"] > 0, 20, "the start-up's heap settled")
        before = lb.heap(tmp_path)
        with Load(port, clients=3) as load, Load(port, clients=1, fresh=True) as fresh:
            time.sleep(0.5)
            for n in range(ROUNDS):
                victim = servers[n % 2]
                victim.kill()  # its pooled connections die, new ones are refused
                time.sleep(0.3)
                lb.reload()
                wait_until(lambda: lb.reloads() > n, 20, f"reload {n + 1}")
                servers[n % 2] = BackendProcess(victim.name, port=victim.port).start()
                restarted.append(servers[n % 2])
                time.sleep(0.4)
        after = lb.heap(tmp_path)
    finally:
        lb.stop()
        for s in restarted:
            s.stop()
    assert load.ok > 100 and fresh.ok > 10, (load.ok, fresh.ok)
    # Frozen garbage is never freed: each reload would keep it for good.
    assert after["frozen_garbage"] == 0, after
    # Dead servers' connections and refused connects were freed by
    # reference counting, not left in cycles for the collector.
    assert after["garbage"] == 0, after
    # One config alive, the last reload's: none of the earlier ones (the
    # start-up one was kept by the frames that started the server).
    assert after["alive"]["Config"] == 1, after["alive"]
    assert after["alive"]["ServerSpec"] == 2, after["alive"]
    # What stays frozen is the code, config and runtime: no more than a
    # start-up's worth plus what a reload builds (tens of objects here).
    assert after["frozen"] - before["frozen"] < 2000, (before, after)


def test_a_haproxy_cfg_start_collects_again_once_its_heap_settles(start_backend, tmp_path):
    """`lbcore -f haproxy.cfg` holds the cyclic collector from the read of
    the files until the start-up's heap settles, as `-c lb.yaml` does
    (lbcore.cli, lbcore.heap): then it collects again, and serves."""
    import subprocess
    import sys

    from tests.integration.rawhttp import exchange
    from tests.support import wait_port

    backend = start_backend("s1")
    port = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text("defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n"
                   f"frontend web\n    bind 127.0.0.1:{port}\n    default_backend app\n"
                   f"backend app\n    server s1 {backend.address} check inter 200ms\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), LBCORE_HEAP_PROBE=str(tmp_path))
    with open(tmp_path / "lbcore.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "heap_probe.py"), "-f", str(cfg), "-db"],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path))
    try:
        wait_port(port, proc=proc)
        wait_until(lambda: ask_heap(tmp_path)["collecting"], 20, "the collector on again after the start-up")
        answer = exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert answer.status == 200, answer
    finally:
        proc.terminate()
        proc.wait(10)
