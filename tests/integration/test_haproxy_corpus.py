"""The configs in tests/corpus/haproxy_cfg/, written in the shapes
kolla-ansible, openstack-ansible and TripleO render, run unchanged under
haproxy 2.6 and lbcore at once (each on its own loopback VIPs, the
environment variables the files name), in front of the same three
controllers. Both must accept the files, and answer every request of the
drill alike: balancing per API, TLS, redirects, denies, the ACME path,
openstack-ansible's security.txt (an errorfile), monitor-uri, the stats
listen and its CSV, the exporter, Galera.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import http.client
import io
import json
import os
import pwd
import re
import grp
import socket
import ssl
import subprocess

import pytest
import yaml

from lbcore import haproxy_cfg
from lbcore.config import loads
from tests.haproxy import HAPROXY, need_haproxy, start_on_file, stop_on_file
from tests.integration.test_haproxy_cfg import lbcore_cmd, lbcore_env
from tests.support import ROOT, BackendProcess, free_port, wait_port, wait_until

CORPUS = ROOT / "tests" / "corpus" / "haproxy_cfg"
TOOLS = {
    "kolla": ["haproxy.cfg", "services.d"],
    "openstack-ansible": ["haproxy.cfg"],
    "tripleo": ["haproxy.cfg"],
}
CONTROLLERS = ("127.31.0.11", "127.31.0.12", "127.31.0.13")
PORT_KEYS = ("STATS_PORT", "METRICS_PORT", "MONITOR_PORT", "KEYSTONE_PORT", "KEYSTONE_ADMIN_PORT",
             "KEYSTONE_TLS_PORT", "GLANCE_PORT", "NOVA_PORT", "NOVA_METADATA_PORT", "NOVNC_PORT",
             "PLACEMENT_PORT", "NEUTRON_PORT", "NEUTRON_TLS_PORT", "HORIZON_PORT", "HORIZON_TLS_PORT",
             "DB_PORT", "HTTP_PORT", "HTTPS_PORT", "REDIS_PORT",
             "RABBIT_PORT", "CEPH_DASHBOARD_PORT")
PASSWORD = "s3cr3t"

# (what, port key, path, tls, extra headers) per tool; user for the stats.
DRILLS = {
    "kolla": [
        ("keystone internal", "KEYSTONE_PORT", "/echo", False, {}),
        ("keystone external TLS", "KEYSTONE_PORT@EXT", "/echo", True, {}),
        ("external deny", "KEYSTONE_PORT@EXT", "/server-status", True, {}),
        ("glance", "GLANCE_PORT", "/echo", False, {}),
        ("nova", "NOVA_PORT", "/echo", False, {}),
        ("nova metadata", "NOVA_METADATA_PORT", "/echo", False, {}),
        ("placement", "PLACEMENT_PORT", "/echo", False, {}),
        ("neutron", "NEUTRON_PORT", "/echo", False, {}),
        ("horizon", "HORIZON_PORT", "/echo", False, {}),
        ("horizon redirect", "HORIZON_PORT@EXT", "/auth/login/", False, {}),
        ("ACME path", "HORIZON_PORT@EXT", "/.well-known/acme-challenge/token", False, {}),
        ("ACME path over TLS", "HORIZON_TLS_PORT@EXT", "/.well-known/acme-challenge/token", True, {}),
        ("monitor", "MONITOR_PORT@API", "/", False, {}),
        ("stats", "STATS_PORT@API", "/;csv", False, {"auth": "openstack"}),
        ("stats without auth", "STATS_PORT@API", "/", False, {}),
        ("exporter", "METRICS_PORT@API", "/metrics", False, {}),
    ],
    "openstack-ansible": [
        ("keystone TLS", "KEYSTONE_PORT@EXT", "/echo", True, {}),
        ("keystone internal", "KEYSTONE_PORT", "/echo", False, {}),
        ("redirect to https", "HTTP_PORT@EXT", "/auth/login/", False, {}),
        ("horizon through the regex map", "HTTPS_PORT@EXT", "/echo", True, {}),
        ("security.txt from an errorfile", "HTTPS_PORT@EXT", "/.well-known/security.txt", True, {}),
        ("stats", "STATS_PORT", "/;csv", False, {"auth": "admin"}),
        ("exporter in the stats listen", "STATS_PORT", "/metrics", False, {"auth": "admin"}),
    ],
    "tripleo": [
        ("keystone admin", "KEYSTONE_ADMIN_PORT", "/echo", False, {}),
        ("keystone public TLS", "KEYSTONE_TLS_PORT@PUB", "/echo", True, {}),
        ("keystone internal", "KEYSTONE_PORT", "/echo", False, {}),
        ("redirect of the public name", "KEYSTONE_PORT", "/v3", False, {"host": "PUB_VIP"}),
        ("neutron public TLS", "NEUTRON_TLS_PORT@PUB", "/echo", True, {}),
        ("horizon sets its cookie", "HORIZON_PORT", "/echo", False, {}),
        ("ceph dashboard, source hash", "CEPH_DASHBOARD_PORT", "/echo", False, {}),
        ("stats over TLS", "STATS_PORT@CTL", "/;csv", True, {"auth": "admin"}),
        ("stats asks for credentials", "STATS_PORT@CTL", "/", True, {}),
    ],
}
# Response headers whose values must match (others, such as Date, differ).
SAME_HEADERS = ("location", "content-type", "cache-control", "set-cookie")


def _names():
    user = pwd.getpwuid(os.getuid()).pw_name
    return user, grp.getgrgid(os.getgid()).gr_name


@pytest.fixture(scope="module")
def controllers(tmp_path_factory, pem_file):
    """Three API controllers on their own loopback addresses (one port, as
    the tools render them), a Galera stand-in (tcp echo) and clustercheck
    on the first one only, and the certificate."""
    api_port, db_port, check_port, acme_port = free_port(), free_port(), free_port(), free_port()
    procs = [BackendProcess(f"ctl{i}", port=api_port, host=ip).start() for i, ip in enumerate(CONTROLLERS, 1)]
    procs.append(BackendProcess("db1", port=db_port, host=CONTROLLERS[0], tcp_echo=True).start())
    procs.append(BackendProcess("clustercheck", port=check_port, host=CONTROLLERS[0]).start())
    procs.append(BackendProcess("acme", port=acme_port, host=CONTROLLERS[0]).start())
    env = {"CTL1": CONTROLLERS[0], "CTL2": CONTROLLERS[1], "CTL3": CONTROLLERS[2],
           "DB1": CONTROLLERS[0], "DB2": CONTROLLERS[1], "DB3": CONTROLLERS[2],
           "API_PORT": str(api_port), "DB_BACK_PORT": str(db_port), "DB_CHECK_PORT": str(check_port),
           "ACME_PORT": str(acme_port), "PEM": pem_file, "STATS_PASSWORD": PASSWORD}
    yield env
    for proc in procs:
        proc.stop()


@pytest.fixture(scope="module")
def pem_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pem")
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    result = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                             "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"], capture_output=True)
    if result.returncode != 0:
        pytest.skip("openssl cannot make a certificate")
    (tmp / "haproxy.pem").write_bytes(cert.read_bytes() + key.read_bytes())
    return str(tmp / "haproxy.pem")


def balancer_env(tool: str, which: str, base: dict, tmp) -> dict:
    """The environment one balancer renders the files with: its own VIPs
    (127.30.x for haproxy, 127.32.x for lbcore), its ports, its paths."""
    net = "127.30" if which == "haproxy" else "127.32"
    user, group = _names()
    chroot = tmp / f"{which}-chroot"
    chroot.mkdir(exist_ok=True)
    log = tmp / f"{which}-syslog"
    env = dict(base, API=f"{net}.0.1", CTL_IP=f"{net}.0.1", VIP_INT=f"{net}.0.2", INT_VIP=f"{net}.0.2",
               VIP_EXT=f"{net}.0.3", EXT_VIP=f"{net}.0.3", PUB_VIP=f"{net}.0.3",
               CHROOT=str(chroot), RUN_USER=user, RUN_GROUP=group, SYSLOG="127.0.0.1",
               SOCKET=str(tmp / f"{which}.sock"), PIDFILE=str(tmp / f"{which}.pid"),
               ERRORS=str(CORPUS / tool), MAPS=str(CORPUS / tool))
    if tool != "kolla":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # a syslog the test owns
        sock.bind(str(log))
        env["SYSLOG"] = str(log)
        env["_syslog"] = sock
    for key in PORT_KEYS:
        env[key] = str(free_port())
    return env


def request(env: dict, port_key: str, path: str, tls: bool, extra: dict):
    key, _, where = port_key.partition("@")
    host = {"": env["VIP_INT"], "EXT": env["VIP_EXT"], "API": env["API"], "PUB": env["PUB_VIP"],
            "CTL": env["CTL_IP"]}[where]
    port = int(env[key])
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, port, timeout=15, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=15)
    headers = {}
    if "auth" in extra:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{extra['auth']}:{PASSWORD}".encode()).decode()
    if "host" in extra:
        headers["Host"] = env[extra["host"]]
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    kept = {name: resp.getheader(name) for name in SAME_HEADERS if resp.getheader(name) is not None}
    if "location" in kept:  # the balancers run on different VIPs
        location = kept["location"].replace(env["VIP_EXT"], "VIP").replace(env["PUB_VIP"], "VIP")
        kept["location"] = re.sub(r":[0-9]+/", ":PORT/", location)
    if "set-cookie" in kept:
        kept["set-cookie"] = kept["set-cookie"].split(";")[0]
    if resp.status == 401:  # the stats page asks for credentials (its 401 page is lbcore's own)
        return resp.status, (resp.getheader("www-authenticate") or "").split()[0]
    if resp.status == 200 and body.startswith(b'{"server"'):  # a test backend's echo
        seen = json.loads(body)
        if path == "/echo":
            return resp.status, kept, seen["server"], _header(seen, "x-forwarded-proto")
        return resp.status, kept, seen["server"]
    if path == "/;csv":
        rows = csv.DictReader(io.StringIO(body.decode().lstrip("# ")))
        # The servers of every backend (frontend rows differ by design: lbcore
        # names a listen's TLS half NAME.ssl, and its stats listen is no proxy).
        return resp.status, sorted((r["pxname"], r["svname"]) for r in rows
                                   if r["svname"] not in ("FRONTEND", "BACKEND"))
    if path == "/metrics":
        return resp.status, kept.get("content-type", "").split(";")[0]
    return resp.status, kept, body


def _header(seen: dict, name: str):
    for key, value in seen.get("headers", []):
        if key.lower() == name:
            return value
    return None


@pytest.mark.parametrize("tool", list(TOOLS))
def test_both_accept_the_files(tool, controllers, tmp_path):
    need_haproxy()
    env = balancer_env(tool, "lbcore", controllers, tmp_path)
    env.pop("_syslog", None)
    paths = [str(CORPUS / tool / name) for name in TOOLS[tool]]
    args = [arg for path in paths for arg in ("-f", path)]
    for name, cmd in (("haproxy", [HAPROXY, "-c", *args]), ("lbcore", lbcore_cmd("-c", *args))):
        result = subprocess.run(cmd, capture_output=True, text=True, env=lbcore_env(env), timeout=60)
        assert result.returncode == 0, (name, result.stdout, result.stderr)
        assert "Configuration file is valid" in result.stdout + result.stderr, name


@pytest.mark.parametrize("tool", list(TOOLS))
def test_the_drill_gets_the_same_answers(tool, controllers, tmp_path):
    need_haproxy()
    if os.getuid() != 0:
        pytest.skip("the files chroot and change user, as the tools render them: needs root")
    answers = {}
    for which in ("haproxy", "lbcore"):
        env = balancer_env(tool, which, controllers, tmp_path)
        syslog = env.pop("_syslog", None)
        paths = [str(CORPUS / tool / name) for name in TOOLS[tool]]
        path_args = [arg for path in paths for arg in ("-f", path)]
        cmd = [HAPROXY, "-db", *path_args] if which == "haproxy" else lbcore_cmd("-db", *path_args)
        log = open(tmp_path / f"{which}.log", "wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=lbcore_env(env), cwd=tmp_path)
        try:
            first = DRILLS[tool][0]
            host_port = request_target(env, first[1])
            wait_port(host_port[1], host=host_port[0], proc=proc, timeout=20)
            got = {}
            for what, port_key, path, tls, extra in DRILLS[tool]:
                try:
                    got[what] = request(env, port_key, path, tls, extra)
                except (OSError, http.client.HTTPException) as exc:
                    got[what] = f"failed: {exc!r}"
            answers[which] = got
        finally:
            stop_on_file(proc, log)
            if syslog is not None:
                syslog.close()
    haproxy, lbcore = answers["haproxy"], answers["lbcore"]
    for what in haproxy:
        h, l = haproxy[what], lbcore[what]
        if isinstance(h, tuple) and len(h) == 4:  # /echo: a controller answered, with the same XFP
            assert isinstance(l, tuple) and len(l) == 4, (what, h, l)
            assert (h[0], h[1], h[3]) == (l[0], l[1], l[3]), (what, h, l)
            assert h[2] in ("ctl1", "ctl2", "ctl3") and l[2] in ("ctl1", "ctl2", "ctl3"), (what, h, l)
        else:
            assert l == h, what


def request_target(env: dict, port_key: str) -> tuple[str, int]:
    key, _, where = port_key.partition("@")
    host = {"": env["VIP_INT"], "EXT": env["VIP_EXT"], "API": env["API"], "PUB": env["PUB_VIP"],
            "CTL": env["CTL_IP"]}[where]
    return host, int(env[key])


@pytest.mark.parametrize("tool", list(TOOLS))
def test_convert_writes_an_lb_yaml_that_loads(tool, controllers, tmp_path):
    env = balancer_env(tool, "lbcore", controllers, tmp_path)
    env.pop("_syslog", None)
    args = [arg for name in TOOLS[tool] for arg in ("-f", str(CORPUS / tool / name))]
    out = tmp_path / "lb.yaml"
    result = subprocess.run(lbcore_cmd("convert", *args, "-o", str(out)), capture_output=True, text=True,
                            env=lbcore_env(env), timeout=60)
    assert result.returncode == 0, result.stderr
    check = subprocess.run(lbcore_cmd("-c", str(out), "--check"), capture_output=True, text=True,
                           env=lbcore_env(env), timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def _rules_named(spec):
    """A spec with its compiled rules (objects without equality) as their names."""
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    return {name: repr(value) if name in ("acls", "tcp_request", "http_request", "http_response", "use_backend")
            else value for name, value in fields.items()}


def _shape(node):
    """What the lb.yaml loader reads from a node: tags and texts."""
    if isinstance(node, yaml.MappingNode):
        return {key.value: _shape(value) for key, value in node.value}
    if isinstance(node, yaml.SequenceNode):
        return [_shape(item) for item in node.value]
    return (node.tag, node.value)


@pytest.mark.parametrize("tool", list(TOOLS))
def test_the_files_read_to_the_config_of_their_lb_yaml(tool, controllers, tmp_path):
    """The reader hands its tree to the lb.yaml loader as YAML nodes of its
    own (haproxy_cfg/tree.py), values already typed: they say what the same
    tree written out as lb.yaml text by `convert` says once composed, and
    both read to the same Config."""
    env = balancer_env(tool, "lbcore", controllers, tmp_path)
    syslog = env.pop("_syslog", None)
    try:
        paths = [str(CORPUS / tool / name) for name in TOOLS[tool]]
        direct = haproxy_cfg.load(paths, env=env).config
        text, _ = haproxy_cfg.convert(paths, env=env)
        tree, _, _ = haproxy_cfg.build_tree(paths, env=env)
        via_text = loads(text, str(tmp_path / "lb.yaml"))
    finally:
        if syslog is not None:
            syslog.close()
    assert _shape(tree) == _shape(yaml.compose(text))
    assert direct.frontends and direct.backends
    for name in ("global_", "stats", "peers"):
        assert getattr(via_text, name) == getattr(direct, name), name
    assert via_text.userlists.keys() == direct.userlists.keys()
    for kind in ("frontends", "backends"):
        mine, theirs = getattr(direct, kind), getattr(via_text, kind)
        assert list(mine) == list(theirs)
        for name in mine:
            assert _rules_named(theirs[name]) == _rules_named(mine[name]), (kind, name)
