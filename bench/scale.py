"""How lbcore's costs grow with the work, beside haproxy 2.6: `python bench/scale.py`.

Sections (all by default, or `--sections pools,configs,idle,probes`):

- pools: a backend of 2 / 50 / 500 servers per balancing algorithm (the
  hash ones in both forms, roundrobin also with mixed weights, haproxy's
  static-rr beside lbcore's roundrobin), wrk -c50 on a 64 B body, lbcore and
  haproxy (nbthread 1) taking turns; req/s and CPU per request.
- configs: 10 / 100 / 300 / 1,000 frontend/backend pairs, 3 tcp-checked servers
  each (inter 2s): start-up time (every port accepts; and the first answer
  through the last frontend, from the same start), RSS, idle CPU with the checks running, the
  longest request while the config is reloaded (lbcore: SIGHUP; haproxy -W:
  USR2 to the master; -W: until the old worker has exited), RSS across 6
  reloads (each once the reload is over). Also lbcore on haproxy's own
  haproxy.cfg with haproxy's command line (`lbcore -W -db -f`, USR2;
  target "lbcore-cfg"), unless --no-lbcore-cfg.
- starts: start-up alone, repeated (--starts, default 7) for each --pairs,
  haproxy, lbcore and lbcore-cfg (unless --no-lbcore-cfg) taking turns:
  until every port accepts (polled every 2 ms), the CPU then, and until
  the first answer (and the CPU then). Not in the default set.
- idle: 5,000 and 20,000 idle keep-alive clients (or as many as the
  descriptor limit lets a proxy hold): RSS growth per client, read once
  settled, the clients held by child processes (bench/memprobe.py).
- probes: 1,000 frontend/backend pairs, 3 tcp-checked servers each at
  inter 2s, haproxy and lbcore side by side and idle: their CPU over the
  same windows, per probe.

Writes bench/results/scale-<UTC>.md and .json (and scale-latest.md). See
bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if sys.path and Path(sys.path[0]).resolve() == BENCH_DIR:
    sys.path[0] = str(BENCH_DIR.parent)
elif str(BENCH_DIR.parent) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR.parent))

from bench import configs, memprobe, tools, wrk  # noqa: E402
from bench.procs import (  # noqa: E402
    ProcessSet, free_ports, process_tree, raise_fd_limit, tree_cpu_seconds, tree_rss_bytes, wait_for_port,
    which_or_name)
from bench.targets import REPO_ROOT, _lbcore_env, lbcore_command  # noqa: E402

ALGORITHMS = {  # name in the results: (lb.yaml balance + hash, haproxy.cfg lines)
    "roundrobin": ("balance: roundrobin", "balance roundrobin"),
    "roundrobin-weighted": ("balance: roundrobin", "balance roundrobin"),
    "static-rr": ("balance: roundrobin", "balance static-rr"),  # lbcore has roundrobin only
    "leastconn": ("balance: leastconn", "balance leastconn"),
    "leastconn-weighted": ("balance: leastconn", "balance leastconn"),
    "first": ("balance: first", "balance first"),
    "source": ("balance: source", "balance source"),
    "source-consistent": ("balance: source\n    hash: consistent", "balance source\n    hash-type consistent"),
    "uri": ("balance: uri", "balance uri"),
    "uri-consistent": ("balance: uri\n    hash: consistent", "balance uri\n    hash-type consistent"),
}
DEFAULT_ALGORITHMS = ("roundrobin", "leastconn", "first", "source", "uri-consistent")
MIXED_WEIGHTS = (1, 2, 3, 5)  # server i of a "-weighted" pool: MIXED_WEIGHTS[i % 4]


def weight(algorithm: str, i: int) -> int:
    return MIXED_WEIGHTS[i % len(MIXED_WEIGHTS)] if algorithm.endswith("-weighted") else 1
BACKEND_PORTS = 4  # nginx listens on this many ports; server i uses port i % 4
PROBE_INTERVAL = 2.0  # seconds: the inter of every check pairs_haproxy / pairs_lbcore write


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- configs -------------------------------------------------------------------

def nginx_backend(prefix: Path, ports: list[int], docroot: Path, max_fds: int) -> str:
    listens = "".join(f"        listen 127.0.0.1:{p} backlog=4096;\n" for p in ports)
    text = configs.nginx_backend(prefix, ports[0], docroot, max_fds)
    return text.replace(f"        listen 127.0.0.1:{ports[0]} backlog=4096;\n", listens)


def pool_haproxy(port: int, backend_ports: list[int], servers: int, algorithm: str, maxconn: int) -> str:
    text = configs.haproxy("http", port, [], maxconn).replace(
        "    balance roundrobin\n", f"    {ALGORITHMS[algorithm][1]}\n")
    return text + "".join(
        f"    server s{i} 127.0.0.1:{backend_ports[i % len(backend_ports)]} weight {weight(algorithm, i)}\n"
        for i in range(servers))


def pool_lbcore(port: int, backend_ports: list[int], servers: int, algorithm: str, maxconn: int,
                stats_port: int | None = None) -> str:
    text = configs.lbcore("http", port, [], maxconn, stats_port=stats_port).replace(
        "    balance: roundrobin\n", f"    {ALGORITHMS[algorithm][0]}\n")
    return text + "".join(
        f"      - {{name: s{i}, address: \"127.0.0.1:{backend_ports[i % len(backend_ports)]}\", "
        f"weight: {weight(algorithm, i)}}}\n"
        for i in range(servers))


def pairs_haproxy(ports: list[int], backend_ports: list[int], maxconn: int) -> str:
    out = [f"""global
    nbthread 1
    maxconn {maxconn}
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout check 1s
"""]
    for i, port in enumerate(ports):
        out.append(f"frontend fe{i}\n    bind 127.0.0.1:{port}\n    default_backend be{i}\n"
                   f"backend be{i}\n    balance roundrobin\n")
        for s in range(3):
            out.append(f"    server s{s} 127.0.0.1:{backend_ports[(i + s) % len(backend_ports)]} "
                       "check inter 2s rise 2 fall 3\n")
    return "".join(out)


def pairs_lbcore(ports: list[int], backend_ports: list[int], maxconn: int) -> str:
    out = [f"""global:
  maxconn: {maxconn}
  log: {{format: none}}
