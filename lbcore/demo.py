"""`python -m lbcore.demo`: three demo backends and lbcore on conf/demo.yaml.

Each backend answers every path with a line naming itself, and
/healthcheck with 200, so balancing and health checks can be watched
from a browser or curl. Ctrl-C stops everything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEMO_PORTS = (8081, 8082, 8083)


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


def main() -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "conf", "demo.yaml")
    servers = []
    for i, port in enumerate(DEMO_PORTS, 1):
        server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(f"app{i}"))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    lb = subprocess.Popen([sys.executable, "-m", "lbcore.cli", "-c", config])
    time.sleep(1.0)
    if lb.poll() is not None:
        return lb.returncode
    print(f"""
lbcore is running on {config} (pid {lb.pid}); demo backends on {', '.join(map(str, DEMO_PORTS))}.

  curl http://127.0.0.1:8080/            http mode, round robin over app1..app3
  curl http://127.0.0.1:8080/healthz     answered by lbcore itself (monitor_uri)
  curl http://127.0.0.1:8090/            tcp mode
  http://127.0.0.1:8404/                 stats page (also /stats.json, /stats.csv, /metrics)
  curl -X POST -d '{{"state": "drain"}}' http://127.0.0.1:8404/admin/backends/demo/servers/app1
  kill -HUP {lb.pid}                       reload the config

Ctrl-C stops lbcore and the backends.
""", flush=True)
    try:
        return lb.wait()
    except KeyboardInterrupt:
        lb.send_signal(signal.SIGTERM)
        try:
            lb.wait(10)
        except subprocess.TimeoutExpired:
            lb.kill()
        return 0
    finally:
        for server in servers:
            server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
