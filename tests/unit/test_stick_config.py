"""lb.yaml keys of stick tables, persistence, cookies and peers."""

import textwrap

import pytest

from lbcore import config
from lbcore.config import ConfigError


def load(text):
    return config.loads(textwrap.dedent(text))


def problems(text):
    with pytest.raises(ConfigError) as info:
        load(text)
    return info.value.problems


GOOD = """
peers:
  lbnodes:
    local: lb1
    nodes:
      - {name: lb1, address: "127.0.0.1:10000"}
      - {name: lb2, address: "127.0.0.2:10000"}
frontends:
  fe:
    bind: "127.0.0.1:8080"
    backend: be
    stick_table: {type: ipv6, size: 100k, store: [http_req_rate(10s), http_err_rate(10s)]}
backends:
  be:
    stick_table: {type: ip, size: 1m, expire: 30m, peers: lbnodes, store: "conn_cur,http_req_rate(1m)"}
    stick_on: src
    cookie: {name: SERVERID, mode: insert, indirect: true, nocache: true}
    servers:
      - {name: s1, address: "127.0.0.1:9001", cookie: one}
      - {name: s2, address: "127.0.0.1:9002"}
"""


def test_everything_parses_into_specs():
    c = load(GOOD)
    be = c.backends["be"]
    assert be.stick_table == config.StickTableSpec(
        name="be", type="ip", size=1 << 20, expire=1800.0, peers="lbnodes",
        store=(("conn_cur", None), ("http_req_rate", 60_000)))
    assert be.stick_on == (config.StickOnSpec(sample="src", table="be"),)
    assert be.cookie.name == "SERVERID" and be.cookie.indirect and be.cookie.nocache
    assert [s.cookie for s in be.servers] == ["one", None]
    fe = c.frontends["fe"].stick_table
    assert (fe.name, fe.type, fe.size, fe.expire) == ("fe", "ipv6", 102_400, None)
    assert set(c.stick_tables()) == {"fe", "be"}
    assert c.peers["lbnodes"].local == "lb1"
    assert [n for n, _ in c.peers["lbnodes"].nodes] == ["lb1", "lb2"]


def test_stick_on_rule_forms():
    c = load("""
    frontends: {fe: {bind: "127.0.0.1:8080", backend: be, stick_table: {type: string, size: 10, len: 64}}}
    backends:
      be:
        stick_table: {type: ip, size: 10}
        stick_on: [dst, {on: src, table: fe, store: false}]
        servers: [{name: s1, address: "127.0.0.1:9001"}]
    """)
    assert c.backends["be"].stick_on == (
        config.StickOnSpec("dst", "be"),
        config.StickOnSpec("src", "fe", match=True, store=False))
    assert c.frontends["fe"].stick_table.length == 64


def test_errors_name_their_key_path_and_line():
    lines = problems("""
    peers:
      lbnodes:
        local: lb3
        nodes: [{name: lb1, address: "127.0.0.1:10000"}]
    frontends:
      fe: {bind: "127.0.0.1:8080", backend: be}
    backends:
      be:
        mode: tcp
        stick_table:
          type: ipx
          size: 0
          peers: lbnode
          store: [conn_cur, http_err_rate, foo, conn_cur]
        stick_on: [src, "req.hdr(x)", {on: dst, table: nope}]
        cookie: {name: "SER VERID"}
        servers:
          - {name: s1, address: "127.0.0.1:9001", cookie: a}
          - {name: s2, address: "127.0.0.1:9002", cookie: a}
      be2:
        stick_on: src
        servers: []
    """)
    text = "\n".join(lines)
    for expected in [
        ":4: peers.lbnodes.local: 'lb3' is not one of the nodes",
        ":12: backends.be.stick_table.type: invalid value 'ipx'",
        ":13: backends.be.stick_table.size: size must be at least 1",
        ":14: backends.be.stick_table.peers: peers section 'lbnode' is not defined (did you mean 'lbnodes'?)",
        ":15: backends.be.stick_table.store[1]: http_err_rate needs a period",
        ":15: backends.be.stick_table.store[2]: unknown data type 'foo'",
        ":15: backends.be.stick_table.store[3]: data type 'conn_cur' stored twice",
        ":16: backends.be.stick_on: tcp mode sticks on src or dst, not 'req.hdr(x)'",
        ":16: backends.be.stick_on[2]: stick table 'nope' is not defined",
        ":17: backends.be.cookie.name: invalid cookie value 'SER VERID'",
        ":17: backends.be.cookie: cookie persistence needs http mode",
        ":20: backends.be.servers[1].cookie: cookie value 'a' is also server 's1's",
        ":22: backends.be2.stick_on: backend 'be2' has no stick_table",
    ]:
        assert expected in text, (expected, text)


def test_cookie_options_that_need_insert_mode():
    text = "\n".join(problems("""
    frontends: {fe: {bind: "127.0.0.1:8080", backend: be}}
    backends:
      be:
        cookie: {name: S, mode: prefix, preserve: true}
        servers: [{name: s1, address: "127.0.0.1:9001"}]
    """))
    assert "backends.be.cookie.preserve: preserve applies to insert mode only" in text


def test_peer_address_clashes_with_a_bind():
    text = "\n".join(problems("""
    peers: {p: {local: a, nodes: [{name: a, address: "127.0.0.1:8080"}]}}
    frontends: {fe: {bind: "127.0.0.1:8080", backend: be}}
    backends: {be: {servers: [{name: s1, address: "127.0.0.1:9001"}]}}
    """))
    assert "clashes with" in text


def test_http_stick_on_takes_request_samples_checked_by_the_rules_engine():
    c = load("""
    frontends: {fe: {bind: "127.0.0.1:8080", backend: be}}
    backends:
      be:
        stick_table: {type: string, size: 10}
        stick_on: "req.hdr(x-user),lower"
        servers: [{name: s1, address: "127.0.0.1:9001"}]
    """)
    assert c.backends["be"].stick_on[0].sample == "req.hdr(x-user),lower"
    text = "\\n".join(problems("""
    frontends: {fe: {bind: "127.0.0.1:8080", backend: be}}
    backends:
      be:
        stick_table: {type: string, size: 10}
        stick_on: [nosuch(x), "req.hdr(x),nosuchconv"]
        servers: [{name: s1, address: "127.0.0.1:9001"}]
    """))
    assert "backends.be.stick_on: nosuch(x): unknown fetch 'nosuch'" in text
    assert "unknown converter 'nosuchconv'" in text