defaults:
  timeouts: {{connect: 5s, client: 60s, server: 60s}}
frontends:
"""]
    for i, port in enumerate(ports):
        out.append(f"  fe{i}:\n    bind: \"127.0.0.1:{port}\"\n    backend: be{i}\n"
                   "    forwarded_for: false\n    forwarded_proto: false\n")
    out.append("backends:\n")
    for i in range(len(ports)):
        out.append(f"  be{i}:\n    health: {{type: tcp, interval: 2s, timeout: 1s, rise: 2, fall: 3}}\n"
                   "    servers:\n")
        for s in range(3):
            out.append(f"      - {{name: s{s}, address: \"127.0.0.1:"
                       f"{backend_ports[(i + s) % len(backend_ports)]}\"}}\n")
    return "".join(out)


# -- processes -----------------------------------------------------------------

class Target:
    """One proxy process started from a config text."""

    def __init__(self, kind: str, procs: ProcessSet, workdir: Path, name: str, text: str,
                 lbcore_cmd: list[str]):
        self.kind, self.procs = kind, procs
        directory = workdir / name
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / ("lb.yaml" if kind == "lbcore" else "haproxy.cfg")
        self.path.write_text(text)
        if kind == "haproxy":
            # -W: master-worker, so USR2 reloads as operators do it.
            argv = [which_or_name("haproxy"), "-W", "-db", "-f", str(self.path)]
            self.child = procs.start(name, argv)
        elif kind == "lbcore-cfg":
            # The same file and command line as haproxy's, lbcore in its place.
            self.child = procs.start(name, lbcore_cmd + ["-W", "-db", "-f", str(self.path)],
                                     env=_lbcore_env(), cwd=str(REPO_ROOT))
        else:
            self.child = procs.start(name, lbcore_command_args(lbcore_cmd, self.path),
                                     env=_lbcore_env(), cwd=str(REPO_ROOT))

    @property
    def pid(self) -> int:
        return self.child.pid

    def reload(self) -> None:
        os.kill(self.pid, signal.SIGHUP if self.kind == "lbcore" else signal.SIGUSR2)

    def stop(self) -> None:
        self.procs.stop(self.child)


def lbcore_command_args(cmd: list[str], path: Path) -> list[str]:
    return cmd + ["-c", str(path)]


def wait_ports(ports: list[int], target: Target, timeout: float = 120.0) -> None:
    for port in ports:
        wait_for_port(port, target.child, timeout)


def get_ok(port: int, path: str = "/64", timeout: float = 10.0) -> float:
    """One request on a fresh connection; its duration in seconds."""
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"GET {path} on {port}: {data[:60]!r}")
    return time.monotonic() - began


def answered_after(port: int, began: float, timeout: float = 30.0) -> float:
    """Seconds from `began` (time.monotonic()) to the first GET through
    `port` answered 200, trying again every 5 ms."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            get_ok(port, timeout=timeout)
            return time.monotonic() - began
        except (OSError, RuntimeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


# -- sections ------------------------------------------------------------------

def section_pools(args, procs, workdir, backend_ports) -> list[dict]:
    rows = []
    for size in args.pools:
        for algorithm in args.algorithms:
            started = {}
            for kind in ("haproxy", "lbcore"):
                (port,) = free_ports(1)
                make = pool_haproxy if kind == "haproxy" else pool_lbcore
                text = make(port, backend_ports, size, algorithm, 5000)
                target = Target(kind, procs, workdir, f"pool-{kind}-{algorithm}-{size}", text,
                                args.lbcore_cmd)
                wait_ports([port], target)
                get_ok(port)
                started[kind] = (target, port)
            runs = {kind: [] for kind in started}
            order = list(started)
            for kind in order:  # warm-up: connections pooled, code paths hot
                wrk.run(f"http://127.0.0.1:{started[kind][1]}/64", 50, 1, None)
            for r in range(args.rounds):
                for kind in (order if r % 2 == 0 else order[::-1]):
                    target, port = started[kind]
                    cpu0 = tree_cpu_seconds(target.pid)
                    result, _ = wrk.run(f"http://127.0.0.1:{port}/64", 50, args.duration, None)
                    cpu = tree_cpu_seconds(target.pid) - cpu0
                    runs[kind].append((result.rps, cpu / max(result.requests, 1) * 1e6,
                                       result.non_2xx + result.socket_errors))
            for target, _ in started.values():
                target.stop()
            row = {"servers": size, "algorithm": algorithm}
            for kind, values in runs.items():
                row[f"{kind}_rps"] = statistics.median(v[0] for v in values)
                row[f"{kind}_cpu_us"] = statistics.median(v[1] for v in values)
                row[f"{kind}_errors"] = sum(v[2] for v in values)
            row["ratio"] = row["lbcore_rps"] / row["haproxy_rps"] if row["haproxy_rps"] else None
            log(f"pool {size:>4} {algorithm:<15} haproxy {row['haproxy_rps']:>8.0f} req/s "
                f"lbcore {row['lbcore_rps']:>8.0f} req/s ({row['ratio']:.2f}x)")
            rows.append(row)
    return rows


class Prober(threading.Thread):
    """Requests one after the other on a keep-alive connection (a new one
    when it closes); keeps the longest. Fresh connections per request would
    measure TIME_WAIT collisions (1 s SYN retransmits) rather than the proxy."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.longest, self.count, self.errors = port, 0.0, 0, 0
        self.running = True

    def run(self) -> None:
        import http.client
        conn = None
        while self.running:
            began = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/64")
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    raise RuntimeError(resp.status)
                self.longest = max(self.longest, time.monotonic() - began)
                self.count += 1
            except (OSError, RuntimeError, http.client.HTTPException):
                self.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)
        if conn is not None:
            conn.close()


def listening_after(ports: list[int], target: Target, began: float, timeout: float = 60.0) -> float:
    """Seconds from `began` until every port accepts, polled every 2 ms
    (wait_ports polls every 50 ms: too coarse for a 50 ms start)."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                    break
            except OSError:
                if not target.child.alive():
                    raise RuntimeError(f"{target.child.name} {target.child.how_it_ended()}: "
                                       f"{target.child.last_words()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")
                time.sleep(0.002)
    return time.monotonic() - began


def section_starts(args, procs, workdir, backend_ports) -> list[dict]:
    """Start-up alone, --starts times per size, haproxy and lbcore taking
    turns: until every port accepts (and the process tree's CPU then),
    and until the first answer through the last frontend."""
    rows = []
    for pairs in args.pairs:
        samples: dict[str, list] = {"haproxy": [], "lbcore": []}
        if args.lbcore_cfg:
            samples["lbcore-cfg"] = []  # haproxy's file and command line (-W -db -f)
        for _ in range(args.starts):
            for kind in samples:
                make = pairs_lbcore if kind == "lbcore" else pairs_haproxy
                for attempt in range(3):
                    ports = free_ports(pairs)
                    began = time.monotonic()
                    target = Target(kind, procs, workdir, f"start-{kind}-{pairs}",
                                    make(ports, backend_ports, 4000), args.lbcore_cmd)
                    try:
                        listening = listening_after(ports, target, began)
                        break
                    except RuntimeError as exc:
                        target.stop()
                        # A port taken meanwhile: lbcore says "in use", haproxy's
                        # last words are that its listeners failed to start.
                        if not ("in use" in str(exc) or "failed to start their listeners" in str(exc)) \
                                or attempt == 2:
                            raise
                cpu = tree_cpu_seconds(target.pid)
                answer = answered_after(ports[-1], began)
                answer_cpu = tree_cpu_seconds(target.pid)
                target.stop()
                samples[kind].append((listening, answer, cpu, answer_cpu))
                log(f"pairs {pairs:>5} {kind:<8} listening {listening:.3f}s (cpu {cpu:.3f}s) "
                    f"first answer {answer:.3f}s (cpu {answer_cpu:.3f}s)")
        for kind, got in samples.items():
            rows.append({"pairs": pairs, "target": kind, "listening_s": [g[0] for g in got],
                         "first_answer_s": [g[1] for g in got], "cpu_when_listening_s": [g[2] for g in got],
                         "cpu_when_answered_s": [g[3] for g in got],
                         "load_average": os.getloadavg()})
    return rows


def section_configs(args, procs, workdir, backend_ports) -> list[dict]:
    rows = []
    for pairs in args.pairs:
        for kind in ("haproxy", "lbcore") + (("lbcore-cfg",) if args.lbcore_cfg else ()):
            make = pairs_lbcore if kind == "lbcore" else pairs_haproxy
            for attempt in range(3):
                # A thousand free ports may not all stay free on a shared
                # machine until the proxy binds them: then take new ones.
                ports = free_ports(pairs)
                began = time.monotonic()
                target = Target(kind, procs, workdir, f"pairs-{kind}-{pairs}",
                                make(ports, backend_ports, 4000), args.lbcore_cmd)
                try:
                    wait_ports(ports, target)
                    break
                except RuntimeError as exc:
                    target.stop()
                    if "in use" not in str(exc) or attempt == 2:
                        raise
            startup = time.monotonic() - began
            # Listening is not serving (lbcore binds before its event loop
            # runs: lbcore/bind_first.py): the first answer through the
            # last frontend, timed from the same start.
            first_answer = answered_after(ports[-1], began)
            time.sleep(2.5)  # a round of checks
            rss = tree_rss_bytes(target.pid)
            cpu0 = tree_cpu_seconds(target.pid)
            time.sleep(args.idle_seconds)
            idle_cpu = (tree_cpu_seconds(target.pid) - cpu0) / args.idle_seconds
            # The same probe without a reload: what the machine's noise and
            # the health checks alone cost.
            prober = Prober(ports[0])
            prober.start()
            time.sleep(0.3 + args.reload_wait(pairs))
            prober.running = False
            prober.join(15)
            baseline = prober.longest
            stalls, rss_after = [], [rss]
            processes = len(process_tree(target.pid))
            durations = []
            for _ in range(args.reloads):
                prober = Prober(ports[0])
                prober.start()
                time.sleep(0.3)
                before = set(process_tree(target.pid))
                signalled = time.monotonic()
                target.reload()
                deadline = signalled + 30
                if kind == "lbcore":
                    durations.append(None)
                    time.sleep(args.reload_wait(pairs))
                    # On a busy machine the reload's reader child (a fork
                    # of lbcore, lbcore/config_reader.py) may still run:
                    # its pages would be counted twice.
                    while len(process_tree(target.pid)) > processes and time.monotonic() < deadline:
                        time.sleep(0.1)
                else:
                    # -W: the reload is over once the old worker has exited
                    # and the new one serves alone. Until then (and for at
                    # least the usual window) the prober runs, so that it
                    # sees the whole handover, and no process's pages are
                    # counted twice in the RSS.
                    while time.monotonic() < deadline:
                        tree = set(process_tree(target.pid))
                        if len(tree) <= processes and tree != before:
                            break
                        time.sleep(0.05)
                    durations.append(time.monotonic() - signalled)
                    time.sleep(max(0.0, signalled + args.reload_wait(pairs) - time.monotonic()))
                prober.running = False
                prober.join(15)
                stalls.append(prober.longest)
                rss_after.append(tree_rss_bytes(target.pid))
                wait_ports(ports[-1:], target)
            target.stop()
            row = {"pairs": pairs, "target": kind, "startup_s": startup, "first_answer_s": first_answer,
                   "rss_mb": rss / 2**20,
                   "idle_cpu_pct": idle_cpu * 100, "reload_longest_ms": [s * 1e3 for s in stalls],
                   "no_reload_longest_ms": baseline * 1e3,
                   "reload_done_s": durations,
                   "rss_across_reloads_mb": [r / 2**20 for r in rss_after]}
            log(f"pairs {pairs:>5} {kind:<8} start {startup:.2f}s first answer {first_answer:.2f}s rss {rss / 2**20:.0f} MB "
                f"idle cpu {idle_cpu * 100:.1f}% longest request: no reload {baseline * 1e3:.0f} ms, "
                f"reloads {' '.join(f'{v * 1e3:.0f}' for v in stalls)} ms; rss {rss_after[0] / 2**20:.0f}"
                f"->{rss_after[-1] / 2**20:.0f} MB")
            rows.append(row)
    return rows


# Descriptors an idle-section proxy keeps besides its clients: listeners,
# epoll, the stats endpoint, pipes, pooled server connections, logs; and one
# more while lbcore parks a connection (its socket is duplicated first).
PROXY_FD_MARGIN = 100


def idle_capacity() -> int:
    """Idle clients one proxy process can hold under the descriptor limit
    its children inherit from this process."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return (1 << 20 if soft == resource.RLIM_INFINITY else soft) - PROXY_FD_MARGIN


def idle_haproxy(port: int, backend_ports: list[int], maxconn: int) -> str:
    text = pool_haproxy(port, backend_ports, 2, "roundrobin", maxconn)
    fd_limit = idle_capacity() + PROXY_FD_MARGIN
    if 2 * maxconn + PROXY_FD_MARGIN > fd_limit:
        # haproxy reserves two descriptors per maxconn (a client and its
        # server connection) and 2.6 refuses to start when the limit cannot
        # be raised that far (strict-limits, on by default). Idle clients
        # need one each, and few server connections are open at a time:
        # `no strict-limits` lets it run with the limit there is.
        text = text.replace("    nbthread 1\n", f"    nbthread 1\n    ulimit-n {fd_limit}\n"
                            "    no strict-limits\n", 1)
    return text


def section_idle(args, procs, workdir, backend_ports) -> list[dict]:
    """Each proxy holds the clients of every count in turn, in one process:
    RSS read at each count once settled (bench/memprobe.py)."""
    capacity = idle_capacity()
    levels = sorted({min(conns, capacity) for conns in args.idle_clients})
    capped = {conns: capacity for conns in args.idle_clients if conns > capacity}
    for conns in capped:
        log(f"idle: {conns} clients do not fit this machine's descriptor limit "
            f"({capacity + PROXY_FD_MARGIN} per process, {PROXY_FD_MARGIN} kept for the proxy's own): "
            f"{capacity} instead")
    rows = []
    for kind in ("haproxy", "lbcore"):
        port, stats_port = free_ports(2)
        maxconn = levels[-1] + 50
        if kind == "haproxy":
            text = idle_haproxy(port, backend_ports, maxconn)
        else:
            text = pool_lbcore(port, backend_ports, 2, "roundrobin", maxconn, stats_port=stats_port)
        target = Target(kind, procs, workdir, f"idle-{kind}", text, args.lbcore_cmd)
        try:
            wait_ports([port], target)
            parked = memprobe.lbcore_parked(stats_port) if kind == "lbcore" else None
            results = memprobe.probe_levels(kind, target.pid, port, levels, rate=args.idle_rate,
                                            parked=parked)
        finally:
            target.stop()
        previous = None
        for result in results:
            per = result.bytes_per_conn or 0.0
            marginal = None
            if previous is not None and result.still_open > previous.still_open:
                marginal = (result.rss_after - previous.rss_after) / (result.still_open - previous.still_open)
            rows.append({"clients": result.wanted, "target": kind, "open": result.still_open,
                         "parked": result.parked, "settled": result.settled,
                         "rss_per_client_b": per, "marginal_b": marginal,
                         "rss_mb": result.rss_after / 2**20, "rss_before_mb": result.rss_before / 2**20,
                         "fds": result.fds_after, "ramp_s": result.ramp_s, "wait_s": result.wait_s,
                         "error": result.error, "load": os.getloadavg()[0],
                         "asked": [c for c in args.idle_clients if min(c, capacity) == result.wanted]})
            log(f"idle {result.wanted:>6} {kind:<8} {per:.0f} B per client ({result.still_open} open"
                + (f", {result.parked} parked" if result.parked is not None else "")
                + ("" if result.settled else ", RSS not settled")
                + (f"; {result.error}" if result.error else "") + ")")
            previous = result
    return rows


def section_probes(args, procs, workdir, backend_ports) -> list[dict]:
    """Both proxies up at once with the same checks and no traffic; their
    CPU read over the same windows, so that the shared machine's noise hits
    both alike."""
    rows = []
    for pairs in args.probe_pairs:
        started = {}
        for kind in ("haproxy", "lbcore") + (("lbcore-cfg",) if args.lbcore_cfg else ()):
            make = pairs_lbcore if kind == "lbcore" else pairs_haproxy
            for attempt in range(3):
                # The first proxy's probes take ephemeral ports: one of the
                # free ports picked for the second may be gone by its start.
                ports = free_ports(pairs)
                target = Target(kind, procs, workdir, f"probes-{kind}-{pairs}", make(ports, backend_ports, 4000),
                                args.lbcore_cmd)
                try:
                    wait_ports(ports, target)
                    break
                except RuntimeError as exc:
                    target.stop()
                    if "in use" not in str(exc) or attempt == 2:
                        raise
            started[kind] = target
        time.sleep(PROBE_INTERVAL * 1.5)  # every server probed at least once: steady state
        windows = {kind: [] for kind in started}
        for _ in range(args.probe_windows):
            cpu0 = {kind: tree_cpu_seconds(t.pid) for kind, t in started.items()}
            time.sleep(args.idle_seconds)
            for kind, target in started.items():
                windows[kind].append((tree_cpu_seconds(target.pid) - cpu0[kind]) / args.idle_seconds)
        for target in started.values():
            target.stop()
        probes_per_s = pairs * 3 / PROBE_INTERVAL
        row = {"pairs": pairs, "probes_per_s": probes_per_s}
        for kind, values in windows.items():
            row[f"{kind}_cpu_pct"] = statistics.median(values) * 100
            row[f"{kind}_us_per_probe"] = statistics.median(values) / probes_per_s * 1e6
            row[f"{kind}_windows_pct"] = [v * 100 for v in values]
        row["ratio"] = row["lbcore_cpu_pct"] / row["haproxy_cpu_pct"] if row["haproxy_cpu_pct"] else None
        log(f"probes {pairs:>5} pairs: haproxy {row['haproxy_cpu_pct']:.1f}% "
            f"({row['haproxy_us_per_probe']:.0f} us/probe), lbcore {row['lbcore_cpu_pct']:.1f}% "
            f"({row['lbcore_us_per_probe']:.0f} us/probe), {row['ratio']:.2f}x")
        rows.append(row)
    return rows


# -- report --------------------------------------------------------------------

def markdown(results: dict) -> str:
    out = [f"# lbcore scale bench, {results['when']}", "", *results["env"], ""]
    if results.get("pools"):
        out += ["## Pools (wrk -c50, 64 B, req/s median of rounds)", "",
                "| servers | algorithm | haproxy req/s | lbcore req/s | ratio | haproxy CPU us/req | lbcore CPU us/req | errors |",
                "|---:|---|---:|---:|---:|---:|---:|---:|"]
        for r in results["pools"]:
            out.append(f"| {r['servers']} | {r['algorithm']} | {r['haproxy_rps']:.0f} | {r['lbcore_rps']:.0f} "
                       f"| {r['ratio']:.2f}x | {r['haproxy_cpu_us']:.1f} | {r['lbcore_cpu_us']:.1f} "
                       f"| {r['haproxy_errors']}/{r['lbcore_errors']} |")
        out.append("")
    if results.get("configs"):
        out += ["## Configs of N frontend/backend pairs (3 tcp-checked servers each, inter 2s)", "",
                "| pairs | target | start-up s (every port accepts) | first answer s | RSS MB | idle CPU % | longest request, no reload, ms | longest request during each reload, ms | -W: old worker gone after, s | RSS across reloads, MB |",
                "|---:|---|---:|---:|---:|---:|---:|---|---|---|"]
        for r in results["configs"]:
            done = [v for v in r.get("reload_done_s") or () if v is not None]
            answer = r.get("first_answer_s")
            out.append(f"| {r['pairs']} | {r['target']} | {r['startup_s']:.2f} "
                       f"| {'-' if answer is None else f'{answer:.2f}'} | {r['rss_mb']:.0f} "
                       f"| {r['idle_cpu_pct']:.1f} | {r['no_reload_longest_ms']:.0f} | {', '.join(f'{v:.0f}' for v in r['reload_longest_ms'])} "
                       f"| {', '.join(f'{v:.1f}' for v in done) or '-'} "
                       f"| {' → '.join(f'{v:.0f}' for v in r['rss_across_reloads_mb'])} |")
        out.append("")
    if results.get("starts"):
        out += ["## Start-up alone (N pairs, 3 tcp-checked servers each), median of the starts (min-max)", "",
                "| pairs | target | starts | every port accepts, s | CPU then, s | first answer, s | CPU then, s "
                "| load average after |",
                "|---:|---|---:|---|---|---|---|---|"]

        def spread(values) -> str:
            return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"
        for r in results["starts"]:
            out.append(f"| {r['pairs']} | {r['target']} | {len(r['listening_s'])} | {spread(r['listening_s'])} "
                       f"| {spread(r['cpu_when_listening_s'])} | {spread(r['first_answer_s'])} "
                       f"| {spread(r['cpu_when_answered_s']) if r.get('cpu_when_answered_s') else '-'} "
                       f"| {' '.join(f'{v:.1f}' for v in r['load_average'])} |")
        by = {(r["pairs"], r["target"]): r for r in results["starts"]}
        for pairs in sorted({r["pairs"] for r in results["starts"]}):
            ha = by.get((pairs, "haproxy"))
            for kind in ("lbcore", "lbcore-cfg"):
                lb = by.get((pairs, kind))
                if ha and lb:
                    out.append(f"\n{pairs} pairs, {kind} / haproxy (medians): every port accepts "
                               f"{statistics.median(lb['listening_s']) / statistics.median(ha['listening_s']):.2f}x, "
                               f"first answer {statistics.median(lb['first_answer_s']) / statistics.median(ha['first_answer_s']):.2f}x, "
                               f"CPU {statistics.median(lb['cpu_when_listening_s']) / statistics.median(ha['cpu_when_listening_s']):.2f}x"
                               + (f", CPU until the first answer "
                                  f"{statistics.median(lb['cpu_when_answered_s']) / statistics.median(ha['cpu_when_answered_s']):.2f}x"
                                  if lb.get("cpu_when_answered_s") and ha.get("cpu_when_answered_s")
                                  and statistics.median(ha["cpu_when_answered_s"]) else ""))
        out.append("")
    if results.get("probes"):
        out += [f"## Health probes (N pairs x 3 tcp-checked servers, inter {PROBE_INTERVAL:g}s, no traffic; "
                "both proxies up at once, CPU over the same windows, median)", "",
                "| pairs | probes/s | haproxy CPU % | lbcore CPU % | haproxy us/probe | lbcore us/probe | ratio |",
                "|---:|---:|---:|---:|---:|---:|---:|"]
        for r in results["probes"]:
            out.append(f"| {r['pairs']} | {r['probes_per_s']:.0f} | {r['haproxy_cpu_pct']:.2f} | {r['lbcore_cpu_pct']:.2f} "
                       f"| {r['haproxy_us_per_probe']:.1f} | {r['lbcore_us_per_probe']:.1f} | {r['ratio']:.2f}x |")
        out.append("")
    if results.get("failed"):
        out += ["## Sections that did not run", ""]
        out += [f"- {name}: {why}" for name, why in results["failed"].items()] + [""]
    if results.get("idle"):
        out += ["## Idle keep-alive clients", "",
                "Each proxy holds the counts in turn, in one process; RSS read once settled "
                "(bench/memprobe.py). Per client: RSS growth from no clients / clients open. "
                "From the previous count: RSS growth between the two counts / clients added.", "",
                "| clients | target | open | parked | RSS MB | RSS per client, B | from the previous count, B | arrival s | read after s | load |",
                "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in results["idle"]:
            parked = "-" if r["parked"] is None else str(r["parked"])
            marginal = "-" if r["marginal_b"] is None else f"{r['marginal_b']:.0f}"
            note = ("" if r["settled"] else " (RSS not settled)") + (f" ({r['error']})" if r["error"] else "")
            out.append(f"| {r['clients']} | {r['target']} | {r['open']} | {parked} | "
                       f"{r['rss_before_mb']:.1f} -> {r['rss_mb']:.1f} | {r['rss_per_client_b']:.0f}{note} | "
                       f"{marginal} | {r['ramp_s']:.1f} | {r['wait_s']:.1f} | "
                       + ("-" if r.get("load") is None else f"{r['load']:.1f}") + " |")
        capped = sorted({c for r in results["idle"] for c in r["asked"] if c != r["clients"]})
        if capped:
            held = max(r["clients"] for r in results["idle"])
            out += ["", f"Asked for {', '.join(f'{c:,}' for c in capped)}: more than fits a proxy "
                    f"process here (descriptor limit {held + PROXY_FD_MARGIN:,}, {PROXY_FD_MARGIN} kept "
                    f"for the proxy's own), so {held:,} were run."]
        out.append("")
    return "\n".join(out)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python bench/scale.py", description=__doc__.split("\n")[0])
    p.add_argument("--sections", default="pools,configs,idle,probes")
    p.add_argument("--pools", default="2,50,500", help="server counts (default 2,50,500)")
    p.add_argument("--algorithms", default=",".join(DEFAULT_ALGORITHMS),
                   help=f"default {','.join(DEFAULT_ALGORITHMS)}; 'all' or any of {','.join(ALGORITHMS)}")
    p.add_argument("--pairs", default="10,100,300,1000",
                   help="frontend/backend pairs (default 10,100,300,1000)")
    p.add_argument("--idle-clients", default="5000,20000",
                   help="idle keep-alive client counts (default 5000,20000; a count above the "
                        "descriptor limit less the proxy's own is run at the largest that fits)")
    p.add_argument("--idle-rate", type=float, default=memprobe.DEFAULT_RATE,
                   help=f"idle clients opened per second (default {memprobe.DEFAULT_RATE}, 0 = unpaced)")
    p.add_argument("--probe-pairs", default="1000", help="pairs in the probes section (default 1000)")
    p.add_argument("--probe-windows", type=int, default=3, help="CPU windows of --idle-seconds each")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--reloads", type=int, default=6)
    p.add_argument("--starts", type=int, default=7, help="starts: starts per proxy and size (default 7)")
    p.add_argument("--idle-seconds", type=float, default=10.0)
    p.add_argument("--quick", action="store_true", help="1 round of 2 s, 2 reloads, 5 s idle")
    p.add_argument("--lbcore-cmd", default=None)
    p.add_argument("--no-lbcore-cfg", dest="lbcore_cfg", action="store_false",
                   help="configs, starts: skip lbcore run on the haproxy.cfg with -W -db -f")
    p.add_argument("--results", type=Path, default=BENCH_DIR / "results")
    p.add_argument("--no-write", action="store_true", help="print, do not write results")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.reloads, args.idle_seconds = 1, 2, 2, 5.0
    args.sections = [s for s in args.sections.split(",") if s]
    args.pools = [int(v) for v in args.pools.split(",") if v]
    args.pairs = [int(v) for v in args.pairs.split(",") if v]
    args.idle_clients = [int(v) for v in args.idle_clients.split(",") if v]
    args.algorithms = list(ALGORITHMS) if args.algorithms == "all" else [a for a in args.algorithms.split(",") if a]
    args.probe_pairs = [int(v) for v in args.probe_pairs.split(",") if v]
    unknown = [a for a in args.algorithms if a not in ALGORITHMS]
    if unknown:
        p.error(f"unknown algorithm(s) {unknown}; choose from {', '.join(ALGORITHMS)}")
    args.lbcore_cmd = lbcore_command(args.lbcore_cmd)
    # A reload of a big config takes a while to finish: wait that long.
    args.reload_wait = lambda pairs: 1.0 + pairs / 500
    return args


SECTIONS = {"pools": section_pools, "configs": section_configs, "idle": section_idle,
            "probes": section_probes, "starts": section_starts}


def main(argv=None) -> int:
    args = parse_args(argv)
    raise_fd_limit(200000)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="lbcore-scale-"))
    procs = ProcessSet(workdir)
    results = {"when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "env": tools.environment(), "args": sys.argv[1:]}
    try:
        docroot = workdir / "docroot"
        configs.write_bodies(docroot)
        backend_ports = free_ports(BACKEND_PORTS)
        prefix = workdir / "backend"
        prefix.mkdir()
        cfg = prefix / "nginx.conf"
        cfg.write_text(nginx_backend(prefix, backend_ports, docroot, 200000))
        child = procs.start("backend", [which_or_name("nginx"), "-p", str(prefix), "-c", str(cfg),
                                        "-e", "stderr"])
        for port in backend_ports:
            wait_for_port(port, child, 20)
        for name in args.sections:
            try:
                results[name] = SECTIONS[name](args, procs, workdir, backend_ports)
            except (RuntimeError, OSError) as exc:
                # One section that cannot run (an fd limit, a port taken)
                # must not lose the others' results.
                log(f"section {name} failed: {exc}")
                results.setdefault("failed", {})[name] = str(exc).splitlines()[0]
    finally:
        procs.stop_all()
    text = markdown(results)
    print(text)
    if not args.no_write:
        args.results.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        (args.results / f"scale-{stamp}.md").write_text(text)
        (args.results / "scale-latest.md").write_text(text)
        (args.results / f"scale-{stamp}.json").write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
