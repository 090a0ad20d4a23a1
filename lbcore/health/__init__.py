"""Health checking: a sans-I/O rise/fall machine (state), probe coroutines
(probes) and the per-server probe loops plus the passive hook (checker)."""

from .checker import HealthChecker
from .probes import build_request, http_probe, mysql_probe, probe_server, tcp_probe
from .state import ProbeResult, RiseFall, Verdict, apply_result

__all__ = [
    "HealthChecker", "ProbeResult", "RiseFall", "Verdict", "apply_result",
    "build_request", "http_probe", "mysql_probe", "probe_server", "tcp_probe",
]
