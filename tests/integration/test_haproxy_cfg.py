"""`lbcore -f haproxy.cfg` beside `haproxy -f` on the same file.

The config is written in the shape kolla-ansible renders (global, defaults,
a stats listen with auth, a monitor-uri frontend, frontend/backend pairs per
API with httpchk, Galera as a tcp listen with backup servers), plus a TLS
frontend as openstack-ansible writes it. Both balancers run the same file at
once, each on its own loopback VIP chosen by `${VIP}`, in front of the same
servers; every drill is run against both and must give the same answers.
The lb.yaml that `lbcore convert` writes runs the same drills.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import time

import pytest

from tests.haproxy import HAPROXY, need_haproxy
from tests.support import ROOT, free_port, wait_port

CONFIG = """\
# kolla-ansible shape: haproxy_main.cfg.j2 then one file per service
global
    log 127.0.0.1:${SYSLOG_PORT} local1
    maxconn 4000
    nbthread 1
    tune.ssl.default-dh-param 4096
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384

defaults
    log global
    option redispatch
    retries 3
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout queue 1m
    timeout connect 10s
    timeout client 1m
    timeout server 1m
    timeout check 10s
    balance roundrobin
    maxconn 2000

listen stats
   bind ${VIP}:${STATS_PORT}
   mode http
   stats enable
   stats uri /
   stats refresh 15s
   stats realm Haproxy\\ Stats
   stats auth openstack:s3cr3t

frontend status
    bind ${VIP}:${MONITOR_PORT}
    mode http
    monitor-uri /

frontend keystone_internal_front
    mode http
    option forwardfor
    bind ${VIP}:${KEYSTONE_PORT}
    default_backend keystone_internal_back

backend keystone_internal_back
    mode http
    option httpchk GET /healthcheck
    server ctl1 ${CTL1} check inter 200 rise 1 fall 1
    server ctl2 ${CTL2} check inter 200 rise 1 fall 1
    server ctl3 ${CTL3} check inter 200 rise 1 fall 1

frontend glance_tls_front
    mode http
    http-request deny if { path -i -m beg /server-status }
    http-request del-header X-Forwarded-Proto
    http-request set-header X-Forwarded-Proto https if { ssl_fc }
    bind ${VIP}:${TLS_PORT} ssl crt "${PEM}" alpn h2,http/1.1
    default_backend keystone_internal_back

frontend horizon_redirect_front
    mode http
    bind ${VIP}:${REDIRECT_PORT}
    redirect scheme https code 301 if !{ ssl_fc } !{ path_reg ^/.well-known/acme-challenge/.+ }

# openstack-ansible shape: forwardfor except the loopback network
frontend glance-front-1
    bind ${VIP}:${OSA_PORT}
    option httplog
    option forwardfor except 127.0.0.0/8
    mode http
    default_backend keystone_internal_back

listen mariadb
    mode tcp
    option clitcpka
    timeout client 3600s
    option srvtcpka
    timeout server 3600s
    bind ${VIP}:${DB_PORT}
    server ctl1 ${CTL1} check inter 200 rise 1 fall 1 on-marked-down shutdown-sessions
    server ctl2 ${CTL2} check inter 200 rise 1 fall 1 backup on-marked-down shutdown-sessions
    server ctl3 ${CTL3} check inter 200 rise 1 fall 1 backup on-marked-down shutdown-sessions
