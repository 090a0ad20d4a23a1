"""A syslog daemon that stops reading must cost log lines, not service.

A unix datagram socket queues ten datagrams by default; once full, a
blocking send waits for the reader. lbcore's event log (state changes) then
froze the whole event loop, and every client with it. Here the "syslog" is
a socket nobody reads and twenty servers go DOWN at start (twenty lines):
requests must still be answered at once."""

from __future__ import annotations

import http.client
import socket
import time

from tests.haproxy import start_on_file, stop_on_file
from tests.integration.test_haproxy_cfg import lbcore_env
from tests.support import free_port, wait_port


def test_a_syslog_that_stops_reading_does_not_stop_lbcore(start_backend, tmp_path):
    s1 = start_backend("s1")
    syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    syslog.bind(str(tmp_path / "log.sock"))  # never read
    port = free_port()
    dead = "\n".join(f"    server dead{i} 127.0.0.1:{free_port()} check inter 100 rise 1 fall 1"
                     for i in range(20))
    (tmp_path / "lb.cfg").write_text(f"""\
global
    log {tmp_path}/log.sock local0
defaults
    mode http
    log global
    option httplog
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend web
    bind 127.0.0.1:{port}
    default_backend live
backend live
    server s1 {s1.address}
backend dead
{dead}
""")
    proc, log = start_on_file("lbcore", str(tmp_path / "lb.cfg"), str(tmp_path), lbcore_env())
    try:
        wait_port(port, proc=proc, timeout=20)
        time.sleep(1.0)  # every dead server has been found DOWN and logged by now
        worst = 0.0
        for _ in range(50):
            started = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/echo")
            assert conn.getresponse().status == 200
            conn.close()
            worst = max(worst, time.monotonic() - started)
        assert worst < 2.0, worst
    finally:
        stop_on_file(proc, log)
        syslog.close()
