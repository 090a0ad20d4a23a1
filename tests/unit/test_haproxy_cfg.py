"""haproxy.cfg reader: HAProxy's lexical rules, sections and defaults,
the keywords' 2.6 meaning as lb.yaml specs, file:line errors."""

from __future__ import annotations

import os

import pytest
import yaml

from lbcore import haproxy_cfg
from lbcore.config import ConfigError, loads
from lbcore.haproxy_cfg.lexer import LexError, split_words


def write(tmp_path, text: str, name: str = "haproxy.cfg") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def load(tmp_path, text: str, **kw):
    return haproxy_cfg.load([write(tmp_path, text)], **kw)


def errors(tmp_path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value.problems


BASE = """\
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
"""


# -- lexer ------------------------------------------------------------------------

@pytest.mark.parametrize("line, words", [
    ("  bind   127.0.0.1:80\tssl", ["bind", "127.0.0.1:80", "ssl"]),
    ("stats realm Haproxy\\ Stats", ["stats", "realm", "Haproxy Stats"]),
    ('stats realm "Haproxy Stats"  # comment', ["stats", "realm", "Haproxy Stats"]),
    ("acl a path_reg '^/x#y$'", ["acl", "a", "path_reg", "^/x#y$"]),
    ("http-request set-header X '${NOPE}'", ["http-request", "set-header", "X", "${NOPE}"]),
    ('bind "${ADDR}:${PORT}"', ["bind", "10.0.0.1:80"]),
    ('bind "${ADDR}:${MISSING-8080}"', ["bind", "10.0.0.1:8080"]),
    ('server s "${MISSING}x"', ["server", "s", "x"]),
    # unquoted, HAProxy 2.6 leaves it (its address parser expands it later)
    ("crt ${ADDR}", ["crt", "${ADDR}"]),
    ('x "" y', ["x", "", "y"]),
    (r"x a\#b \x41", ["x", "a#b", "A"]),
    (r"acl dot path_reg ^/a\.b", ["acl", "dot", "path_reg", r"^/a\.b"]),
    ("# only a comment", []),
])
def test_split_words(line, words):
    assert split_words(line, {"ADDR": "10.0.0.1", "PORT": "80"}) == words


@pytest.mark.parametrize("line", ['x "open', "x 'open", 'x "${OPEN"', "x \\", r"x \xZZ"])
def test_split_words_refuses_broken_lines(line):
    with pytest.raises(LexError):
        split_words(line, {})


# -- sections and defaults ---------------------------------------------------------------

def test_listen_becomes_frontend_and_backend_with_haproxy_defaults(tmp_path):
    config = load(tmp_path, BASE + """
listen keystone
bind 127.0.0.1:5000
    server ctl1 127.0.0.1:15000 check
""").config
    fe, be = config.frontends["keystone"], config.backends["keystone"]
    assert fe.backend == "keystone" and fe.mode == be.mode == "http"
    assert str(fe.binds[0]) == "127.0.0.1:5000"
    # HAProxy adds no X-Forwarded-* unless told, and does not redispatch.
    assert not fe.forwarded_for and not fe.forwarded_proto
    assert be.redispatch is False and be.retries == 3
    assert fe.timeouts.client == 30 and fe.timeouts.http_request == 30  # falls back to client
    assert be.health.type == "tcp" and be.health.interval == 2 and (be.health.rise, be.health.fall) == (2, 3)


def test_a_proxy_takes_the_last_defaults_above_it_or_a_named_one(tmp_path):
    config = load(tmp_path, """
defaults base
    mode tcp
    timeout client 10s
defaults
    mode http
    retries 5
backend web
    server s 127.0.0.1:1
backend db from base
    server s 127.0.0.1:2
frontend f
    bind 127.0.0.1:9000
    default_backend web
""").config
    assert config.backends["web"].mode == "http" and config.backends["web"].retries == 5
    assert config.backends["db"].mode == "tcp" and config.backends["db"].retries == 3


def test_addresses_expand_environment_variables_unquoted(tmp_path):
    config = load(tmp_path, BASE + """
frontend f
    bind ${VIP}:${PORT}
    default_backend b
backend b
    server s ${SERVER}
""", env={"VIP": "127.0.0.5", "PORT": "8080", "SERVER": "127.0.0.6:80"}).config
    assert str(config.frontends["f"].binds[0]) == "127.0.0.5:8080"
    assert str(config.backends["b"].servers[0].address) == "127.0.0.6:80"


def test_files_and_directories_load_in_order(tmp_path):
    main = write(tmp_path, BASE)
    services = tmp_path / "services.d"
    services.mkdir()
    (services / "20-b.cfg").write_text("backend b\n    server s 127.0.0.1:2\n")
    (services / "10-a.cfg").write_text("frontend a\n    bind 127.0.0.1:9001\n    default_backend b\n")
    (services / "ignored.txt").write_text("not a cfg\n")
    config = haproxy_cfg.load([main, str(services)]).config
    assert config.frontends["a"].backend == "b"
    assert config.sources == (main, str(services))


# -- keywords ------------------------------------------------------------------------

def test_bare_httpchk_is_options_slash_passing_2xx_and_3xx(tmp_path):
    health = load(tmp_path, BASE + """
backend b
    option httpchk
    server s 127.0.0.1:1 check inter 500 rise 1 fall 4 port 9200
frontend f
    bind 127.0.0.1:9000
    default_backend b
""").config.backends["b"].health
    assert (health.type, health.method, health.path) == ("http", "OPTIONS", "/")
    assert health.expect_status == frozenset(range(200, 400))
    assert (health.interval, health.rise, health.fall, health.port) == (0.5, 1, 4, 9200)


def test_http_check_send_and_expect(tmp_path):
    health = load(tmp_path, BASE + """
backend b
    option httpchk
    http-check send meth GET uri /healthcheck hdr Host api.local
    http-check expect status 200-299
    timeout check 3s
    server s 127.0.0.1:1 check
frontend f
    bind 127.0.0.1:9000
    default_backend b
""").config.backends["b"].health
    assert (health.method, health.path, health.host) == ("GET", "/healthcheck", "api.local")
    assert health.expect_status == frozenset(range(200, 300)) and health.timeout == 3


def test_forwardfor_except_and_stats_listen(tmp_path):
    config = load(tmp_path, BASE + """
listen stats
    bind 127.0.0.1:1984
    stats enable
    stats uri /
    stats refresh 15s
    stats auth admin:secret
    stats admin if TRUE
frontend f
    bind 127.0.0.1:9000
    option forwardfor
    default_backend b
backend b
    server s 127.0.0.1:1
""").config
    assert config.stats.auth == ("admin", "secret") and config.stats.admin and config.stats.refresh == 15
    assert config.frontends["f"].forwarded_for and config.frontends["f"].forwarded_for_except == ()
    fe = load(tmp_path, BASE + """
frontend f
    bind 127.0.0.1:9000
    option forwardfor except 127.0.0.0/8
    default_backend b
backend b
    server s 127.0.0.1:1
""").config.frontends["f"]
    assert fe.forwarded_for and fe.forwarded_for_except == ("127.0.0.0/8",)


def test_rules_map_onto_lb_yaml_rules(tmp_path):
    config = load(tmp_path, BASE + """
userlist admins
    user ops insecure-password pw
frontend f
    bind 127.0.0.1:9000
    acl internal src 10.0.0.0/8
    http-request deny if { path -i -m beg /server-status }
    http-request set-header X-Forwarded-Proto https if { ssl_fc }
    redirect scheme https code 301 if !{ ssl_fc } !internal
    http-response deny if { status 500 }
    use_backend b if internal
    default_backend b
backend b
    acl auth_ok http_auth(admins)
    http-request auth realm basicauth unless auth_ok
    server s 127.0.0.1:1
""").config
    fe = config.frontends["f"]
    assert fe.backend == "b" and len(fe.http_request) == 3 and len(fe.http_response) == 1
    assert len(config.backends["b"].http_request) == 1


def test_frontend_without_backend_answers_503(tmp_path):
    config = load(tmp_path, BASE + """
frontend status
    bind 127.0.0.1:61313
    monitor-uri /
""").config
    fe = config.frontends["status"]
    assert fe.monitor_uri == "/" and config.backends[fe.backend].servers == ()


def test_global_keywords(tmp_path):
    loaded = load(tmp_path, """
global
    log /dev/log local1 info
    maxconn 4000
    nbthread 4
    cpu-map auto:1/all 0-63
    tune.maxrewrite 1024
    hard-stop-after 30s
    pidfile /run/haproxy.pid
    daemon
""" + BASE + """
frontend f
    bind 127.0.0.1:9000
    option httplog
    log global
    default_backend b
backend b
    server s 127.0.0.1:1
""")
    g = loaded.config.global_
    assert (g.workers, g.maxconn, g.grace, g.pidfile) == (4, 4000, 30, "/run/haproxy.pid")
    assert g.log.syslog_socket == "/dev/log" and g.log.facility == "local1" and g.log.format == "http"
    assert loaded.daemon
    # one warning each for nbthread, cpu-map and tune.*
    assert [w.split(": ")[1] for w in loaded.warnings] == ["nbthread", "cpu-map", "tune.maxrewrite"]


def test_galera_backups_and_shutdown_sessions(tmp_path):
    be = load(tmp_path, BASE + """
listen mariadb
    mode tcp
    bind 127.0.0.1:3306
    option httpchk
    server c1 127.0.0.1:13306 check port 9200 inter 2s on-marked-down shutdown-sessions
    server c2 127.0.0.2:13306 backup check port 9200 inter 2s on-marked-down shutdown-sessions
    server c3 127.0.0.3:13306 backup send-proxy-v2 check port 9200 inter 2s on-marked-down shutdown-sessions
""").config.backends["mariadb"]
    assert [s.backup for s in be.servers] == [False, True, True]
    assert be.servers[2].send_proxy == "v2" and be.on_marked_down == "shutdown_sessions"
    assert be.health.port == 9200 and be.health.method == "OPTIONS"


# -- errors: file:line and keyword ----------------------------------------------------------

def test_errors_name_file_line_and_keyword(tmp_path):
    problems = errors(tmp_path, BASE + """
frontend f
    bind 127.0.0.1:9000
    option bogus
    frobnicate yes
    timeout client-fin 5s
""")
    path = str(tmp_path / "haproxy.cfg")
    assert f"{path}:9: option bogus: not supported by lbcore" in problems
    assert f"{path}:10: frobnicate: unknown keyword in 'frontend' section" in problems
    assert any(p.startswith(f"{path}:11: timeout client-fin:") for p in problems)
    problems = errors(tmp_path, BASE + """
frontend f
    bind 127.0.0.1:9000
    default_backend missing
""")
    assert problems[0].startswith(f"{path}:9: default_backend: backend 'missing' is not defined"), problems


def test_loader_errors_point_at_the_haproxy_line(tmp_path):
    problems = errors(tmp_path, BASE + """
frontend f
    bind 127.0.0.1:9000
    default_backend b
backend b
    option httpchk POST /x
    server s 127.0.0.1:1 check maxconn 0
""")
    path = str(tmp_path / "haproxy.cfg")
    assert any(p.startswith(f"{path}:11: option httpchk: invalid value 'POST'") for p in problems), problems
    problems = errors(tmp_path, BASE + "backend b\n    server s 127.0.0.1:1 check weight 300\n")
    assert problems == [f"{path}:7: server weight: 300 is out of range (0..256)"]


def test_servers_must_agree_on_what_lbcore_sets_per_backend(tmp_path):
    problems = errors(tmp_path, BASE + """
frontend f
    bind 127.0.0.1:9000
    default_backend b
backend b
    server s1 127.0.0.1:1 check inter 2000
    server s2 127.0.0.1:2 check inter 1000
""")
    assert any(":12: server inter: servers of 'b' disagree" in p for p in problems), problems


def test_pool_max_conn_and_purge_delay_become_the_backend_keys(tmp_path):
    config = load(tmp_path, BASE + """
frontend f
    bind 127.0.0.1:9000
    default_backend b
backend b
    default-server pool-max-conn 8 pool-purge-delay 2s
    server s1 127.0.0.1:1
    server s2 127.0.0.1:2
backend c
    server s1 127.0.0.1:1 pool-max-conn -1
backend d
    server s1 127.0.0.1:1
""").config
    b, c, d = (config.backends[n] for n in "bcd")
    assert (b.pool_max_conn, b.pool_purge_delay) == (8, 2.0)
    assert (c.pool_max_conn, d.pool_max_conn, d.pool_purge_delay) == (None, None, 5.0)
    problems = errors(tmp_path, BASE + """
backend b
    server s1 127.0.0.1:1 pool-max-conn 4
    server s2 127.0.0.1:2 pool-max-conn 5
    server s3 127.0.0.1:3 pool-purge-delay 0
""")
    assert any(":9: server pool-max-conn: servers of 'b' disagree" in p for p in problems), problems
    assert any(":10: server pool-purge-delay: a time of 0" in p for p in problems), problems


def test_keyword_outside_section_and_bad_quote(tmp_path):
    assert errors(tmp_path, "maxconn 10\n")[0].endswith(":1: maxconn: a keyword outside any section")
    assert errors(tmp_path, 'global\n  log "/dev/log local0\n')[0].endswith(":2: unmatched double quote")


# -- convert ---------------------------------------------------------------------------

def test_convert_gives_an_lb_yaml_with_the_same_specs(tmp_path):
    path = write(tmp_path, """
global
    log 127.0.0.1:514 local0
""" + BASE + """
listen api
    bind 127.0.0.1:9000
    option httpchk GET /healthcheck
    option forwardfor
    balance leastconn
    server a 127.0.0.1:1 check inter 2000 rise 2 fall 5
    server b 127.0.0.1:2 check inter 2000 rise 2 fall 5 backup
""")
    text, _ = haproxy_cfg.convert([path])
    assert f"# {path}:10 listen api" in text
    converted = loads(text, str(tmp_path / "lb.yaml"))
    original = haproxy_cfg.load([path]).config
    assert converted.frontends == original.frontends
    assert converted.backends == original.backends
    assert converted.global_ == original.global_
    assert yaml.safe_load(text)["backends"]["api"]["balance"] == "leastconn"
    assert os.path.basename(path) == "haproxy.cfg"


def test_openstack_ansible_galera_and_healthcheck_headers(tmp_path):
    config = load(tmp_path, BASE + """
backend keystone-back
    mode http
    option httpchk
    http-check send hdr User-Agent "osa-haproxy-healthcheck" meth GET uri /
    http-check expect status 300
    server infra1 127.3.1.1:5000 check port 5000 inter 12000 rise 3 fall 3
backend galera-back
    mode tcp
    stick store-request src
    stick-table type ip size 256k expire 30m
    option httpchk HEAD / HTTP/1.0\\r\\nUser-agent:\\ osa-haproxy-healthcheck
    server infra1 127.3.1.1:3306 check port 9200 inter 12000 rise 1 fall 1
    server infra2 127.3.1.2:3306 check port 9200 inter 12000 rise 1 fall 1 backup
frontend f
    bind 127.0.0.1:9000
    default_backend keystone-back
frontend g
    mode tcp
    bind 127.0.0.1:9001
    default_backend galera-back
""").config
    ks, galera = config.backends["keystone-back"].health, config.backends["galera-back"]
    assert (ks.method, ks.path, ks.headers, ks.expect_status) == (
        "GET", "/", (("User-Agent", "osa-haproxy-healthcheck"),), frozenset({300}))
    assert (galera.health.method, galera.health.port) == ("HEAD", 9200)
    assert galera.health.headers == (("User-agent", "osa-haproxy-healthcheck"),)
    [rule] = galera.stick_on
    assert (rule.sample, rule.match, rule.store) == ("src", False, True)


def test_a_stats_listen_with_a_refused_rule_is_an_error_not_a_crash(tmp_path):
    problems = errors(tmp_path, BASE + """
listen stats
    bind 127.0.0.1:1984
    stats enable
    http-request frobnicate
    http-request deny
""")
    assert any(":10: http-request frobnicate: not supported by lbcore" in p for p in problems), problems
    assert any(":11: http-request deny: rules in a stats listen are not supported" in p for p in problems)


def test_mysql_check_maps_to_a_mysql_health_check(tmp_path):
    config = load(tmp_path, BASE + """
defaults galera
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option httpchk
listen mariadb from galera
    bind 127.0.0.1:3306
    option mysql-check user haproxy post-41
    server c1 127.0.0.1:13306 check inter 2s
    server c2 127.0.0.2:13306 check inter 2s backup
listen old
    mode tcp
    bind 127.0.0.1:3307
    option mysql-check user monitor pre-41
    server c1 127.0.0.1:13306 check
listen greeting
    mode tcp
    bind 127.0.0.1:3308
    option mysql-check
    server c1 127.0.0.1:13306 check
""").config
    galera = config.backends["mariadb"].health
    # The last check option wins over the httpchk of the defaults, as in HAProxy.
    assert (galera.type, galera.user, galera.client, galera.interval) == ("mysql", "haproxy", "post-41", 2.0)
    old = config.backends["old"].health
    assert (old.type, old.user, old.client) == ("mysql", "monitor", "pre-41")
    greeting = config.backends["greeting"].health
    assert (greeting.type, greeting.user) == ("mysql", None)


@pytest.mark.parametrize("line, message", [
    ("option mysql-check haproxy", "expected 'option mysql-check [user NAME [post-41|pre-41]]'"),
    ("option mysql-check user haproxy post-80", "'post-80': expected post-41 or pre-41"),
    ("option pgsql-check user x", "'option pgsql-check' is not supported by lbcore"),
])
def test_mysql_check_errors(tmp_path, line, message):
    problems = errors(tmp_path, BASE + f"""
listen db
    mode tcp
    bind 127.0.0.1:3306
    {line}
    server c1 127.0.0.1:13306 check
""")
    assert any(f":10: option {line.split()[1]}: {message}" in p for p in problems), problems


def test_errorfiles_inherit_from_defaults_and_a_proxy_replaces_one_code(tmp_path):
    (tmp_path / "503.http").write_bytes(b"HTTP/1.0 503 Service Unavailable\nConnection: close\n\nsorry\n")
    (tmp_path / "503b.http").write_bytes(b"HTTP/1.1 503 Busy\r\nContent-Length: 5\r\n\r\nbusy\n")
    (tmp_path / "504.http").write_bytes(b"HTTP/1.1 504 Gateway Time-out\r\n\r\n")
    config = load(tmp_path, BASE + f"""
    errorfile 503 {tmp_path}/503.http
    errorfile 504 {tmp_path}/504.http
frontend f
    bind 127.0.0.1:9000
    default_backend b
backend b
    errorfile 503 {tmp_path}/503b.http
    server s 127.0.0.1:1
""").config
    fe, be = config.frontends["f"].error_files, config.backends["b"].error_files
    assert fe[503].head == b"HTTP/1.0 503 Service Unavailable\r\n" and fe[503].close and fe[503].http10
    assert fe[503].closing() == b"HTTP/1.0 503 Service Unavailable\r\n\r\nsorry\n"
    assert be[503].head == b"HTTP/1.1 503 Busy\r\ncontent-length: 5\r\n" and not be[503].close
    assert be[504] == fe[504]


@pytest.mark.parametrize("content, message", [
    (b"HTTP/1.1 503 X\r\nContent-Length: 10\r\n\r\nabc", "Content-Length 10 does not match the body's 3 bytes"),
    (b"HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "a chunked error file is not supported"),
    (b"<html>503</html>\n", "no empty line ends the response's headers"),
    (b"HTTP/2 503\r\n\r\n", "is not an HTTP/1.0 or 1.1 status line"),
    (b"HTTP/1.1 503 X\r\nBad Header\r\n\r\n", "invalid header line"),
])
def test_errorfile_errors_name_the_line_once(tmp_path, content, message):
    (tmp_path / "e.http").write_bytes(content)
    problems = errors(tmp_path, BASE + f"""
    errorfile 503 {tmp_path}/e.http
frontend f
    bind 127.0.0.1:9000
    default_backend b
backend b
    server s 127.0.0.1:1
""")
    assert len(problems) == 1 and ":7: errorfile: error file" in problems[0] and message in problems[0], problems


def test_disabled_servers_and_proxies(tmp_path):
    loaded = load(tmp_path, BASE + """
    default-server disabled
frontend f
    bind 127.0.0.1:9000
    default_backend b
backend b
    server s1 127.0.0.1:1 enabled
    server s2 127.0.0.1:2
listen off
    disabled
    bind 127.0.0.1:9001
    server s1 127.0.0.1:1
""")
    config = loaded.config
    assert [s.disabled for s in config.backends["b"].servers] == [False, True]
    assert "off" not in config.frontends and "off" not in config.backends
    assert any(":15: disabled: listen 'off' is not started, as in HAProxy" in w for w in loaded.warnings)


def test_kolla_metrics_listen_becomes_an_exporter_bind(tmp_path):
    config = load(tmp_path, BASE + """
listen stats
   bind 127.0.0.1:1984
   mode http
   stats enable
   stats uri /
   stats auth openstack:pw
listen metrics
   bind 127.0.0.1:9101
   mode http
   http-request use-service prometheus-exporter if { path /metrics }
frontend status
    bind 127.0.0.1:61313
    mode http
    monitor-uri /
""").config
    assert str(config.stats.bind) == "127.0.0.1:1984" and config.stats.auth == ("openstack", "pw")
    assert [str(a) for a in config.stats.metrics_binds] == ["127.0.0.1:9101"]
    assert "metrics" not in config.frontends
    problems = errors(tmp_path, BASE + """
listen metrics
   bind 127.0.0.1:9101 ssl crt /x.pem
   mode http
   http-request use-service prometheus-exporter if { path /metrics }
   http-request deny if { src 10.0.0.1 }
""")
    assert any(":8: bind: 'ssl crt /x.pem' on an exporter listener is not supported" in p for p in problems), problems
    assert any(":11: http-request deny: rules in an exporter listen are not supported" in p for p in problems)


def test_global_grace_is_the_stop_delay_and_a_proxy_grace_is_refused(tmp_path):
    config = load(tmp_path, "global\n    grace 3s\n    hard-stop-after 30s\n" + BASE + """
frontend f
    bind 127.0.0.1:9000
    monitor-uri /
""").config
    assert (config.global_.stop_delay, config.global_.grace) == (3.0, 30.0)
    problems = errors(tmp_path, BASE + """
frontend f
    bind 127.0.0.1:9000
    grace 2s
    monitor-uri /
""")
    assert any(":9: grace: the 'grace' keyword is not supported any more since HAProxy version 2.5" in p
               for p in problems), problems


def test_tripleo_backend_syntax_stats_and_a_tls_stats_bind(tmp_path):
    pem_path = str(tmp_path / "overcloud.pem")  # the loader only checks it exists; the server reads it
    (tmp_path / "overcloud.pem").write_text("")
    config = load(tmp_path, BASE + f"""
frontend haproxy.stats
  bind 127.0.0.1:1993 transparent ssl crt {pem_path}
  mode http
  default_backend haproxy.stats_be
  stats enable
  stats uri /
  stats auth admin:pw
backend haproxy.stats_be
  mode http
  stats enable
  stats uri /
  stats auth admin:pw2
frontend f
    bind 127.0.0.1:9000
    default_backend b
backend b
    server s 127.0.0.1:1
""").config
    assert str(config.stats.bind) == "127.0.0.1:1993" and config.stats.auth == ("admin", "pw2")
    assert config.stats.tls is not None and config.stats.tls.cert == pem_path
    assert "haproxy.stats" not in config.frontends


def test_bind_interface_maps_onto_the_bind_entry(tmp_path):
    fe = load(tmp_path, BASE + """
frontend f
    bind 127.0.0.1:9000 interface lo
    bind 127.0.0.1:9001 transparent interface eth1
    bind 127.0.0.1:9002
    default_backend b
backend b
    server s 127.0.0.1:1
""").config.frontends["f"]
    assert {str(a): i for a, i in fe.interfaces.items()} == {"127.0.0.1:9000": "lo", "127.0.0.1:9001": "eth1"}
    assert [str(a) for a in fe.transparent] == ["127.0.0.1:9001"]


def test_tcp_check_steps_map_onto_health_steps(tmp_path):
    config = load(tmp_path, BASE + """
    option tcp-check
    tcp-check send PING\\r\\n
    tcp-check expect string +PONG
listen redis
  mode tcp
  bind 127.0.0.1:6379
  balance first
  option tcp-check
  tcp-check connect port 16379
  tcp-check send AUTH\\ pw\\r\\n
  tcp-check expect string +OK
  tcp-check send info\\ replication\\r\\n
  tcp-check expect rstring role:mast(er)
  server s 127.0.0.1:1 check
listen inherits
  mode tcp
  bind 127.0.0.1:6380
  server s 127.0.0.1:1 check
listen httpchk_wins
  mode tcp
  bind 127.0.0.1:6381
  option httpchk
  server s 127.0.0.1:1 check
""").config
    redis = config.backends["redis"].health
    assert (redis.type, redis.port) == ("tcp", 16379)
    assert redis.steps == (("send", "AUTH pw\r\n"), ("expect", "+OK"), ("send", "info replication\r\n"),
                           ("expect_regex", "role:mast(er)"))
    assert config.backends["inherits"].health.steps == (("send", "PING\r\n"), ("expect", "+PONG"))
    assert config.backends["httpchk_wins"].health.type == "http"
    problems = errors(tmp_path, BASE + """
listen redis
  mode tcp
  bind 127.0.0.1:6379
  option tcp-check
  tcp-check send PING\\r\\n
  tcp-check connect port 1
  tcp-check expect ! string +PONG
  server s 127.0.0.1:1 check
""")
    assert any(":12: tcp-check connect: a 'connect' after other steps" in p for p in problems), problems
    assert any(":13: tcp-check expect: not supported by lbcore" in p for p in problems), problems


def test_zero_timeouts_and_expect_rstatus(tmp_path):
    loaded = load(tmp_path, BASE + """
listen rabbitmq
  mode tcp
  bind 127.0.0.1:5672
  timeout client 0
  timeout server 0
  server s 127.0.0.1:1
listen ceph_dashboard
  bind 127.0.0.1:8444
  option httpchk HEAD /
  http-check expect rstatus ^(2|3)0[0-4]$
  server s 127.0.0.1:1 check
""")
    config = loaded.config
    assert config.frontends["rabbitmq"].timeouts.client == config.backends["rabbitmq"].timeouts.server == 24 * 86400
    assert any(":10: timeout client: 0 means no timeout in HAProxy; lbcore uses 24d" in w for w in loaded.warnings)
    assert config.backends["ceph_dashboard"].health.expect_status == frozenset(
        {200, 201, 202, 203, 204, 300, 301, 302, 303, 304})


def test_the_plain_line_fast_path_splits_as_the_full_lexer():
    """split_words takes str.split() for a line with no quote, backslash or
    comment; it must give the words the full lexer gives, for lines mixing
    every character str.split() or HAProxy could take for a separator."""
    import random

    from lbcore.haproxy_cfg.lexer import split_words_fully
    alphabet = ["a", "b", "1", ":", ".", "$", "{", "}", "-", " ", " ", "\t", "\r", "\v", "\f",
                "\x1c", "\x1f", "\x00", "\x7f", "\x85", "\xa0", "\u3000", "\u2028", "é"]
    rng = random.Random(15)
    fast = 0
    for _ in range(20000):
        line = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
        assert split_words(line, {}) == split_words_fully(line, {}), repr(line)
        fast += line.isascii() and not set(line) & set("\v\f\x1c\x1f")
    assert fast > 1000  # (lines the fast path takes)
    for line in ("    server s0 127.0.0.1:29001 check inter 2s rise 2 fall 3", "\tbind\t*:80  ", "", "   "):
        assert split_words(line) == split_words_fully(line) == line.split()


def test_addresses_written_as_ipv4_port_skip_the_parse_with_the_same_result(monkeypatch):
    """server_address / bind_addresses give an IPV4:PORT back as written
    without parsing it: the same result (or error) as the full parse."""
    import random

    from lbcore.haproxy_cfg import values
    rng = random.Random(15)
    words = ["0.0.0.0:80", "00.0.0.0:80", "1.2.3.4:0", "999.1.1.1:65536", "1.2.3.4:80,5.6.7.8:90",
             "1.2.3.4", "1.2.3.4:", ":80", "*:80", "[::1]:80", "::1:80", "ipv4@1.2.3.4:80", "1.2.3.4:+1",
             "1.2.3.4:80-90", "/run/x.sock", "1.2.3.4.5:80", "1.2.3:80", " 1.2.3.4:80", "1.2.3.4:80\n"]
    for _ in range(3000):
        numbers = [0, 1, 10, 127, 255, 256, 999, "01", "0", "1000"]
        parts = [str(rng.choice(numbers)) for _ in range(rng.choice([3, 4, 5]))]
        word = ".".join(parts) + rng.choice([":", ":", "", "::", "-"]) + str(rng.choice([0, 80, 8080, 65536, "", "x"]))
        words.append(word)
        words.append("".join(rng.choice("0123456789.:,*-+@[]") for _ in range(rng.randrange(1, 16))))

    def outcome(parse, word):
        try:
            return parse(word)
        except ValueError as exc:
            return f"error: {exc}"

    fast = [(outcome(values.server_address, w), outcome(values.bind_addresses, w)) for w in words]
    assert sum(values._as_written(w) for w in words) > 100  # (words the short cut takes)
    monkeypatch.setattr(values, "_as_written", lambda word: False)
    full = [(outcome(values.server_address, w), outcome(values.bind_addresses, w)) for w in words]
    assert fast == full