"""

PORTS = ("STATS_PORT", "MONITOR_PORT", "KEYSTONE_PORT", "TLS_PORT", "DB_PORT", "SYSLOG_PORT", "REDIRECT_PORT",
         "OSA_PORT")


def lbcore_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "lbcore.cli", *args]


def lbcore_env(extra=None) -> dict:
    env = dict(os.environ, **(extra or {}))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Balancer:
    """One of the two, on its own VIP, running the shared file."""

    def __init__(self, name: str, cmd: list[str], env: dict, workdir: str,
                 wait=("STATS_PORT", "MONITOR_PORT", "KEYSTONE_PORT", "TLS_PORT", "DB_PORT", "OSA_PORT")):
        self.name = name
        self.env = env
        self.log_path = os.path.join(workdir, f"{name}.log")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
        self.vip = env["VIP"]
        for key in wait:
            wait_port(int(env[key]), host=self.vip, proc=self.proc)

    def port(self, key: str) -> int:
        return int(self.env[key])

    def get(self, key: str, path: str, headers=None, tls=False):
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(self.vip, self.port(key), timeout=5, context=context)
        else:
            conn = http.client.HTTPConnection(self.vip, self.port(key), timeout=5)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        except (OSError, http.client.HTTPException) as exc:
            # Say which of the two failed, with the end of its log.
            raise OSError(f"{self.name} {path}: {exc!r}\n{self.logs()[-1500:]}") from exc
        finally:
            conn.close()

    def served_by(self, key: str, count: int, tls=False) -> list[str]:
        names = []
        for _ in range(count):
            status, _, body = self.get(key, "/echo", tls=tls)
            assert status == 200, (self.name, status, body[:200])
            names.append(json.loads(body)["server"])
        return names

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT if self.name == "lbcore" else signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def logs(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")


@pytest.fixture
def pem(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    result = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"], capture_output=True)
    if result.returncode != 0:
        pytest.skip("openssl cannot make a certificate")
    combined = tmp_path / "haproxy.pem"
    combined.write_bytes(cert.read_bytes() + key.read_bytes())
    return str(combined)


@pytest.fixture
def cluster(start_backend, pem, tmp_path):
    """Three controllers, haproxy and lbcore on the same file."""
    need_haproxy()
    servers = [start_backend(f"ctl{i}") for i in (1, 2, 3)]
    path = tmp_path / "haproxy.cfg"
    path.write_text(CONFIG)
    base = {"PEM": pem}
    for i, server in enumerate(servers, 1):
        base[f"CTL{i}"] = server.address
        base[f"CTL{i}_PORT"] = str(server.port)
    running = []

    def start(name: str, vip: str, cmd_for) -> Balancer:
        env = dict(base, VIP=vip, **{key: str(free_port()) for key in PORTS})
        balancer = Balancer(name, cmd_for(str(path)), lbcore_env(env), str(tmp_path))
        running.append(balancer)
        return balancer

    haproxy = start("haproxy", "127.20.0.1", lambda p: [HAPROXY, "-db", "-f", p])
    lbcore = start("lbcore", "127.20.0.2", lambda p: lbcore_cmd("-db", "-f", p))
    yield servers, haproxy, lbcore, path, start
    for balancer in running:
        balancer.stop()


def wait_until(predicate, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_kolla_shaped_config_behaves_as_haproxy(cluster):
    servers, haproxy, lbcore, path, _ = cluster
    for lb in (haproxy, lbcore):
        # Balancing per API: round robin over the three controllers, per request.
        names = lb.served_by("KEYSTONE_PORT", 6)
        assert sorted(names) == ["ctl1", "ctl1", "ctl2", "ctl2", "ctl3", "ctl3"], (lb.name, names)
        # option forwardfor: X-Forwarded-For carries the client address.
        status, _, body = lb.get("KEYSTONE_PORT", "/echo")
        headers = {k.lower(): v for k, v in json.loads(body)["headers"]}
        assert headers.get("x-forwarded-for") == "127.0.0.1", (lb.name, headers)
        # TLS frontend (ssl crt PEM alpn h2,http/1.1): http/1.1 over TLS, and
        # kolla's rules: X-Forwarded-Proto replaced, /server-status denied.
        assert len(set(lb.served_by("TLS_PORT", 3, tls=True))) == 3, lb.name
        # forwardfor except 127.0.0.0/8: a loopback client gets no X-Forwarded-For.
        status, _, body = lb.get("OSA_PORT", "/echo")
        assert "x-forwarded-for" not in {k.lower() for k, _ in json.loads(body)["headers"]}, lb.name
        # monitor-uri answers 200 itself; anything else has no backend: 503.
        assert lb.get("MONITOR_PORT", "/")[0] == 200, lb.name
        assert lb.get("MONITOR_PORT", "/other")[0] == 503, lb.name
        # The stats listen: basic auth, and `;csv` gives HAProxy's CSV.
        assert lb.get("STATS_PORT", "/;csv")[0] == 401, lb.name
        token = base64.b64encode(b"openstack:s3cr3t").decode()
        status, _, body = lb.get("STATS_PORT", "/;csv", {"Authorization": f"Basic {token}"})
        assert status == 200 and body.startswith(b"# pxname,svname,qcur,qmax,scur,smax,slim,stot,"), lb.name
        rows = {tuple(line.split(",")[:2]) for line in body.decode().splitlines()[1:]}
        assert ("keystone_internal_back", "ctl2") in rows and ("mariadb", "ctl3") in rows, (lb.name, rows)
        # Galera: one writer; the backups take nothing while it is up.
        assert set(lb.served_by("DB_PORT", 4)) == {"ctl1"}, lb.name

    # ctl1 dies: the first backup (ctl2) alone takes Galera, as HAProxy does
    # without `option allbackups`; keystone goes on with the two others.
    servers[0].kill()
    for lb in (haproxy, lbcore):
        wait_until(lambda: set(_try(lb, "DB_PORT", 4)) == {"ctl2"}, what=f"{lb.name}: galera on ctl2")
        assert set(lb.served_by("DB_PORT", 6)) == {"ctl2"}, lb.name
        assert set(lb.served_by("KEYSTONE_PORT", 6)) == {"ctl2", "ctl3"}, lb.name


def test_kolla_rules_behave_as_haproxy(cluster):
    _, haproxy, lbcore, _, _ = cluster
    for lb in (haproxy, lbcore):
        status, _, body = lb.get("TLS_PORT", "/echo", {"X-Forwarded-Proto": "gopher"}, tls=True)
        headers = [(k.lower(), v) for k, v in json.loads(body)["headers"]]
        assert [v for k, v in headers if k == "x-forwarded-proto"] == ["https"], (lb.name, headers)
        assert lb.get("TLS_PORT", "/server-status", tls=True)[0] == 403, lb.name
        # The redirect frontend: to https, except the ACME path (which has no backend: 503).
        status, head, _ = lb.get("REDIRECT_PORT", "/x?y=1", {"Host": "horizon.local"})
        assert (status, head.get("location")) == (301, "https://horizon.local/x?y=1"), (lb.name, status, head)
        assert lb.get("REDIRECT_PORT", "/.well-known/acme-challenge/token")[0] == 503, lb.name


def _try(lb: Balancer, key: str, count: int) -> list[str]:
    try:
        return lb.served_by(key, count)
    except (AssertionError, OSError, ValueError, http.client.HTTPException):
        return []


def test_converted_lb_yaml_behaves_the_same(cluster, tmp_path):
    servers, haproxy, lbcore, path, start = cluster
    # Convert with the same variables the running lbcore had, on a third VIP.
    env = lbcore_env({k: v for k, v in lbcore.env.items() if k.isupper()} | {"VIP": "127.20.0.3"})
    out = subprocess.run(lbcore_cmd("convert", "-f", str(path)), capture_output=True, text=True,
                         env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    assert re.search(r"# .*haproxy\.cfg:\d+ backend keystone_internal_back", out.stdout)
    converted = tmp_path / "lb.yaml"
    converted.write_text(out.stdout)
    balancer = Balancer("converted", lbcore_cmd("-c", str(converted)), env, str(tmp_path))
    try:
        for lb in (haproxy, balancer):
            assert sorted(lb.served_by("KEYSTONE_PORT", 3)) == ["ctl1", "ctl2", "ctl3"], lb.name
            assert set(lb.served_by("DB_PORT", 3)) == {"ctl1"}, lb.name
            assert lb.get("MONITOR_PORT", "/")[0] == 200
    finally:
        balancer.stop()


# -- `-c`: the check, beside haproxy -c -----------------------------------------------------

BROKEN = {
    "unknown keyword": ("frontend f\n    bind 127.0.0.1:8080\n    frobnicate on\n", 3),
    "unmatched quote": ('global\n    log "/dev/log local0\n', 2),
    "bad server address": ("backend b\n    server s1 127.0.0.1:99999\n", 2),
    "bad timeout": ("defaults\n    timeout client 10parsecs\n", 2),
    "server in frontend": ("frontend f\n    bind 127.0.0.1:8080\n    server s 127.0.0.1:1\n", 3),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_check_refuses_what_haproxy_refuses_naming_file_and_line(case, tmp_path):
    need_haproxy()
    text, line = BROKEN[case]
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    ours = subprocess.run(lbcore_cmd("-c", "-f", str(path)), capture_output=True, text=True,
                          env=lbcore_env(), timeout=30)
    theirs = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert theirs.returncode != 0 and ours.returncode != 0, (ours, theirs)
    assert f"[{path}:{line}]" in theirs.stdout + theirs.stderr
    assert f"{path}:{line}:" in ours.stderr, ours.stderr


def test_check_accepts_a_valid_file_like_haproxy(tmp_path, pem):
    need_haproxy()
    path = tmp_path / "haproxy.cfg"
    path.write_text(CONFIG)
    env = {"VIP": "127.0.0.1", "PEM": pem, "CTL1": "127.0.0.1:1", "CTL2": "127.0.0.1:2", "CTL3": "127.0.0.1:3",
           "CTL1_PORT": "1", "CTL2_PORT": "2", "CTL3_PORT": "3"}
    env.update({key: str(1000 + i) for i, key in enumerate(PORTS)})
    ours = subprocess.run(lbcore_cmd("-c", "-f", str(path)), capture_output=True, text=True,
                          env=lbcore_env(env), timeout=30)
    theirs = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True,
                            env=dict(os.environ, **env), timeout=30)
    assert theirs.returncode == 0, theirs.stdout + theirs.stderr
    assert ours.returncode == 0 and ours.stdout == "Configuration file is valid\n", ours.stderr
    # tune.*, nbthread and alpn h2 each give one warning, naming file:line.
    assert re.search(rf"\[WARNING\] {re.escape(str(path))}:6: tune.ssl.default-dh-param: ", ours.stderr)
    assert re.search(r":5: nbthread: lbcore runs 1 worker process", ours.stderr)
    assert re.search(r":\d+: bind alpn: h2 is not offered", ours.stderr)
    quiet = subprocess.run(lbcore_cmd("-q", "-c", "-f", str(path)), capture_output=True, text=True,
                           env=lbcore_env(env), timeout=30)
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""


def test_version_names_the_haproxy_syntax():
    out = subprocess.run(lbcore_cmd("-v"), capture_output=True, text=True, env=lbcore_env(), timeout=30)
    assert out.returncode == 0
    assert re.fullmatch(r"lbcore version \S+ - reads HAProxy 2\.6 configuration syntax\n", out.stdout)


def test_daemon_forks_pidfile_and_sigusr2_reload(tmp_path):
    """`daemon` forks (the parent exits 0 once the child serves), -p writes
    the pidfile, SIGUSR2 reloads like SIGHUP, -sf stops the previous one."""
    port = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(f"global\n    daemon\ndefaults\n    mode http\n    timeout client 5s\n"
                   f"frontend status\n    bind 127.0.0.1:{port}\n    monitor-uri /up\n")
    pidfile = tmp_path / "lb.pid"
    out = subprocess.run(lbcore_cmd("-f", str(cfg), "-p", str(pidfile)), capture_output=True, text=True,
                         env=lbcore_env(), timeout=30, cwd=tempfile.gettempdir())
    assert out.returncode == 0, out.stderr
    pid = int(pidfile.read_text())
    try:
        wait_port(port)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/up")
        assert conn.getresponse().status == 200
        conn.close()
        cfg.write_text(cfg.read_text().replace("monitor-uri /up", "monitor-uri /again"))
        os.kill(pid, signal.SIGUSR2)

        def reloaded():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/again")
            status = conn.getresponse().status
            conn.close()
            return status == 200
        wait_until(reloaded, what="SIGUSR2 reload")
    finally:
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    wait_until(lambda: not _alive(pid), what="daemon exit")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        # A zombie of ours would still answer kill 0; the daemon is not our child.
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot and user need root")
def test_master_worker_chroots_drops_privileges_and_reloads_on_sigusr2(tmp_path):
    """kolla's `-W -db -p PIDFILE`: the worker chroots and runs as `user`
    once bound; SIGUSR2 to the master starts a new worker on the changed
    file (it takes over the listeners and the stats socket) and the old one
    finishes; SIGTERM stops everything."""
    jail = tmp_path / "jail"
    jail.mkdir()
    port, stats_port = free_port(), free_port()
    sock = tmp_path / "admin.sock"
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(f"""global
    chroot {jail}
    user nobody
    group nogroup
    log /dev/log local0
    stats socket {sock} mode 600 level admin
