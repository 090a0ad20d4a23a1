"""tcp-check send/expect (TripleO's Redis listen) beside haproxy 2.6, against
a real Redis master and its replica: both balancers keep the master UP and
take the replica DOWN (its `info replication` says role:slave, so the
expect never matches and the check times out, as in HAProxy), and a
client's PING goes through to the master."""

from __future__ import annotations

import csv
import http.client
import io
import os
import shutil
import socket
import subprocess

import pytest

from tests.haproxy import need_haproxy, start_on_file, stop_on_file
from tests.integration.test_haproxy_cfg import lbcore_env
from tests.support import free_port, wait_port, wait_until

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"

CONFIG = """\
defaults
  mode tcp
  timeout connect 2s
  timeout client 10s
  timeout server 10s
  timeout check 1s
listen stats
  bind {vip}:{stats}
  mode http
  stats enable
  stats uri /
listen redis
  bind {vip}:{port} transparent
  balance first
  option tcp-check
  option tcplog
  timeout client 90m
  timeout server 90m
  tcp-check connect port {redis_port}
  tcp-check send AUTH\\ {password}\\r\\n
  tcp-check expect string +OK
  tcp-check send PING\\r\\n
  tcp-check expect string +PONG
  tcp-check send info\\ replication\\r\\n
  tcp-check expect string role:master
  tcp-check send QUIT\\r\\n
  tcp-check expect string +OK
  server ctl-0 {master}:{redis_port} check fall 2 inter 300 rise 2
  server ctl-1 {replica}:{redis_port} check fall 2 inter 300 rise 2
"""
PASSWORD = "r3dis"


@pytest.fixture
def redis_pair(tmp_path):
    if not os.path.exists(REDIS):
        pytest.skip("redis-server is not installed (test.sh installs Debian's redis-server)")
    port = free_port()
    master, replica = "127.35.0.11", "127.35.0.12"
    procs = []
    for host, extra in ((master, []), (replica, ["--replicaof", master, str(port), "--masterauth", PASSWORD])):
        workdir = tmp_path / host
        workdir.mkdir()
        procs.append(subprocess.Popen(
            [REDIS, "--bind", host, "--port", str(port), "--requirepass", PASSWORD, "--save", "",
             "--appendonly", "no", "--dir", str(workdir), *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(port, host=host, proc=procs[-1])
    yield master, replica, port
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def states(vip: str, port: int) -> dict:
    conn = http.client.HTTPConnection(vip, port, timeout=5)
    conn.request("GET", "/;csv")
    text = conn.getresponse().read().decode()
    conn.close()
    return {r["svname"]: (r["status"], r["check_status"]) for r in csv.DictReader(io.StringIO(text.lstrip("# ")))
            if r["pxname"] == "redis" and r["svname"].startswith("ctl")}


def settled(vip: str, port: int):
    seen = states(vip, port)
    return seen if seen.get("ctl-1", ("",))[0] == "DOWN" and seen.get("ctl-0", ("", ""))[1] == "L7OK" else None


def test_redis_master_check_as_haproxy(redis_pair, tmp_path):
    need_haproxy()
    master, replica, redis_port = redis_pair
    seen = {}
    for name, vip in (("haproxy", "127.35.0.1"), ("lbcore", "127.35.0.2")):
        ports = {"stats": free_port(), "port": free_port()}
        path = tmp_path / f"{name}.cfg"
        path.write_text(CONFIG.format(vip=vip, master=master, replica=replica, redis_port=redis_port,
                                      password=PASSWORD, **ports))
        proc, log = start_on_file(name, str(path), str(tmp_path), lbcore_env())
        try:
            wait_port(ports["stats"], host=vip, proc=proc, timeout=20)
            seen[name] = wait_until(lambda: settled(vip, ports["stats"]), 10, f"{name}: replica DOWN")
            with socket.create_connection((vip, ports["port"]), timeout=5) as sock:
                sock.sendall(f"AUTH {PASSWORD}\r\nINFO replication\r\n".encode())
                answer = b""
                while b"role:" not in answer:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
            assert b"role:master" in answer, (name, answer)
        finally:
            stop_on_file(proc, log)
    assert seen["haproxy"]["ctl-0"] == seen["lbcore"]["ctl-0"] == ("UP", "L7OK")
    assert seen["haproxy"]["ctl-1"][0] == seen["lbcore"]["ctl-1"][0] == "DOWN"
    assert seen["haproxy"]["ctl-1"][1] == seen["lbcore"]["ctl-1"][1], seen
