"""lbcore side by side with haproxy, nginx and no proxy at all: `python bench/run.py`.

Starts two nginx backends, every selected proxy in front of them, and runs
wrk through each target in turn (A B C A B C ...) for several rounds, so a
noisy neighbour on the shared machine hits all targets alike. Then probes
the memory cost of idle keep-alive clients. Writes Markdown, JSON and a PNG
to bench/results/. See bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
# Run as a script, sys.path[0] is bench/ itself, where module names such as
# `report` could shadow unrelated top-level imports: put the repo root there.
if sys.path and Path(sys.path[0]).resolve() == BENCH_DIR:
    sys.path[0] = str(BENCH_DIR.parent)
elif str(BENCH_DIR.parent) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR.parent))

from bench import configs, memprobe, report, tools, wrk  # noqa: E402
from bench.procs import ProcessSet, free_ports, raise_fd_limit, tree_cpu_seconds  # noqa: E402
from bench.targets import (  # noqa: E402
    Bench, Running, TargetSpec, lbcore_command, select_targets, start_backend, start_target)

SIZES = ("64", "1m")
MEMORY_TARGETS = ("haproxy-http", "lbcore-http")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="rounds over all targets (default 5)")
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    p.add_argument("--warmup", type=int, default=1,
                   help="seconds of unmeasured wrk per target and size first (default 1, 0 = none)")
    p.add_argument("--connections", type=int, default=50,
                   help="wrk connections for the 64 B body (default 50)")
    p.add_argument("--connections-large", type=int, default=10,
                   help="wrk connections for the 1 MiB body (default 10)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("--sizes", default="64,1m", help="bodies to run: 64, 1m or both (default)")
    p.add_argument("--only", default=None,
                   help="comma list of targets or kinds, e.g. haproxy,lbcore-http "
                        "(targets: direct, haproxy-http, haproxy-tcp, nginx-http, "
                        "lbcore-http, lbcore-tcp)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 round of 2 s, 500 idle connections")
    p.add_argument("--memprobe-conns", type=int, default=None,
                   help="idle keep-alive connections for the memory probe "
                        "(default 2000, 500 with --quick, 0 = skip the probe)")
    p.add_argument("--memprobe-rate", type=float, default=memprobe.DEFAULT_RATE,
                   help=f"idle connections the memory probe opens per second "
                        f"(default {memprobe.DEFAULT_RATE}, 0 = as fast as they go)")
    p.add_argument("--lbcore-cmd", default=None,
                   help="command that runs lbcore, '-c FILE' is appended "
                        "(default: python -m lbcore.cli with this repo first on PYTHONPATH)")
    p.add_argument("--workers", type=int, default=1,
                   help="global.workers of the lbcore targets (default 1)")
    p.add_argument("--results", type=Path, default=BENCH_DIR / "results",
                   help="where to write results (default bench/results)")
    p.add_argument("--no-install", action="store_true", help="do not apt-get/pip install")
    p.add_argument("--keep-tmp", action="store_true",
                   help="keep the generated configs and server logs, print where")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, 2
    if args.memprobe_conns is None:
        args.memprobe_conns = 500 if args.quick else 2000
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in args.sizes if s not in SIZES]
    if bad:
        p.error(f"unknown size(s) {', '.join(bad)}; choose from {', '.join(SIZES)}")
    for name in ("rounds", "duration", "connections", "connections_large", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.memprobe_conns < 0:
        p.error("--warmup and --memprobe-conns cannot be negative")
    try:
        args.targets = select_targets(args.only)
    except ValueError as exc:
        p.error(str(exc))
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _raise_on_sigterm(signum, frame):
    # Turn SIGTERM into an exception so the `finally:` that stops every
    # child runs, as it does for Ctrl-C.
    raise SystemExit(128 + signum)


def start_targets(specs: list[TargetSpec], bench: Bench,
                  unavailable: dict[str, str]) -> list[Running]:
    running = []
    for spec in specs:
        try:
            running.append(start_target(spec, bench))
            log(f"started {spec.name} on 127.0.0.1:{running[-1].port}")
        except (RuntimeError, OSError) as exc:
            unavailable[spec.name] = str(exc)
            log(f"{spec.name} unavailable: {exc}")
    return running


def measure(target: Running, size: str, connections: int, duration: int, threads: int,
            script: Path | None) -> tuple[wrk.WrkResult, float | None]:
    url = f"http://127.0.0.1:{target.port}/{size}"
    pid = target.pid
    cpu_before = tree_cpu_seconds(pid) if pid else None
    result, _ = wrk.run(url, connections, duration, script, threads)
    cpu = tree_cpu_seconds(pid) - cpu_before if pid else None
    return result, cpu


def _check_alive(target: Running, unavailable: dict[str, str]) -> bool:
    if target.alive():
        return True
    child = target.child
    unavailable.setdefault(
        target.spec.name,
        f"{child.how_it_ended()} during the run: {child.last_words()}")
    log(f"{target.spec.name} died:\n{child.log_tail()}")
    return False


def run_rounds(args, running: list[Running], script: Path,
               unavailable: dict[str, str]) -> list[report.Sample]:
    samples = []
    for size in args.sizes:
        conns = args.connections if size == "64" else args.connections_large
        label = report.SIZE_LABELS[size]
        if args.warmup:
            for target in running:
                if target.spec.name in unavailable:
                    continue
                try:
                    measure(target, size, conns, args.warmup, args.threads, None)
                except (wrk.WrkParseError, subprocess.TimeoutExpired) as exc:
                    log(f"{label} warm-up through {target.spec.name} failed: {exc}")
                _check_alive(target, unavailable)
        for rnd in range(args.rounds):
            # Rotate the start so no target always runs right after the same one.
            order = running[rnd % len(running):] + running[:rnd % len(running)] if running else []
            for target in order:
                name = target.spec.name
                if name in unavailable:
                    continue
                try:
                    result, cpu = measure(target, size, conns, args.duration, args.threads, script)
                except (wrk.WrkParseError, subprocess.TimeoutExpired) as exc:
                    log(f"[{label} round {rnd + 1}/{args.rounds}] {name}: wrk failed: {exc}")
                    _check_alive(target, unavailable)
                    continue
                if not _check_alive(target, unavailable):
                    continue
                sample = report.Sample(name, size, rnd, result, cpu)
                samples.append(sample)
                cpu_text = (f", CPU {sample.cpu_us_per_req:.1f} us/req"
                            if sample.cpu_us_per_req is not None else "")
                log(f"[{label} round {rnd + 1}/{args.rounds}] {name}: {result.rps:,.0f} req/s, "
                    f"{result.bytes_per_s / 1e6:,.1f} MB/s, p50 {result.p50_s * 1e3:.2f} ms, "
                    f"p99 {result.p99_s * 1e3:.2f} ms{cpu_text}, "
                    f"errors {result.non_2xx}/{result.socket_errors}")
    return samples


def run_memory_probe(args, bench: Bench,
                     unavailable: dict[str, str]) -> tuple[list, dict[str, str]]:
    results, failed = [], {}
    specs = [s for s in args.targets if s.name in MEMORY_TARGETS]
    for spec in specs:
        (stats_port,) = free_ports(1)
        try:
            # A fresh instance, not one a benchmark filled with pooled buffers;
            # only the small body is fetched before the baseline reading.
            target = start_target(spec, bench, tag="-mem", verify_paths=("64",), stats_port=stats_port)
        except (RuntimeError, OSError) as exc:
            failed[spec.name] = unavailable.get(spec.name) or str(exc)
            log(f"memory probe: {spec.name} unavailable: {exc}")
            continue
        try:
            # lbcore: RSS read once every idle client is parked (bench/memprobe.py).
            parked = memprobe.lbcore_parked(stats_port) if spec.kind == "lbcore" else None
            result = memprobe.probe(spec.name, target.pid, target.port, args.memprobe_conns,
                                    rate=args.memprobe_rate, parked=parked)
            results.append(result)
            log(f"memory probe: {spec.name}: {result.still_open}/{result.wanted} idle conns"
                + (f" ({result.parked} parked)" if result.parked is not None else "")
                + ("" if result.settled else ", RSS not settled")
                + f", {report.fmt_bytes(result.bytes_per_conn)} each")
        except OSError as exc:
            failed[spec.name] = f"probe failed: {exc!r}"
            log(f"memory probe: {spec.name} failed: {exc!r}")
        finally:
            bench.procs.stop(target.child)
    return results, failed


def write_results(args, tables, memory, memory_failed, samples, load_before) -> Path:
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if args.quick:
        stamp += "-quick"
    chart_path = args.results / f"{stamp}.png"
    chart_name = None
    if any(row.rounds for rows in tables.values() for row in rows):
        report.chart(chart_path, tables)
        chart_name = chart_path.name
    settings = (f"- settings: {args.rounds} round(s) x {args.duration} s, warm-up {args.warmup} s, "
                f"wrk -t{args.threads} -c{args.connections} (64 B) / -c{args.connections_large} "
                f"(1 MiB), memory probe {args.memprobe_conns} idle connections "
                f"at {args.memprobe_rate:g}/s"
                + (f", lbcore with global.workers: {args.workers}" if args.workers > 1 else ""))
    load = (f"- load average (1 min): {load_before:.2f} before the run, "
            f"{os.getloadavg()[0]:.2f} after, on {os.cpu_count()} CPUs")
    text = report.markdown(f"lbcore bench {stamp}", tools.environment() + [settings, load], tables,
                           memory, memory_failed, chart_name)
    md_path = args.results / f"{stamp}.md"
    md_path.write_text(text)
    shutil.copyfile(md_path, args.results / "latest.md")
    raw = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("targets", "results")},
        "samples": [dict(dataclasses.asdict(s.wrk), target=s.target, size=s.size,
                         round=s.round, cpu_s=s.cpu_s) for s in samples],
        "memory": [dataclasses.asdict(m) for m in memory],
        "unavailable": {row.spec.name: row.unavailable for rows in tables.values()
                        for row in rows if row.unavailable},
    }
    (args.results / f"{stamp}.json").write_text(json.dumps(raw, indent=1))
    print(text)
    log(f"wrote {md_path}" + (f" and {chart_path}" if chart_name else ""))
    return md_path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    if not args.no_install:
        try:
            tools.ensure_installed(log)
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            log(f"bench: {exc}")
            return 1
    # Every connection of the probe costs a descriptor in the client and one
    # or two in the proxy; children inherit the limit set here.
    wanted = max(16384, 2 * args.memprobe_conns + 4096)
    max_fds = min(raise_fd_limit(wanted), wanted)
    if max_fds < args.memprobe_conns + 256:
        log(f"fd limit {max_fds} is too low for {args.memprobe_conns} idle connections")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="lbbench-"))
    procs = ProcessSet(workdir)
    try:
        docroot = workdir / "www"
        configs.write_bodies(docroot)
        script = workdir / "report.lua"
        script.write_text(wrk.LUA_SCRIPT)
        lbcore_cmd = lbcore_command(args.lbcore_cmd)
        bench = Bench(procs, workdir, free_ports(2), max_fds, maxconn=max_fds // 2 - 64,
                      lbcore_cmd=lbcore_cmd, lbcore_workers=args.workers)
        for index in range(len(bench.backend_ports)):
            start_backend(bench, index, docroot)
        log(f"backends on 127.0.0.1:{bench.backend_ports[0]} and :{bench.backend_ports[1]}")
        unavailable: dict[str, str] = {}
        load_before = os.getloadavg()[0]
        running = start_targets(args.targets, bench, unavailable)
        samples = run_rounds(args, running, script, unavailable)
        for target in running:
            if target.child is not None:
                procs.stop(target.child)
        memory, memory_failed = [], {}
        if args.memprobe_conns:
            memory, memory_failed = run_memory_probe(args, bench, unavailable)
        tables = report.aggregate(args.targets, args.sizes, samples, unavailable)
        write_results(args, tables, memory, memory_failed, samples, load_before)
        return 0
    except KeyboardInterrupt:
        log("interrupted: stopping every process the bench started")
        return 130
    except (RuntimeError, OSError) as exc:
        # Backends that do not start leave nothing to measure.
        log(f"bench: {exc}")
        return 1
    finally:
        procs.stop_all()
        if args.keep_tmp:
            log(f"configs and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