defaults
    mode http
    timeout client 5s
listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /
frontend status
    bind 127.0.0.1:{port}
    monitor-uri /up
""")
    pidfile = tmp_path / "haproxy.pid"
    master = subprocess.Popen(lbcore_cmd("-W", "-db", "-p", str(pidfile), "-f", str(cfg)),
                              env=lbcore_env(), cwd=str(tmp_path))
    try:
        wait_port(port, proc=master)
        wait_until(pidfile.exists, what="pidfile")
        assert int(pidfile.read_text()) == master.pid
        [worker] = _children(master.pid)
        with open(f"/proc/{worker}/status") as f:
            uid_line = next(line for line in f if line.startswith("Uid:"))
        assert uid_line.split()[1:] == ["65534"] * 4  # nobody, real and effective and saved
        assert os.readlink(f"/proc/{worker}/root") == str(jail)

        def status(path: str) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", path)
                return conn.getresponse().status
            finally:
                conn.close()
        assert status("/up") == 200
        cfg.write_text(cfg.read_text().replace("monitor-uri /up", "monitor-uri /again"))
        master.send_signal(signal.SIGUSR2)
        wait_until(lambda: _children(master.pid) not in ([], [worker]) and worker not in _children(master.pid),
                   timeout=10, what="the old worker to finish")
        assert all(status("/again") == 200 for _ in range(8))  # only the new worker answers
        out = subprocess.run(["socat", "-", f"UNIX-CONNECT:{sock}"], input="show info\n", capture_output=True,
                             text=True, timeout=5)
        assert out.stdout.startswith("Name: "), out  # the runtime API answers from the new worker
        # A broken file: the new worker started to read it says why and
        # exits; the running worker goes on.
        cfg.write_text(cfg.read_text() + "    frobnicate\n")
        [current] = _children(master.pid)
        master.send_signal(signal.SIGUSR2)
        time.sleep(0.5)
        wait_until(lambda: _children(master.pid) == [current], what="the refused worker gone", timeout=30)
        assert status("/again") == 200
    finally:
        master.send_signal(signal.SIGTERM)
        master.wait(10)
    assert master.returncode == 0 and not pidfile.exists()


TRIPLEO = """\
# puppet-tripleo shape: one listen per endpoint, internal and public binds
# (the public one with TLS) both transparent, Galera all-backup with a
# stick table, the stats listen serving the Prometheus exporter too.
global
  daemon
  group haproxy
  log /dev/log local0
  maxconn 4096
  pidfile "${DIR}/haproxy.pid"
  ssl-default-bind-ciphers ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384
  ssl-default-bind-options no-sslv3 no-tlsv10
  stats socket "${DIR}/stats" mode 600 level user
  stats timeout 2m
  user haproxy

