"""HA drills in network namespaces, shared by the tests and by the runs
whose figures docs/ha.md reports:

    python -m tests.drills keepalived --engine lbcore,haproxy --runs 3

keepalived: two LB nodes (lb1, lb2) and a client on one LAN; each node
runs a backend on its loopback, the load balancer (lbcore, or haproxy 2.6
for comparison) bound to the VIP (transparent) and to 127.0.0.1, and
keepalived with conf/keepalived/ as shipped (only paths are rewritten).
The client opens a connection to the VIP every 20 ms (one GET each); the
active node's load balancer is SIGKILLed; the figures are how many
connections failed and how long until every new connection succeeded
again (in under 0.5 s) - the outage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from tests.netns import Lan, skip_reason
from tests.support import BACKEND_SCRIPT, ROOT, wait_until

CONF = ROOT / "conf"
VIP = "192.0.2.100"
NODES = {"lb1": "192.0.2.11/24", "lb2": "192.0.2.12/24"}
CLIENT = "192.0.2.2/24"
SLOW = 0.5  # an answer slower than this counts as part of the outage
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

# The client loop, run inside the client's namespace: one thread per
# attempt, started every `interval` whatever the others do; monotonic
# times (one clock for every namespace) as JSON on stdout.
CLIENT_LOOP = r'''
import json, socket, sys, threading, time
host, port, duration, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
results, lock = [], threading.Lock()
def attempt():
    start = time.monotonic(); ok = False; error = ""; server = ""
    try:
        with socket.create_connection((host, port), timeout=3) as s:
            s.settimeout(3)
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            ok = data.startswith(b"HTTP/1.1 200")
            error = "" if ok else repr(data[:40])
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
            server = next((line.split(":", 1)[1].strip() for line in head.split("\r\n")
                           if line.startswith("x-server:")), "")
    except OSError as exc:
        error = type(exc).__name__
    with lock:
        results.append((start, time.monotonic(), ok, error, server))
threads = []
begin = time.monotonic()
k = 0
while time.monotonic() < begin + duration:
    t = threading.Thread(target=attempt); t.start(); threads.append(t)
    k += 1
    time.sleep(max(0.0, begin + k * interval - time.monotonic()))
for t in threads:
    t.join()
print(json.dumps(sorted(results)))
'''


@dataclass
class Result:
    engine: str
    attempts: int
    failed: int
    slow: int  # succeeded, but in SLOW seconds or more (a SYN resent after the VIP moved)
    outage_s: float
    slowest_s: float
    errors: dict
    states: dict
    served_by: dict = None  # backend name -> answers (which node served)
    failures: list = None  # (start, end) of each failed attempt, seconds after the action

    def line(self) -> str:
        return (f"{self.engine}: outage {self.outage_s:.2f} s, {self.failed} of {self.attempts} connections "
                f"failed, {self.slow} slow (slowest {self.slowest_s:.2f} s), errors {self.errors}, "
                f"states {self.states}, served by {self.served_by}")


def measure(results: list, kill_at: float, engine: str, states: dict) -> Result:
    bad = [start for start, end, ok, *_ in results if start >= kill_at and (not ok or end - start >= SLOW)]
    bad += [start for start, end, ok, *_ in results if start < kill_at and not ok]
    outage = 0.0
    if bad:
        last_bad = max(bad)
        recovered = [end for start, end, ok, *_ in results if start > last_bad and ok]
        outage = (min(recovered) if recovered else results[-1][1]) - kill_at
    errors: dict = {}
    for _, _, ok, error, _ in results:
        if not ok:
            errors[error] = errors.get(error, 0) + 1
    slow = sum(1 for start, end, ok, *_ in results if ok and end - start >= SLOW)
    served_by: dict = {}
    for _, _, ok, _, server in results:
        if ok:
            served_by[server] = served_by.get(server, 0) + 1
    failures = [(round(start - kill_at, 3), round(end - kill_at, 3)) for start, end, ok, *_ in results if not ok]
    return Result(engine, len(results), sum(1 for r in results if not r[2]), slow, max(0.0, outage),
                  max((end - start for start, end, ok, *_ in results if ok), default=0.0), errors, states,
                  served_by, failures)


def node_yaml(node_dir: str, binds: str, more_global: str = "", health: str = "") -> str:
    """lb.yaml of one drill node: `binds` (YAML flow list) in front of the
    backend on the node's loopback, monitor_uri /healthz for the health
    scripts; the path written."""
    path = os.path.join(node_dir, "lb.yaml")
    with open(path, "w") as f:
        f.write(f"""\
