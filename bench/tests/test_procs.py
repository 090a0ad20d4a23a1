"""/proc accounting and cleanup, with real child processes."""

import sys
import time

from bench.procs import ProcessSet, tree_cpu_seconds, tree_fd_count, tree_rss_bytes

# A parent that starts a CPU-burning child, reaps it, then sleeps: the
# child's time must stay in the tree's total after the child is gone.
PARENT = """
import subprocess, sys, time
subprocess.run([sys.executable, "-c",
    "import time\\nend = time.process_time() + 0.4\\nwhile time.process_time() < end: pass"])
print("child done", flush=True)
time.sleep(30)
"""


def test_cpu_of_reaped_grandchild_is_counted(tmp_path):
    procs = ProcessSet(tmp_path)
    try:
        child = procs.start("parent", [sys.executable, "-c", PARENT])
        before = tree_cpu_seconds(child.pid)
        deadline = time.monotonic() + 20
        while "child done" not in child.log_tail() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "child done" in child.log_tail()
        assert tree_cpu_seconds(child.pid) - before >= 0.3
        assert tree_rss_bytes(child.pid) > 1 << 20
        assert tree_fd_count(child.pid) >= 3
    finally:
        procs.stop_all()
    assert not child.alive()
    assert procs.children == []


def test_stop_all_ends_the_whole_process_group(tmp_path):
    procs = ProcessSet(tmp_path)
    grandchild_pid_file = tmp_path / "pid"
    script = (f"import subprocess, sys, time\n"
              f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              f"open({str(grandchild_pid_file)!r}, 'w').write(str(p.pid))\n"
              f"time.sleep(60)\n")
    child = procs.start("tree", [sys.executable, "-c", script])
    deadline = time.monotonic() + 10
    while not grandchild_pid_file.exists() or not grandchild_pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    grandchild = int(grandchild_pid_file.read_text())
    procs.stop_all()
    assert not child.alive()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            stat = open(f"/proc/{grandchild}/stat").read()
        except FileNotFoundError:
            break
        if stat[stat.rindex(")") + 2] == "Z":  # a zombie waiting for init is gone too
            break
        time.sleep(0.05)
    else:
        raise AssertionError("grandchild survived stop_all()")
