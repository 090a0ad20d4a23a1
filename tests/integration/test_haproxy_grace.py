"""HAProxy 2.6's global `grace` beside haproxy: after SIGUSR1 (soft stop)
both keep accepting and serving for the grace time, then stop listening and
exit. lbcore's monitor-uri answers 503 meanwhile (its `stop_delay`), which
HAProxy does only with `monitor fail if { stopping }`."""

from __future__ import annotations

import http.client
import signal
import time

from tests.haproxy import need_haproxy, start_on_file, stop_on_file
from tests.integration.test_haproxy_cfg import lbcore_env
from tests.support import free_port, wait_port, wait_until

CONFIG = """\
global
    grace 1500ms
    hard-stop-after 10s
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend web
    bind {vip}:{port}
    monitor-uri /healthz
    default_backend pool
backend pool
    server s1 {s1}
"""


def status(vip: str, port: int, path: str):
    try:
        conn = http.client.HTTPConnection(vip, port, timeout=2)
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        conn.close()
        return resp.status
    except ConnectionRefusedError:
        return "refused"


def test_global_grace_keeps_serving_after_a_soft_stop_like_haproxy(start_backend, tmp_path):
    need_haproxy()
    s1 = start_backend("s1")
    for name, vip in (("haproxy", "127.25.0.1"), ("lbcore", "127.25.0.2")):
        port = free_port()
        path = tmp_path / f"{name}.cfg"
        path.write_text(CONFIG.format(vip=vip, port=port, s1=s1.address))
        proc, log = start_on_file(name, str(path), str(tmp_path), lbcore_env())
        try:
            wait_port(port, host=vip, proc=proc)
            assert status(vip, port, "/echo") == 200
            proc.send_signal(signal.SIGUSR1)
            stopped = time.monotonic()
            served = 0
            while time.monotonic() - stopped < 1.0:
                assert status(vip, port, "/echo") == 200, name  # still accepting during grace
                served += 1
            assert served > 0
            monitor = status(vip, port, "/healthz")
            assert monitor == (200 if name == "haproxy" else 503), (name, monitor)
            wait_until(lambda: proc.poll() is not None, 10, f"{name} exits after the grace")
            assert proc.returncode == 0, name
            assert time.monotonic() - stopped >= 1.4, name
            assert status(vip, port, "/echo") == "refused", name
        finally:
            stop_on_file(proc, log)