defaults
  log  global
  maxconn  2048
  mode  tcp
  retries  3
  timeout  http-request 10s
  timeout  queue 2m
  timeout  connect 10s
  timeout  client 2m
  timeout  server 2m
  timeout  check 10s

listen haproxy.stats
  bind ${VIP}:${STATS_PORT} transparent
  mode http
  http-request use-service prometheus-exporter if { path /metrics }
  stats enable
  stats uri /
  stats auth admin:pass

listen keystone_public
  bind ${VIP}:${KEYSTONE_PORT} transparent
  bind ${VIP}:${TLS_PORT} transparent ssl crt "${PEM}"
  mode http
  option httpchk
  option httplog
  option forwardfor
  server ctl0.internalapi.local ${CTL1} check fall 5 inter 2000 on-marked-down shutdown-sessions rise 2
  server ctl1.internalapi.local ${CTL2} check fall 5 inter 2000 on-marked-down shutdown-sessions rise 2
  server ctl2.internalapi.local ${CTL3} check fall 5 inter 2000 on-marked-down shutdown-sessions rise 2

listen mysql
  bind ${VIP}:${DB_PORT} transparent
  option tcpka
  option httpchk
  stick on dst
  stick-table type ip size 1000
  timeout client 90m
  timeout server 90m
  server ctl0.internalapi.local ${CTL1} backup check inter 200 rise 1 fall 1 on-marked-down shutdown-sessions
  server ctl1.internalapi.local ${CTL2} backup check inter 200 rise 1 fall 1 on-marked-down shutdown-sessions
  server ctl2.internalapi.local ${CTL3} backup check inter 200 rise 1 fall 1 on-marked-down shutdown-sessions
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="user/group need root")
def test_tripleo_shaped_config_behaves_as_haproxy(start_backend, pem, tmp_path):
    need_haproxy()
    servers = [start_backend(f"ctl{i}") for i in (1, 2, 3)]
    path = tmp_path / "haproxy.cfg"
    path.write_text(TRIPLEO)
    running = []
    try:
        for name, vip, cmd in (("haproxy", "127.21.0.1", [HAPROXY, "-db", "-f", str(path)]),
                               ("lbcore", "127.21.0.2", lbcore_cmd("-db", "-f", str(path)))):
            workdir = tmp_path / name
            workdir.mkdir()
            os.chmod(workdir, 0o755)
            env = {"VIP": vip, "PEM": pem, "DIR": str(workdir), "OSA_PORT": str(free_port())}
            env.update({f"CTL{i}": s.address for i, s in enumerate(servers, 1)})
            env.update({key: str(free_port()) for key in PORTS})
            running.append(Balancer(name, cmd, lbcore_env(env), str(workdir),
                                    wait=("STATS_PORT", "KEYSTONE_PORT", "TLS_PORT", "DB_PORT")))
        token = base64.b64encode(b"admin:pass").decode()
        for lb in running:
            # Internal (plain) and public (TLS) binds of one listen, one pool.
            assert sorted(lb.served_by("KEYSTONE_PORT", 3)) == ["ctl1", "ctl2", "ctl3"], lb.name
            assert sorted(lb.served_by("TLS_PORT", 3, tls=True)) == ["ctl1", "ctl2", "ctl3"], lb.name
            # The stats listen: CSV with auth, and the exporter at /metrics.
            status, _, body = lb.get("STATS_PORT", "/;csv", {"Authorization": f"Basic {token}"})
            assert status == 200 and b"keystone_public" in body, lb.name
            status, _, body = lb.get("STATS_PORT", "/metrics", {"Authorization": f"Basic {token}"})
            assert status == 200 and b"haproxy_backend_active_servers" in body, lb.name
            # Every Galera server is a backup: the first usable one takes all.
            assert set(lb.served_by("DB_PORT", 4)) == {"ctl1"}, lb.name
        servers[0].kill()
        for lb in running:
            wait_until(lambda: set(_try(lb, "DB_PORT", 3)) == {"ctl2"}, what=f"{lb.name}: galera on ctl2")
        # lbcore dropped to the haproxy user once bound, as haproxy did.
        lbcore = running[1]
        with open(f"/proc/{lbcore.proc.pid}/status") as f:
            uid = next(line for line in f if line.startswith("Uid:")).split()[1]
        import pwd
        assert int(uid) == pwd.getpwnam("haproxy").pw_uid
    finally:
        for lb in running:
            lb.stop()


