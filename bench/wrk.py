"""Running wrk and reading what it printed.

The human-readable report (`--latency`) is parsed for every figure. A small
Lua `done()` hook adds one exact machine-readable line (integer counts,
microsecond percentiles) that, when present, replaces the rounded figures
of the text report; wrk without Lua support still yields a full result.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Only `done` is defined: a `response` hook would make wrk run Lua per
# response and slow the client down more than the proxies under test.
LUA_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "LBBENCH requests=%.0f bytes=%.0f duration_us=%.0f connect=%.0f read=%.0f " ..
    "write=%.0f timeout=%.0f status=%.0f p50_us=%.0f p99_us=%.0f max_us=%.0f\\n",
    summary.requests, summary.bytes, summary.duration, e.connect, e.read,
    e.write, e.timeout, e.status, latency:percentile(50), latency:percentile(99),
    latency.max))
end
"""

_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# wrk prints sizes in powers of 1024 whatever the unit says.
_SIZE_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
_SI = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9}


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    bytes_read: int
    rps: float
    bytes_per_s: float
    p50_s: float
    p99_s: float
    non_2xx: int          # wrk counts status >= 400 here ("Non-2xx or 3xx")
    socket_errors: int    # connect + read + write + timeout

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


class WrkParseError(ValueError):
    pass


def _time(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS[unit]


def _size(value: str, unit: str) -> float:
    return float(value) * _SIZE_UNITS[unit]


def parse(output: str) -> WrkResult:
    """Turn wrk's stdout into a WrkResult; raise WrkParseError if it is not one."""
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h), ([\d.]+)(B|KB|MB|GB|TB) read", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    tps = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB|TB)", output)
    if not (m and rps and tps):
        raise WrkParseError(f"not a wrk report: {output.strip()[-300:]!r}")
    percentiles = {
        int(p): _time(v, u)
        for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.M)
    }
    if 50 not in percentiles or 99 not in percentiles:
        raise WrkParseError("no latency distribution: was wrk run with --latency?")
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result = WrkResult(
        requests=int(m.group(1)),
        duration_s=_time(m.group(2), m.group(3)),
        bytes_read=int(_size(m.group(4), m.group(5))),
        rps=float(rps.group(1)),
        bytes_per_s=_size(tps.group(1), tps.group(2)),
        p50_s=percentiles[50],
        p99_s=percentiles[99],
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
    )
    exact = re.search(r"^LBBENCH (.*)$", output, re.M)
    if exact:
        _apply_exact(result, dict(kv.split("=", 1) for kv in exact.group(1).split()))
    return result


def _apply_exact(result: WrkResult, f: dict[str, str]) -> None:
    duration = int(f["duration_us"]) / 1e6
    result.requests = int(f["requests"])
    result.bytes_read = int(f["bytes"])
    if duration > 0:
        result.duration_s = duration
        result.rps = result.requests / duration
        result.bytes_per_s = result.bytes_read / duration
    result.p50_s = int(f["p50_us"]) / 1e6
    result.p99_s = int(f["p99_us"]) / 1e6
    result.non_2xx = int(f["status"])
    result.socket_errors = sum(int(f[k]) for k in ("connect", "read", "write", "timeout"))


def command(url: str, connections: int, duration: float, script: Path | None,
            threads: int = 1, timeout: float = 5.0) -> list[str]:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
            f"--timeout={max(1, round(timeout))}s", "--latency"]
    if script is not None:
        argv += ["-s", str(script)]
    return argv + [url]


def run(url: str, connections: int, duration: float, script: Path | None,
        threads: int = 1) -> tuple[WrkResult, str]:
    argv = command(url, connections, duration, script, threads)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise WrkParseError(f"wrk exited {proc.returncode}: {output.strip()[-300:]}")
    return parse(output), output
