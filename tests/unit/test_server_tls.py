"""The name check on servers' certificates (HAProxy's rules) and the
contexts built from servers[].tls."""

from __future__ import annotations

import ssl

import pytest

from lbcore.config import ServerTLSSpec
from lbcore.server_tls import ServerTLS, check_name, name_matches


@pytest.mark.parametrize("pattern, name, ok", [
    ("api.example.com", "api.example.com", True),
    ("API.example.com", "api.EXAMPLE.com", True),
    ("*.example.com", "api.example.com", True),
    ("*.example.com", "a.b.example.com", False),  # one label only
    ("*.example.com", "example.com", False),
    ("*.com", "example.com", False),  # not a whole public suffix
    ("a*.example.com", "ab.example.com", False),
    ("api.example.com", "other.example.com", False),
])
def test_name_matches(pattern, name, ok):
    assert name_matches(pattern, name) is ok


class FakeSSLObject:
    def __init__(self, cert):
        self.cert = cert

    def getpeercert(self):
        return self.cert


def test_check_name_reads_san_dns_and_subject_cn():
    cert = {"subject": ((("commonName", "cn.test"),),),
            "subjectAltName": (("DNS", "*.pool.test"), ("IP Address", "127.0.0.1"))}
    assert check_name(FakeSSLObject(cert), "a.pool.test") is None
    assert check_name(FakeSSLObject(cert), "cn.test") is None  # HAProxy reads CNs too
    assert "do not match 'other.test'" in check_name(FakeSSLObject(cert), "other.test")
    assert check_name(FakeSSLObject(cert), None) is None
    assert check_name(FakeSSLObject({}), "a.test") == "the server presented no certificate"


def test_the_name_checked_is_the_sni_else_verifyhost(tmp_path):
    from tests.pki import CA
    ca = CA(str(tmp_path), "ca").path
    tls = ServerTLS(ServerTLSSpec(ca=ca, sni="sni.test", verifyhost="host.test", check_sni="chk.test"))
    assert (tls.sni, tls.verify_name, tls.check_sni, tls.check_verify_name) == (
        "sni.test", "sni.test", "chk.test", "chk.test")
    tls = ServerTLS(ServerTLSSpec(ca=ca, verifyhost="host.test"))
    assert (tls.sni, tls.verify_name, tls.check_verify_name) == ("", "host.test", "host.test")
    assert tls.context.verify_mode == ssl.CERT_REQUIRED and tls.check_context is tls.context
    tls = ServerTLS(ServerTLSSpec(verify="none", verifyhost="host.test", check_alpn=("http/1.1",)))
    assert tls.verify_name is None and tls.context.verify_mode == ssl.CERT_NONE
    assert tls.check_context is not tls.context  # its own ALPN
