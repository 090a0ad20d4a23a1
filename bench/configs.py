"""Config files for every server the bench runs.

Each generator returns text only; targets.py writes it and starts the server.
Settings are the ones a careful operator would use for a fair comparison:
one thread or worker per proxy, keep-alive on both sides, no logging.
"""

from __future__ import annotations

import os
from pathlib import Path

SMALL_BODY = b"x" * 63 + b"\n"  # 64 bytes
LARGE_BODY_SIZE = 1 << 20


def bodies() -> dict[str, bytes]:
    """URL path (without '/') -> the exact body the backends serve there."""
    # The large body is not one repeated byte, so a proxy that drops or
    # reorders chunks fails the verification fetch.
    pattern = bytes(range(256))
    return {"64": SMALL_BODY, "1m": pattern * (LARGE_BODY_SIZE // len(pattern))}


# Timeouts shared by all proxies. Keep-alive idle time is long enough for the
# memory probe to hold its idle connections open while RSS is read.
CONNECT_TIMEOUT = "5s"
IO_TIMEOUT = "60s"
KEEPALIVE_TIMEOUT = "120s"


def write_bodies(docroot: Path) -> None:
    docroot.mkdir(parents=True, exist_ok=True)
    for path, body in bodies().items():
        (docroot / path).write_bytes(body)


def _nginx_common(prefix: Path, max_fds: int) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}daemon off;
worker_processes 1;
worker_rlimit_nofile {max_fds};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {max(1024, max_fds // 2)}; }}
"""


def _nginx_http_common(prefix: Path) -> str:
    return f"""    access_log off;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_timeout {KEEPALIVE_TIMEOUT};
    keepalive_requests 100000000;
    tcp_nodelay on;
"""


def nginx_backend(prefix: Path, port: int, docroot: Path, max_fds: int) -> str:
    return _nginx_common(prefix, max_fds) + f"""http {{
{_nginx_http_common(prefix)}    sendfile on;
    open_file_cache max=16;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {docroot};
        location / {{ }}
    }}
}}
"""


def nginx_proxy(prefix: Path, port: int, backends: list[int], max_fds: int) -> str:
    servers = "".join(f"        server 127.0.0.1:{p};\n" for p in backends)
    return _nginx_common(prefix, max_fds) + f"""http {{
{_nginx_http_common(prefix)}    upstream pool {{
{servers}        keepalive 256;
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://pool;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Stream large bodies through memory buffers, never temp files.
            proxy_buffers 16 64k;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"""


# The "rules" case: 3 ACLs, 4 http_request rules and 2 use_backend entries,
# the same on both sides. The bench's requests (/64, /1m) pass every rule
# and fall through to the default backend, as most requests of an API VIP do.
HAPROXY_RULES = """    acl is_api path_beg /api/
    acl is_static path_end .css .js .png
    acl bad_agent hdr(user-agent) -i -m sub sqlmap nikto
    http-request deny if bad_agent
    http-request deny deny_status 403 if { path_beg /admin } !{ src 127.0.0.0/8 }
    http-request set-header X-Forwarded-Port %[dst_port]
    http-request del-header X-Debug
    use_backend static if is_static
    use_backend api if is_api
"""

LBCORE_RULES = """    acls:
      is_api: "path_beg /api/"
      is_static: "path_end .css .js .png"
      bad_agent: "hdr(user-agent) -i -m sub sqlmap nikto"
    http_request:
      - {deny: true, if: bad_agent}
      - {deny: 403, if: "{ path_beg /admin } !{ src 127.0.0.0/8 }"}
      - {set_header: [X-Forwarded-Port, "%[dst_port]"]}
      - {del_header: X-Debug}
    use_backend:
      - {backend: static, if: is_static}
      - {backend: api, if: is_api}
"""


# The "stick" case: `stick on src` over a 1M-entry table, every request
# looked up and stored (issue 12: CPU per request near plain roundrobin's).
HAPROXY_STICK = """    stick-table type ip size 1m expire 30m
    stick on src
"""
LBCORE_STICK = """    stick_table: {type: ip, size: 1m, expire: 30m}
    stick_on: src
"""


def haproxy(mode: str, port: int, backends: list[int], maxconn: int) -> str:
    """mode: http | tcp | rules (http with HAPROXY_RULES) | stick (http with HAPROXY_STICK)."""
    rules = mode == "rules"
    stick = mode == "stick"
    mode = "http" if rules or stick else mode
    servers = "".join(
        f"    server s{i} 127.0.0.1:{p}\n" for i, p in enumerate(backends, 1))
    http_only = (
        "    option http-keep-alive\n"
        f"    timeout http-request 10s\n"
        f"    timeout http-keep-alive {KEEPALIVE_TIMEOUT}\n"
    ) if mode == "http" else ""
    return f"""global
    nbthread 1
    maxconn {maxconn}

defaults
    mode {mode}
    maxconn {maxconn}
    timeout connect {CONNECT_TIMEOUT}
    timeout client {IO_TIMEOUT}
    timeout server {IO_TIMEOUT}
    timeout tunnel 1h
{http_only}
frontend fe
    bind 127.0.0.1:{port}
{HAPROXY_RULES if rules else ""}    default_backend pool

backend pool
    balance roundrobin
{HAPROXY_STICK if stick else ""}{servers}""" + (f"""
backend static
    server s1 127.0.0.1:{backends[0]}

backend api
    server s2 127.0.0.1:{backends[-1]}
""" if rules else "")


def lbcore(mode: str, port: int, backends: list[int], maxconn: int, workers: int = 1,
           stats_port: int | None = None) -> str:
    """An lb.yaml in the format of shared/spec/lb-yaml.md.

    X-Forwarded-* are off because haproxy adds none without `option
    forwardfor`: both proxies then send the same bytes to the backends.
    mode "rules" is http with LBCORE_RULES, "stick" http with LBCORE_STICK.
    stats_port: the stats endpoint on 127.0.0.1 (the memory probe reads
    idle_parked there).
    """
    rules = mode == "rules"
    stick = mode == "stick"
    mode = "http" if rules or stick else mode
    servers = "".join(
        f"      - {{name: s{i}, address: \"127.0.0.1:{p}\", check: false}}\n"
        for i, p in enumerate(backends, 1))
    http_only = (
        "    forwarded_for: false\n"
        "    forwarded_proto: false\n"
    ) if mode == "http" else ""
    if rules:
        http_only += LBCORE_RULES
    extra = f"""
  static:
    health: {{type: none}}
    servers: [{{name: s1, address: "127.0.0.1:{backends[0]}", check: false}}]
  api:
    health: {{type: none}}
    servers: [{{name: s2, address: "127.0.0.1:{backends[-1]}", check: false}}]
""" if rules else ""
    stats = f"\nstats:\n  bind: \"127.0.0.1:{stats_port}\"\n" if stats_port else ""
    return f"""global:
  workers: {workers}
  maxconn: {maxconn}
  log: {{format: none}}
{stats}
defaults:
  timeouts:
    connect: {CONNECT_TIMEOUT}
    client: {IO_TIMEOUT}
    server: {IO_TIMEOUT}
    http_request: 10s
    http_keep_alive: {KEEPALIVE_TIMEOUT}
    tunnel: 1h

frontends:
  bench:
    bind: "127.0.0.1:{port}"
    mode: {mode}
    backend: pool
    maxconn: {maxconn}
{http_only}
backends:
  pool:
    mode: {mode}
    balance: roundrobin
    health: {{type: none}}
{LBCORE_STICK if stick else ""}    servers:
{servers}{extra}"""
