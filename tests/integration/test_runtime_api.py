"""The runtime API (`stats.socket`) driven with socat and raw sockets, and
side by side with haproxy 2.6 on the same commands."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import stat
import tempfile
import time

import pytest

from tests.haproxy import HaproxyProcess, need_haproxy
from tests.support import (BackendProcess, LbcoreProcess, free_port, get_json, http_config, socat,
                           wait_port, wait_unix)

INFO_FIELDS_HATOP_NEEDS = ("Name", "Version", "Release_date", "Nbproc", "Process_num", "Pid", "Uptime",
                           "Maxconn", "CurrConns", "Maxpipes", "PipesUsed", "Tasks", "Run_queue", "node")


@pytest.fixture
def backends():
    servers = [BackendProcess(f"s{i}").start() for i in (1, 2)]
    yield servers
    for s in servers:
        s.stop()


def runtime_config(backends, port, stats_port, sock, level="admin", **extra):
    config = http_config([b.address for b in backends], port)
    config["stats"] = {"bind": f"127.0.0.1:{stats_port}", "admin": True,
                       "socket": {"path": sock, "mode": "0660", "level": level}}
    config["global"].update(extra)
    return config


@pytest.fixture
def lb(backends):
    workdir = tempfile.mkdtemp(prefix="lbcore-rt-")
    sock = os.path.join(workdir, "admin.sock")
    port, stats_port = free_port(), free_port()
    proc = LbcoreProcess(runtime_config(backends, port, stats_port, sock,
                                        state_file=os.path.join(workdir, "state.json")), workdir=workdir)
    proc.start()
    try:
        wait_unix(sock, proc=proc.proc)
    except (RuntimeError, TimeoutError) as exc:
        raise AssertionError(f"{exc}; lbcore said:\n{proc.logs()}") from None
    proc.sock, proc.port, proc.stats_port = sock, port, stats_port
    yield proc
    proc.stop()


def cli(lb_or_path, text: str) -> str:
    path = lb_or_path if isinstance(lb_or_path, str) else lb_or_path.sock
    return socat(f"unix-connect:{path}", text + "\n")


def served_by(port: int, requests: int = 12) -> set:
    names = set()
    for _ in range(requests):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/echo")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        names.add(resp.getheader("X-Server"))
        conn.close()
    return names


def test_socket_mode_and_show_info_as_tools_read_it(lb):
    assert stat.S_IMODE(os.stat(lb.sock).st_mode) == 0o660
    info = cli(lb, "show info")
    assert info.endswith("\n\n")
    fields = dict(line.split(": ", 1) for line in info.splitlines() if line)
    keys = [line.split(": ", 1)[0] for line in info.splitlines() if line]
    assert keys[:9] == ["Name", "Version", "Release_date", "Nbthread", "Nbproc", "Process_num", "Pid",
                        "Uptime", "Uptime_sec"]
    for key in INFO_FIELDS_HATOP_NEEDS:
        assert key in fields
    major, minor = fields["Version"].split(".")[:2]
    assert (int(major), int(minor)) >= (1, 5)  # Ansible's module sends `state drain` only then
    assert fields["Pid"] == str(lb.proc.pid)
    assert "lbcore" in fields["Description"]
    assert all(":" not in value for value in fields.values())  # parsers split on ':'


def test_show_stat_is_the_stats_csv(lb):
    answer = cli(lb, "show stat")
    conn = http.client.HTTPConnection("127.0.0.1", lb.stats_port, timeout=5)
    conn.request("GET", "/stats.csv")
    csv_text = conn.getresponse().read().decode()
    conn.close()
    assert answer.endswith("\n\n")
    ours, theirs = answer[:-1].splitlines(), csv_text.splitlines()
    assert ours[0] == theirs[0]
    assert ours[0].startswith("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,"
                              "eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,")
    assert [row.split(",")[:2] for row in ours[1:]] == [row.split(",")[:2] for row in theirs[1:]]
    assert [row.split(",")[:2] for row in ours[1:]] == [
        ["web", "FRONTEND"], ["pool", "s1"], ["pool", "s2"], ["pool", "BACKEND"]]


def test_disable_enable_drain_weight_move_traffic(lb):
    assert served_by(lb.port) == {"s1", "s2"}
    assert cli(lb, "get weight pool/s1; disable server pool/s1") == "1 (initial 1)\n\n\n"
    assert served_by(lb.port) == {"s2"}
    state = cli(lb, "show servers state pool").splitlines()
    assert state[0] == "1"
    row = state[2].split(" ")
    assert len(row) == 25 and row[3] == "s1" and (row[5], row[6]) == ("0", "1")
    assert "MAINT" in cli(lb, "show stat").splitlines()[2]

    assert cli(lb, "set server pool/s1 state drain") == "\n"
    assert served_by(lb.port) == {"s2"}
    row = cli(lb, "show servers state").splitlines()[2].split(" ")
    assert (row[5], row[6]) == ("2", "8")
    assert cli(lb, "enable server pool/s1") == "\n"  # clears DRAIN too
    assert served_by(lb.port) == {"s1", "s2"}
    assert ",UP," in cli(lb, "show stat").splitlines()[2]

    assert cli(lb, "set weight pool/s2 0") == "\n"
    assert served_by(lb.port) == {"s1"}
    assert cli(lb, "get weight pool/s2") == "0 (initial 1)\n\n"
    assert cli(lb, "set server pool/s2 weight 100%") == "\n"
    assert cli(lb, "get weight pool/s2") == "1 (initial 1)\n\n"
    # The HTTP admin API shows what the socket did: one set of states.
    assert [s["weight"] for s in get_json(lb.stats_port)["backends"]["pool"]["servers"]] == [1, 1]
    logs = lb.logs()
    assert "stats admin: pool/s1 {\"state\": \"maint\"} from unix socket" in logs
    assert "Server pool/s1 set to MAINT by runtime API." in logs


def test_errors_as_haproxy_words_them(lb):
    assert cli(lb, "get weight pool/nosuch") == "No such server.\n\n"
    assert cli(lb, "disable server nosuch/s1") == "No such backend.\n\n"
    assert cli(lb, "get weight pool") == "Require 'backend/server'.\n\n"
    assert cli(lb, "set server pool/s1 state up") == \
        "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n\n"
    assert cli(lb, "set weight pool/s1 300") == "Absolute weight can only be between 0 and 256 inclusive.\n\n"
    assert cli(lb, "frobnicate").startswith("Unknown command")
    assert cli(lb, "help").startswith("The following commands are valid at this level:\n")


def test_show_sess_and_shutdown_sessions(lb):
    keep = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=5)
    keep.request("GET", "/echo")
    keep.getresponse().read()
    try:
        sessions = [line for line in cli(lb, "show sess").splitlines() if line]
        assert len(sessions) == 1 and "proto=tcpv4" in sessions[0] and "fe=web" in sessions[0]
    finally:
        keep.close()
    assert cli(lb, "shutdown sessions server pool/s1") == "\n"
    assert cli(lb, "shutdown sessions server pool/nosuch") == "No such server.\n\n"


def test_prompt_mode_keeps_the_connection(lb):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(lb.sock)

        def ask(line: str, until: bytes = b"> ") -> bytes:
            s.sendall(line.encode() + b"\n")
            data = b""
            while not data.endswith(until):
                chunk = s.recv(65536)
                assert chunk, f"closed after {data!r}"
                data += chunk
            return data

        assert ask("prompt") == b"\n> "
        assert ask("get weight pool/s1") == b"1 (initial 1)\n\n> "
        assert ask("get weight pool/s1; get weight pool/s2", b"> 1 (initial 1)\n\n> ") == \
            b"1 (initial 1)\n\n> 1 (initial 1)\n\n> "
        assert ask("set timeout cli 5") == b"\n> "
        assert ask("") == b"> "
        s.sendall(b"quit\n")
        assert s.recv(100) == b""


def test_changes_survive_reload_and_restart(lb):
    assert cli(lb, "disable server pool/s1; set weight pool/s2 7") == "\n\n"
    lb.reload()
    time.sleep(1.0)
    assert cli(lb, "get weight pool/s2") == "7 (initial 1)\n\n"
    assert served_by(lb.port) == {"s2"}
    lb.signal(signal.SIGTERM)
    assert lb.wait(15) == 0
    assert not os.path.exists(lb.sock)  # removed at stop
    lb.start()
    wait_unix(lb.sock, proc=lb.proc)
    assert cli(lb, "get weight pool/s2") == "7 (initial 1)\n\n"
    assert "MAINT" in cli(lb, "show stat").splitlines()[2]


def test_user_level_over_tcp(backends):
    port, stats_port, cli_port = free_port(), free_port(), free_port()
    config = runtime_config(backends, port, stats_port, f"ipv4@127.0.0.1:{cli_port}", level="user")
    proc = LbcoreProcess(config).start(wait_ports=[port, cli_port])
    try:
        target = f"tcp:127.0.0.1:{cli_port}"
        for command in ("disable server pool/s1", "set weight pool/s1 0", "set server pool/s1 state drain",
                        "clear counters", "shutdown sessions server pool/s1", "enable health pool/s1"):
            assert socat(target, command + "\n") == "Permission denied\n\n"
        assert socat(target, "get weight pool/s1; disable server pool/s1\n") == \
            "1 (initial 1)\n\nPermission denied\n\n"
        assert socat(target, "show cli level\n") == "user\n\n"
        assert socat(target, "show info\n").startswith("Name: HAProxy\n")
        assert socat(target, "show stat\n").startswith("# pxname,svname,")
        assert served_by(port) == {"s1", "s2"}  # nothing changed
    finally:
        proc.stop()


def test_operator_may_clear_counters_but_not_all(backends):
    port, cli_port = free_port(), free_port()
    config = http_config([b.address for b in backends], port)
    config["stats"] = {"socket": {"path": f"ipv4@127.0.0.1:{cli_port}", "level": "operator"}}
    proc = LbcoreProcess(config).start(wait_ports=[port, cli_port])
    try:
        target = f"tcp:127.0.0.1:{cli_port}"
        assert socat(target, "clear counters\n") == "\n"
        assert socat(target, "clear counters all\n") == "Permission denied\n\n"
        assert socat(target, "disable server pool/s1\n") == "Permission denied\n\n"
    finally:
        proc.stop()


def test_bad_socket_path_is_a_clear_start_error(backends, tmp_path):
    config = http_config([b.address for b in backends], free_port())
    config["stats"] = {"socket": {"path": str(tmp_path / "missing-dir" / "admin.sock")}}
    proc = LbcoreProcess(config)
    proc.start(wait_ports=[])
    assert proc.wait(15) == 1
    assert "stats.socket" in proc.logs() and "Traceback" not in proc.logs()


def test_workers_share_one_socket(backends):
    workdir = tempfile.mkdtemp(prefix="lbcore-rtw-")
    sock = os.path.join(workdir, "admin.sock")
    port, stats_port = free_port(), free_port()
    config = runtime_config(backends, port, stats_port, sock, workers=2)
    proc = LbcoreProcess(config, workdir=workdir).start()
    try:
        wait_unix(sock, proc=proc.proc)
        deadline = time.monotonic() + 15
        while get_json(stats_port)["process"].get("processes") != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cli(sock, "disable server pool/s1") == "\n"
        # 24 fresh connections spread over both workers: none reaches s1.
        assert served_by(port, 24) == {"s2"}
        assert cli(sock, "enable server pool/s1") == "\n"
        assert served_by(port, 24) == {"s1", "s2"}
        rows = [r.split(",") for r in cli(sock, "show stat").splitlines()[1:] if r]
        frontend = next(r for r in rows if r[1] == "FRONTEND")
        assert int(frontend[7]) >= 48  # stot: every worker's sessions summed
        assert "Nbthread: 2" in cli(sock, "show info")
        # show sess lists every worker's sessions: a kept-alive client shows up.
        keep = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        keep.request("GET", "/echo")
        keep.getresponse().read()
        try:
            sessions = [line for line in cli(sock, "show sess").splitlines() if line]
            assert len(sessions) == 1 and "fe=web be=pool" in sessions[0], sessions
        finally:
            keep.close()
    finally:
        proc.stop()


# -- side by side with haproxy 2.6 ---------------------------------------------

def haproxy_cfg(sock_admin: str, sock_user: str, port: int, servers) -> str:
    lines = "\n".join(f"    server s{i} {s.address}" for i, s in enumerate(servers, 1))
    return f"""global
    stats socket {sock_admin} mode 600 level admin
    stats socket {sock_user} mode 600 level user
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend web
    bind 127.0.0.1:{port}
    default_backend pool
