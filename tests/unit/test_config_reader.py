"""Reading the config again in a forked child (lbcore/config_reader.py):
the same Config as reading it here, its errors, and the fall-back to a
thread when the child gives no answer."""

from __future__ import annotations

import os
import time

import pytest

from lbcore import config as config_mod
from lbcore import config_reader
from lbcore.config import ConfigError

GOOD = """\
frontends:
  web: {bind: "127.0.0.1:18080", backend: pool}
backends:
  pool:
    health: {type: tcp, interval: 2s}
    servers:
      - {name: s1, address: "127.0.0.1:18081"}
      - {name: s2, address: "127.0.0.1:18082", weight: 3}
"""


@pytest.fixture
def running(tmp_path):
    path = tmp_path / "lb.yaml"
    path.write_text(GOOD)
    return path, config_mod.load(str(path))


def test_the_child_sends_the_same_config_as_reading_it_here(running):
    path, config = running
    path.write_text(GOOD.replace("weight: 3", "weight: 5"))
    new = config_reader.read_in_child(config)
    assert new == config_mod.load(str(path))
    assert new.backends["pool"].servers[1].weight == 5


def test_a_broken_file_gives_the_childs_problems_with_their_lines(running):
    path, config = running
    path.write_text(GOOD.replace('address: "127.0.0.1:18082"', 'address: "nowhere"'))
    with pytest.raises(ConfigError) as info:
        config_reader.read_in_child(config)
    assert any(p.startswith(f"{path}:8: backends.pool.servers[1].address") for p in info.value.problems), \
        info.value.problems


def test_a_child_that_dies_is_replaced_by_a_read_here(running, monkeypatch):
    path, config = running
    parent = os.getpid()
    reread = config_mod.reread

    def dies_in_the_child(cfg):
        if os.getpid() != parent:
            os._exit(3)
        return reread(cfg)

    monkeypatch.setattr(config_mod, "reread", dies_in_the_child)
    with pytest.raises(config_reader.ChildFailed):
        config_reader.read_in_child(config)
    assert config_reader.read(config) == config


def test_a_child_that_hangs_is_killed_in_time(running, monkeypatch):
    path, config = running
    parent = os.getpid()

    def hangs_in_the_child(cfg):
        if os.getpid() != parent:
            time.sleep(60)
        return cfg

    monkeypatch.setattr(config_mod, "reread", hangs_in_the_child)
    began = time.monotonic()
    with pytest.raises(config_reader.ChildFailed, match="in time"):
        config_reader.read_in_child(config, timeout=0.5)
    assert time.monotonic() - began < 5


def test_a_socket_the_server_closes_while_the_child_reads_closes_at_once(running, monkeypatch):
    """The child drops its copies of the server's descriptors: a peer sees
    the close when the server closes, not when the child exits."""
    import socket
    import threading

    path, config = running
    parent = os.getpid()
    reread = config_mod.reread

    def slow_in_the_child(cfg):
        if os.getpid() != parent:
            time.sleep(3)
        return reread(cfg)

    monkeypatch.setattr(config_mod, "reread", slow_in_the_child)
    ours, peer = socket.socketpair()
    reader = threading.Thread(target=config_reader.read_in_child, args=(config,))
    reader.start()
    time.sleep(0.5)  # the child is forked and reading
    ours.close()
    peer.settimeout(2)
    began = time.monotonic()
    assert peer.recv(1) == b""
    assert time.monotonic() - began < 1
    peer.close()
    reader.join()
