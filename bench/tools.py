"""Install what the bench runs, and record which versions it ran."""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import sys
from pathlib import Path

from bench.procs import which
from bench.targets import REPO_ROOT

# executable -> Debian package
APT_TOOLS = {"haproxy": "haproxy", "nginx": "nginx", "wrk": "wrk"}


def ensure_installed(log=print) -> None:
    missing = sorted({pkg for exe, pkg in APT_TOOLS.items() if which(exe) is None})
    if missing:
        log(f"installing {', '.join(missing)} with apt-get")
        if _apt_install(missing) != 0:
            log("apt-get install failed; running apt-get update and trying again")
            subprocess.run(["apt-get", "update"], check=False)
            if _apt_install(missing) != 0:
                raise RuntimeError(f"could not install {', '.join(missing)} with apt-get")
    if importlib.util.find_spec("matplotlib") is None:
        log("installing matplotlib with pip")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=True)
        importlib.invalidate_caches()


def _apt_install(packages: list[str]) -> int:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        return subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *packages],
                              env=env, check=False).returncode
    except FileNotFoundError:
        return 127


def _first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (proc.stdout + proc.stderr).strip()
    return text.splitlines()[0] if text else "?"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _lbcore_build() -> str:
    """What runs compiled (the second line of `lbcore --version`)."""
    try:
        out = subprocess.run([sys.executable, "-m", "lbcore.cli", "--version"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = out.splitlines()
    return lines[1] if len(lines) > 1 else "?"


def environment() -> list[str]:
    """Markdown bullet lines naming what this run measured on."""
    commit = _git("rev-parse", "--short", "HEAD") or "?"
    dirty = _git("status", "--porcelain", "--", "lbcore", "lbcore_ext")
    return [
        f"- lbcore: commit {commit}{' (lbcore/ or lbcore_ext/ modified)' if dirty else ''}, "
        f"LBCORE_NO_EXT={os.environ.get('LBCORE_NO_EXT', 'unset')}",
        f"- lbcore build: {_lbcore_build()}",
        f"- {_first_line([which('haproxy') or 'haproxy', '-v'])}",
        f"- {_first_line([which('nginx') or 'nginx', '-v'])}",
        f"- {_first_line(['wrk', '--version'])}",
        f"- Python {platform.python_version()}, {os.cpu_count()} CPUs: {_cpu_model()}, "
        f"kernel {platform.release()}",
    ]
