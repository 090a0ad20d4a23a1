"""TLS to servers from a haproxy.cfg, beside haproxy 2.6 on the same file.

The backends re-encrypt as TripleO and openstack-ansible render them
(`ssl verify required ca-file ...` with ca-base, `verifyhost`, `crl-file`,
`check-ssl`, global `ssl-default-server-*`); a server signed by another CA,
one whose certificate lacks the verifyhost name and one revoked by the CRL
are marked DOWN by their checks in both balancers, and both answer the same.
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from tests.haproxy import HAPROXY, need_haproxy
from tests.integration.test_haproxy_cfg import Balancer, lbcore_cmd, lbcore_env
from tests.pki import CA
from tests.support import BackendProcess, free_port, wait_until

CONFIG = """\
global
    ca-base "${PKI}"
    ssl-server-verify required
    ssl-default-server-options ssl-min-ver TLSv1.2
    ssl-default-server-ciphers ECDHE+AESGCM:ECDHE+CHACHA20
    ssl-default-server-ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384

defaults
    mode http
    retries 3
    option redispatch
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    timeout check 1s

listen keystone_internal
    bind ${VIP}:${API_PORT}
    option httpchk GET /healthcheck
    server good ${GOOD} check inter 100 rise 1 fall 1 ssl verify required ca-file good-ca.pem crl-file crl.pem verifyhost backend.test
    server otherca ${GOOD} check inter 100 rise 1 fall 1 ssl verify required ca-file other-ca.pem
    server wrongname ${GOOD} check inter 100 rise 1 fall 1 ssl ca-file good-ca.pem verifyhost nothere.test
    server revoked ${REVOKED} check inter 100 rise 1 fall 1 ssl ca-file good-ca.pem crl-file crl.pem

listen sni_and_check_sni
    bind ${VIP}:${SNI_PORT}
    option httpchk GET /healthcheck
    server a ${GOOD} check inter 100 rise 1 fall 1 ssl ca-file good-ca.pem sni str(api.pool.test) check-sni nothere.test
    server b ${GOOD} check inter 100 rise 1 fall 1 ssl ca-file good-ca.pem sni str(nothere.test) check-sni api.pool.test

listen plain_traffic_tls_checks
    bind ${VIP}:${PLAIN_PORT}
    server plain ${PLAIN} check inter 100 rise 1 fall 1 check-ssl verify none

listen galera_tls
    mode tcp
    bind ${VIP}:${DB_PORT}
    server db1 ${ECHO} check inter 100 rise 1 fall 1 ssl ca-file good-ca.pem verifyhost backend.test
"""

PORTS = ("API_PORT", "SNI_PORT", "PLAIN_PORT", "DB_PORT")


@pytest.fixture
def servers(tmp_path):
    pki = tmp_path / "pki"
    pki.mkdir()
    good, other = CA(str(pki), "good-ca"), CA(str(pki), "other-ca")
    assert os.path.basename(other.path) == "other-ca.pem"
    cert, key, _ = good.issue("backend.test", dns=["backend.test", "*.pool.test"])
    revoked_cert, revoked_key, serial = good.issue("backend.test", dns=["backend.test"])
    os.rename(good.crl([serial]), pki / "crl.pem")
    started = [
        BackendProcess("good", args=["--tls-cert", cert, "--tls-key", key]),
        BackendProcess("revoked", args=["--tls-cert", revoked_cert, "--tls-key", revoked_key]),
        BackendProcess("plain"),
        BackendProcess("echo", tcp_echo=True, args=["--tls-cert", cert, "--tls-key", key]),
    ]
    for b in started:
        b.start()
    yield {"PKI": str(pki), "GOOD": started[0].address, "REVOKED": started[1].address,
           "PLAIN": started[2].address, "ECHO": started[3].address}
    for b in started:
        b.stop()


def test_server_tls_keywords_behave_as_haproxy(servers, tmp_path):
    need_haproxy()
    path = tmp_path / "haproxy.cfg"
    path.write_text(CONFIG)
    check = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, VIP="127.0.0.1", **servers, **{k: "1" for k in PORTS}))
    assert check.returncode == 0, check.stdout + check.stderr
    running = []
    try:
        for name, vip, cmd in (("haproxy", "127.22.0.1", [HAPROXY, "-db", "-f", str(path)]),
                               ("lbcore", "127.22.0.2", lbcore_cmd("-db", "-f", str(path)))):
            env = dict(servers, VIP=vip, **{key: str(free_port()) for key in PORTS})
            running.append(Balancer(name, cmd, lbcore_env(env), str(tmp_path), wait=PORTS))
        for lb in running:
            # Once the checks have run, only the verified server serves.
            wait_until(lambda: set(_served(lb, "API_PORT", 6)) == {"good"}, 10, f"{lb.name}: good alone")
            # a's checks send check-sni nothere.test (refused); b's traffic
            # sends sni nothere.test (refused): nothing serves.
            wait_until(lambda: _status(lb, "SNI_PORT") == 503, 10, f"{lb.name}: sni 503")
            # Plain traffic to a server whose checks speak TLS: a plain
            # HTTP server fails the handshake, so it goes DOWN.
            wait_until(lambda: _status(lb, "PLAIN_PORT") == 503, 10, f"{lb.name}: check-ssl DOWN")
            # tcp mode over TLS: the echo comes back decrypted.
            wait_until(lambda: _echo(lb) == b"galera\n", 10, f"{lb.name}: tcp echo over TLS")
    finally:
        for lb in running:
            lb.stop()


def _served(lb: Balancer, key: str, count: int) -> list:
    import json
    names = []
    for _ in range(count):
        status, _, body = lb.get(key, "/echo")
        names.append(json.loads(body)["server"] if status == 200 else status)
    return names


def _status(lb: Balancer, key: str) -> int:
    return lb.get(key, "/echo")[0]


def _echo(lb: Balancer) -> bytes:
    with socket.create_connection((lb.vip, lb.port("DB_PORT")), timeout=5) as sock:
        sock.sendall(b"galera\n")
        return sock.recv(100)
