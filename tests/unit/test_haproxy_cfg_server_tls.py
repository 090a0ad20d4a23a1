"""haproxy.cfg server TLS keywords (ssl, verify, ca-file, crl-file,
verifyhost, sni, alpn, check-ssl, check-sni, ssl-default-server-*) as
servers[].tls, with file:line errors."""

from __future__ import annotations

from tests.unit.test_haproxy_cfg import BASE, errors, load


def test_server_tls_keywords_map_onto_servers_tls(tmp_path):
    from tests.pki import CA
    ca = CA(str(tmp_path), "ca")
    crl = ca.crl()
    be = load(tmp_path, f"""
global
    ca-base {tmp_path}
    ssl-default-server-options ssl-min-ver TLSv1.2
    ssl-default-server-ciphers ECDHE+AESGCM
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
listen api
    bind 127.0.0.1:8080
    option httpchk GET /healthcheck
    default-server ssl verify required ca-file ca.pem
    server a 127.0.0.1:8443 check crl-file {crl} verifyhost a.test sni str(sni.test) alpn h2,http/1.1 check-sni c.test
    server b 127.0.0.1:8444 check no-ssl check-ssl ciphers AES256-GCM-SHA384
    server c 127.0.0.1:8445 check no-check-ssl verify none
    server d 127.0.0.1:8446 check no-ssl
""").config.backends["api"]
    a, b, c, d = (s.tls for s in be.servers)
    assert (a.verify, a.ca, a.crl, a.verifyhost, a.sni, a.check_sni) == (
        "required", ca.path, crl, "a.test", "sni.test", "c.test")
    assert a.alpn == ("http/1.1",)  # h2 dropped: lbcore speaks HTTP/1.1 to servers
    assert (a.traffic, a.checks, a.min_version, a.ciphers) == (True, True, "TLSv1.2", "ECDHE+AESGCM")
    assert (b.traffic, b.checks, b.ciphers) == (False, True, "AES256-GCM-SHA384")
    assert (c.traffic, c.checks, c.verify) == (True, False, "none")
    assert d is None


def test_server_tls_checks_follow_the_port_and_ssl_server_verify(tmp_path):
    be = load(tmp_path, BASE.replace("defaults", "global\n    ssl-server-verify none\ndefaults") + """
listen galera
    mode tcp
    bind 127.0.0.1:3306
    server a 127.0.0.1:3306 check port 9200 ssl
    server b 127.0.0.1:3307 check port 9200 ssl check-ssl
""").config.backends["galera"]
    a, b = (s.tls for s in be.servers)
    assert a.verify == "none" and a.checks is False  # the checks go to another port: plain
    assert b.checks is True


def test_server_tls_errors_name_the_line(tmp_path):
    path = str(tmp_path / "haproxy.cfg")
    problems = errors(tmp_path, BASE + """
backend b
    server s 127.0.0.1:1 ssl
    server t 127.0.0.1:2 ssl verify none sni req.hdr(host)
    server u 127.0.0.1:3 ssl verify none ca-file missing.pem
""")
    assert any(p.startswith(f"{path}:8: server ssl: verify is required (the default) but no CA is given")
               for p in problems), problems
    assert any(p.startswith(f"{path}:9: server sni: 'sni req.hdr(host)': only a constant") for p in problems)
    assert any(p.startswith(f"{path}:10: server ca-file: file not found:") for p in problems), problems
