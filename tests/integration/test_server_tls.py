"""TLS to servers (servers[].tls), http mode: verification against a CA and
a CRL, the name check (SNI, else verifyhost), the SNI sent, pooled TLS
connections reused, the PROXY header before the handshake, and handshake
failures counted as failed connects."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading

import pytest

from tests.pki import CA
from tests.support import BackendProcess, check_config, free_port, get_json, http_config


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    good, other = CA(d, "good-ca"), CA(d, "other-ca")
    cert, key, _ = good.issue("backend.test", dns=["backend.test", "*.pool.test"])
    revoked_cert, revoked_key, revoked_serial = good.issue("revoked.test", dns=["revoked.test"])
    return {
        "ca": good.path, "other_ca": other.path,
        "cert": cert, "key": key,
        "revoked": (revoked_cert, revoked_key),
        "crl": good.crl([revoked_serial]),
    }


@pytest.fixture
def tls_backend(pki):
    started = []

    def start(name="s1", cert=None, key=None, tcp_echo=False):
        b = BackendProcess(name, tcp_echo=tcp_echo,
                           args=["--tls-cert", cert or pki["cert"], "--tls-key", key or pki["key"]]).start()
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


def lb_with(start_lbcore, backend, tls: dict, **backend_keys):
    port, stats = free_port(), free_port()
    config = http_config([backend.address], port, backend=backend_keys)
    config["backends"]["pool"]["servers"][0]["tls"] = tls
    config["stats"] = {"bind": f"127.0.0.1:{stats}"}
    start_lbcore(config)
    return port, stats


def servers(stats: int) -> dict:
    return {row["name"]: row for row in get_json(stats)["backends"]["pool"]["servers"]}


def get(port: int, path: str = "/echo", conn=None):
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_verified_tls_with_sni_reuses_one_connection(start_lbcore, tls_backend, pki):
    backend = tls_backend()
    port, stats = lb_with(start_lbcore, backend, {"ca": pki["ca"], "sni": "backend.test"})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(5):
        status, body = get(port, conn=conn)
        assert status == 200
        assert json.loads(body)["server"] == "s1"
    status, body = get(port, "/tls", conn=conn)
    seen = json.loads(body)
    # Six requests, one handshake: the TLS connection went back to the pool.
    assert seen == {"handshakes": 1, "sni": ["backend.test"]}
    # Another client takes the same pooled connection.
    status, body = get(port, "/tls")
    assert json.loads(body)["handshakes"] == 1
    assert servers(stats)["s1"]["connection_errors"] == 0


def test_an_unknown_ca_fails_the_connect_and_answers_503(start_lbcore, tls_backend, pki):
    backend = tls_backend()
    port, stats = lb_with(start_lbcore, backend, {"ca": pki["other_ca"]}, retries=1, redispatch=False)
    status, _ = get(port)
    assert status == 503
    assert servers(stats)["s1"]["connection_errors"] == 2  # the first try and one retry


def test_verifyhost_is_checked_without_sending_sni(start_lbcore, tls_backend, pki):
    backend = tls_backend()
    port, _ = lb_with(start_lbcore, backend, {"ca": pki["ca"], "verifyhost": "api.pool.test"})
    status, _ = get(port)
    assert status == 200  # *.pool.test covers it
    status, body = get(port, "/tls")
    assert json.loads(body)["sni"] == [None]  # HAProxy sends no SNI unless told to


def test_a_verifyhost_mismatch_answers_503(start_lbcore, tls_backend, pki):
    backend = tls_backend()
    port, stats = lb_with(start_lbcore, backend, {"ca": pki["ca"], "verifyhost": "other.test"}, retries=0)
    assert get(port)[0] == 503
    assert servers(stats)["s1"]["connection_errors"] == 1


def test_the_sni_is_the_name_checked(start_lbcore, tls_backend, pki):
    # verifyhost matches, but the SNI sent does not: HAProxy checks the SNI.
    backend = tls_backend()
    port, _ = lb_with(start_lbcore, backend,
                      {"ca": pki["ca"], "verifyhost": "backend.test", "sni": "elsewhere.test"}, retries=0)
    assert get(port)[0] == 503


def test_verify_none_accepts_any_certificate(start_lbcore, tls_backend, pki):
    backend = tls_backend()
    port, _ = lb_with(start_lbcore, backend, {"verify": "none", "ca": pki["other_ca"], "verifyhost": "x.test"})
    assert get(port)[0] == 200


def test_a_revoked_certificate_is_refused_with_a_crl(start_lbcore, tls_backend, pki):
    good = tls_backend("s1")
    revoked = tls_backend("s2", *pki["revoked"])
    port, stats = free_port(), free_port()
    config = http_config([good.address, revoked.address], port, backend={"retries": 0, "redispatch": False})
    for server in config["backends"]["pool"]["servers"]:
        server["tls"] = {"ca": pki["ca"], "crl": pki["crl"]}
    config["stats"] = {"bind": f"127.0.0.1:{stats}"}
    start_lbcore(config)
    statuses = sorted(get(port)[0] for _ in range(4))
    assert statuses == [200, 200, 503, 503]
    rows = servers(stats)
    assert rows["s1"]["connection_errors"] == 0
    assert rows["s2"]["connection_errors"] == 2


def test_the_proxy_header_goes_before_the_handshake(start_lbcore, pki):
    # A server that reads a PROXY v1 line in clear, then speaks TLS.
    listener = socket.create_server(("127.0.0.1", 0))
    seen = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["cert"], pki["key"])

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            line = b""
            while not line.endswith(b"\r\n"):
                line += conn.recv(1)
            seen.append(line)
            with context.wrap_socket(conn, server_side=True) as tls:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += tls.recv(4096)
                seen.append(request)
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    address = "127.0.0.1:%d" % listener.getsockname()[1]
    port = free_port()
    config = http_config([address], port)
    config["backends"]["pool"]["servers"][0].update(
        {"send_proxy": "v1", "tls": {"ca": pki["ca"], "sni": "backend.test"}})
    start_lbcore(config)
    assert get(port) == (200, b"ok")
    thread.join(10)
    listener.close()
    assert seen[0].startswith(b"PROXY TCP4 127.0.0.1 127.0.0.1 ")
    assert seen[1].startswith(b"GET /echo HTTP/1.1\r\n")


def test_config_errors_name_the_key(tmp_path, pki):
    port = free_port()
    config = http_config(["127.0.0.1:1"], port)
    config["backends"]["pool"]["servers"][0]["tls"] = {"sni": "a.test"}
    result = check_config(config)
    assert result.returncode == 2
    assert "backends.pool.servers[0].tls: verify is required (the default) but no CA is given" in result.stdout \
        + result.stderr

    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    config["backends"]["pool"]["servers"][0]["tls"] = {"ca": str(not_pem), "verify": "sometimes",
                                                       "alpn": []}
    out = check_config(config)
    text = out.stdout + out.stderr
    assert out.returncode == 2
    assert "backends.pool.servers[0].tls.verify: invalid value 'sometimes'" in text
    assert "backends.pool.servers[0].tls.alpn:" in text

    config["backends"]["pool"]["servers"][0]["tls"] = {"ca": str(not_pem)}
    out = check_config(config)
    assert out.returncode == 2
    assert "backends.pool.servers[0].tls.ca:" in out.stdout + out.stderr


FAST_CHECKS = {"interval": "100ms", "timeout": "1s", "rise": 1, "fall": 1}


def wait_status(stats: int, name: str, status: str, timeout: float = 5.0) -> dict:
    from tests.support import wait_until
    wait_until(lambda: servers(stats)[name]["status"] == status, timeout, f"{name} {status}")
    return servers(stats)[name]


def test_http_checks_go_over_tls_and_a_bad_ca_marks_the_server_down(start_lbcore, tls_backend, pki):
    good, bad = tls_backend("s1"), tls_backend("s2")
    port, stats = free_port(), free_port()
    config = http_config([good.address, bad.address], port, backend={
        "health": dict(FAST_CHECKS, type="http", path="/healthcheck", initial_state="down")})
    config["backends"]["pool"]["servers"][0]["tls"] = {"ca": pki["ca"], "check_sni": "check.pool.test"}
    config["backends"]["pool"]["servers"][1]["tls"] = {"ca": pki["other_ca"]}
    config["stats"] = {"bind": f"127.0.0.1:{stats}"}
    start_lbcore(config)
    row = wait_status(stats, "s1", "UP")
    assert row["check_status"] == "L7OK" and row["check_code"] == 200
    time = __import__("time")
    time.sleep(0.5)
    row = servers(stats)["s2"]
    assert row["status"] == "DOWN" and row["check_status"] == "L6RSP", row
    # Only s1 serves; its checks sent check_sni, its traffic no SNI.
    assert {get(port)[0] for _ in range(4)} == {200}
    names = set(json.loads(get(port, "/tls")[1])["sni"])
    assert names == {"check.pool.test", None}
    # The server's health follows its checks.
    good.set_health(500)
    wait_status(stats, "s1", "DOWN")
    assert get(port)[0] == 503


def test_tcp_checks_over_tls_pass_on_a_handshake(start_lbcore, start_backend, tls_backend, pki):
    tls_server = tls_backend("s1")
    plain = start_backend("s2")  # plain HTTP: a TLS handshake with it fails
    port, stats = free_port(), free_port()
    config = http_config([tls_server.address, plain.address], port, backend={
        "health": dict(FAST_CHECKS, type="tcp", initial_state="down")})
    config["backends"]["pool"]["servers"][0]["tls"] = {"ca": pki["ca"]}
    # check-ssl without ssl: the traffic stays plain, the checks speak TLS.
    config["backends"]["pool"]["servers"][1]["tls"] = {"verify": "none", "traffic": False, "checks": True}
    config["stats"] = {"bind": f"127.0.0.1:{stats}"}
    start_lbcore(config)
    assert wait_status(stats, "s1", "UP")["check_status"] == "L6OK"
    __import__("time").sleep(0.5)
    assert servers(stats)["s2"]["status"] == "DOWN"
    assert servers(stats)["s2"]["check_status"] == "L6RSP"


def test_checks_to_another_port_stay_plain(start_lbcore, start_backend, tls_backend, pki):
    # HAProxy: `ssl` makes the checks TLS too, unless they go to another port.
    tls_server = tls_backend("s1")
    plain_agent = start_backend("agent")
    port, stats = free_port(), free_port()
    config = http_config([tls_server.address], port, backend={
        "health": dict(FAST_CHECKS, type="http", path="/healthcheck", port=plain_agent.port,
                       initial_state="down")})
    config["backends"]["pool"]["servers"][0]["tls"] = {"ca": pki["ca"]}
    config["stats"] = {"bind": f"127.0.0.1:{stats}"}
    start_lbcore(config)
    assert wait_status(stats, "s1", "UP")["check_status"] == "L7OK"
    assert get(port)[0] == 200


# -- tcp mode --------------------------------------------------------------------------

def tcp_config(servers_: list, port: int, stats: int, **backend) -> dict:
    return {
        "global": {"log": {"target": "stdout", "format": "http"}},
        "stats": {"bind": f"127.0.0.1:{stats}"},
        "frontends": {"db": {"bind": f"127.0.0.1:{port}", "mode": "tcp", "backend": "pool"}},
        "backends": {"pool": dict({"mode": "tcp", "servers": servers_}, **backend)},
    }


def talk(port: int, *lines: bytes) -> list:
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for line in lines:
            sock.sendall(line)
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            answers.append(data)
    return answers


def test_tcp_mode_relays_over_tls_with_sni(start_lbcore, tls_backend, pki):
    echo = tls_backend("db1", tcp_echo=True)
    port, stats = free_port(), free_port()
    start_lbcore(tcp_config([{"name": "db1", "address": echo.address,
                              "tls": {"ca": pki["ca"], "sni": "backend.test"}}], port, stats))
    payload = b"x" * 200000 + b"\n"
    from tests.support import wait_until
    # lbcore's start-up wait made a session, and so a handshake: let it end.
    wait_until(lambda: servers(stats)["db1"]["total_sessions"] >= 1
               and servers(stats)["db1"]["current_sessions"] == 0, 5, "the start-up session")
    before = int(talk(port, b"?tls\n")[0].split()[1].split(b"=")[1])
    hello, info, big = talk(port, b"hello\n", b"?tls\n", payload)
    assert hello == b"hello\n"
    assert info == b"db1 handshakes=%d sni=backend.test\n" % (before + 1)
    assert big == payload
    # The session ends with the client, and its bytes are counted.
    wait_until(lambda: servers(stats)["db1"]["current_sessions"] == 0, 5, "session closed")
    assert servers(stats)["db1"]["bytes_in"] >= len(payload)


def test_tcp_mode_refuses_an_unverified_server_and_tries_the_next(start_lbcore, tls_backend, pki):
    echo = tls_backend("db1", tcp_echo=True)
    port, stats = free_port(), free_port()
    start_lbcore(tcp_config([
        {"name": "bad", "address": echo.address, "tls": {"ca": pki["other_ca"]}},
        {"name": "good", "address": echo.address, "tls": {"ca": pki["ca"], "verifyhost": "backend.test"}},
    ], port, stats, balance="first", retries=1, redispatch=True))
    from tests.support import wait_until
    # lbcore's start-up wait made a session, which tried bad first: let it finish.
    wait_until(lambda: servers(stats)["good"]["total_sessions"] >= 1, 5, "the start-up session")
    before = servers(stats)["bad"]["connection_errors"]
    assert talk(port, b"ping\n") == [b"ping\n"]  # bad failed its handshake; the retry went to good
    rows = servers(stats)
    assert rows["bad"]["connection_errors"] == before + 1
    assert rows["good"]["connection_errors"] == 0


def test_tcp_mode_tls_client_to_tls_server_with_proxy_header(start_lbcore, pki, tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    seen = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["cert"], pki["key"])

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            header = conn.recv(16)  # a v2 header's fixed part, then its addresses
            header += conn.recv(int.from_bytes(header[14:16], "big"))
            seen.append(header)
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(tls.recv(100).upper())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port, stats = free_port(), free_port()
    config = tcp_config([{"name": "s", "address": "127.0.0.1:%d" % listener.getsockname()[1],
                          "send_proxy": "v2", "tls": {"ca": pki["ca"], "verifyhost": "backend.test"}}],
                        port, stats)
    config["frontends"]["db"]["tls"] = {"cert": pki["cert"], "key": pki["key"]}
    start_lbcore(config)
    client = ssl.create_default_context(cafile=pki["ca"])
    with client.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                            server_hostname="backend.test") as sock:
        sock.sendall(b"shout\n")
        assert sock.recv(100) == b"SHOUT\n"
    thread.join(10)
    listener.close()
    assert seen[0].startswith(b"\r\n\r\n\x00\r\nQUIT\n")


def test_a_crl_file_that_is_not_a_crl_is_refused(tmp_path, pki):
    config = http_config(["127.0.0.1:1"], free_port())
    bad = tmp_path / "crl.pem"
    bad.write_text("-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n")
    config["backends"]["pool"]["servers"][0]["tls"] = {"ca": pki["ca"], "crl": str(bad)}
    out = check_config(config)
    assert out.returncode == 2
    assert "backends.pool.servers[0].tls.crl: cannot use this file:" in out.stdout + out.stderr


class ProxiedServer:
    """A server that wants a PROXY v1 line first, then (with `context`) TLS,
    then one HTTP request per connection: what HAProxy's checks of a
    `send-proxy ssl` server speak too."""

    def __init__(self, context=None):
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.headers: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            conn.settimeout(5)
            line = b""
            while not line.endswith(b"\r\n") and len(line) < 120:
                piece = conn.recv(1)
                if not piece:
                    return
                line += piece
            if not line.startswith(b"PROXY "):
                return
            self.headers.append(line)
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
            request = b""
            while b"\r\n\r\n" not in request:
                piece = conn.recv(4096)
                if not piece:
                    return
                request += piece
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.listener.close()


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_checks_of_a_send_proxy_server_send_the_header_first(start_lbcore, pki, tls):
    context = None
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki["cert"], pki["key"])
    server = ProxiedServer(context)
    try:
        port, stats = free_port(), free_port()
        config = http_config([server.address], port, backend={
            "health": dict(FAST_CHECKS, type="http", path="/healthcheck", initial_state="down")})
        config["backends"]["pool"]["servers"][0]["send_proxy"] = "v1"
        if tls:
            config["backends"]["pool"]["servers"][0]["tls"] = {"ca": pki["ca"], "verifyhost": "backend.test"}
        config["stats"] = {"bind": f"127.0.0.1:{stats}"}
        start_lbcore(config)
        assert wait_status(stats, "s1", "UP")["check_status"] == "L7OK"
        assert get(port) == (200, b"ok")
        assert all(h.startswith(b"PROXY TCP4 127.0.0.1 127.0.0.1 ") for h in server.headers)
    finally:
        server.close()
