"""Network namespaces for HA drills: a LAN (a bridge in a namespace of its
own, so the host's interfaces are never touched), hosts on it (one
namespace each, eth0 on the bridge through a veth pair), and processes
run inside them. Everything made here is named with a per-run prefix and
removed by close(), which also ends every process started through it.

Needs root and iproute2; `skip_reason()` says why a drill cannot run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from typing import Optional


def skip_reason(*tools: str) -> Optional[str]:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", *tools):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def drill_skip_reason(*tools: str) -> Optional[str]:
    """skip_reason() for a drill run as a test. test.sh runs the suite
    twice; a drill tests a deployment, not the build, and costs tens of
    seconds: it runs in the compiled pass only."""
    if os.environ.get("LBCORE_NO_EXT") == "1":
        return "HA drills run in the compiled pass of the suite only"
    return skip_reason(*tools)


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=20)


class Lan:
    """One broadcast domain: `add_host(name, "192.0.2.11/24")`."""

    def __init__(self, tag: str = "lan") -> None:
        self.prefix = f"lbt{os.getpid()}{tag}"
        self.bridge_ns = f"{self.prefix}-br"
        self.hosts: dict[str, str] = {}  # name -> namespace
        self.procs: list[subprocess.Popen] = []
        run("ip", "netns", "add", self.bridge_ns)
        run("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")

    def add_host(self, name: str, *addresses: str) -> str:
        ns = f"{self.prefix}-{name}"
        run("ip", "netns", "add", ns)
        port = f"p{len(self.hosts)}"
        # Made inside the bridge's namespace, its peer moved straight into
        # the host's: no interface ever appears in the caller's namespace.
        run("ip", "-n", self.bridge_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        run("ip", "-n", self.bridge_ns, "link", "set", port, "master", "br0", "up")
        run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        for address in addresses:
            run("ip", "-n", ns, "addr", "add", address, "dev", "eth0")
        self.hosts[name] = ns
        return ns

    def add_link(self, a: str, a_address: str, b: str, b_address: str) -> None:
        """A point-to-point link (veth pair) between hosts `a` and `b`,
        each end named after the host at the other end."""
        run("ip", "-n", self.hosts[a], "link", "add", f"to-{b}"[:15], "type", "veth",
            "peer", "name", f"to-{a}"[:15], "netns", self.hosts[b])
        for host, peer, address in ((a, b, a_address), (b, a, b_address)):
            dev = f"to-{peer}"[:15]
            run("ip", "-n", self.hosts[host], "addr", "add", address, "dev", dev)
            run("ip", "-n", self.hosts[host], "link", "set", dev, "up")

    def ip(self, host: str, *args: str) -> str:
        return subprocess.run(["ip", "-n", self.hosts[host], *args], check=True, capture_output=True,
                              text=True, timeout=20).stdout

    def sysctl(self, host: str, setting: str) -> None:
        run("ip", "netns", "exec", self.hosts[host], "sysctl", "-qw", setting)

    def popen(self, host: str, args: list[str], **kwargs) -> subprocess.Popen:
        """`args` run inside `host` (`ip netns exec` execs, so the pid is the program's)."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.hosts[host], *args], **kwargs)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for ns in [*self.hosts.values(), self.bridge_ns]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)

    def __enter__(self) -> "Lan":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
