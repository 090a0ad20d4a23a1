"""Soak: lbcore under steady load while its servers die, hang, and it is
reloaded and administered; counts every failed request and samples RSS
and open descriptors.

    python bench/soak.py                    # 30 minutes (the documented soak)
    python bench/soak.py --duration 600     # 10 minutes
    python bench/soak.py --workers 2        # with global.workers: 2

Load, all through one lbcore in front of three servers (tests/backend.py):
keep-alive GET clients, new-connection GET clients, keep-alive POST
clients (1-32 KiB bodies). Chaos: a server SIGKILLed every --kill-every
seconds (restarted 2 s later), a server SIGSTOPped for 3 s every
--hang-every, SIGHUP every --reload-every, a drain or weight change through
the admin API every --admin-every (undone 3 s later); never all servers at
once (an event waits while only one is untouched). A GET or POST that gets no 2xx
(an exception, or another status) is a failure, recorded with its reason.

Results go to bench/results/soak-<UTC timestamp>.md and .json (and
soak-latest.md): totals, failures by reason, RSS and descriptor samples
every 10 s. Not part of the test suite: it takes as long as it is told.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import BackendProcess, LbcoreProcess, free_port, http_config  # noqa: E402

RESULTS = ROOT / "bench" / "results"


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok: Counter = Counter()
        self.failed: Counter = Counter()
        self.reasons: Counter = Counter()
        self.examples: list[str] = []
        self.started = time.monotonic()

    def success(self, kind: str) -> None:
        with self.lock:
            self.ok[kind] += 1

    def failure(self, kind: str, reason: str) -> None:
        with self.lock:
            self.failed[kind] += 1
            self.reasons[f"{kind}: {reason}"] += 1
            if len(self.examples) < 50:
                self.examples.append(f"{time.strftime('%H:%M:%S')} (t={time.monotonic() - self.started:.1f}) "
                                     f"{kind}: {reason}")


def client_loop(port: int, kind: str, stop: threading.Event, counters: Counters) -> None:
    """One client: `get-keepalive`, `get-new` (a connection per request) or
    `post-keepalive`."""
    conn = None
    rng = random.Random()
    while not stop.is_set():
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            if kind.startswith("post"):
                body = os.urandom(rng.randint(1024, 32768))
                conn.request("POST", "/echo", body=body)
            else:
                conn.request("GET", "/echo")
            resp = conn.getresponse()
            data = resp.read()
            if 200 <= resp.status < 300:
                if kind.startswith("post") and json.loads(data).get("body_length") not in (None, len(body)):
                    counters.failure(kind, "body length mismatch")
                else:
                    counters.success(kind)
            else:
                counters.failure(kind, f"status {resp.status}")
            if kind == "get-new" or resp.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            counters.failure(kind, type(exc).__name__)
            if conn is not None:
                conn.close()
            conn = None
    if conn is not None:
        conn.close()


def lbcore_pids(lb: LbcoreProcess) -> list[int]:
    """The lbcore process and its workers (its children)."""
    pids = [lb.proc.pid]
    try:
        with open(f"/proc/{lb.proc.pid}/task/{lb.proc.pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return pids


def sample(lb: LbcoreProcess) -> tuple[int, int]:
    """(RSS KiB, open descriptors) summed over lbcore's processes."""
    rss = fds = 0
    for pid in lbcore_pids(lb):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return rss, fds


def admin(stats: int, server: str, change: dict) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", stats, timeout=5)
    try:
        conn.request("POST", f"/admin/backends/pool/servers/{server}", body=json.dumps(change))
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        pass
    finally:
        conn.close()


