"""The mysql check (HAProxy's `option mysql-check`) against a real MariaDB.

MariaDB runs as a test daemon (tests/mariadb.py) with a password-less
`haproxy` user, as deployment tools create for the check. Misbehaving
servers (an error greeting, garbage, silence) are small socket servers.
The last drill runs the same haproxy.cfg under haproxy 2.6 and lbcore and
compares what each says of the same two servers.
"""

from __future__ import annotations

import asyncio
import csv
import http.client
import io
import socket
import subprocess

import pytest

from lbcore.health import mysql_probe
from lbcore.model import DOWN, UP
from tests.haproxy import need_haproxy, start_on_file, stop_on_file
from tests.integration.test_health_probes import RawServer, build_runtime, checking, closed_port, run
from tests.integration.test_health_probes import wait_until as await_until
from tests.mariadb import CLIENT, MariadbProcess
from tests.support import free_port, wait_until


@pytest.fixture(scope="module")
def mariadb():
    server = MariadbProcess()
    try:
        server.start()
        server.sql("CREATE USER 'haproxy'@'127.0.0.1'")
        yield server
    finally:
        server.stop()


def greeting(version: bytes = b"10.11.0-fake") -> bytes:
    """A protocol-10 greeting packet, sequence 0."""
    payload = b"\x0a" + version + b"\0" + b"\x01\0\0\0" + b"abcdefgh\0" + b"\xff\xf7" + b"\x21" \
        + b"\x02\0" + b"\xff\x81" + b"\x15" + bytes(10) + b"ijklmnopqrst\0" + b"mysql_native_password\0"
    return len(payload).to_bytes(3, "little") + b"\0" + payload


def error_packet(code: int, message: bytes, seq: int = 0) -> bytes:
    payload = b"\xff" + code.to_bytes(2, "little") + b"#HY000" + message
    return len(payload).to_bytes(3, "little") + bytes((seq,)) + payload


def sends(data: bytes, then_wait: bool = False):
    def handler(server, conn):
        conn.sendall(data)
        if then_wait:
            conn.settimeout(5)
            while conn.recv(4096):
                pass
    return handler


def login_then_ok(server, conn):
    """Greets, records the login packet and what follows, answers OK."""
    conn.sendall(greeting())
    conn.settimeout(5)
    data = b""
    while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:3], "little"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    conn.sendall(b"\x07\0\0\x02" + b"\0\0\0\x02\0\0\0")
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    server.requests.append(data)


def test_login_as_the_check_user_passes_and_quits_cleanly(mariadb):
    aborted = mariadb.status("Aborted_clients"), mariadb.status("Aborted_connects")

    async def main():
        return [await mysql_probe("127.0.0.1", mariadb.port, 2.0, "haproxy") for _ in range(5)]

    results = run(main())
    assert all(r.ok and r.status == "L7OK" for r in results), results
    assert "MariaDB" in results[0].info  # the server version, as HAProxy's check description
    # COM_QUIT after the OK: the server saw five clean sessions, no aborted one.
    assert (mariadb.status("Aborted_clients"), mariadb.status("Aborted_connects")) == aborted


def test_unknown_user_is_l7sts_with_the_mysql_error_code(mariadb):
    result = run(mysql_probe("127.0.0.1", mariadb.port, 2.0, "nobody"))
    assert not result.ok
    assert (result.status, result.code) == ("L7STS", 1045)
    assert "Access denied for user 'nobody'" in result.info


def test_without_user_the_greeting_alone_decides(mariadb):
    assert run(mysql_probe("127.0.0.1", mariadb.port, 2.0)).status == "L7OK"
    assert run(mysql_probe("127.0.0.1", mariadb.port, 2.0, "haproxy", "pre-41")).status == "L7OK"
    assert run(mysql_probe("127.0.0.1", closed_port(), 2.0)).status == "L4CON"


def test_login_packet_is_haproxys_post_41_form_followed_by_quit():
    with RawServer(login_then_ok) as server:
        result = run(mysql_probe("127.0.0.1", server.port, 2.0, "haproxy"))
        wait_until(lambda: server.requests, 5, "the fake server's record")
    assert result.status == "L7OK" and result.info == "10.11.0-fake"
    login = (b"\x29\0\0\x01" + b"\x00\x82\x00\x00" + b"\x00\x80\x00\x01" + b"\x21" + bytes(23)
             + b"haproxy\0" + b"\0")
    assert server.requests[0] == login + b"\x01\0\0\0\x01"


