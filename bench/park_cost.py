"""CPU of parking: keep-alive clients that pause between requests long
enough to be parked (lbcore/proxy/parking.py) each time, against the same
clients with parking turned off.

    python bench/park_cost.py [--clients 50] [--pause 0.3] [--seconds 10]

Each client sends a GET, reads the answer, sleeps `--pause` and goes again
on the same connection. With parking on and a pause above PARK_AFTER, every
request pays one park and one unpark; with it off (PARK_AFTER set above the
keep-alive timeout before the config loads) none does. Prints lbcore's CPU
per request (user + sys of its process, /proc/PID/stat) for both, in turn
`--rounds` times: the difference is the cost of a park and an unpark.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.procs import tree_cpu_seconds  # noqa: E402
from tests.support import BackendProcess, free_port, http_config, wait_port  # noqa: E402

REQUEST = b"GET /echo HTTP/1.1\r\nHost: bench\r\n\r\n"
# Starts lbcore with PARK_AFTER raised above any keep-alive timeout: nothing parks.
NO_PARKING = ("import sys, lbcore.proxy.http as h; h.PARK_AFTER = 1e9; "
              "from lbcore.cli import main; sys.exit(main())")


def start(config_path: str, parking: bool) -> subprocess.Popen:
    argv = ([sys.executable, "-m", "lbcore.cli"] if parking else [sys.executable, "-c", NO_PARKING])
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen(argv + ["-c", config_path], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def drive(port: int, clients: int, pause: float, seconds: float) -> int:
    done = [0] * clients
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            while time.monotonic() < stop:
                s.sendall(REQUEST)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += s.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                while len(body) < length:
                    body += s.recv(65536)
                done[i] += 1
                time.sleep(pause)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--pause", type=float, default=0.3, help="seconds between a client's requests")
    p.add_argument("--seconds", type=float, default=10.0, help="per run")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    import yaml

    backend = BackendProcess("s1").start()
    work = tempfile.mkdtemp(prefix="park-cost-")
    results: dict[str, list[float]] = {"parking on": [], "parking off": []}
    try:
        for _ in range(args.rounds):
            for name in results:
                port = free_port()
                config = http_config([backend.address], port)
                config["global"]["log"] = {"format": "none"}
                path = os.path.join(work, "lb.yaml")
                with open(path, "w") as f:
                    yaml.safe_dump(config, f)
                lb = start(path, name == "parking on")
                try:
                    wait_port(port, proc=lb)
                    cpu0 = tree_cpu_seconds(lb.pid)
                    requests = drive(port, args.clients, args.pause, args.seconds)
                    cpu = tree_cpu_seconds(lb.pid) - cpu0
                finally:
                    lb.terminate()
                    lb.wait(10)
                results[name].append(cpu / requests * 1e6)
                print(f"{name}: {requests} requests, {cpu:.2f} s CPU, {cpu / requests * 1e6:.0f} us per request",
                      flush=True)
    finally:
        backend.stop()
    on, off = statistics.median(results["parking on"]), statistics.median(results["parking off"])
    print(f"\n{args.clients} clients pausing {args.pause} s: {on:.0f} us per request with parking, "
          f"{off:.0f} without: {on - off:.0f} us per park and unpark")
    return 0


if __name__ == "__main__":
    sys.exit(main())
