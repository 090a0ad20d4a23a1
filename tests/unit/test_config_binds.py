"""`bind` entries given as mappings: {address, transparent}."""

import pytest

from lbcore.config import Address, ConfigError, loads

BASE = """
frontends:
  web:
    bind: {binds}
    backend: pool
backends:
  pool:
    servers: [{{name: s1, address: "127.0.0.1:8000"}}]
"""


def test_a_mapping_entry_may_bind_transparent():
    config = loads(BASE.format(binds='["127.0.0.1:80", {address: "10.0.0.100:80", transparent: true}]'))
    web = config.frontends["web"]
    assert web.binds == (Address("127.0.0.1", 80), Address("10.0.0.100", 80))
    assert web.transparent == frozenset({Address("10.0.0.100", 80)})


def test_a_mapping_without_transparent_is_a_plain_bind():
    config = loads(BASE.format(binds='{address: "10.0.0.100:80"}'))
    assert config.frontends["web"].binds == (Address("10.0.0.100", 80),)
    assert config.frontends["web"].transparent == frozenset()


@pytest.mark.parametrize("entry, message", [
    ('{transparent: true}', "frontends.web.bind.address: required key is missing"),
    ('{address: "10.0.0.1:80", transparent: maybe}', "frontends.web.bind.transparent"),
    ('{address: "10.0.0.1:80", freebind: true}', "frontends.web.bind.freebind"),
    ('{address: "10.0.0.1:80", tls: {cert: /x.pem}}', "a TLS setting of its own per bind is not supported"),
    ('[{address: "nowhere"}]', "frontends.web.bind[0].address"),
])
def test_a_bad_mapping_entry_is_a_clear_error(entry, message):
    with pytest.raises(ConfigError) as err:
        loads(BASE.format(binds=entry))
    assert any(message in problem for problem in err.value.problems), err.value.problems