@pytest.mark.parametrize("reply, wait, status, code", [
    (error_packet(1129, b"Host '127.0.0.1' is blocked"), False, "L7STS", 1129),  # error greeting
    (b"\x10\0\0\0" + b"short", False, "L7RSP", None),  # closed inside the packet
    (b"", False, "L7RSP", None),  # closed before any greeting
    (b"", True, "L7TOUT", None),  # says nothing
    (b"\xff\xff\xff\0HTTP/1.1 200 OK\r\n", True, "L7RSP", None),  # not MySQL
])
def test_misbehaving_servers(reply, wait, status, code):
    with RawServer(sends(reply, then_wait=wait)) as server:
        result = run(mysql_probe("127.0.0.1", server.port, 0.5, "haproxy"))
    assert (result.status, result.code) == (status, code), result


def test_checker_takes_a_killed_galera_node_down_and_back_up(mariadb):
    health = {"type": "mysql", "user": "haproxy", "interval": "200ms", "timeout": "1s", "fall": 2, "rise": 2}

    async def main():
        runtime = build_runtime([f"db1={mariadb.address}"], health)
        server = runtime.backends["pool"].servers[0]
        async with checking(runtime):
            await await_until(lambda: server.check_status == "L7OK", 3, "a first L7OK")
            assert server.health == UP
            mariadb.kill()
            await await_until(lambda: server.health == DOWN, 3, "DOWN after the kill")
            await asyncio.get_running_loop().run_in_executor(None, mariadb.run)
            await await_until(lambda: server.health == UP, 10, "UP after the restart")

    run(main())


# -- beside haproxy 2.6 -----------------------------------------------------------

GALERA_CFG = """\
global
    maxconn 100
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout check 1s
listen stats
    bind {vip}:{stats}
    mode http
    stats enable
    stats uri /
listen mariadb
    bind {vip}:{db}
    option mysql-check user haproxy post-41
    server db1 {db1} check inter 200 rise 2 fall 2
    server db2 {db2} check inter 200 rise 2 fall 2 backup
"""


def _states(vip: str, port: int) -> dict:
    conn = http.client.HTTPConnection(vip, port, timeout=5)
    conn.request("GET", "/;csv")
    text = conn.getresponse().read().decode()
    conn.close()
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    return {r["svname"]: (r["status"], r["check_status"]) for r in rows
            if r["pxname"] == "mariadb" and r["svname"] in ("db1", "db2")}


def test_mysql_check_beside_haproxy(mariadb, tmp_path):
    """The same file under both: db1 (MariaDB, the user exists) is UP with
    L7OK, db2 (a server whose greeting is an error) DOWN with L7STS; a
    client's query goes through each to MariaDB."""
    need_haproxy()
    from tests.integration.test_haproxy_cfg import lbcore_env
    with RawServer(sends(error_packet(1129, b"Host is blocked"))) as blocked:
        procs = []
        try:
            for name, vip in (("haproxy", "127.21.0.1"), ("lbcore", "127.21.0.2")):
                ports = {"stats": free_port(), "db": free_port()}
                path = tmp_path / f"{name}.cfg"
                path.write_text(GALERA_CFG.format(vip=vip, db1=mariadb.address,
                                                  db2=f"127.0.0.1:{blocked.port}", **ports))
                procs.append((name, vip, ports, *start_on_file(name, str(path), str(tmp_path), lbcore_env())))
            seen = {}
            for name, vip, ports, proc, _ in procs:
                wait_until(lambda: _ready(vip, ports["stats"]), 10, f"{name}'s stats")
                seen[name] = wait_until(lambda: _when_db2_down(_states(vip, ports["stats"])), 10,
                                        f"{name} marks db2 DOWN")
                query = subprocess.run([CLIENT, "--no-defaults", "-h", vip, "-P", str(ports["db"]), "-u", "haproxy",
                                        "-N", "-B", "-e", "SELECT 40 + 2"],
                                       capture_output=True, text=True, timeout=10)
                assert query.stdout.strip() == "42", (name, query.stderr)
            assert seen["haproxy"]["db1"] == seen["lbcore"]["db1"] == ("UP", "L7OK")
            assert seen["haproxy"]["db2"][1] == seen["lbcore"]["db2"][1] == "L7STS"
        finally:
            for _, _, _, proc, log in procs:
                stop_on_file(proc, log)


def _when_db2_down(states: dict):
    """The states once db2 is DOWN and db1 has had its first check."""
    settled = states.get("db2", ("",))[0] == "DOWN" and states.get("db1", ("", ""))[1] != "INI"
    return states if settled else None


def _ready(vip: str, port: int) -> bool:
    try:
        with socket.create_connection((vip, port), timeout=0.5):
            return True
    except OSError:
        return False
