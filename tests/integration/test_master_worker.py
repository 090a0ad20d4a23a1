"""`lbcore -W -db -f haproxy.cfg` reloaded with SIGUSR2, as kolla-ansible
does: the new worker takes the listeners over from the old one, which
finishes its work. Under keep-alive clients and a new-connection loop, no
connection is refused or dropped and no request fails, reload after
reload. (How long a request may wait during a reload is measured in
bench/scale.py, not asserted here.)"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys

import pytest

from tests.support import ROOT, Load, free_port, wait_port, wait_until

FRONTENDS = 20  # several listeners, so that the handover carries many descriptors and rows


def children(pid: int) -> list[int]:
    """Live children of `pid` (not the zombie of an old worker not reaped yet)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    alive = []
    for child in out.stdout.split():
        try:
            with open(f"/proc/{child}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(int(child))
        except OSError:
            pass
    return alive


def sole_worker(master: int, old: int):
    """The master's only worker once it is not `old` (the old one has exited)."""
    workers = children(master)
    return workers[0] if len(workers) == 1 and workers[0] != old else None


def first_worker(master: int) -> int:
    """The master's worker: the master's ports may accept before it is forked."""
    return wait_until(lambda: sole_worker(master, None), 30, "the first worker")


def haproxy_cfg(ports: list[int], servers: list[str]) -> str:
    out = ["global\n    maxconn 2000\ndefaults\n    mode http\n    timeout connect 2s\n"
           "    timeout client 30s\n    timeout server 30s\n"]
    for i, port in enumerate(ports):
        out.append(f"frontend fe{i}\n    bind 127.0.0.1:{port}\n    default_backend be{i}\n"
                   f"backend be{i}\n    balance roundrobin\n")
        out += [f"    server s{n} {address} check inter 500ms\n" for n, address in enumerate(servers)]
    return "".join(out)


def test_sigusr2_reloads_lose_no_connection_and_no_request(start_backend, tmp_path):
    servers = [start_backend("s1").address, start_backend("s2").address]
    ports = [free_port() for _ in range(FRONTENDS)]
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_cfg(ports, servers))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(tmp_path / "lbcore.log", "wb") as log:
        master = subprocess.Popen([sys.executable, "-m", "lbcore.cli", "-W", "-db", "-f", str(cfg)],
                                  stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path))
    try:
        for port in ports:
            wait_port(port, proc=master, timeout=30)
        worker = first_worker(master.pid)
        with Load(ports[0], clients=3) as keep_alive, Load(ports[-1], clients=1, fresh=True) as fresh:
            wait_until(lambda: keep_alive.ok > 30 and fresh.ok > 10, 20, "traffic through the first worker")
            for reload in range(3):
                # Each reload changes the file a little, as a deployment does.
                cfg.write_text(cfg.read_text() + f"# reload {reload}\n")
                master.send_signal(signal.SIGUSR2)
                worker = wait_until(lambda old=worker: sole_worker(master.pid, old), 30,
                                    f"reload {reload}: the new worker serving alone")
                served = keep_alive.ok + fresh.ok
                wait_until(lambda: keep_alive.ok + fresh.ok > served + 30, 20,
                           f"reload {reload}: traffic through the new worker")
            assert master.poll() is None
            assert "reload refused" not in (tmp_path / "lbcore.log").read_text()
            # A file the new worker cannot read: it says why, the running one goes on.
            cfg.write_text(cfg.read_text() + "frontend broken\n    frobnicate\n")
            master.send_signal(signal.SIGUSR2)
            wait_until(lambda: "reload refused" in (tmp_path / "lbcore.log").read_text(), 30, "the refusal")
            served = keep_alive.ok + fresh.ok
            wait_until(lambda: keep_alive.ok + fresh.ok > served + 30, 20, "traffic after the refusal")
            assert children(master.pid) == [worker]
        assert not keep_alive.failures, keep_alive.failures[:5]
        assert not fresh.failures, fresh.failures[:5]
        text = (tmp_path / "lbcore.log").read_text()
        assert text.count("handed") == 3 and "frobnicate" in text, text[-2000:]
        # The master became the small supervisor: it holds no config to grow by.
        with open(f"/proc/{master.pid}/cmdline", "rb") as f:
            assert b"lbcore.master_worker" in f.read()
    finally:
        master.send_signal(signal.SIGTERM)
        try:
            master.wait(20)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()
    assert master.returncode == 0


