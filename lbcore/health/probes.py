"""Probe coroutines: one connection, one verdict, bounded by a timeout.

A probe never raises for anything the server does: refusals, resets,
garbage and silence all become a failed `ProbeResult` with HAProxy's check
status name, so the loop that runs it only ever records results. The whole
probe (connect, send, status line) shares one deadline, `health.timeout`;
when it expires before the connection is up the result is L4TOUT, after
it L7TOUT.
"""

from __future__ import annotations

import asyncio
import errno
import re
import socket
from typing import Optional

from ..config import HealthSpec
from ..listeners import FD_EXHAUSTED
from .state import ProbeResult

USER_AGENT = "lbcore-health"
STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-9][0-9]{2})(?:[ \r\n]|$)")
# Connect errors that mean "the server (or the way to it) said no": L4CON.
# Anything else (a bad address, no buffers, ...) is ours: SOCKERR.
L4CON_ERRNOS = {
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED,
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN,
}


def build_request(method: str, path: str, host: str, headers: tuple = ()) -> bytes:
    """The probe request. Values reach here from the config; a control
    character in them would let a config smuggle a second request.
    `headers` ((name, value), ...) are sent too; a User-Agent among them
    replaces lbcore's (HAProxy's `http-check send hdr`)."""
    for name, value in (("method", method), ("path", path), ("host", host)):
        if not value or any(c <= " " or c == "\x7f" for c in value):
            raise ValueError(f"health.{name} {value!r} is empty or holds a space or control character")
    extra = ""
    for name, value in headers:
        if not name or any(c <= " " or c in ":\x7f" for c in name) or any(c in "\r\n\0" for c in value):
            raise ValueError(f"health.headers {name!r}: invalid header")
        extra += f"{name}: {value}\r\n"
    names = {name.lower() for name, _ in headers}
    agent = "" if "user-agent" in names else f"User-Agent: {USER_AGENT}\r\n"
    return (f"{method} {path} HTTP/1.1\r\n"
            f"Host: {host}\r\n"
            f"Connection: close\r\n"
            f"{agent}"
            f"Accept: */*\r\n{extra}\r\n").encode("latin-1")


def parse_status_line(line: bytes) -> Optional[int]:
    """The status code of an HTTP/1.x status line, None if it is not one."""
    match = STATUS_LINE.match(line)
    return int(match.group(1)) if match else None


def _connect_failure(exc: OSError, elapsed_ms: float) -> Optional[ProbeResult]:
    if exc.errno in FD_EXHAUSTED:
        return None  # lbcore is out of descriptors: nothing was learnt about the server
    if isinstance(exc, socket.gaierror):
        return ProbeResult(False, "SOCKERR", None, elapsed_ms, f"cannot resolve: {exc.strerror or exc}")
    if exc.errno in L4CON_ERRNOS or isinstance(exc, ConnectionError):
        return ProbeResult(False, "L4CON", None, elapsed_ms, exc.strerror or str(exc))
    return ProbeResult(False, "SOCKERR", None, elapsed_ms, exc.strerror or str(exc) or type(exc).__name__)


async def tcp_probe(host: str, port: int, timeout: float) -> Optional[ProbeResult]:
    """Connect, then close: L4OK, L4CON, L4TOUT or SOCKERR; None if lbcore
    had no descriptor to try with."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    writer = None
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return ProbeResult(False, "L4TOUT", None, _ms(loop, start), "connect timeout")
    except OSError as exc:
        return _connect_failure(exc, _ms(loop, start))
    finally:
        if writer is not None:
            writer.close()
    return ProbeResult(True, "L4OK", None, _ms(loop, start))


async def http_probe(host: str, port: int, timeout: float, request: bytes,
                     expect_status: frozenset[int]) -> Optional[ProbeResult]:
    """Send `request`, read the status line: L7OK / L7STS with the code,
    or L4CON, L4TOUT, L7TOUT, L7RSP, SOCKERR."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    connected = False
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            connected = True
            writer.write(request)
            line = await reader.readline()
    except TimeoutError:
        if connected:
            return ProbeResult(False, "L7TOUT", None, _ms(loop, start), "no status line in time")
        return ProbeResult(False, "L4TOUT", None, _ms(loop, start), "connect timeout")
    except ValueError:  # the stream's line limit: no line end in 64 KiB
        return ProbeResult(False, "L7RSP", None, _ms(loop, start), "status line too long")
    except OSError as exc:
        if not connected:
            return _connect_failure(exc, _ms(loop, start))
        # I/O error after the connection was established: HAProxy's SOCKERR.
        return ProbeResult(False, "SOCKERR", None, _ms(loop, start), exc.strerror or str(exc) or type(exc).__name__)
    finally:
        if writer is not None:
            writer.close()
    elapsed = _ms(loop, start)
    if not line:
        return ProbeResult(False, "L7RSP", None, elapsed, "empty response")
    code = parse_status_line(line)
    if code is None:
        return ProbeResult(False, "L7RSP", None, elapsed, "invalid status line")
    if code in expect_status:
        return ProbeResult(True, "L7OK", code, elapsed)
    return ProbeResult(False, "L7STS", code, elapsed)


async def probe_server(server, health: HealthSpec) -> Optional[ProbeResult]:
    """Run the probe `health` asks for against `server`; None for type none,
    or when lbcore is out of descriptors (the check is skipped, not failed)."""
    port = health.port or server.port
    if health.type == "tcp":
        return await tcp_probe(server.host, port, health.timeout)
    if health.type == "http":
        try:
            request = build_request(health.method, health.path, health.host or str(server.address),
                                    health.headers)
        except ValueError as exc:
            return ProbeResult(False, "SOCKERR", None, 0.0, str(exc))
        return await http_probe(server.host, port, health.timeout, request, health.expect_status)
    return None


def _ms(loop: asyncio.AbstractEventLoop, start: float) -> float:
    return round((loop.time() - start) * 1000.0, 3)
