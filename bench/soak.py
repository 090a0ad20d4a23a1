"""Soak: lbcore under steady load while its servers die, hang, and it is
reloaded and administered; counts every failed request and samples RSS
and open descriptors.

    python bench/soak.py                    # 30 minutes (the documented soak)
    python bench/soak.py --duration 600     # 10 minutes
    python bench/soak.py --workers 2        # with global.workers: 2
    python bench/soak.py --duration 240 --kill-every 0 --hang-every 0 --admin-every 0
                                            # one kind of chaos alone (0: off), to bisect

Load, all through one lbcore in front of three servers (tests/backend.py):
keep-alive GET clients, new-connection GET clients, keep-alive POST
clients (1-32 KiB bodies). Chaos: a server SIGKILLed every --kill-every
seconds (restarted 2 s later), a server SIGSTOPped for 3 s every
--hang-every, SIGHUP every --reload-every, a drain or weight change through
the admin API every --admin-every (undone 3 s later).

The chaos is an operator's drill, not an outage: at least one server is
always usable. A server is disturbed only when, besides it, another one is
both untouched by the soak and UP in lbcore's own stats, so one server
stays UP and untouched through every event (a killed server counts as
disturbed until it is restarted and lbcore has it UP again, a hung one
until SIGCONT and UP again). An event that finds no such pair waits for the
next turn. A 503 ("no server") in this soak is therefore never the chaos
taking every server out: each failure is recorded with lbcore's server
states at that moment (polled every 100 ms) to tell lbcore's faults from
the harness's.

A GET or POST that gets no 2xx (an exception, or another status) is a
failure, recorded with its reason. A POST whose server dies after the body
was sent on a fresh connection gets 502: it is not replayed (HAProxy's
default `retry-on conn-failure` does the same); see docs/security.md.

Results go to bench/results/soak-<UTC timestamp>.md, .json and .log
(lbcore's log: server state changes and reloads), and soak-latest.md:
totals, failures by reason with the server states at each, RSS and
descriptor samples every 10 s, and the machine's load average (the
machine may be shared). Not part of the test suite: it takes as long as it
is told.
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


class ServerStates:
    """lbcore's view of its servers, polled every 100 ms from /stats.json, so
    a failure can be tied to what lbcore knew when it happened."""

    def __init__(self, stats: int, names: list) -> None:
        self.stats = stats
        self.current = {n: "?" for n in names}
        self.at = 0.0
        self.lock = threading.Lock()

    def poll(self, stop: threading.Event) -> None:
        while not stop.is_set():
            states = server_states(self.stats)
            if states:
                with self.lock:
                    self.current, self.at = states, time.monotonic()
            stop.wait(0.1)

    def snapshot(self) -> tuple:
        with self.lock:
            return dict(self.current), time.monotonic() - self.at


class Counters:
    def __init__(self, states: "ServerStates") -> None:
        self.states = states
        self.lock = threading.Lock()
        self.ok: Counter = Counter()
        self.failed: Counter = Counter()
        self.reasons: Counter = Counter()
        self.examples: list[str] = []
        self.started = time.monotonic()
        # Failed GETs while lbcore's last poll showed a usable (UP) server:
        # the ones the chaos cannot explain.
        self.failed_with_server_up = 0

    def success(self, kind: str) -> None:
        with self.lock:
            self.ok[kind] += 1

    def failure(self, kind: str, reason: str) -> None:
        states, age = self.states.snapshot()
        up = [n for n, s in states.items() if s == "UP"]
        with self.lock:
            self.failed[kind] += 1
            self.reasons[f"{kind}: {reason}"] += 1
            if kind.startswith("get") and up:
                self.failed_with_server_up += 1
            if len(self.examples) < 50:
                seen = " ".join(f"{n}={s}" for n, s in sorted(states.items()))
                self.examples.append(f"{time.strftime('%H:%M:%S')} (t={time.monotonic() - self.started:.1f}) "
                                     f"{kind}: {reason}  [lbcore {age * 1000:.0f} ms before: {seen}]")


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


def server_states(stats: int) -> dict:
    """{server: status} as lbcore reports it now (UP, DOWN, DRAIN, NOLB,
    MAINT); {} when the stats endpoint did not answer."""
    conn = http.client.HTTPConnection("127.0.0.1", stats, timeout=5)
    try:
        conn.request("GET", "/stats.json")
        servers = json.loads(conn.getresponse().read())["backends"]["pool"]["servers"]
        return {s["name"]: s["status"] for s in servers}
    except (OSError, http.client.HTTPException, ValueError, KeyError):
        return {}
    finally:
        conn.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=1800, help="seconds (default 1800)")
    parser.add_argument("--keepalive-clients", type=int, default=4)
    parser.add_argument("--new-connection-clients", type=int, default=2)
    parser.add_argument("--post-clients", type=int, default=2)
    parser.add_argument("--kill-every", type=float, default=7, help="seconds; 0: no kills (also below)")
    parser.add_argument("--hang-every", type=float, default=23)
    parser.add_argument("--reload-every", type=float, default=11)
    parser.add_argument("--admin-every", type=float, default=13)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    args.command = " ".join(["python bench/soak.py"] + list(sys.argv[1:] if argv is None else argv))

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

    states = ServerStates(stats, names)
    counters = Counters(states)
    stop = threading.Event()
    kinds = (["get-keepalive"] * args.keepalive_clients + ["get-new"] * args.new_connection_clients
             + ["post-keepalive"] * args.post_clients)
    threads = [threading.Thread(target=client_loop, args=(port, k, stop, counters), daemon=True)
               for k in kinds]
    threads.append(threading.Thread(target=states.poll, args=(stop,), daemon=True))
    events: Counter = Counter()
    timeline: list = []  # (t, event, server): to tie failures to what caused them
    samples = []
    started = time.monotonic()
    # A kind of chaos whose period is 0 is off.
    next_at = {kind: every if every > 0 else float("inf") for kind, every in (
        ("kill", args.kill_every), ("hang", args.hang_every), ("reload", args.reload_every),
        ("admin", args.admin_every))}
    next_at["sample"] = 0.0
    rng = random.Random(1)
    restart_at: dict = {}
    cont_at: dict = {}
    ready_at: dict = {}  # drained or reweighted by the admin API, back to ready then
    recovering: set = set()  # restarted or resumed, until lbcore has it UP again
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
                    recovering.add(name)
            for name, at in list(cont_at.items()):
                if now >= at:
                    backends[name].proc.send_signal(signal.SIGCONT)
                    del cont_at[name]
                    recovering.add(name)
            for name, at in list(ready_at.items()):
                if now >= at:
                    admin(stats, name, {"state": "ready", "weight": 1})
                    del ready_at[name]
            due = [k for k in ("kill", "hang", "admin") if now >= next_at[k]]
            if due or recovering:
                seen = server_states(stats)  # lbcore's view now, not the poller's last one
                recovering = {n for n in recovering if seen.get(n) != "UP"}
                busy = set(restart_at) | set(cont_at) | set(ready_at) | recovering
                # Untouched and UP in lbcore's eyes: one of these is disturbed
                # only while another one stays (at least one server usable).
                safe = [n for n in names if n not in busy and seen.get(n) == "UP"]
                if due and len(safe) >= 2:
                    kind = due[0]  # one disturbance per turn: the next looks again
                    victim = rng.choice(safe)
                    if kind == "kill":
                        backends[victim].kill()
                        restart_at[victim] = now + 2.0
                        events["server killed"] += 1
                        timeline.append((round(now, 1), "kill", victim))
                    elif kind == "hang":
                        backends[victim].proc.send_signal(signal.SIGSTOP)
                        cont_at[victim] = now + 3.0
                        events["server hung (SIGSTOP 3s)"] += 1
                        timeline.append((round(now, 1), "hang", victim))
                    else:
                        change = rng.choice([{"state": "drain"}, {"weight": rng.randint(1, 100)}])
                        admin(stats, victim, change)
                        ready_at[victim] = now + 3.0
                        events["admin change"] += 1
                        timeline.append((round(now, 1), "admin " + json.dumps(change), victim))
                    every = args.__dict__[f"{kind}_every"]
                    # An event that waited does not bring on a burst after it.
                    next_at[kind] = max(next_at[kind] + every, now + every / 2)
            if now >= next_at["reload"]:
                lb.signal(signal.SIGHUP)
                events["reload (SIGHUP)"] += 1
                timeline.append((round(now, 1), "reload", ""))
                next_at["reload"] += args.reload_every
            if now >= next_at["sample"]:
                rss, fds = sample(lb)
                with counters.lock:
                    samples.append({"t": round(now, 1), "rss_kib": rss, "fds": fds,
                                    "ok": sum(counters.ok.values()),
                                    "failed": sum(counters.failed.values()),
                                    "load1": round(os.getloadavg()[0], 2)})
                next_at["sample"] += 10.0
            time.sleep(0.05)
    finally:
        stop.set()
        # Resume a hung server before waiting for the clients: a POST in
        # flight on it would otherwise wait out timeouts.server (a 504 the
        # soak made, not lbcore).
        for name in cont_at:
            backends[name].proc.send_signal(signal.SIGCONT)
        for t in threads:
            t.join(35)
        rss, fds = sample(lb)
        samples.append({"t": round(time.monotonic() - started, 1), "rss_kib": rss, "fds": fds,
                        "ok": sum(counters.ok.values()), "failed": sum(counters.failed.values()),
                        "load1": round(os.getloadavg()[0], 2)})
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
    loads = [s["load1"] for s in samples]
    cores = os.cpu_count()
    try:
        (out / f"soak-{stamp}.log").write_text(lb.logs())
    except OSError:
        pass
    report = {
        "started_utc": stamp, "duration_s": args.duration, "workers": args.workers,
        "build": build(), "lbcore_alive_at_end": alive,
        "clients": {"get-keepalive": args.keepalive_clients, "get-new": args.new_connection_clients,
                    "post-keepalive": args.post_clients},
        "chaos": dict(events), "ok": dict(counters.ok), "failed": dict(counters.failed),
        "failure_reasons": dict(counters.reasons), "failure_examples": counters.examples,
        "failed_get_with_server_up": counters.failed_with_server_up,
        "load_average_1min": {"min": min(loads), "mean": round(sum(loads) / len(loads), 2),
                              "max": max(loads), "cores": cores},
        "samples": samples, "timeline": timeline,
    }
    (out / f"soak-{stamp}.json").write_text(json.dumps(report, indent=1))
    lines = [
        f"# Soak {stamp}", "",
        f"`{args.command}`",
        f"({build()}); chaos every: " + ", ".join(
            f"{kind} {every:g}s" if every > 0 else f"{kind} off" for kind, every in (
                ("kill", args.kill_every), ("hang", args.hang_every), ("reload", args.reload_every),
                ("admin", args.admin_every))) + ".", "",
        "| requests | ok | failed |", "|---|---:|---:|",
    ]
    for kind in ("get-keepalive", "get-new", "post-keepalive"):
        lines.append(f"| {kind} | {counters.ok[kind]:,} | {counters.failed[kind]:,} |")
    lines += ["", "Chaos: " + ", ".join(f"{n} x {k}" for k, n in events.items()), ""]
    lines.append(f"- failed idempotent (GET) requests: **{failed_idempotent}**")
    lines.append(f"- of which while lbcore showed a server UP (its last 100 ms poll): "
                 f"**{counters.failed_with_server_up}**")
    lines.append(f"- failed POSTs: **{counters.failed['post-keepalive']}**")
    if counters.reasons:
        lines.append("- failures by reason: " + ", ".join(f"{k} x{n}" for k, n in counters.reasons.most_common()))
    lines.append(f"- RSS after the first minute: {min(rss) / 1024:.1f} to {max(rss) / 1024:.1f} MiB, "
                 f"end {rss[-1] / 1024:.1f} MiB")
    lines.append(f"- open descriptors after the first minute: {min(fds)} to {max(fds)}, end {fds[-1]}")
    lines.append(f"- lbcore alive at the end: {alive}")
    lines.append(f"- machine load average (1 min, sampled every 10 s): {min(loads):.1f} to {max(loads):.1f}, "
                 f"mean {sum(loads) / len(loads):.1f}, on {cores} cores (shared with other work)")
    lines.append(f"- lbcore's log (state changes, reloads): soak-{stamp}.log")
    if counters.examples:
        lines += ["", "First failures:", ""] + [f"    {e}" for e in counters.examples[:20]]
    lines += ["", "Samples (every 10 s): t, RSS KiB, fds, ok, failed, load average", ""]
    lines += [f"    {s['t']:>7} {s['rss_kib']:>8} {s['fds']:>5} {s['ok']:>9} {s['failed']:>5} {s['load1']:>6}"
              for s in samples]
    text = "\n".join(lines) + "\n"
    (out / f"soak-{stamp}.md").write_text(text)
    (out / "soak-latest.md").write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
