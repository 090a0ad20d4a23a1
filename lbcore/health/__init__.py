"""Health checking: a sans-I/O rise/fall machine (state), probe coroutines
(probes) and the per-server probe loops plus the passive hook (checker).

The names below are imported where first used (PEP 562): the poller
(which the parking of idle connections shares, lbcore/proxy/parking.py)
does not bring the checker and the probes with it, and a start imports
those once it serves (lbcore.server: ~3 ms of the start before).
"""

from importlib import import_module

_WHERE = {
    "HealthChecker": "checker",
    "build_request": "probes", "http_probe": "probes", "mysql_probe": "probes", "probe_server": "probes",
    "tcp_probe": "probes",
    "ProbeResult": "state", "RiseFall": "state", "Verdict": "state", "apply_result": "state",
}

__all__ = [
    "HealthChecker", "ProbeResult", "RiseFall", "Verdict", "apply_result",
    "build_request", "http_probe", "mysql_probe", "probe_server", "tcp_probe",
]


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
