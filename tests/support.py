"""Real processes for integration tests: test backends and lbcore itself."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import yaml

ROOT = Path(__file__).resolve().parent.parent
BACKEND_SCRIPT = ROOT / "tests" / "backend.py"


def _port_range():
    """LBCORE_TEST_PORTS=LOW-HIGH: this run picks its ports there (test.sh
    gives the two builds' concurrent runs disjoint ranges below the
    ephemeral range). lbcore and haproxy bind with SO_REUSEPORT, so two runs
    that picked the same free port would silently share it."""
    spec = os.environ.get("LBCORE_TEST_PORTS")
    if not spec:
        return None
    low, high = (int(p) for p in spec.split("-"))
    return iter(list(range(low + os.getpid() % (high - low), high + 1)) + list(range(low, high + 1)))


_PORTS = _port_range()


def free_port() -> int:
    """A port nothing listens on now, for a process the test starts."""
    global _PORTS
    if _PORTS is not None:
        for port in _PORTS:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
        _PORTS = _port_range()  # went round the whole range: start again
        return free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, step: float = 0.05):
    """`predicate()`'s first true value, polled every `step` for `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port}")


def wait_unix(path: str, timeout: float = 10.0, proc=None) -> None:
    """Until something accepts connections on the unix socket `path`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {path}")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(0.5)
                s.connect(path)
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {path}")


def socat(target: str, text: str, timeout: float = 10.0) -> str:
    """Send `text` with socat (a real client, as operators' scripts use it)
    to `target` ("unix-connect:PATH" or "tcp:HOST:PORT"); the whole answer."""
    result = subprocess.run(["socat", "-t", "5", "-", target], input=text.encode(),
                            capture_output=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"socat {target} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout.decode()


class BackendProcess:
    """tests/backend.py in its own process (HTTP, or raw TCP echo)."""

    def __init__(self, name: str, port: Optional[int] = None, tcp_echo: bool = False, env=None,
                 host: str = "127.0.0.1", args=()):
        self.name = name
        self.host = host
        self.args = list(args)  # more options of tests/backend.py, e.g. --two-writes
        self.port = port or free_port()
        self.tcp_echo = tcp_echo
        self.env = env
        self.health_file = os.path.join(tempfile.mkdtemp(prefix="lbhealth-"), "status")
        self.proc: Optional[subprocess.Popen] = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "BackendProcess":
        cmd = [sys.executable, str(BACKEND_SCRIPT), "--host", self.host, "--port", str(self.port),
               "--name", self.name,
               "--health-file", self.health_file]
        if self.tcp_echo:
            cmd.append("--tcp-echo")
        cmd += self.args
        env = dict(os.environ, **(self.env or {}))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=env)
        wait_port(self.port, host=self.host, proc=self.proc)
        return self

    def set_health(self, status) -> None:
        """Make /healthcheck answer `status` (an int, or "hang"); None restores 200."""
        if status is None:
            if os.path.exists(self.health_file):
                os.unlink(self.health_file)
            return
        with open(self.health_file, "w") as f:
            f.write(str(status))

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        self.kill()


class LbcoreProcess:
    """`python -m lbcore.cli -c lb.yaml` with a config given as a dict."""

    entry = ["-m", "lbcore.cli"]  # what python runs (tests/heap_probe.py wraps it)

    def __init__(self, config: dict, env=None, workdir: Optional[str] = None):
        self.config = config
        self.dir = workdir or tempfile.mkdtemp(prefix="lbcore-")
        self.path = os.path.join(self.dir, "lb.yaml")
        self.log_path = os.path.join(self.dir, "lbcore.log")
        self.env = env or {}
        self.proc: Optional[subprocess.Popen] = None
        self.write_config(config)

    def write_config(self, config) -> None:
        self.config = config
        with open(self.path, "w") as f:
            if isinstance(config, str):
                f.write(config)
            else:
                yaml.safe_dump(config, f, sort_keys=False)

    def start(self, wait_ports=()) -> "LbcoreProcess":
        env = dict(os.environ, **self.env)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, *self.entry, "-c", self.path],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=self.dir,
        )
        ports = list(wait_ports) or self.ports()
        for port in ports:
            wait_port(port, proc=self.proc)
        return self

    def ports(self) -> list[int]:
        if isinstance(self.config, str):
            return []
        ports = []
        for fe in self.config.get("frontends", {}).values():
            binds = fe["bind"] if isinstance(fe["bind"], list) else [fe["bind"]]
            ports += [int(b.rsplit(":", 1)[1]) for b in binds]
        if self.config.get("stats") and self.config["stats"].get("bind"):
            ports.append(int(self.config["stats"]["bind"].rsplit(":", 1)[1]))
        return ports

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def reload(self, config=None) -> None:
        if config is not None:
            self.write_config(config)
        self.signal(signal.SIGHUP)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def logs(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()


def check_config(config, extra_args=()) -> subprocess.CompletedProcess:
    """Run `lbcore -c FILE --check` on a dict or YAML text."""
    lb = LbcoreProcess(config)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "lbcore.cli", "-c", lb.path, "--check", *extra_args],
        capture_output=True, text=True, env=env, timeout=30,
    )


def http_config(servers: list[str], port: int, **overrides) -> dict:
    """A minimal http-mode config: one frontend on `port`, one backend."""
    backend = {
        "mode": "http",
        "balance": overrides.pop("balance", "roundrobin"),
        "servers": [{"name": f"s{i + 1}", "address": a} for i, a in enumerate(servers)],
    }
    backend.update(overrides.pop("backend", {}))
    frontend = {"bind": f"127.0.0.1:{port}", "mode": "http", "backend": "pool"}
    frontend.update(overrides.pop("frontend", {}))
    config = {
        "global": {"log": {"target": "stdout", "format": "http"}},
        "frontends": {"web": frontend},
        "backends": {"pool": backend},
    }
    config.update(overrides)
    return config


def get_json(port: int, path: str = "/stats.json", auth=None) -> dict:
    import http.client
    import base64

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return json.loads(data)


class Load:
    """Several keep-alive clients doing GETs in a loop until stopped; every
    failure (exception or non-2xx) is recorded with its reason. `fresh`:
    a new connection for every request instead."""

    def __init__(self, port: int, clients: int = 4, path: str = "/echo", pause: float = 0.0,
                 fresh: bool = False):
        import threading

        self.port = port
        self.path = path
        self.pause = pause
        self.fresh = fresh
        self.ok = 0
        self.failures: list[str] = []
        self.servers: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _run(self) -> None:
        import http.client

        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", self.path)
                resp = conn.getresponse()
                body = resp.read()
                server = resp.getheader("X-Server", "?")
                with self._lock:
                    if 200 <= resp.status < 300:
                        self.ok += 1
                        self.servers[server] = self.servers.get(server, 0) + 1
                    else:
                        self.failures.append(f"status {resp.status}: {body[:80]!r}")
                if self.fresh or resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                with self._lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                if conn is not None:
                    conn.close()
                conn = None
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()
