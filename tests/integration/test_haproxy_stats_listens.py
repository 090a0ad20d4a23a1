"""The stats and Prometheus exporter listens the three deployment tools
render, beside haproxy 2.6 on the same file: kolla-ansible's `listen stats`
plus an exporter-only `listen metrics` on its own port, openstack-ansible's
stats listen that also serves the exporter and admin actions, TripleO's
`listen haproxy.stats` bound `transparent`."""

from __future__ import annotations

import base64
import http.client

import pytest

from tests.haproxy import need_haproxy, start_on_file, stop_on_file
from tests.integration.test_haproxy_cfg import lbcore_env
from tests.support import free_port, wait_port

KOLLA = """\
global
    maxconn 100
defaults
    log global
    option redispatch
    timeout connect 2s
    timeout client 10s
    timeout server 10s
listen stats
   bind {vip}:{stats}
   mode http
   stats enable
   stats uri /
   stats refresh 15s
   stats realm Haproxy\\ Stats
   stats auth openstack:s3cr3t
listen metrics
   bind {vip}:{metrics}
   mode http
   http-request use-service prometheus-exporter if {{ path /metrics }}
frontend status
    bind {vip}:{other}
    mode http
    monitor-uri /
"""

OSA = """\
global
        maxconn 100
defaults
        log global
        option dontlognull
        option redispatch
        option http-server-close
        retries 3
        timeout client 10s
        timeout connect 2s
        timeout server 10s
listen stats
    bind {vip}:{stats}
    mode http
    http-request use-service prometheus-exporter if {{ path /metrics }}
    stats enable
    stats hide-version
    stats realm Haproxy\\ Statistics
    stats uri /
    stats show-node
    stats show-legends
    stats auth openstack:s3cr3t
    stats admin if TRUE
    stats refresh 60s
frontend keystone_service-front-1
    bind {vip}:{other}
    mode http
    default_backend keystone_service-back
backend keystone_service-back
    mode http
    server infra1 127.0.0.1:{closed} check port {closed} inter 12000 rise 1 fall 1
"""

TRIPLEO = """\
global
  daemon
  group  haproxy
  maxconn  100
  user  haproxy
defaults
  mode  tcp
  retries  3
  timeout  http-request 10s
  timeout  queue 2m
  timeout  connect 2s
  timeout  client 10s
  timeout  server 10s
  timeout  check 10s
listen haproxy.stats
  bind {vip}:{stats} transparent
  mode http
  stats enable
  stats uri /
  stats auth admin:s3cr3t
listen keystone_public
  bind {vip}:{other} transparent
  mode http
  server ctl1 127.0.0.1:{closed} check fall 5 inter 2000 rise 2
"""

SHAPES = {"kolla": KOLLA, "openstack-ansible": OSA, "tripleo": TRIPLEO}


def get(vip: str, port: int, path: str, auth=None):
    conn = http.client.HTTPConnection(vip, port, timeout=5)
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, resp.getheader("Content-Type") or "", body


def metric_names(body: bytes) -> set:
    return {line.split(b"{")[0].split(b" ")[0].decode() for line in body.splitlines()
            if line and not line.startswith(b"#")}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_stats_and_exporter_listens_answer_as_haproxy(shape, tmp_path):
    need_haproxy()
    closed = free_port()
    seen = {}
    running = []
    try:
        for name, vip in (("haproxy", "127.24.0.1"), ("lbcore", "127.24.0.2")):
            ports = {"stats": free_port(), "metrics": free_port(), "other": free_port()}
            path = tmp_path / f"{name}.cfg"
            text = SHAPES[shape].format(vip=vip, closed=closed, **ports)
            if shape == "tripleo" and name == "haproxy":
                text = text.replace("  daemon\n", "")  # -db keeps both in the foreground anyway
            path.write_text(text)
            proc, log = start_on_file(name, str(path), str(tmp_path), lbcore_env())
            running.append((proc, log))
            wait_port(ports["stats"], host=vip, proc=proc)
            user = "admin:s3cr3t" if shape == "tripleo" else "openstack:s3cr3t"
            exporter = ports["metrics"] if shape == "kolla" else ports["stats"]
            answers = {
                "stats without auth": get(vip, ports["stats"], "/")[0],
                "stats": get(vip, ports["stats"], "/", user)[0],
                "csv": get(vip, ports["stats"], "/;csv", user)[0],
            }
            if shape != "tripleo":  # TripleO renders no exporter
                answers["metrics"] = get(vip, exporter, "/metrics", user if shape != "kolla" else None)
            if shape == "kolla":
                answers["exporter elsewhere"] = get(vip, exporter, "/", None)[0]
                answers["exporter needs no auth"] = get(vip, exporter, "/metrics")[0]
            seen[name] = answers
    finally:
        for proc, log in running:
            stop_on_file(proc, log)
    haproxy, lbcore = seen["haproxy"], seen["lbcore"]
    if shape == "tripleo":
        assert lbcore == haproxy
        return
    status, content_type, body = lbcore.pop("metrics")
    h_status, h_type, h_body = haproxy.pop("metrics")
    assert (status, h_status) == (200, 200)
    assert content_type.startswith("text/plain; version=0.0.4") and h_type.startswith("text/plain; version=0.0.4")
    # The series dashboards and alerts read, by HAProxy's exporter names.
    wanted = {"haproxy_process_uptime_seconds", "haproxy_frontend_current_sessions",
              "haproxy_frontend_http_requests_total", "haproxy_backend_status", "haproxy_backend_active_servers"}
    if shape == "openstack-ansible":
        wanted |= {"haproxy_server_status", "haproxy_server_check_failures_total"}
    assert wanted <= metric_names(h_body)
    assert wanted <= metric_names(body), wanted - metric_names(body)
    assert lbcore == haproxy
