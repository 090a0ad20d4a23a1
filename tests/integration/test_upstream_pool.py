"""Idle server connections are bounded and purged as HAProxy's
pool-max-conn and pool-purge-delay: a burst leaves a handful, not one per
client, and pool_max_conn: 0 keeps none."""

from __future__ import annotations

import concurrent.futures
import http.client
import subprocess
import time

from tests.support import free_port, http_config


def established_to(port: int) -> int:
    """TCP connections established to 127.0.0.1:port right now (both ends
    live on this host, so count the client side only)."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, timeout=10).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def burst(port: int, clients: int) -> None:
    def one(_):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/sleep/0.5")
        status = conn.getresponse().status
        conn.close()
        return status

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        assert set(pool.map(one, range(clients))) == {200}


def test_a_burst_leaves_few_idle_connections_after_the_purges(start_backend, start_lbcore):
    backend = start_backend("s1")
    port = free_port()
    start_lbcore(http_config([backend.address], port, backend={"pool_purge_delay": "300ms"}),
                 wait_ports=[port])
    burst(port, 24)
    after_burst = established_to(backend.port)
    assert after_burst >= 12, after_burst  # the burst's connections went back to the pool
    deadline = time.monotonic() + 10
    while established_to(backend.port) > 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert established_to(backend.port) <= 4


def test_200_clients_leave_at_most_pool_max_conn_then_the_purge_level(start_backend, start_lbcore):
    backend = start_backend("s1")
    port = free_port()
    start_lbcore(http_config([backend.address], port,
                             backend={"pool_max_conn": 40, "pool_purge_delay": "200ms"}),
                 wait_ports=[port])
    burst(port, 200)
    after_burst = established_to(backend.port)
    assert 20 <= after_burst <= 40, after_burst  # the bound, not one per client
    deadline = time.monotonic() + 15
    while established_to(backend.port) > 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert established_to(backend.port) <= 4


def test_pool_max_conn_zero_keeps_no_idle_connection(start_backend, start_lbcore):
    backend = start_backend("s1")
    port = free_port()
    start_lbcore(http_config([backend.address], port, backend={"pool_max_conn": 0}), wait_ports=[port])
    burst(port, 6)
    time.sleep(0.3)
    assert established_to(backend.port) == 0
