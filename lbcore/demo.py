"""`python -m lbcore.demo [CONFIG]`: demo backends and lbcore on a config,
by default the demo.yaml installed with the package.

A demo backend is started on each 127.0.0.1 server address of the config;
each answers every path with a line naming itself, and /healthcheck with
200, so balancing and health checks can be watched from a browser or curl.
Ctrl-C or SIGTERM stops everything, lbcore included; lbcore also stops if
this process is killed outright.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo.yaml")
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def make_handler(name: str):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path.startswith("/healthcheck"):
                body = b"ok\n"
            else:
                forwarded = self.headers.get("X-Forwarded-For", "-")
                body = f"Hello from {name} (you are {forwarded}, path {self.path})\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_HEAD = do_GET

    return Handler


def demo_servers(config) -> list[tuple[str, int]]:
    """(name, port) of every local server address, in config order, once."""
    seen: dict[int, str] = {}
    for backend in config.backends.values():
        for server in backend.servers:
            if server.address.host in LOCAL_HOSTS and server.address.port not in seen:
                seen[server.address.port] = server.name
    return [(name, port) for port, name in seen.items()]


class Stop(Exception):
    """SIGTERM or SIGHUP to the demo: stop like Ctrl-C."""


def _raise_stop(signum, frame):
    raise Stop()


def _die_with_parent() -> None:
    """In the lbcore child: SIGTERM when the demo process dies, however it dies."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = argv[0] if argv else DEFAULT_CONFIG
    from .config import ConfigError, load
    try:
        config = load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGHUP, _raise_stop)
    servers = []
    lb = None
    try:
        for name, port in demo_servers(config):
            server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(name))
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
        lb = subprocess.Popen([sys.executable, "-m", "lbcore.cli", "-c", path], preexec_fn=_die_with_parent)
        time.sleep(1.0)
        if lb.poll() is not None:
            return lb.returncode
        stats = f"http://{config.stats.bind}/" if config.stats and config.stats.bind else "(no stats.bind)"
        print(f"""
lbcore is running on {path} (pid {lb.pid}); demo backends on {', '.join(str(p) for _, p in demo_servers(config))}.

  curl http://127.0.0.1:8080/            http mode, round robin over app1..app3
  curl http://127.0.0.1:8080/healthz     answered by lbcore itself (monitor_uri)
  curl http://127.0.0.1:8090/            tcp mode
  {stats:<38} stats page (also /stats.json, /stats.csv, /metrics)
  curl -X POST -d '{{"state": "drain"}}' http://127.0.0.1:8404/admin/backends/demo/servers/app1
  echo "show stat" | socat - tcp:127.0.0.1:8405    HAProxy's runtime API
  kill -HUP {lb.pid}                       reload the config

Ctrl-C stops lbcore and the backends.
""", flush=True)
        return lb.wait()
    except (KeyboardInterrupt, Stop):
        return 0
    finally:
        if lb is not None and lb.poll() is None:
            lb.send_signal(signal.SIGTERM)
            try:
                lb.wait(10)
            except subprocess.TimeoutExpired:
                lb.kill()
                lb.wait()
        for server in servers:
            server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
