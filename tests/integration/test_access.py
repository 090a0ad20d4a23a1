"""Privilege and access: user/group/chroot, the stats endpoint's auth, the
runtime socket's levels, and the TLS defaults seen by `openssl s_client`."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from lbcore.stats.runtime_api import LEVEL_RANK, REGISTRY
from tests.support import (BackendProcess, LbcoreProcess, free_port, get_json, http_config, wait_port,
                           wait_unix)

from .rawhttp import RawClient, check_no_crash, start_watched

NOBODY, NOGROUP = 65534, 65534


def status_field(pid: int, name: str) -> list[str]:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split()[1:]
    return []


# -- user, group, chroot ---------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="chroot and user need root (CI runs as root)")
def test_user_group_chroot_from_lb_yaml():
    """lbcore binds, then chroots and drops to nobody:nogroup with no other
    group; it still serves, checks and answers stats; a reload it can no
    longer read is refused and it keeps running; SIGTERM ends it cleanly."""
    backend = BackendProcess("s1").start()
    jail = tempfile.mkdtemp(prefix="lbcore-jail-")
    os.chmod(jail, 0o755)
    port, stats = free_port(), free_port()
    config = http_config([backend.address], port, backend={
        "health": {"type": "http", "path": "/healthcheck", "interval": "300ms", "rise": 1, "fall": 1}})
    config["global"].update({"user": "nobody", "group": "nogroup", "chroot": jail})
    config["stats"] = {"bind": f"127.0.0.1:{stats}"}
    lb = start_watched(config)
    try:
        pid = lb.proc.pid
        deadline = time.monotonic() + 5
        while status_field(pid, "Uid")[:1] != [str(NOBODY)] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status_field(pid, "Uid") == [str(NOBODY)] * 4  # real, effective, saved, fs
        assert status_field(pid, "Gid") == [str(NOGROUP)] * 4
        assert status_field(pid, "Groups") == [str(NOGROUP)]  # root's groups are gone
        assert os.readlink(f"/proc/{pid}/root") == os.path.realpath(jail)
        with RawClient(port) as c:
            c.request("GET", "/echo")
            assert c.read_response().status == 200
        time.sleep(0.7)  # a few probes from inside the jail
        servers = get_json(stats)["backends"]["pool"]["servers"]
        assert servers[0]["status"] == "UP" and servers[0]["check_status"] == "L7OK", servers
        lb.signal(signal.SIGHUP)  # the config is outside the jail now
        time.sleep(0.5)
        assert lb.proc.poll() is None
        with RawClient(port) as c:
            c.request("GET", "/echo")
            assert c.read_response().status == 200
        lb.signal(signal.SIGTERM)
        assert lb.wait(10) == 0
        assert "privileges dropped: chroot" in lb.logs()
    finally:
        lb.stop()
        backend.stop()
        shutil.rmtree(jail, ignore_errors=True)
    check_no_crash()


# -- the stats endpoint ------------------------------------------------------------------

USER, PASSWORD = "admin", "s3cret"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def stats_lb():
    backend = BackendProcess("s1").start()
    port, stats = free_port(), free_port()
    config = http_config([backend.address], port)
    config["stats"] = {"bind": f"127.0.0.1:{stats}", "admin": True,
                       "auth": {"user": USER, "password": PASSWORD}}
    lb = start_watched(config)
    yield lb, stats
    lb.stop()
    backend.stop()


def raw_stats(port: int, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                head, _, body = data.partition(b"\r\n\r\n")
                m = re.search(rb"(?i)content-length:\s*(\d+)", head)
                if m and len(body) >= int(m.group(1)):
                    break
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return (int(m.group(1)) if m else 0), data


BAD_CREDENTIALS = [
    None,
    basic(USER, "wrong"),
    basic("root", PASSWORD),
    basic(USER, PASSWORD + "x"),
    basic(USER, ""),
    "Basic " + base64.b64encode(USER.encode()).decode(),  # no colon
    "Basic !!!not-base64!!!",
    "Basic " + base64.b64encode(b"admin:s3cret\x00").decode(),
    "Bearer " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
    "Basic",
    "Basic " + "A" * 8000,
]
PATHS = ["/", "/stats.json", "/stats.csv", "/metrics", "/stats.json?x=1", "//stats.json",
         "/admin/../stats.json", "/nope"]


@pytest.mark.parametrize("credentials", BAD_CREDENTIALS, ids=range(len(BAD_CREDENTIALS)))
def test_every_path_refuses_what_the_auth_does_not_allow(stats_lb, credentials):
    _, port = stats_lb
    for path in PATHS:
        auth = f"Authorization: {credentials}\r\n" if credentials else ""
        status, data = raw_stats(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
        assert status == 401, (path, status, data[:200])
        assert b"backends" not in data and b"pool" not in data, data[:300]


def test_admin_changes_need_the_credentials(stats_lb):
    lb, port = stats_lb
    body = json.dumps({"state": "maint"}).encode()
    for credentials in BAD_CREDENTIALS:
        auth = f"Authorization: {credentials}\r\n" if credentials else ""
        status, _ = raw_stats(port, (f"POST /admin/backends/pool/servers/s1 HTTP/1.1\r\nHost: x\r\n{auth}"
                                     f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        assert status == 401, (credentials, status)
    servers = get_json(port, auth=(USER, PASSWORD))["backends"]["pool"]["servers"]
    assert servers[0]["status"] != "MAINT", "a refused request changed a server"
    # The right credentials work, so the refusals above were about them.
    status, _ = raw_stats(port, (f"GET /stats.json HTTP/1.1\r\nHost: x\r\n"
                                 f"Authorization: {basic(USER, PASSWORD)}\r\n\r\n").encode())
    assert status == 200


def test_admin_disabled_refuses_changes_even_with_credentials():
    backend = BackendProcess("s1").start()
    port, stats = free_port(), free_port()
    config = http_config([backend.address], port)
    config["stats"] = {"bind": f"127.0.0.1:{stats}", "admin": False,
                       "auth": {"user": USER, "password": PASSWORD}}
    lb = start_watched(config)
    try:
        body = b'{"state": "maint"}'
        status, _ = raw_stats(stats, (f"POST /admin/backends/pool/servers/s1 HTTP/1.1\r\nHost: x\r\n"
                                      f"Authorization: {basic(USER, PASSWORD)}\r\n"
                                      f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        assert status == 403
        assert get_json(stats, auth=(USER, PASSWORD))["backends"]["pool"]["servers"][0]["status"] == "UP"
    finally:
        lb.stop()
        backend.stop()


# -- the runtime socket's levels ------------------------------------------------------------

def _command_line(spec) -> str:
    """A plausible line for a registered command, from its usage text."""
    words = []
    for word in spec.usage.split():
        if word.startswith("<bk>") or word == "<bk>/<srv>":
            words.append("pool/s1")
        elif word.startswith("<") or word.startswith("["):
            words.append({"<delay>": "5", "<weight>": "0"}.get(word, "x") if word.startswith("<") else "")
        else:
            words.append(word)
    line = " ".join(w for w in words if w)
    if spec.words[:2] == ("set", "server"):
        line = "set server pool/s1 state maint"
    if spec.words[:2] == ("set", "weight"):
        line = "set weight pool/s1 0"
    return line


def _socat(path: str, text: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(text.encode())
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode()


@pytest.mark.parametrize("level", ["user", "operator"])
def test_runtime_socket_refuses_every_command_above_its_level(level):
    """Each registered command whose level is above the socket's is refused,
    and nothing changes: derived from the registry, so a new admin command
    is covered the day it is added."""
    backend = BackendProcess("s1").start()
    workdir = tempfile.mkdtemp(prefix="lbcore-levels-")
    sock = os.path.join(workdir, "admin.sock")
    port, stats = free_port(), free_port()
    config = http_config([backend.address], port)
    config["stats"] = {"bind": f"127.0.0.1:{stats}", "socket": {"path": sock, "level": level}}
    lb = LbcoreProcess(config, workdir=workdir).start()
    try:
        wait_unix(sock, proc=lb.proc)
        above = [spec for spec in REGISTRY if LEVEL_RANK[spec.level] > LEVEL_RANK[level]]
        assert above, "no command above this level?"
        for spec in above:
            line = _command_line(spec)
            answer = _socat(sock, line + "\n")
            assert answer.startswith("Permission denied"), (line, answer)
        row = get_json(stats)["backends"]["pool"]["servers"][0]
        assert row["status"] == "UP" and row["weight"] == 1, row
        # Nor can a session raise its own level: there is no command for it.
        answer = _socat(sock, "admin; disable server pool/s1\n")
        assert answer.rstrip().endswith("Permission denied"), answer
        assert get_json(stats)["backends"]["pool"]["servers"][0]["status"] == "UP"
    finally:
        lb.stop()
        backend.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# -- TLS defaults -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_port(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls-defaults")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=localhost"], capture_output=True, check=True)
    backend = BackendProcess("s1").start()
    port = free_port()
    lb = start_watched(http_config([backend.address], port, frontend={"tls": {"cert": cert, "key": key}}))
    wait_port(port)
    yield port
    lb.stop()
    backend.stop()


def s_client(port: int, *args: str, stdin: bytes = b"") -> tuple[int, str]:
    result = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
                            input=stdin, capture_output=True, timeout=20)
    return result.returncode, (result.stdout + result.stderr).decode(errors="replace")


def negotiated(out: str) -> bool:
    return re.search(r"Cipher is (?!\(NONE\))\S+", out) is not None


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_tls_below_1_2_is_refused(tls_port, version):
    # SECLEVEL=0 lets the client offer the old versions: the refusal is ours.
    rc, out = s_client(tls_port, version, "-cipher", "DEFAULT@SECLEVEL=0")
    assert rc != 0 and not negotiated(out), out[-600:]


@pytest.mark.parametrize("version,name", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_tls_1_2_and_1_3_are_served_without_compression(tls_port, version, name):
    rc, out = s_client(tls_port, version)
    assert rc == 0 and negotiated(out) and name in out, out[-600:]
    assert "Compression: NONE" in out or version == "-tls1_3", out[-600:]  # 1.3 has none at all


def test_tls_renegotiation_is_refused(tls_port):
    rc, out = s_client(tls_port, "-tls1_2", stdin=b"R\n")
    assert "RENEGOTIATING" in out
    assert rc != 0 and "no renegotiation" in out, out[-600:]
