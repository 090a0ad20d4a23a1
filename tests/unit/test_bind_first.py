"""lbcore.bind_first: the frontends listen as soon as the config is read,
the server takes those sockets, a failure leaves nothing bound, and a
signal that comes meanwhile waits for the server's handlers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from lbcore import bind_first
from lbcore.config import loads
from lbcore.listeners import BindError, inherited
from tests.support import ROOT, free_port

CONFIG = """\
frontends:
  a: {{bind: "127.0.0.1:{a}", backend: app}}
  b: {{bind: ["127.0.0.1:{b}"], backend: app}}
backends:
  app:
    servers: [{{name: s1, address: "127.0.0.1:9"}}]
"""


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_the_frontends_listen_and_the_server_takes_their_sockets():
    a, b = free_port(), free_port()
    config = loads(CONFIG.format(a=a, b=b))
    try:
        bind_first.bind_frontends(config)
        assert listening(a) and listening(b)
        for fe in config.frontends.values():
            (address,) = fe.binds
            assert inherited.waiting(address)
            (sock,) = inherited.take(address)
            assert sock.getsockname() == ("127.0.0.1", address.port)
            sock.close()
        assert not inherited
    finally:
        bind_first.release_signals()
        for sock in inherited.bound.values():
            sock.close()
        inherited.bound.clear()


def test_a_failed_bind_leaves_nothing_bound_and_no_signal_held():
    a = free_port()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    config = loads(CONFIG.format(a=a, b=taken.getsockname()[1]))
    try:
        with pytest.raises(BindError, match=r"cannot bind frontend b to 127\.0\.0\.1:\d+: Address already in use"):
            bind_first.bind_frontends(config)
        assert not listening(a) and not inherited
        assert not signal.pthread_sigmask(signal.SIG_BLOCK, []) & set(bind_first.HELD)
    finally:
        taken.close()


def test_a_frontend_bound_to_an_interface_is_left_to_the_server():
    a, b = free_port(), free_port()
    config = loads(CONFIG.format(a=a, b=b).replace(
        '["127.0.0.1:%d"]' % b, '[{address: "127.0.0.1:%d", interface: lo}]' % b))
    bind_first.bind_frontends(config)
    assert not listening(a) and not inherited


def test_a_signal_that_comes_meanwhile_waits_for_the_handlers():
    """In a process of its own: SIGTERM's default action would end it."""
    code = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
from lbcore import bind_first
from lbcore.config import loads
bind_first.bind_frontends(loads({CONFIG.format(a=free_port(), b=free_port())!r}))
os.kill(os.getpid(), signal.SIGTERM)
os.kill(os.getpid(), signal.SIGHUP)
print("still here", flush=True)
seen = []
signal.signal(signal.SIGTERM, lambda *_: seen.append("TERM"))
signal.signal(signal.SIGHUP, lambda *_: seen.append("HUP"))
bind_first.release_signals()
print(sorted(seen), flush=True)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["still here", "['HUP', 'TERM']"]
