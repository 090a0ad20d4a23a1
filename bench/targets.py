"""What wrk is pointed at: the backends straight, or a proxy in front of them.

A target starts its own server (if any) on a free port, proves it serves
both bodies byte for byte, and reports the pid whose process tree is charged
for CPU and memory.
"""

from __future__ import annotations

import http.client
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from bench import configs
from bench.procs import Child, ProcessSet, free_ports, wait_for_port, which_or_name

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class TargetSpec:
    name: str
    mode: str       # the haproxy mode it is compared with: http | tcp
    kind: str       # direct | haproxy | nginx | lbcore
    proxied: bool   # False for `direct`: there is no proxy process to charge


ALL_TARGETS = (
    TargetSpec("direct", "http", "direct", False),
    TargetSpec("haproxy-http", "http", "haproxy", True),
    TargetSpec("haproxy-tcp", "tcp", "haproxy", True),
    TargetSpec("nginx-http", "http", "nginx", True),
    TargetSpec("lbcore-http", "http", "lbcore", True),
    TargetSpec("lbcore-tcp", "tcp", "lbcore", True),
    # http with rules (configs.HAPROXY_RULES / LBCORE_RULES), compared with
    # haproxy running the same rules
    TargetSpec("haproxy-rules", "rules", "haproxy", True),
    TargetSpec("lbcore-rules", "rules", "lbcore", True),
    # http with `stick on src` (configs.HAPROXY_STICK / LBCORE_STICK)
    TargetSpec("haproxy-stick", "stick", "haproxy", True),
    TargetSpec("lbcore-stick", "stick", "lbcore", True),
)


def select_targets(only: str | None) -> list[TargetSpec]:
    """`--only haproxy,lbcore-http`: a name, or a prefix before '-'."""
    if not only:
        return list(ALL_TARGETS)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    known = {t.name for t in ALL_TARGETS} | {t.kind for t in ALL_TARGETS}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise ValueError(
            f"unknown target(s) {', '.join(unknown)}; choose from "
            f"{', '.join(sorted(known))}")
    return [t for t in ALL_TARGETS if t.name in wanted or t.kind in wanted]


@dataclass
class Bench:
    """What every target needs to start: where to write, what to proxy to."""
    procs: ProcessSet
    workdir: Path
    backend_ports: list[int]
    max_fds: int
    maxconn: int
    lbcore_cmd: list[str] | None = None
    start_timeout: float = 20.0
    lbcore_workers: int = 1  # global.workers of the lbcore targets


@dataclass
class Running:
    spec: TargetSpec
    port: int
    child: Child | None

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child else None

    def alive(self) -> bool:
        return self.child is None or self.child.alive()


def lbcore_command(override: str | None) -> list[str]:
    if override:
        return shlex.split(override)
    return [sys.executable, "-m", "lbcore.cli"]


def _lbcore_env() -> dict:
    env = dict(os.environ)
    # The working tree wins over any installed copy, so the bench measures
    # the code being changed.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def start_target(spec: TargetSpec, bench: Bench, tag: str = "",
                 verify_paths: tuple[str, ...] = ("64", "1m"), stats_port: int | None = None) -> Running:
    """Start `spec`, wait until it listens and serves the bodies correctly.
    stats_port: lbcore's stats endpoint there (other kinds ignore it).

    Raises RuntimeError with the server's own words when it does not.
    """
    if spec.kind == "direct":
        running = Running(spec, bench.backend_ports[0], None)
        verify(running, verify_paths)
        return running
    name = spec.name + tag
    directory = bench.workdir / name
    directory.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    if spec.kind == "haproxy":
        cfg = directory / "haproxy.cfg"
        cfg.write_text(configs.haproxy(spec.mode, port, bench.backend_ports, bench.maxconn))
        child = bench.procs.start(name, [which_or_name("haproxy"), "-db", "-f", str(cfg)])
    elif spec.kind == "nginx":
        cfg = directory / "nginx.conf"
        cfg.write_text(configs.nginx_proxy(directory, port, bench.backend_ports, bench.max_fds))
        child = bench.procs.start(
            name, [which_or_name("nginx"), "-p", str(directory), "-c", str(cfg), "-e", "stderr"])
    elif spec.kind == "lbcore":
        cfg = directory / "lb.yaml"
        cfg.write_text(configs.lbcore(spec.mode, port, bench.backend_ports, bench.maxconn,
                                      workers=bench.lbcore_workers, stats_port=stats_port))
        argv = (bench.lbcore_cmd or lbcore_command(None)) + ["-c", str(cfg)]
        child = bench.procs.start(name, argv, env=_lbcore_env(), cwd=str(REPO_ROOT))
    else:
        raise ValueError(f"unknown target kind {spec.kind}")
    running = Running(spec, port, child)
    try:
        wait_for_port(port, child, bench.start_timeout)
        verify(running, verify_paths)
    except Exception:
        bench.procs.stop(child)
        raise
    return running


def start_backend(bench: Bench, index: int, docroot: Path) -> Child:
    port = bench.backend_ports[index]
    prefix = bench.workdir / f"backend{index + 1}"
    prefix.mkdir(parents=True, exist_ok=True)
    cfg = prefix / "nginx.conf"
    cfg.write_text(configs.nginx_backend(prefix, port, docroot, bench.max_fds))
    child = bench.procs.start(
        f"backend{index + 1}", [which_or_name("nginx"), "-p", str(prefix), "-c", str(cfg), "-e", "stderr"])
    wait_for_port(port, child, bench.start_timeout)
    return child


def verify(running: Running, paths: tuple[str, ...] = ("64", "1m")) -> None:
    """The bodies at `paths`, byte for byte, over one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
    bodies = configs.bodies()
    try:
        for path in paths:
            body = bodies[path]
            conn.request("GET", "/" + path)
            resp = conn.getresponse()
            got = resp.read()
            if resp.status != 200 or got != body:
                raise RuntimeError(
                    f"GET /{path} through {running.spec.name}: status {resp.status}, "
                    f"{len(got)} bytes (want 200, {len(body)} bytes)")
    except (OSError, http.client.HTTPException) as exc:
        raise RuntimeError(f"GET through {running.spec.name} failed: {exc!r}") from exc
    finally:
        conn.close()