def usable_servers(stats: int) -> int:
    """Servers lbcore would send a new request to now (UP, not drained)."""
    conn = http.client.HTTPConnection("127.0.0.1", stats, timeout=5)
    try:
        conn.request("GET", "/stats.json")
        servers = json.loads(conn.getresponse().read())["backends"]["pool"]["servers"]
        return sum(1 for s in servers if s["status"] == "UP")
    except (OSError, http.client.HTTPException, ValueError, KeyError):
        return 0
    finally:
        conn.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=1800, help="seconds (default 1800)")
    parser.add_argument("--keepalive-clients", type=int, default=4)
    parser.add_argument("--new-connection-clients", type=int, default=2)
    parser.add_argument("--post-clients", type=int, default=2)
    parser.add_argument("--kill-every", type=float, default=7)
    parser.add_argument("--hang-every", type=float, default=23)
    parser.add_argument("--reload-every", type=float, default=11)
    parser.add_argument("--admin-every", type=float, default=13)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)

    names = ["s1", "s2", "s3"]
    backends = {name: BackendProcess(name).start() for name in names}
    port, stats = free_port(), free_port()
    config = http_config([backends[n].address for n in names], port, backend={
        "health": {"type": "http", "path": "/healthcheck", "interval": "200ms", "timeout": "1s",
                   "rise": 2, "fall": 2}})
    config["global"]["log"] = {"target": "stdout", "format": "none"}
    if args.workers > 1:
        config["global"]["workers"] = args.workers
    config["defaults"] = {"timeouts": {"connect": "1s", "server": "10s", "client": "30s"},
                          "retries": 3, "redispatch": True}
    config["stats"] = {"bind": f"127.0.0.1:{stats}", "admin": True}
    lb = LbcoreProcess(config).start()
    time.sleep(1.0)

    counters = Counters()
    stop = threading.Event()
    kinds = (["get-keepalive"] * args.keepalive_clients + ["get-new"] * args.new_connection_clients
             + ["post-keepalive"] * args.post_clients)
    threads = [threading.Thread(target=client_loop, args=(port, k, stop, counters), daemon=True)
               for k in kinds]
    events: Counter = Counter()
    timeline: list = []  # (t, event, server): to tie failures to what caused them
    samples = []
    started = time.monotonic()
    next_at = {"kill": args.kill_every, "hang": args.hang_every, "reload": args.reload_every,
               "admin": args.admin_every, "sample": 0.0}
    rng = random.Random(1)
    restart_at: dict = {}
    cont_at: dict = {}
    ready_at: dict = {}  # drained or reweighted by the admin API, back to ready then
    settle_at: dict = {}  # restarted, not UP yet (rise)
    for t in threads:
        t.start()
    try:
        while True:
            now = time.monotonic() - started
            if now >= args.duration:
                break
            if lb.proc.poll() is not None:
                events["lbcore exited"] += 1
                break
            for name, at in list(restart_at.items()):
                if now >= at:
                    backends[name] = BackendProcess(name, port=backends[name].port).start()
                    del restart_at[name]
                    settle_at[name] = now + 1.5  # rise 2 x 200 ms, and slack
            for name, at in list(settle_at.items()):
                if now >= at:
                    del settle_at[name]
            for name, at in list(cont_at.items()):
                if now >= at:
                    backends[name].proc.send_signal(signal.SIGCONT)
                    del cont_at[name]
            for name, at in list(ready_at.items()):
                if now >= at:
                    admin(stats, name, {"state": "ready", "weight": 1})
                    del ready_at[name]
            # At most all servers but one are disturbed at a time: the soak
            # measures lost requests, not a planned total outage.
            busy = set(restart_at) | set(settle_at) | set(cont_at) | set(ready_at)
            idle = [n for n in names if n not in busy] if len(busy) < len(names) - 1 else []
            due = any(now >= next_at[k] for k in ("kill", "hang", "admin"))
            if idle and due and usable_servers(stats) < 2:
                idle = []  # lbcore does not see two usable servers yet (a restart still rising)
            if now >= next_at["kill"] and idle:
                victim = rng.choice(idle)
                backends[victim].kill()
                restart_at[victim] = now + 2.0
                events["server killed"] += 1
                timeline.append((round(now, 1), "kill", victim))
                next_at["kill"] += args.kill_every
                idle = []  # one disturbance per turn: the next looks at the servers again
            if now >= next_at["hang"] and idle:
                victim = rng.choice(idle)
                backends[victim].proc.send_signal(signal.SIGSTOP)
                cont_at[victim] = now + 3.0
                events["server hung (SIGSTOP 3s)"] += 1
                timeline.append((round(now, 1), "hang", victim))
                next_at["hang"] += args.hang_every
                idle = []  # one disturbance per turn: the next looks at the servers again
            if now >= next_at["reload"]:
                lb.signal(signal.SIGHUP)
                events["reload (SIGHUP)"] += 1
                timeline.append((round(now, 1), "reload", ""))
                next_at["reload"] += args.reload_every
            if now >= next_at["admin"] and idle:
                server = rng.choice(idle)
                change = rng.choice([{"state": "drain"}, {"weight": rng.randint(1, 100)}])
                admin(stats, server, change)
                ready_at[server] = now + 3.0
                events["admin change"] += 1
                timeline.append((round(now, 1), "admin " + json.dumps(change), server))
                next_at["admin"] += args.admin_every
            if now >= next_at["sample"]:
                rss, fds = sample(lb)
                with counters.lock:
                    samples.append({"t": round(now, 1), "rss_kib": rss, "fds": fds,
                                    "ok": sum(counters.ok.values()),
                                    "failed": sum(counters.failed.values())})
                next_at["sample"] += 10.0
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(35)
        for name in cont_at:
            backends[name].proc.send_signal(signal.SIGCONT)
        rss, fds = sample(lb)
        samples.append({"t": round(time.monotonic() - started, 1), "rss_kib": rss, "fds": fds,
                        "ok": sum(counters.ok.values()), "failed": sum(counters.failed.values())})
        alive = lb.proc.poll() is None
        lb.stop()
        for b in backends.values():
            b.stop()
    write_results(args, counters, events, samples, alive, lb, timeline)
    return 0