PERSISTENCE = """\
# openstack-ansible's rate limit (a stick table, track-sc0, deny 429) and
# cookie persistence (horizon without memcached), in the backends.
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend horizon-front-1
    bind ${VIP}:${WEB_PORT}
    default_backend horizon-back

backend horizon-back
    balance roundrobin
    cookie SERVERID insert indirect nocache
    server ctl1 ${CTL1} cookie ctl1
    server ctl2 ${CTL2} cookie ctl2

frontend keystone-front-1
    bind ${VIP}:${API_PORT}
    default_backend keystone-back

backend keystone-back
    balance leastconn
    stick-table type ip size 256k expire 30s store http_req_rate(10s)
    http-request track-sc0 src
    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 5 }
    server ctl1 ${CTL1}
    server ctl2 ${CTL2}
"""


def test_rate_limit_and_cookie_persistence_behave_as_haproxy(start_backend, tmp_path):
    need_haproxy()
    servers = [start_backend(f"ctl{i}") for i in (1, 2)]
    path = tmp_path / "haproxy.cfg"
    path.write_text(PERSISTENCE)
    running = []
    try:
        for name, vip, cmd in (("haproxy", "127.22.0.1", [HAPROXY, "-db", "-f", str(path)]),
                               ("lbcore", "127.22.0.2", lbcore_cmd("-db", "-f", str(path)))):
            env = {"VIP": vip, "CTL1": servers[0].address, "CTL2": servers[1].address,
                   "WEB_PORT": str(free_port()), "API_PORT": str(free_port())}
            running.append(Balancer(name, cmd, lbcore_env(env), str(tmp_path), wait=("WEB_PORT", "API_PORT")))
        for lb in running:
            # The first answer sets SERVERID; sent back, it pins the server.
            status, head, body = lb.get("WEB_PORT", "/echo")
            cookie = head.get("Set-Cookie") or head.get("set-cookie")
            assert status == 200 and cookie and cookie.startswith("SERVERID="), (lb.name, head)
            pinned = json.loads(body)["server"]
            assert cookie.split(";")[0] == f"SERVERID={pinned}", (lb.name, cookie)
            for _ in range(4):
                status, _, body = lb.get("WEB_PORT", "/echo", {"Cookie": f"SERVERID={pinned}"})
                assert json.loads(body)["server"] == pinned, lb.name
            # The 6th request within 10 s of one client is the first over the limit.
            statuses = [lb.get("API_PORT", "/echo")[0] for _ in range(8)]
            assert statuses == [200] * 5 + [429] * 3, (lb.name, statuses)
    finally:
        for lb in running:
            lb.stop()