@pytest.mark.skipif(sys.version_info < (3, 11), reason="python -P is 3.11's")
def test_a_reload_imports_this_lbcore_not_one_in_the_working_directory(start_backend, tmp_path):
    """A reload starts a new interpreter with `-m lbcore`: an `lbcore`
    directory where the master runs (a checkout of another version) must not
    be what it imports."""
    shadow = tmp_path / "lbcore"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise SystemExit('the lbcore of the working directory')\n")
    servers = [start_backend("s1").address]
    ports = [free_port()]
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_cfg(ports, servers))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # -P as an installed `lbcore` script has it: its directory, not the working one, is on sys.path.
    with open(tmp_path / "lbcore.log", "wb") as log:
        master = subprocess.Popen([sys.executable, "-P", "-m", "lbcore.cli", "-W", "-db", "-f", str(cfg)],
                                  stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path))
    try:
        wait_port(ports[0], proc=master, timeout=30)
        worker = first_worker(master.pid)
        master.send_signal(signal.SIGUSR2)
        wait_until(lambda: sole_worker(master.pid, worker), 30, "the new worker serving alone")
        text = (tmp_path / "lbcore.log").read_text()
        assert "working directory" not in text and "reload refused" not in text, text[-2000:]
        assert master.poll() is None
    finally:
        master.send_signal(signal.SIGTERM)
        try:
            master.wait(20)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()
    assert master.returncode == 0


def test_a_sigterm_as_the_first_worker_starts_serving_stops_both(start_backend, tmp_path):
    """The master becomes the small supervisor a moment after its first
    worker serves (master_worker.SUPERVISE_AFTER): a signal that comes
    meanwhile waits for it, and is not lost."""
    servers = [start_backend("s1").address]
    ports = [free_port()]
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_cfg(ports, servers))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(tmp_path / "lbcore.log", "wb") as log:
        master = subprocess.Popen([sys.executable, "-m", "lbcore.cli", "-W", "-db", "-f", str(cfg)],
                                  stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path))
    try:
        wait_until(lambda: "lbcore started" in (tmp_path / "lbcore.log").read_text(), 30, "the first worker")
        worker = first_worker(master.pid)
        master.send_signal(signal.SIGTERM)  # most likely before the supervisor took over
        assert master.wait(20) == 0
        wait_until(lambda: not os.path.exists(f"/proc/{worker}") or open(f"/proc/{worker}/stat").read()
                   .rsplit(")", 1)[1].split()[0] == "Z", 10, "the worker's end")
    finally:
        if master.poll() is None:
            master.kill()
            master.wait()


@pytest.mark.parametrize("flag", ["-db", "-Ws"])
def test_a_foreground_master_writes_the_pidfile_its_first_worker_read(flag, start_backend, tmp_path):
    """-W -db and -Ws: the first worker is forked before the files are read
    and reads them itself; it names their `pidfile` to the master, which
    writes its own pid there (as HAProxy's master) and removes it at its end."""
    servers = [start_backend("s1").address]
    port = free_port()
    pidfile = tmp_path / "lb.pid"
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_cfg([port], servers).replace("global\n", f"global\n    pidfile {pidfile}\n", 1))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("NOTIFY_SOCKET", None)
    with open(tmp_path / "lbcore.log", "wb") as log:
        master = subprocess.Popen([sys.executable, "-m", "lbcore.cli", "-W", flag, "-f", str(cfg)],
                                  stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path))
    try:
        wait_port(port, proc=master)
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 20, "the pidfile")
        assert int(pidfile.read_text()) == master.pid
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        conn.close()
        master.send_signal(signal.SIGTERM)
        assert master.wait(20) == 0
        assert not pidfile.exists()
    finally:
        if master.poll() is None:
            master.kill()
            master.wait()


def test_a_foreground_master_exits_with_the_problems_its_first_worker_found(tmp_path):
    """A file with a problem: the first worker, which reads it, says so on
    stderr (once: the master reads nothing) and the master exits 1, as
    haproxy -W does, with no pidfile written and nothing left running."""
    pidfile = tmp_path / "lb.pid"
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_cfg([free_port()], ["127.0.0.1:9"])
                   .replace("default_backend be0", "default_backend nowhere")
                   .replace("global\n", f"global\n    pidfile {pidfile}\n", 1))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "lbcore.cli", "-W", "-db", "-f", str(cfg)],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=30)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("backend 'nowhere' is not defined") == 1, done.stderr
    assert not pidfile.exists()