global:
  pidfile: {node_dir}/lbcore.pid
  log: {{target: {node_dir}/access.log, format: none}}
{more_global}frontends:
  api:
    bind: {binds}
    mode: http
    monitor_uri: /healthz
    backend: api
backends:
  api:
    mode: http
{health}    servers: [{{name: local, address: "127.0.0.1:8000"}}]
""")
    return path


def lbcore_config(node_dir: str) -> tuple[list[str], str]:
    path = node_yaml(node_dir, f'[{{address: "{VIP}:80", transparent: true}}, "127.0.0.1:80"]',
                     health="    health: {type: http, path: /healthcheck, interval: 1s}\n")
    return [sys.executable, "-m", "lbcore.cli", "-c", path], path


def haproxy_config(node_dir: str) -> tuple[list[str], str]:
    path = os.path.join(node_dir, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(f"""\
global
    pidfile {node_dir}/haproxy.pid
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend api
    bind {VIP}:80 transparent
    bind 127.0.0.1:80
    monitor-uri /healthz
    default_backend api
backend api
    option httpchk GET /healthcheck
    server local 127.0.0.1:8000 check inter 1s
""")
    return [HAPROXY, "-db", "-f", path], path


ENGINES = {"lbcore": lbcore_config, "haproxy": haproxy_config}


def answers(lan: Lan, host: str, url: str) -> bool:
    probe = ("import sys, urllib.request\n"
             f"sys.exit(0 if urllib.request.urlopen({url!r}, timeout=1).status == 200 else 1)")
    proc = lan.popen(host, [sys.executable, "-c", probe], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc.wait(10) == 0


def read_state(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def keepalived_drill(engine: str = "lbcore", before: float = 1.0, after: float = 4.0,
                     interval: float = 0.02) -> Result:
    reason = skip_reason("keepalived")
    if reason:
        raise RuntimeError(reason)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with Lan("ka") as lan, tempfile.TemporaryDirectory(prefix="lbcore-ka-") as tmp:
        # keepalived (enable_script_security) runs only root-owned scripts
        # in directories no one else may write.
        os.chmod(tmp, 0o700)
        scripts = os.path.join(tmp, "keepalived")
        os.mkdir(scripts, 0o755)
        for name in ("check_lbcore.sh", "notify.sh"):
            shutil.copy(CONF / "keepalived" / name, scripts)
            os.chmod(os.path.join(scripts, name), 0o755)
        lan.add_host("client", CLIENT)
        balancers, states = {}, {}
        for node, address in NODES.items():
            lan.add_host(node, address)
            node_dir = os.path.join(tmp, node)
            os.mkdir(node_dir)
            lan.popen(node, [sys.executable, str(BACKEND_SCRIPT), "--port", "8000", "--name", node],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            command, _ = ENGINES[engine](node_dir)
            log = open(os.path.join(node_dir, f"{engine}.log"), "ab")
            balancers[node] = lan.popen(node, command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=node_dir)
            states[node] = os.path.join(node_dir, "vrrp-state")
        for node in NODES:
            wait_until(lambda: answers(lan, node, "http://127.0.0.1/echo"), 20, f"{engine} on {node}", 0.1)
        for node in NODES:
            node_dir = os.path.join(tmp, node)
            with open(CONF / "keepalived" / f"keepalived-{node}.conf") as f:
                text = f.read().replace("/etc/keepalived/", scripts + "/").replace("/run/lbcore/vrrp-state",
                                                                                   states[node])
            conf = os.path.join(node_dir, "keepalived.conf")
            with open(conf, "w") as f:
                f.write(text)
            log = open(os.path.join(node_dir, "keepalived.log"), "ab")
            lan.popen(node, ["keepalived", "--dont-fork", "--log-console", "--no-syslog", "--vrrp",
                             "-f", conf, "-p", f"{node_dir}/keepalived.pid", "-r", f"{node_dir}/vrrp.pid",
                             "-c", f"{node_dir}/checkers.pid"], stdout=log, stderr=subprocess.STDOUT)
        # Both start BACKUP with nopreempt: whichever times out first is
        # the master (as in production, no fixed owner), the other its backup.
        def elected():
            now = {node: read_state(path) for node, path in states.items()}
            return sorted(now.values()) == ["BACKUP", "MASTER"] and now
        try:
            elected_states = wait_until(elected, 20, "one MASTER and one BACKUP")
        except TimeoutError:
            logs = {node: open(os.path.join(tmp, node, "keepalived.log"), errors="replace").read()[-1500:]
                    for node in NODES}
            raise TimeoutError(f"no MASTER and BACKUP: states {[read_state(p) for p in states.values()]}, "
                               f"keepalived logs: {logs}") from None
        master = next(node for node, state in elected_states.items() if state == "MASTER")
        wait_until(lambda: answers(lan, "client", f"http://{VIP}/echo"), 10, "the VIP to answer", 0.1)

        loop = lan.popen("client", [sys.executable, "-c", CLIENT_LOOP, VIP, "80", str(before + after), str(interval)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(before)
        kill_at = time.monotonic()
        victim = balancers[master]
        victim.send_signal(signal.SIGKILL)
        victim.wait()  # reaped at once: a zombie would still look alive to a pid check
        out, err = loop.communicate(timeout=before + after + 30)
        if loop.returncode != 0:
            raise RuntimeError(f"client loop failed: {err.decode()[-500:]}")
        final = {f"{node} ({'killed' if node == master else 'backup'})": read_state(path)
                 for node, path in states.items()}
        return measure(json.loads(out), kill_at, engine, final)


# -- ECMP ---------------------------------------------------------------------

ECMP_VIP = "198.51.100.10"
ECMP_NODES = {"lb1": "192.0.2.11/24", "lb2": "192.0.2.12/24", "lb3": "192.0.2.13/24"}
ROUTER_LAN, ROUTER_CLIENT_SIDE, ECMP_CLIENT = "192.0.2.1/24", "10.0.1.1/24", "10.0.1.2/24"


def ecmp_routes(lan: Lan) -> list[str]:
    """The router's next hops for the VIP."""
    text = lan.ip("router", "route", "show", ECMP_VIP)
    return sorted(word for line in text.splitlines() for i, word in enumerate(line.split())
                  if i > 0 and line.split()[i - 1] == "via")


