"""global.stop_delay: on SIGTERM lbcore keeps accepting for that long while
monitor_uri answers 503, so keepalived or a BGP announcer withdraws the
node before anything is refused; then it drains as usual."""

import http.client
import signal
import socket
import time

import pytest

from tests.support import free_port, http_config


def status(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_withdraws_first_then_stops_accepting(start_backend, start_lbcore, workers):
    backend = start_backend("s1")
    port = free_port()
    config = http_config([backend.address], port, frontend={"monitor_uri": "/healthz"})
    config["global"].update({"stop_delay": "1500ms", "grace": "5s", "workers": workers})
    lb = start_lbcore(config)
    deadline = time.monotonic() + 15
    while status(port, "/healthz") != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status(port, "/healthz") == 200
    lb.signal(signal.SIGTERM)
    signalled = time.monotonic()
    deadline = signalled + 5
    while status(port, "/healthz") != 503 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert status(port, "/healthz") == 503  # the health checks see it going
    served = 0
    while time.monotonic() - signalled < 1.0:
        assert status(port, "/echo") == 200  # and new connections are still served
        served += 1
    assert served > 0
    assert lb.wait(15) == 0
    assert time.monotonic() - signalled >= 1.5
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