backend pool
{lines}
"""


def test_same_answers_as_haproxy(backends):
    need_haproxy()
    work = tempfile.mkdtemp(prefix="rt-side-")
    h_admin, h_user = os.path.join(work, "h-admin.sock"), os.path.join(work, "h-user.sock")
    l_admin = os.path.join(work, "l-admin.sock")
    h_port, l_port, l_cli_user = free_port(), free_port(), free_port()
    haproxy = HaproxyProcess(haproxy_cfg(h_admin, h_user, h_port, backends)).start(wait_ports=[h_port])
    config = http_config([b.address for b in backends], l_port)
    config["stats"] = {"socket": {"path": l_admin}}
    lbcore = LbcoreProcess(config, workdir=work).start(wait_ports=[l_port])
    user_config = http_config([b.address for b in backends], free_port())
    user_config["stats"] = {"socket": {"path": f"ipv4@127.0.0.1:{l_cli_user}", "level": "user"}}
    user_lb = LbcoreProcess(user_config).start(wait_ports=[l_cli_user])
    try:
        wait_unix(l_admin)

        def both(command, level="admin"):
            if level == "admin":
                return cli(h_admin, command), cli(l_admin, command)
            return cli(h_user, command), socat(f"tcp:127.0.0.1:{l_cli_user}", command + "\n")

        h, l = both("help")
        assert h.splitlines()[0] == l.splitlines()[0]
        for command in ("disable server pool/s1", "set weight pool/s1 2", "set server pool/s1 state drain"):
            h, l = both(command, "user")
            assert h == l == "Permission denied\n\n"
        for command in ("get weight pool/s1", "set weight pool/s1 50%", "get weight pool/s1",
                        "set server pool/s2 weight 10", "get weight pool/s2",
                        "get weight pool/s1; disable server pool/s1", "get weight pool/nosuch",
                        "get weight nosuch/s1", "set server pool/s2 state drain", "enable server pool/s2",
                        "set server pool/s1 state bogus", "set weight pool/s1 999", "show backend"):
            h, l = both(command)
            assert h == l, command
        h, l = both("show servers state")
        h_lines, l_lines = h.splitlines(), l.splitlines()
        assert h_lines[:2] == l_lines[:2]
        assert [len(x.split(" ")) for x in h_lines[2:]] == [len(x.split(" ")) for x in l_lines[2:]]
        # name, addr, op/admin state and weights of each server agree
        pick = lambda row: [row.split(" ")[i] for i in (1, 3, 4, 5, 6, 7, 8, 18)]  # noqa: E731
        assert [pick(x) for x in h_lines[2:] if x] == [pick(x) for x in l_lines[2:] if x]
        h, l = both("show stat")
        h_head, l_head = h.splitlines()[0].split(","), l.splitlines()[0].split(",")
        assert l_head[:-1] == h_head[:len(l_head) - 1]
        h, l = both("show info")
        assert [x.split(":")[0] for x in h.splitlines()[:9]] == [x.split(":")[0] for x in l.splitlines()[:9]]
    finally:
        haproxy.stop()
        lbcore.stop()
        user_lb.stop()


def test_shutdown_sessions_closes_a_tcp_tunnel(tmp_path):
    echo = BackendProcess("e1", tcp_echo=True).start()
    port = free_port()
    sock = str(tmp_path / "admin.sock")
    config = {
        "global": {"log": {"target": "stdout"}},
        "stats": {"socket": {"path": sock}},
        "frontends": {"db": {"bind": f"127.0.0.1:{port}", "mode": "tcp", "backend": "pool"}},
        "backends": {"pool": {"mode": "tcp", "servers": [{"name": "e1", "address": echo.address}]}},
    }
    lb = LbcoreProcess(config).start()
    try:
        wait_unix(sock, proc=lb.proc)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"ping\n")
            assert conn.recv(100) == b"ping\n"
            assert "be=pool srv=e1" in cli(sock, "show sess")
            assert cli(sock, "shutdown sessions server pool/e1") == "\n"
            try:
                assert conn.recv(100) == b""
            except ConnectionResetError:
                pass
        assert cli(sock, "show sess") == "\n"
    finally:
        lb.stop()
        echo.stop()
