"""lb.yaml loading: values, defaults, inheritance and error reports."""

import os
import pathlib
import socket
import textwrap

import pytest

from lbcore import config as config_module
from lbcore.config import (
    Address, ConfigError, GlobalSpec, HealthSpec, Timeouts, load, loads,
    parse_address, parse_duration, parse_size,
)

REPO = pathlib.Path(__file__).resolve().parents[2]
CONF = REPO / "conf"


def problems_of(text: str, path: str = "lb.yaml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        loads(textwrap.dedent(text), path)
    return info.value.problems


def one_problem(text: str) -> str:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


MINIMAL = """\
frontends:
  web:
    bind: 127.0.0.1:8080
    backend: pool
backends:
  pool:
    servers:
      - {name: s1, address: 10.0.0.1:80}
"""

# The example of shared/spec/lb-yaml.md with its placeholders filled in.
SPEC_EXAMPLE = """\
global:
  workers: 1
  maxconn: 20000
  log:
    target: stdout
    format: http
  pidfile: null
  state_file: null

defaults:
  timeouts:
    connect: 5s
    client: 60s
    server: 60s
    http_request: 10s
    http_keep_alive: 10s
    tunnel: 1h
    queue: 30s
    check: 2s
  retries: 3
  redispatch: true

stats:
  bind: 127.0.0.1:8404
  auth: {user: admin, password: change-me}
  admin: true
  refresh: 5s

frontends:
  keystone:
    bind: ["127.0.0.1:8080"]
    mode: http
    backend: keystone
    maxconn: 10000
    forwarded_for: true
    forwarded_proto: true
    monitor_uri: null
    tls: null
    timeouts: {}

backends:
  keystone:
    mode: http
    balance: roundrobin
    maxconn: null
    health:
      type: http
      path: /healthcheck
      method: GET
      host: null
      expect_status: 200
      interval: 2s
      timeout: 1s
      rise: 2
      fall: 3
      port: null
      initial_state: up
    retries: 3
    redispatch: true
    timeouts: {}
    servers:
      - name: s1
        address: 10.0.0.11:5000
        weight: 1
        backup: false
        maxconn: null
        check: true
        send_proxy: null
"""


# -- values -------------------------------------------------------------------

class TestSpecExample:
    def test_loads_with_the_documented_values(self):
        config = loads(SPEC_EXAMPLE, "spec.yaml")
        assert config.path == "spec.yaml"
        assert config.global_ == GlobalSpec(workers=1, maxconn=20000)
        assert config.stats.bind == Address("127.0.0.1", 8404)
        assert config.stats.auth == ("admin", "change-me")
        assert config.stats.admin is True
        assert config.stats.refresh == 5.0

        frontend = config.frontends["keystone"]
        assert frontend.binds == (Address("127.0.0.1", 8080),)
        assert (frontend.mode, frontend.backend, frontend.maxconn) == ("http", "keystone", 10000)
        assert frontend.forwarded_for and frontend.forwarded_proto
        assert frontend.monitor_uri is None and frontend.tls is None
        assert frontend.timeouts == Timeouts()

        backend = config.backends["keystone"]
        assert (backend.mode, backend.balance, backend.maxconn) == ("http", "roundrobin", None)
        assert backend.health == HealthSpec(
            type="http", path="/healthcheck", method="GET", host=None,
            expect_status=frozenset({200}), interval=2.0, timeout=1.0,
            rise=2, fall=3, port=None, initial_state="up")
        assert (backend.retries, backend.redispatch) == (3, True)
        assert backend.on_marked_down is None
        [server] = backend.servers
        assert server.name == "s1"
        assert server.address == Address("10.0.0.11", 5000)
        assert (server.weight, server.backup, server.maxconn, server.check, server.send_proxy) == (
            1, False, None, True, None)

    def test_every_key_set_to_a_non_default(self, tmp_path):
        cert = tmp_path / "api.pem"
        cert.write_text("not parsed by the loader")
        (tmp_path / "logs").mkdir()
        path = tmp_path / "lb.yaml"
        path.write_text(textwrap.dedent("""\
            global:
              workers: 4
              maxconn: 500
              log: {target: logs/access.log, format: json}
              pidfile: run/lb.pid
              state_file: /var/lib/lbcore/state
              grace: 500ms
            defaults:
              timeouts: {connect: 1s, queue: 2m}
              retries: 0
              redispatch: false
            stats:
              bind: "[::1]:9000"
              admin: false
              refresh: 1
            frontends:
              api:
                bind: "*:443"
                mode: tcp
                backend: db
                maxconn: 7
                forwarded_for: false
                forwarded_proto: false
                monitor_uri: /healthz
                tls: {cert: api.pem, key: api.pem, alpn: [h2, http/1.1]}
                timeouts: {client: 1d}
            backends:
              db:
                mode: tcp
                balance: first
                maxconn: 30
                on_marked_down: shutdown_sessions
                retries: 1
                redispatch: true
                timeouts: {server: 1.5}
                health:
                  type: http
                  path: /status?full
                  method: OPTIONS
                  host: db.example
                  expect_status: [204, "3xx"]
                  interval: 0.25
                  timeout: 100ms
                  rise: 1
                  fall: 10
                  port: 9200
                  initial_state: down
                servers:
                  - name: db-1.a_b
                    address: db1.example:3306
                    weight: 256
                    backup: true
                    maxconn: 3
                    check: false
                    send_proxy: v1
            """))
        config = load(str(path))
        g = config.global_
        assert (g.workers, g.maxconn, g.grace) == (4, 500, 0.5)
        assert g.log.format == "json" and g.log.syslog is None
        assert g.log.target == str(tmp_path / "logs" / "access.log")
        assert g.pidfile == str(tmp_path / "run" / "lb.pid")
        assert g.state_file == "/var/lib/lbcore/state"
        assert config.stats.bind == Address("::1", 9000)
        assert config.stats.auth is None and config.stats.admin is False
        assert config.stats.refresh == 1.0

        frontend = config.frontends["api"]
        assert frontend.binds == (Address("", 443),)
        assert (frontend.mode, frontend.maxconn, frontend.monitor_uri) == ("tcp", 7, "/healthz")
        assert not frontend.forwarded_for and not frontend.forwarded_proto
        assert frontend.tls.cert == str(cert) and frontend.tls.key == str(cert)
        assert frontend.tls.alpn == ("h2", "http/1.1")
        assert frontend.timeouts == Timeouts(connect=1.0, queue=120.0, client=86400.0)

        backend = config.backends["db"]
        assert (backend.balance, backend.maxconn, backend.on_marked_down) == ("first", 30, "shutdown_sessions")
        assert (backend.retries, backend.redispatch) == (1, True)
        assert backend.timeouts == Timeouts(connect=1.0, queue=120.0, server=1.5)
        assert backend.health == HealthSpec(
            type="http", path="/status?full", method="OPTIONS", host="db.example",
            expect_status=frozenset({204, *range(300, 400)}), interval=0.25, timeout=0.1,
            rise=1, fall=10, port=9200, initial_state="down")
        [server] = backend.servers
        assert server.name == "db-1.a_b"
        assert server.address == Address("db1.example", 3306)
        assert (server.weight, server.backup, server.maxconn, server.check, server.send_proxy) == (
            256, True, 3, False, "v1")


class TestDefaults:
    def test_minimal_config_gets_every_default(self):
        config = loads(MINIMAL)
        assert config.global_ == GlobalSpec()
        assert config.global_.grace == 30.0
        assert config.stats is None
        frontend = config.frontends["web"]
        assert (frontend.mode, frontend.maxconn, frontend.tls) == ("http", 10000, None)
        assert frontend.timeouts == Timeouts()
        backend = config.backends["pool"]
        assert (backend.mode, backend.balance, backend.maxconn) == ("http", "roundrobin", None)
        assert (backend.retries, backend.redispatch, backend.on_marked_down) == (3, True, None)
        assert backend.health.type == "none"
        assert backend.health.timeout == Timeouts().check
        assert backend.servers[0].weight == 1 and backend.servers[0].maxconn is None

    def test_defaults_are_inherited_and_merged_key_by_key(self):
        config = loads(MINIMAL + textwrap.dedent("""\
              other:
                timeouts: {server: 5s}
                retries: 7
            defaults:
              timeouts: {connect: 2s, server: 30s, check: 4s}
              retries: 1
              redispatch: false
            """))
        merged = Timeouts(connect=2.0, server=30.0, check=4.0)
        assert config.frontends["web"].timeouts == merged
        pool = config.backends["pool"]
        assert pool.timeouts == merged
        assert (pool.retries, pool.redispatch) == (1, False)
        other = config.backends["other"]
        assert other.timeouts == Timeouts(connect=2.0, server=5.0, check=4.0)
        assert (other.retries, other.redispatch) == (7, False)

    @pytest.mark.parametrize("defaults_check, backend_check, health_timeout, expected", [
        (None, None, None, 2.0),
        ("4s", None, None, 4.0),
        ("4s", "3s", None, 3.0),
        ("4s", "3s", "500ms", 0.5),
        (None, None, "7s", 7.0),
    ])
    def test_health_timeout_falls_back_to_timeouts_check(
            self, defaults_check, backend_check, health_timeout, expected):
        text = MINIMAL + "    health:\n      type: tcp\n"
        if health_timeout:
            text += f"      timeout: {health_timeout}\n"
        if backend_check:
            text += f"    timeouts: {{check: {backend_check}}}\n"
        if defaults_check:
            text += f"defaults:\n  timeouts: {{check: {defaults_check}}}\n"
        assert loads(text).backends["pool"].health.timeout == expected

    def test_backend_maxconn_is_the_servers_default(self):
        config = loads(MINIMAL.replace("    servers:\n", "    maxconn: 40\n    servers:\n")
                       + "      - {name: s2, address: 10.0.0.2:80, maxconn: 5}\n"
                       + "      - {name: s3, address: 10.0.0.3:80, maxconn: null}\n")
        assert [s.maxconn for s in config.backends["pool"].servers] == [40, 5, 40]

    def test_http_health_without_path_probes_root(self):
        config = loads(MINIMAL + "    health: {type: http}\n")
        assert config.backends["pool"].health.path == "/"

    def test_bind_may_be_a_string_or_a_list(self):
        single = loads(MINIMAL).frontends["web"].binds
        many = loads(MINIMAL.replace(
            "bind: 127.0.0.1:8080", 'bind: ["127.0.0.1:8080", "[::1]:8080", "127.0.0.2:8080"]')).frontends["web"].binds
        assert single == (Address("127.0.0.1", 8080),)
        assert many == (Address("127.0.0.1", 8080), Address("::1", 8080), Address("127.0.0.2", 8080))

    def test_workers_auto_is_the_cpu_count(self):
        config = loads(MINIMAL + "global: {workers: auto}\n")
        assert config.global_.workers == (os.cpu_count() or 1)

    def test_unused_backends_and_empty_sections_are_fine(self):
        config = loads(MINIMAL + "  spare:\n    servers: []\n  empty:\ndefaults:\nglobal: {}\nstats: null\n")
        assert config.backends["spare"].servers == ()
        assert config.backends["empty"].servers == ()
        assert config.stats is None

    def test_merge_keys_and_x_anchors(self):
        config = loads(textwrap.dedent("""\
            x-server: &server {weight: 5, backup: true, send_proxy: v2}
            frontends:
              web: {bind: "127.0.0.1:8080", backend: pool}
            backends:
              pool:
                servers:
                  - {<<: *server, name: s1, address: "10.0.0.1:80", backup: false}
            """))
        server = config.backends["pool"].servers[0]
        assert (server.weight, server.backup, server.send_proxy) == (5, False, "v2")


class TestLogTarget:
    @pytest.mark.parametrize("target, syslog", [
        ("stdout", None),
        ("stderr", None),
        ("127.0.0.1:514", Address("127.0.0.1", 514)),
        ("udp://127.0.0.1:514", Address("127.0.0.1", 514)),
        ("udp://[::1]:1514", Address("::1", 1514)),
        ("syslog.example:514", Address("syslog.example", 514)),
    ])
    def test_stream_or_syslog(self, target, syslog):
        log = loads(MINIMAL + f'global: {{log: {{target: "{target}"}}}}\n').global_.log
        assert (log.target, log.syslog) == (target, syslog)

    def test_file_path_is_taken_from_the_config_directory(self, tmp_path):
        path = tmp_path / "lb.yaml"
        path.write_text(MINIMAL + "global: {log: {target: access.log}}\n")
        log = load(str(path)).global_.log
        assert (log.target, log.syslog) == (str(tmp_path / "access.log"), None)

    @pytest.mark.parametrize("target, fragment", [
        ("/nonexistent-dir/lb.log", "log file directory not found: /nonexistent-dir"),
        ("tcp://127.0.0.1:514", "syslog goes over udp"),
        ("udp://127.0.0.1", "missing port"),
        ("udp://*:514", "must not be a wildcard"),
        ("127.0.0.1:99999", "not in 1..65535"),
    ])
    def test_bad_targets(self, target, fragment):
        problem = one_problem(MINIMAL + f'global:\n  log:\n    target: "{target}"\n')
        assert problem.startswith("lb.yaml:11: global.log.target: ")
        assert fragment in problem


class TestTLS:
    def test_cert_is_taken_from_the_config_directory(self, tmp_path):
        (tmp_path / "certs").mkdir()
        (tmp_path / "certs" / "api.pem").write_text("-")
        path = tmp_path / "lb.yaml"
        path.write_text(MINIMAL.replace("    backend: pool\n", "    backend: pool\n    tls: {cert: certs/api.pem}\n"))
        tls = load(str(path)).frontends["web"].tls
        assert (tls.cert, tls.key, tls.alpn) == (str(tmp_path / "certs" / "api.pem"), None, ("http/1.1",))

    def test_missing_cert_and_key_are_errors(self, tmp_path):
        path = tmp_path / "lb.yaml"
        path.write_text(MINIMAL.replace(
            "    backend: pool\n", "    backend: pool\n    tls:\n      cert: nope.pem\n      key: /no/key.pem\n"))
        with pytest.raises(ConfigError) as info:
            load(str(path))
        assert info.value.problems == [
            f"{path}:6: frontends.web.tls.cert: file not found: {tmp_path / 'nope.pem'}",
            f"{path}:7: frontends.web.tls.key: file not found: /no/key.pem",
        ]

    @pytest.mark.parametrize("tls, fragment", [
        ("{}", "frontends.web.tls.cert: required key is missing"),
        ("{cert: /etc/hostname, alpn: []}", "frontends.web.tls.alpn: at least one protocol"),
        ("{cert: /etc/hostname, alpn: [[h2]]}", "frontends.web.tls.alpn: expected protocol names"),
        ("{cert: /etc/hostname, ciphers: x}", "frontends.web.tls.ciphers: no cipher in 'x' is known to OpenSSL"),
        ("{cert: /etc/hostname, ciphersuites: x}", "frontends.web.tls.ciphersuites: invalid TLS 1.3 ciphersuites 'x'"),
        ("{cert: /etc/hostname, min_version: TLSv1.0}", "frontends.web.tls.min_version: invalid value 'TLSv1.0'"),
        ("{cert: /etc/hostname, sni: x}", "frontends.web.tls.sni: unknown key 'sni'"),
        ("yes", "frontends.web.tls: expected a mapping, got boolean true"),
    ])
    def test_bad_tls(self, tls, fragment):
        problem = one_problem(MINIMAL.replace("    backend: pool\n", f"    backend: pool\n    tls: {tls}\n"))
        assert problem.startswith("lb.yaml:5: ") and fragment in problem


# -- value parsers ---------------------------------------------------------------

@pytest.mark.parametrize("value, seconds", [
    (2, 2.0), (0.5, 0.5), ("500ms", 0.5), ("2s", 2.0), ("1m", 60.0), ("1h", 3600.0),
    ("1d", 86400.0), ("1.5s", 1.5), ("10", 10.0), (" 3s ", 3.0), ("250 ms", 0.25),
])
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value, fragment", [
    (0, "greater than 0"), (-1, "greater than 0"), ("0s", "greater than 0"),
    (float("inf"), "greater than 0"), (float("nan"), "greater than 0"),
    ("2 weeks", "invalid duration"), ("s", "invalid duration"), ("1us", "invalid duration"),
    ("", "invalid duration"), (True, "expected a duration"), (None, "expected a duration"),
    ([1], "expected a duration"),
])
def test_parse_duration_rejects(value, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_duration(value)


@pytest.mark.parametrize("value, size", [
    (1, 1), (16384, 16384), ("16k", 16384), ("16K", 16384), ("1m", 1 << 20), ("2g", 2 << 30), ("512", 512),
])
def test_parse_size(value, size):
    assert parse_size(value) == size


@pytest.mark.parametrize("value", [0, -5, "0k", "1.5k", "16kb", "k", True, 1.5, None])
def test_parse_size_rejects(value):
    with pytest.raises(ValueError):
        parse_size(value)


@pytest.mark.parametrize("text, address", [
    ("127.0.0.1:8080", Address("127.0.0.1", 8080)),
    ("localhost:1", Address("localhost", 1)),
    ("api.example.org.:65535", Address("api.example.org.", 65535)),
    ("*:80", Address("", 80)),
    ("0.0.0.0:80", Address("", 80)),
    (":80", Address("", 80)),
    ("[::1]:8080", Address("::1", 8080)),
    ("[::]:443", Address("::", 443)),
    ("[fe80::1%eth0]:22", Address("fe80::1%eth0", 22)),
    ("[2001:db8::7]:5000", Address("2001:db8::7", 5000)),
])
def test_parse_address(text, address):
    assert parse_address(text) == address


@pytest.mark.parametrize("text, fragment", [
    ("127.0.0.1", "missing port"),
    ("[::1]", "missing port"),
    ("[::1]8080", "missing port"),
    ("::1:8080", "must be in brackets"),
    ("[::1:8080", "without closing"),
    ("[nothost]:80", "not an IPv6 address"),
    ("256.1.1.1:80", "not an IPv4 address"),
    ("bad_host:80", "not a valid host name"),
    ("-x:80", "not a valid host name"),
    ("host:0", "not in 1..65535"),
    ("host:65536", "not in 1..65535"),
    ("host:http", "is not a number"),
    ("host:-1", "is not a number"),
    ("host: 80", "without spaces"),
    ("", "without spaces"),
    (8080, "expected an address"),
])
def test_parse_address_rejects(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_address(text)


@pytest.mark.parametrize("text", ["*:80", "0.0.0.0:80", ":80", "[::]:80"])
def test_server_address_must_not_be_a_wildcard(text):
    parse_address(text)
    with pytest.raises(ValueError, match="wildcard"):
        parse_address(text, server=True)


# -- errors -------------------------------------------------------------------------

# Cases appended to MINIMAL (8 lines): a backend-level key goes into a new
# backend "other" at line 9, a top-level section starts at line 9.
BACKEND = MINIMAL + "  other:\n"      # keys of "other" start at line 10
FRONTEND_FIRST = """\
backends:
  pool:
    servers:
      - {name: s1, address: 10.0.0.1:80}
  db:
    mode: tcp
frontends:
  web:
    bind: 127.0.0.1:8080
    backend: pool
  other:
"""                                     # keys of frontend "other" start at line 12
OTHER_FRONTEND = "    bind: 127.0.0.1:9999\n    backend: pool\n"   # lines 12-13


ERROR_CASES = [
    # unknown keys at every level, with a suggestion
    (MINIMAL + "global: {workrs: 2}\n", 9, "global.workrs", "unknown key 'workrs' (did you mean 'workers'?)"),
    (MINIMAL + "defaults: {retry: 2}\n", 9, "defaults.retry", "(did you mean 'retries'?)"),
    (MINIMAL + "defaults:\n  timeouts: {conect: 2s}\n", 10, "defaults.timeouts.conect", "(did you mean 'connect'?)"),
    (MINIMAL + "frontend: {}\n", 9, "frontend", "unknown key 'frontend' (did you mean 'frontends'?)"),
    (MINIMAL + "stats: {bind: '127.0.0.1:1', user: x}\n", 9, "stats.user", "unknown key 'user'"),
    (BACKEND + "    balanse: first\n", 10, "backends.other.balanse", "unknown key 'balanse' (did you mean 'balance'?)"),
    (BACKEND + "    health: {intervall: 2s}\n", 10, "backends.other.health.intervall", "(did you mean 'interval'?)"),
    (BACKEND + "    servers:\n      - {name: a, address: 'h:1', wieght: 2}\n", 11,
     "backends.other.servers[0].wieght", "(did you mean 'weight'?)"),
    (FRONTEND_FIRST + OTHER_FRONTEND + "    maxcon: 5\n", 14, "frontends.other.maxcon", "(did you mean 'maxconn'?)"),
    (BACKEND + "    xyzzy: 1\n", 10, "backends.other.xyzzy", "unknown key 'xyzzy'"),
    # types
    (BACKEND + "    redispatch: 'true'\n", 10, "backends.other.redispatch", "expected true or false, got string 'true'"),
    (BACKEND + "    redispatch: 1\n", 10, "backends.other.redispatch", "expected true or false, got integer 1"),
    (BACKEND + "    retries: true\n", 10, "backends.other.retries", "expected an integer, got boolean true"),
    (BACKEND + "    retries: 1.5\n", 10, "backends.other.retries", "expected an integer, got number 1.5"),
    (BACKEND + "    retries: -1\n", 10, "backends.other.retries", "must be at least 0"),
    (BACKEND + "    maxconn: 0\n", 10, "backends.other.maxconn", "must be at least 1"),
    (BACKEND + "    timeouts: [1]\n", 10, "backends.other.timeouts", "expected a mapping, got a list"),
    (BACKEND + "    timeouts: {server: 2 weeks}\n", 10, "backends.other.timeouts.server", "invalid duration"),
    (BACKEND + "    timeouts: {server: 0}\n", 10, "backends.other.timeouts.server", "greater than 0"),
    (BACKEND + "    timeouts: {server: {a: 1}}\n", 10, "backends.other.timeouts.server", "expected a single value"),
    (BACKEND + "    servers: {name: a}\n", 10, "backends.other.servers", "expected a list of servers"),
    (BACKEND + "    servers:\n      - a\n", 11, "backends.other.servers[0]", "expected a server mapping"),
    # enums
    (BACKEND + "    balance: random\n", 10, "backends.other.balance",
     "invalid value 'random': expected one of roundrobin | leastconn | source | first | uri | hdr(NAME) | url_param(NAME)"),
    (BACKEND + "    balance: roundrobbin\n", 10, "backends.other.balance", "(did you mean 'roundrobin'?)"),
    (BACKEND + "    mode: udp\n", 10, "backends.other.mode", "expected one of http | tcp"),
    (BACKEND + "    on_marked_down: shutdown-sessions\n", 10, "backends.other.on_marked_down",
     "(did you mean 'shutdown_sessions'?)"),
    (BACKEND + "    health: {type: htp}\n", 10, "backends.other.health.type", "(did you mean 'http'?)"),
    (BACKEND + "    health: {method: get}\n", 10, "backends.other.health.method", "(did you mean 'GET'?)"),
    (BACKEND + "    health: {method: POST}\n", 10, "backends.other.health.method", "GET | HEAD | OPTIONS"),
    (BACKEND + "    health: {initial_state: maint}\n", 10, "backends.other.health.initial_state", "up | down"),
    (MINIMAL + "global: {log: {format: xml}}\n", 9, "global.log.format", "http | json | none"),
    # health values
    (BACKEND + "    health: {rise: 0}\n", 10, "backends.other.health.rise", "must be at least 1"),
    (BACKEND + "    health: {fall: 0}\n", 10, "backends.other.health.fall", "must be at least 1"),
    (BACKEND + "    health: {port: 0}\n", 10, "backends.other.health.port", "must be in 1..65535"),
    (BACKEND + "    health: {path: healthcheck}\n", 10, "backends.other.health.path", "must start with '/'"),
    (BACKEND + "    health: {path: '/a b'}\n", 10, "backends.other.health.path", "no spaces"),
    (BACKEND + "    health: {interval: 0}\n", 10, "backends.other.health.interval", "greater than 0"),
    (BACKEND + "    health: {expect_status: 99}\n", 10, "backends.other.health.expect_status", "100..599"),
    (BACKEND + "    health: {expect_status: 6xx}\n", 10, "backends.other.health.expect_status", "class like '2xx'"),
    (BACKEND + "    health: {expect_status: []}\n", 10, "backends.other.health.expect_status", "at least one"),
    (BACKEND + "    health:\n      expect_status: [200, true]\n", 11,
     "backends.other.health.expect_status[1]", "expected a status code"),
    # servers
    (BACKEND + "    servers:\n      - {name: a, address: 'h:1', weight: 257}\n", 11,
     "backends.other.servers[0].weight", "must be in 0..256, got 257"),
    (BACKEND + "    servers:\n      - {name: a, address: 'h:1', weight: -1}\n", 11,
     "backends.other.servers[0].weight", "must be in 0..256"),
    (BACKEND + "    servers:\n      - {name: a, address: '*:80'}\n", 11,
     "backends.other.servers[0].address", "must not be a wildcard"),
    (BACKEND + "    servers:\n      - {name: a, address: 'h'}\n", 11,
     "backends.other.servers[0].address", "missing port"),
    (BACKEND + "    servers:\n      - {name: a, address: 'h:1'}\n      - {name: b, address: 'h:99999'}\n", 12,
     "backends.other.servers[1].address", "not in 1..65535"),
    (BACKEND + "    servers:\n      - {name: 'a b', address: 'h:1'}\n", 11,
     "backends.other.servers[0].name", "invalid name 'a b'"),
    (BACKEND + "    servers:\n      - {address: 'h:1'}\n", 11, "backends.other.servers[0].name", "required key is missing"),
    (BACKEND + "    servers:\n      - {name: a}\n", 11, "backends.other.servers[0].address", "required key is missing"),
    (BACKEND + "    servers:\n      - {name: a, address: 'h:1'}\n      - {name: a, address: 'h:2'}\n", 12,
     "backends.other.servers[1].name", "duplicate server name 'a' (first at backends.other.servers[0], line 11)"),
    # names
    (MINIMAL + "  'bad/name': {}\n", 9, "backends.bad/name", "invalid name 'bad/name'"),
    # global
    (MINIMAL + "global: {workers: 0}\n", 9, "global.workers", "must be at least 1"),
    (MINIMAL + "global: {workers: many}\n", 9, "global.workers", "expected an integer or 'auto'"),
    (MINIMAL + "global: {maxconn: 0}\n", 9, "global.maxconn", "must be at least 1"),
    (MINIMAL + "global: {grace: -5s}\n", 9, "global.grace", "invalid duration"),
    (MINIMAL + "global: {pidfile: 5}\n", 9, "global.pidfile", "expected a string"),
    # stats
    (MINIMAL + "stats: {admin: true}\n", 9, "stats.bind", "required key is missing"),
    (MINIMAL + "stats:\n  bind: 127.0.0.1:1\n  auth: {user: admin}\n", 11, "stats.auth.password", "required key is missing"),
    (MINIMAL + "stats:\n  bind: 127.0.0.1:1\n  auth: {user: 'a:b', password: x}\n", 11, "stats.auth.user", "must not contain ':'"),
    (MINIMAL + "stats:\n  bind: 127.0.0.1:1\n  refresh: never\n", 11, "stats.refresh", "invalid duration"),
    # frontends
    (FRONTEND_FIRST + "    bind: 127.0.0.1:9999\n", 12, "frontends.other.backend", "required key is missing"),
    (FRONTEND_FIRST + "    backend: pool\n", 12, "frontends.other.bind", "required key is missing"),
    (FRONTEND_FIRST + "    backend: pool\n    bind: []\n", 13, "frontends.other.bind", "at least one address"),
    (FRONTEND_FIRST + "    backend: pool\n    bind: [127.0.0.1]\n", 13, "frontends.other.bind[0]", "missing port"),
    (FRONTEND_FIRST + "    backend: pol\n    bind: 127.0.0.1:1\n", 12, "frontends.other.backend",
     "backend 'pol' is not defined (did you mean 'pool'?)"),
    (FRONTEND_FIRST + OTHER_FRONTEND + "    mode: tcp\n", 14, "frontends.other.mode",
     "frontend mode 'tcp' does not match backend 'pool' mode 'http'"),
    (FRONTEND_FIRST + "    bind: 127.0.0.1:9999\n    backend: db\n", 13, "frontends.other.backend",
     "frontend mode 'http' does not match backend 'db' mode 'tcp'"),
    (FRONTEND_FIRST + OTHER_FRONTEND + "    monitor_uri: healthz\n", 14, "frontends.other.monitor_uri",
     "must start with '/'"),
    (FRONTEND_FIRST + OTHER_FRONTEND + "    forwarded_for: on please\n", 14, "frontends.other.forwarded_for",
     "expected true or false"),
    (FRONTEND_FIRST + OTHER_FRONTEND + "    maxconn: 0\n", 14, "frontends.other.maxconn", "must be at least 1"),
    (FRONTEND_FIRST + OTHER_FRONTEND + "    timeouts: {client: 1w}\n", 14, "frontends.other.timeouts.client",
     "invalid duration"),
    # duplicate binds across frontends and stats
    (FRONTEND_FIRST + "    bind: 127.0.0.1:8080\n    backend: pool\n", 12, "frontends.other.bind",
     "address 127.0.0.1:8080 clashes with 127.0.0.1:8080 bound by frontends.web.bind (line 9)"),
    (FRONTEND_FIRST + "    bind: ['127.0.0.2:8080', '*:8080']\n    backend: pool\n", 12, "frontends.other.bind[1]",
     "address *:8080 clashes with 127.0.0.1:8080 bound by frontends.web.bind (line 9)"),
    (FRONTEND_FIRST + "    bind: ['127.0.0.2:80', '127.0.0.2:80']\n    backend: pool\n", 12,
     "frontends.other.bind[1]", "clashes with 127.0.0.2:80 bound by frontends.other.bind[0] (line 12)"),
    (MINIMAL + "stats: {bind: '*:8080'}\n", 3, "frontends.web.bind",
     "address 127.0.0.1:8080 clashes with *:8080 bound by stats.bind (line 9)"),
    # duplicate YAML keys
    (MINIMAL + "  pool: {}\n", 9, "backends.pool", "duplicate key 'pool' (first at line 6)"),
    (BACKEND + "    balance: first\n    balance: source\n", 11, "backends.other.balance",
     "duplicate key 'balance' (first at line 10)"),
    (BACKEND + "    servers:\n      - name: a\n        address: h:1\n        name: b\n", 13,
     "backends.other.servers[0].name", "duplicate key 'name' (first at line 11)"),
    (MINIMAL + "global: {}\nglobal: {}\n", 10, "global", "duplicate key 'global' (first at line 9)"),
]


@pytest.mark.parametrize("text, line, keypath, fragment", ERROR_CASES, ids=[case[2] for case in ERROR_CASES])
def test_error_names_file_line_and_keypath(text, line, keypath, fragment):
    problem = one_problem(text)
    prefix = f"lb.yaml:{line}: {keypath}: "
    assert problem.startswith(prefix), problem
    assert fragment in problem[len(prefix):], problem


def test_send_proxy_lists_its_values():
    problem = one_problem(BACKEND + "    servers:\n      - {name: a, address: 'h:1', send_proxy: v3}\n")
    assert problem == ("lb.yaml:11: backends.other.servers[0].send_proxy: "
                       "invalid value 'v3': expected one of v1 | v2")


@pytest.mark.parametrize("text, expected", [
    ("", "lb.yaml: the config is empty (it needs at least 'frontends')"),
    ("# only a comment\n", "lb.yaml: the config is empty (it needs at least 'frontends')"),
    ("- a\n", "lb.yaml:1: the top level must be a mapping of sections, got a list"),
    ("\nfrontends\n", "lb.yaml:2: the top level must be a mapping of sections, got a single value"),
    ("backends: {}\n", "lb.yaml:1: frontends: required key is missing"),
    ("frontends: {}\n", "lb.yaml:1: frontends: at least one frontend is required"),
    ("frontends:\n", "lb.yaml:1: frontends: at least one frontend is required"),
    ("frontends: [a]\n", "lb.yaml:1: frontends: expected a mapping of names, got a list"),
])
def test_empty_or_shapeless_configs(text, expected):
    assert problems_of(text) == [expected]


@pytest.mark.parametrize("text, line, fragment", [
    ("frontends:\n  web:\n    bind: [127.0.0.1:80\n", 4, "while parsing a flow sequence at line 3"),
    ("frontends:\n  web:\n    bind: *:80\n", 3, 'quote addresses that start with'),
    ("frontends:\n  web:\n    bind: [::1]:80\n", 3, 'quote addresses that start with'),
    ("frontends:\n\tweb: {}\n", 2, "found character '\\t'"),
    ("frontends:\n  web: {\n", 3, "invalid YAML"),
    ("a: 1\n  b: 2\n", 2, "mapping values are not allowed here"),
    ("a: 1\n---\nb: 2\n", 2, "expected a single document"),
    ("a: \x07\n", 1, "special characters are not allowed"),
])
def test_broken_yaml_names_its_line(text, line, fragment):
    [problem] = problems_of(text)
    assert problem.startswith(f"lb.yaml:{line}: invalid YAML: "), problem
    assert fragment in problem, problem


def test_every_problem_is_reported_in_file_order():
    problems = problems_of("""\
        global:
          workers: 0
          log: {format: xml}
        defaults:
          retries: many
        frontends:
          web:
            bind: 127.0.0.1
            backend: missing
        backends:
          pool:
            balance: random
            servers:
              - {name: s1, address: "10.0.0.1:80", weight: 999}
              - {name: s1, address: "*:80"}
        """)
    assert problems == [
        "lb.yaml:2: global.workers: must be at least 1, got 0",
        "lb.yaml:3: global.log.format: invalid value 'xml': expected one of http | json | none",
        "lb.yaml:5: defaults.retries: expected an integer, got string 'many'",
        "lb.yaml:8: frontends.web.bind: invalid address '127.0.0.1': missing port (expected 'host:port')",
        "lb.yaml:9: frontends.web.backend: backend 'missing' is not defined",
        "lb.yaml:12: backends.pool.balance: invalid value 'random': "
        "expected one of roundrobin | leastconn | source | first | uri | hdr(NAME) | url_param(NAME)",
        "lb.yaml:14: backends.pool.servers[0].weight: must be in 0..256, got 999",
        "lb.yaml:15: backends.pool.servers[1].address: invalid server address '*:80': "
        "the host must not be a wildcard",
        "lb.yaml:15: backends.pool.servers[1].name: duplicate server name 's1' "
        "(first at backends.pool.servers[0], line 14)",
    ]


def test_config_error_prints_one_line_per_problem():
    with pytest.raises(ConfigError) as info:
        loads(MINIMAL + "global: {workers: 0, maxconn: 0}\n", "/etc/lbcore/lb.yaml")
    assert str(info.value).splitlines() == [
        "/etc/lbcore/lb.yaml:9: global.workers: must be at least 1, got 0",
        "/etc/lbcore/lb.yaml:9: global.maxconn: must be at least 1, got 0",
    ]


def test_invalid_backend_mode_does_not_also_report_a_mismatch():
    problems = problems_of(MINIMAL + "    mode: udp\n")
    assert problems == ["lb.yaml:9: backends.pool.mode: invalid value 'udp': expected one of http | tcp"]


def test_problem_inside_an_anchor_is_reported_once_per_use():
    problems = problems_of(textwrap.dedent("""\
        x-server: &server {weight: 999}
        frontends:
          web: {bind: "127.0.0.1:8080", backend: pool}
        backends:
          pool:
            servers:
              - {<<: *server, name: s1, address: "10.0.0.1:80"}
              - {<<: *server, name: s2, address: "10.0.0.2:80"}
        """))
    assert problems == [
        "lb.yaml:1: backends.pool.servers[0].weight: must be in 0..256, got 999",
        "lb.yaml:1: backends.pool.servers[1].weight: must be in 0..256, got 999",
    ]


def test_unsafe_yaml_tags_are_never_constructed():
    [problem] = problems_of(MINIMAL + "global: {pidfile: !!python/object/apply:os.getcwd []}\n")
    assert problem.startswith("lb.yaml:9: global.pidfile: ")


def test_load_reports_an_unreadable_file(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        load(str(missing))
    assert info.value.problems == [f"{missing}: cannot read config: No such file or directory"]
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"frontends: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(str(binary))


def test_load_names_the_file_in_errors(tmp_path):
    path = tmp_path / "lb.yaml"
    path.write_text(MINIMAL + "global: {workers: 0}\n")
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert info.value.problems == [f"{path}:9: global.workers: must be at least 1, got 0"]


# -- shipped configs -------------------------------------------------------------------

SHIPPED = sorted(str(p.relative_to(REPO)) for p in CONF.rglob("*.yaml"))


@pytest.mark.parametrize("relpath", SHIPPED)
def test_every_shipped_config_loads(relpath):
    config = load(str(REPO / relpath))
    assert config.frontends
    for frontend in config.frontends.values():
        assert frontend.backend in config.backends


def test_shipped_configs_include_reference_and_openstack():
    assert "conf/reference.yaml" in SHIPPED
    assert any(p.startswith("conf/openstack/") for p in SHIPPED)


def test_reference_config_sets_every_key():
    """Every key the loader knows appears in the reference config."""
    text = (CONF / "reference.yaml").read_text()
    known = set(
        config_module._TOP_KEYS + config_module._GLOBAL_KEYS + config_module._LOG_KEYS
        + config_module._DEFAULTS_KEYS + config_module._TIMEOUT_KEYS + config_module._STATS_KEYS
        + config_module._SOCKET_KEYS + config_module._AUTH_KEYS + config_module._FRONTEND_KEYS + config_module._TLS_KEYS
        + config_module._BACKEND_KEYS + config_module._HEALTH_KEYS + config_module._SERVER_KEYS)
    missing = sorted(key for key in known if f"{key}:" not in text)
    assert missing == []


def test_openstack_control_plane():
    config = load(str(CONF / "openstack" / "controller.yaml"))
    ports = {name: fe.binds[0].port for name, fe in config.frontends.items()}
    for service, port in [("keystone", 5000), ("nova", 8774), ("placement", 8778), ("glance", 9292),
                          ("neutron", 9696), ("cinder", 8776), ("heat", 8004), ("horizon", 80)]:
        [name] = [n for n in ports if n.startswith(service)][:1]
        assert ports[name] == port, service
        backend = config.backends[config.frontends[name].backend]
        assert backend.mode == "http"
        health = backend.health
        assert (health.type, health.path, health.interval, health.rise, health.fall) == (
            "http", "/healthcheck", 2.0, 2, 5), service
        assert len(backend.servers) == 3
        assert all(s.address.host.startswith("127.0.0.") for s in backend.servers)

    galera_frontend = next(fe for fe in config.frontends.values() if fe.binds[0].port == 3306)
    assert galera_frontend.mode == "tcp"
    galera = config.backends[galera_frontend.backend]
    assert (galera.mode, galera.balance, galera.on_marked_down) == ("tcp", "first", "shutdown_sessions")
    assert (galera.health.type, galera.health.port) == ("tcp", 9200)
    assert [s.backup for s in galera.servers] == [False, True, True]


def test_loading_touches_no_socket(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the config loader must not use the network")

    for name in ("socket", "getaddrinfo", "gethostbyname", "create_connection"):
        monkeypatch.setattr(socket, name, refuse)
    load(str(CONF / "reference.yaml"))
    load(str(CONF / "openstack" / "controller.yaml"))


def test_hash_balancing_keys():
    config = loads(MINIMAL.replace("  pool:\n", "  pool:\n    balance: hdr(X-Tenant)\n    hash: consistent\n"))
    spec = config.backends["pool"]
    assert (spec.balance, spec.balance_key, spec.hash) == ("hdr(X-Tenant)", ("hdr", "X-Tenant"), "consistent")
    assert loads(MINIMAL).backends["pool"].hash == "map-based"
    problem = one_problem(MINIMAL.replace("  pool:\n", "  pool:\n    hash: ring\n"))
    assert problem.startswith("lb.yaml:7: backends.pool.hash: invalid value 'ring'"), problem
    problem = one_problem(MINIMAL.replace("  pool:\n", "  pool:\n    balance: url_param()\n"))
    assert problem.startswith("lb.yaml:7: backends.pool.balance: invalid value 'url_param()'"), problem


def test_request_hashing_needs_http_mode():
    text = MINIMAL.replace("    backend: pool\n", "    backend: pool\n    mode: tcp\n").replace(
        "  pool:\n", "  pool:\n    mode: tcp\n    balance: uri\n")
    problem = one_problem(text)
    assert problem.startswith("lb.yaml:9: backends.pool.balance: balance uri hashes"), problem
    assert "mode http" in problem


def test_mysql_health_check():
    text = MINIMAL.replace("    servers:", "    mode: tcp\n    health: {type: mysql, user: haproxy}\n    servers:")
    text = text.replace("    backend: pool", "    backend: pool\n    mode: tcp")
    health = loads(text).backends["pool"].health
    assert (health.type, health.user, health.client) == ("mysql", "haproxy", "post-41")
    problem = one_problem(MINIMAL.replace("    servers:", "    health: {type: http, user: haproxy}\n    servers:"))
    assert "backends.pool.health.user: user is for type mysql (type is http)" in problem
    problem = one_problem(MINIMAL.replace("    servers:", "    health: {type: mysql, client: post-80}\n    servers:"))
    assert "backends.pool.health.client" in problem and "post-41" in problem
