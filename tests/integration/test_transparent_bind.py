"""`bind: {address: VIP, transparent: true}`: lbcore starts listening on an
address this host does not hold yet, as the backup node of a keepalived or
Pacemaker pair must (the VIP arrives at failover, the socket is ready)."""

import os
import subprocess
import sys

import pytest

from tests.support import ROOT, LbcoreProcess, free_port, http_config

FOREIGN = "192.0.2.77"  # TEST-NET-1: never a local address


def config(backend, port, vip_port, transparent):
    cfg = http_config([backend.address], port)
    vip = f"{FOREIGN}:{vip_port}"
    cfg["frontends"]["web"]["bind"] = [f"127.0.0.1:{port}",
                                       {"address": vip, "transparent": True} if transparent else vip]
    return cfg


@pytest.mark.parametrize("workers", [1, 2])
def test_a_transparent_bind_listens_on_an_address_not_held(start_backend, start_lbcore, workers):
    backend = start_backend("s1")
    port, vip_port = free_port(), free_port()
    cfg = config(backend, port, vip_port, True)
    cfg["global"]["workers"] = workers
    lb = start_lbcore(cfg, wait_ports=[port])
    with open("/proc/net/tcp") as f:
        listening = [line.split()[1] for line in f.readlines()[1:] if line.split()[3] == "0A"]
    # 192.0.2.77 in /proc's little-endian hex, and the port.
    assert f"4D0200C0:{vip_port:04X}" in listening
    assert lb.proc.poll() is None


def test_without_transparent_the_address_cannot_be_bound(start_backend):
    backend = start_backend("s1")
    lb = LbcoreProcess(config(backend, free_port(), free_port(), False))
    result = subprocess.run([sys.executable, "-m", "lbcore.cli", "-c", lb.path], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=30)
    assert result.returncode == 1
    assert f"cannot bind frontend web to {FOREIGN}" in result.stderr