def write_results(args, counters: Counters, events: Counter, samples: list, alive: bool, lb,
                  timeline: list) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    from lbcore import build

    # Skip the first minute's samples for the drift figures: warm-up (caches, pools).
    settled = [s for s in samples if s["t"] >= 60] or samples
    rss = [s["rss_kib"] for s in settled]
    fds = [s["fds"] for s in settled]
    failed_idempotent = sum(n for k, n in counters.failed.items() if k.startswith("get"))
    report = {
        "started_utc": stamp, "duration_s": args.duration, "workers": args.workers,
        "build": build(), "lbcore_alive_at_end": alive,
        "clients": {"get-keepalive": args.keepalive_clients, "get-new": args.new_connection_clients,
                    "post-keepalive": args.post_clients},
        "chaos": dict(events), "ok": dict(counters.ok), "failed": dict(counters.failed),
        "failure_reasons": dict(counters.reasons), "failure_examples": counters.examples,
        "samples": samples, "timeline": timeline,
    }
    (out / f"soak-{stamp}.json").write_text(json.dumps(report, indent=1))
    lines = [
        f"# Soak {stamp}", "",
        f"`python bench/soak.py --duration {args.duration:g}" + (f" --workers {args.workers}`" if args.workers > 1 else "`"),
        f"({build()}); chaos every: kill {args.kill_every:g}s, hang {args.hang_every:g}s, "
        f"reload {args.reload_every:g}s, admin {args.admin_every:g}s.", "",
        "| requests | ok | failed |", "|---|---:|---:|",
    ]
    for kind in ("get-keepalive", "get-new", "post-keepalive"):
        lines.append(f"| {kind} | {counters.ok[kind]:,} | {counters.failed[kind]:,} |")
    lines += ["", "Chaos: " + ", ".join(f"{n} x {k}" for k, n in events.items()), ""]
    lines.append(f"- failed idempotent (GET) requests: **{failed_idempotent}**")
    lines.append(f"- failed POSTs: **{counters.failed['post-keepalive']}**")
    if counters.reasons:
        lines.append("- failures by reason: " + ", ".join(f"{k} x{n}" for k, n in counters.reasons.most_common()))
    lines.append(f"- RSS after the first minute: {min(rss) / 1024:.1f} to {max(rss) / 1024:.1f} MiB, "
                 f"end {rss[-1] / 1024:.1f} MiB")
    lines.append(f"- open descriptors after the first minute: {min(fds)} to {max(fds)}, end {fds[-1]}")
    lines.append(f"- lbcore alive at the end: {alive}")
    if counters.examples:
        lines += ["", "First failures:", ""] + [f"    {e}" for e in counters.examples[:20]]
    lines += ["", "Samples (every 10 s): t, RSS KiB, fds, ok, failed", ""]
    lines += [f"    {s['t']:>7} {s['rss_kib']:>8} {s['fds']:>5} {s['ok']:>9} {s['failed']:>5}" for s in samples]
    text = "\n".join(lines) + "\n"
    (out / f"soak-{stamp}.md").write_text(text)
    (out / "soak-latest.md").write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
