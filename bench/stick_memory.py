"""Memory per stick-table entry, lbcore against haproxy 2.6, on the same
table definition: `type ip size 1m expire 30m store http_req_rate(10s)`
filled with N distinct IPv4 keys (default 1,000,000).

    python bench/stick_memory.py [--entries N]

haproxy: one stats socket session feeds `set table ... key K data.http_req_rate 1`
for every key; the growth of haproxy's VmRSS divided by N is its cost per
entry. lbcore: the same entries created in lbcore.stick.StickTable inside
this process (what a running lbcore holds per entry); the growth of VmRSS
divided by N. Prints one Markdown table; `--results FILE` appends it there.
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DEFINITION = "type ip size 1m expire 30m store http_req_rate(10s)"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def keys(n: int):
    for i in range(n):
        yield f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def haproxy_bytes_per_entry(n: int) -> float:
    work = tempfile.mkdtemp(prefix="stickmem-")
    sock_path = os.path.join(work, "admin.sock")
    cfg = os.path.join(work, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(f"""global
    stats socket {sock_path} mode 600 level admin
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
backend t
    stick-table {DEFINITION}
""")
    proc = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if os.path.exists(sock_path):
                break
            time.sleep(0.05)
        time.sleep(0.3)
        before = rss_kib(proc.pid)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(sock_path)
            s.sendall(b"prompt\n")
            s.recv(65536)
            batch = []
            done = 0
            for key in keys(n):
                batch.append(f"set table t key {key} data.http_req_rate 1\n")
                if len(batch) == 2000:
                    done += _send_batch(s, batch)
                    batch = []
            if batch:
                done += _send_batch(s, batch)
        time.sleep(0.5)
        after = rss_kib(proc.pid)
        return (after - before) * 1024 / n
    finally:
        proc.terminate()
        proc.wait(5)


def _send_batch(s: socket.socket, batch: list[str]) -> int:
    s.sendall("".join(batch).encode())
    prompts = 0
    while prompts < len(batch):
        data = s.recv(1 << 20)
        if not data:
            raise RuntimeError("haproxy closed the CLI session")
        prompts += data.count(b"> ")
    return len(batch)


def lbcore_bytes_per_entry(n: int) -> float:
    from lbcore import config
    from lbcore.stick import StickTable, parse_store

    store = dict([parse_store("http_req_rate(10s)", config.parse_duration)])
    table = StickTable("t", "ip", 1 << 20, expire_ms=30 * 60_000, store=store)
    generated = list(keys(n))  # the key strings exist before: a table holds a reference
    gc.collect()
    before = rss_kib(os.getpid())
    now = table.clock()
    for key in generated:
        entry = table.get(key, now)
        table.http_request(entry, now)
    gc.collect()
    after = rss_kib(os.getpid())
    assert len(table) == n
    # The key strings were allocated by the generator above and are shared
    # with the table; count them in, as a running lbcore keeps them only there.
    key_bytes = sum(sys.getsizeof(k) for k in generated[:1000]) / 1000
    return (after - before) * 1024 / n + key_bytes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--results", default=None, help="append the table to this file")
    args = parser.parse_args(argv)
    hap = haproxy_bytes_per_entry(args.entries)
    lb = lbcore_bytes_per_entry(args.entries)
    table = (f"| stick table ({DEFINITION}), {args.entries:,} entries | bytes per entry | ratio |\n"
             f"|---|---|---|\n"
             f"| haproxy 2.6 | {hap:,.0f} | 1.00x |\n"
             f"| lbcore | {lb:,.0f} | {lb / hap:.2f}x |\n")
    print(table)
    if args.results:
        with open(args.results, "a") as f:
            f.write("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