def ecmp_drill(action: str = "kill", before: float = 1.5, after: float = 4.0,
               interval: float = 0.02, stop_delay: float = 1.0) -> Result:
    """Three lbcore nodes announce the VIP over BGP (BIRD) to a router
    that spreads flows over them (multipath, L4 hash); the client opens a
    connection every `interval`. `action` on lb1: "kill" (SIGKILL: the
    health script withdraws the route) or "drain" (SIGTERM with
    stop_delay: withdrawn first, then drained; nothing may fail)."""
    reason = skip_reason("bird", "birdc")
    if reason:
        raise RuntimeError(reason)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with Lan("ecmp") as lan, tempfile.TemporaryDirectory(prefix="lbcore-ecmp-") as tmp:
        lan.add_host("router", ROUTER_LAN)
        lan.add_host("client")
        lan.add_link("router", ROUTER_CLIENT_SIDE, "client", ECMP_CLIENT)
        lan.ip("client", "route", "add", "default", "via", ROUTER_CLIENT_SIDE.split("/")[0])
        lan.sysctl("router", "net.ipv4.ip_forward=1")
        lan.sysctl("router", "net.ipv4.fib_multipath_hash_policy=1")
        with open(CONF / "ecmp" / "bird-router.conf") as f:
            router_conf = os.path.join(tmp, "bird-router.conf")
            with open(router_conf, "w") as out:
                out.write(f.read())
        lan.popen("router", ["bird", "-f", "-c", router_conf, "-s", f"{tmp}/router.ctl", "-P", f"{tmp}/router.pid"],
                  stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/router.log", "ab"))
        balancers = {}
        for node, address in ECMP_NODES.items():
            lan.add_host(node, address)
            lan.ip(node, "addr", "add", f"{ECMP_VIP}/32", "dev", "lo")
            lan.ip(node, "route", "add", "10.0.1.0/24", "via", ROUTER_LAN.split("/")[0])
            node_dir = os.path.join(tmp, node)
            os.mkdir(node_dir)
            lan.popen(node, [sys.executable, str(BACKEND_SCRIPT), "--port", "8000", "--name", node],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            lb_yaml = node_yaml(node_dir, f'["{ECMP_VIP}:80", "127.0.0.1:80"]',
                                more_global=f"  stop_delay: {stop_delay}s\n  grace: 10s\n")
            balancers[node] = lan.popen(node, [sys.executable, "-m", "lbcore.cli", "-c", lb_yaml],
                                        stdout=open(f"{node_dir}/lbcore.log", "ab"), stderr=subprocess.STDOUT,
                                        env=env, cwd=node_dir)
            with open(CONF / "ecmp" / "bird-lb.conf") as f:
                text = f.read().replace("router id 192.0.2.11;", f"router id {address.split('/')[0]};")
            conf = os.path.join(node_dir, "bird.conf")
            with open(conf, "w") as f:
                f.write(text)
            sock = f"{node_dir}/bird.ctl"
            lan.popen(node, ["bird", "-f", "-c", conf, "-s", sock, "-P", f"{node_dir}/bird.pid"],
                      stdout=subprocess.DEVNULL, stderr=open(f"{node_dir}/bird.log", "ab"))
            lan.popen(node, [str(CONF / "ecmp" / "lbcore-bgp-health.sh"), sock, "127.0.0.1", "80", "/healthz"],
                      stdout=subprocess.DEVNULL, stderr=open(f"{node_dir}/health.log", "ab"))
        hops = sorted(address.split("/")[0] for address in ECMP_NODES.values())
        wait_until(lambda: ecmp_routes(lan) == hops, 30, "a route to the VIP over all three nodes", 0.1)

        loop = lan.popen("client", [sys.executable, "-c", CLIENT_LOOP, ECMP_VIP, "80", str(before + after),
                                    str(interval)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(before)
        acted_at = time.monotonic()
        victim = balancers["lb1"]
        if action == "kill":
            victim.send_signal(signal.SIGKILL)
            victim.wait()
        else:
            victim.send_signal(signal.SIGTERM)
        withdrawn = wait_until(lambda: ecmp_routes(lan) == hops[1:] and time.monotonic(), after,
                               "lb1's route withdrawn", 0.01)
        out, err = loop.communicate(timeout=before + after + 30)
        if loop.returncode != 0:
            raise RuntimeError(f"client loop failed: {err.decode()[-500:]}")
        exited = victim.wait(30)
        result = measure(json.loads(out), acted_at, f"lbcore ECMP {action}",
                         {"withdrawn after (s)": round(withdrawn - acted_at, 3), "lb1 exit": exited,
                          "routes": ecmp_routes(lan)})
        return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.drills")
    parser.add_argument("drill", choices=["keepalived", "ecmp"])
    parser.add_argument("--engine", default="lbcore,haproxy")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    if args.drill == "ecmp":
        for action in ("kill", "drain"):
            for _ in range(args.runs):
                print(ecmp_drill(action).line(), flush=True)
        return 0
    for engine in args.engine.split(","):
        results = [keepalived_drill(engine) for _ in range(args.runs)]
        for result in results:
            print(result.line(), flush=True)
        print(f"{engine}: median outage {statistics.median(r.outage_s for r in results):.2f} s, "
              f"median failed {statistics.median(r.failed for r in results)} of "
              f"~{results[0].attempts} connections over {args.runs} runs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
