"""Start-up timeline of one lbcore start, phase by phase, median of N runs.

usage: python bench/startup_timeline.py REPO N -c lb.yaml
       python bench/startup_timeline.py REPO N -f haproxy.cfg -db   (-W too)
(bench/scale.py's pairs_lbcore / pairs_haproxy write such files.)
Runs `lbcore.cli.main(args)` from REPO in fresh interpreters and prints, for
each phase, the median wall and CPU ms (CPU counts from the interpreter's start).
The process exits as soon as it serves (on_started), so nothing else runs.
"""
import os, statistics, subprocess, sys

CHILD = r'''
import sys, os, time
T = [("interpreter", time.perf_counter(), time.process_time())]
def mark(name): T.append((name, time.perf_counter(), time.process_time()))
from lbcore import cli
mark("import cli")
if "-f" in sys.argv[1:]:
    import lbcore.haproxy_cfg as mod
else:
    import lbcore.config as mod
mark("import config modules")
orig_load = mod.load
def load(*a, **k):
    mark("before load"); r = orig_load(*a, **k); mark("load"); return r
mod.load = load
import lbcore.bind_first as bf
ob = bf.bind_frontends
def bind(*a, **k):
    mark("before bind"); r = ob(*a, **k); mark("bind"); return r
bf.bind_frontends = bind
orig = cli.run_single
def run_single(config, reuse_port=False, started=None):
    def done():
        mark("serving")
        t0 = T[0][1]
        for n, t, c in T:
            sys.__stderr__.write(f"@@ {n}\t{1000*(t-t0):.2f}\t{1000*c:.2f}\n")
        sys.__stderr__.flush()
        os._exit(0)
    return orig(config, reuse_port, (started or []) + [done])
cli.run_single = run_single
sys.exit(cli.main(sys.argv[1:]))
'''

def main():
    repo, n, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    env = dict(os.environ, PYTHONPATH=repo)
    runs = []
    for _ in range(n):
        out = subprocess.run([sys.executable, "-c", CHILD] + args, env=env, cwd=repo,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        rows = [l[3:].split("\t") for l in out.stderr.splitlines() if l.startswith("@@ ")]
        if not rows:
            sys.exit(out.stderr[-3000:])
        runs.append(rows)
    names = [r[0] for r in runs[0]]
    prev_w = prev_c = 0.0
    for i, name in enumerate(names):
        w = statistics.median(float(r[i][1]) for r in runs)
        c = statistics.median(float(r[i][2]) for r in runs)
        print(f"{name:24} wall {w:7.1f} ms (+{w - prev_w:6.1f})   cpu {c:7.1f} ms (+{c - prev_c:6.1f})")
        prev_w, prev_c = w, c

main()
