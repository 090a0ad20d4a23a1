"""Probes: one connection, one verdict, bounded by a timeout.

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
import functools
import ipaddress
import os
import re
import socket
import ssl
from typing import Callable, Optional

from lbcore_ext import probesock

from ..config import HealthSpec
from ..listeners import FD_EXHAUSTED
from ..proxy import proxy_protocol
from ..server_tls import check_name
from .poller import ERR, IN, OUT, ProbePoller
from .state import ProbeResult

USER_AGENT = "lbcore-health"
MAX_STATUS_LINE = 65536  # bytes without a line end before the answer is L7RSP
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


# MySQL client/server protocol (HAProxy's `option mysql-check`). Every
# packet is a 3-byte little-endian length, a sequence number, a payload.
MYSQL_ERR = 0xFF  # the first payload byte of an error packet
MYSQL_MAX_PACKET = 1 << 16  # a greeting or an answer larger than this is not MySQL's
MYSQL_QUIT = b"\x01\x00\x00\x00\x01"  # COM_QUIT, sequence 0


def mysql_login(user: str, client: str = "post-41") -> bytes:
    """The client authentication packet HAProxy's mysql-check sends: the
    user, no password, no database. post-41: capabilities PROTOCOL_41 |
    SECURE_CONNECTION, max packet 16 MiB, charset utf8 (0x21); pre-41 the
    old short form. Sequence number 1: it answers the greeting (0)."""
    name = user.encode() + b"\0"
    if client == "pre-41":
        payload = b"\x00\x80" + b"\x00\x00\x01" + name + b"\0"
    else:
        payload = b"\x00\x82\x00\x00" + b"\x00\x80\x00\x01" + b"\x21" + bytes(23) + name + b"\0"
    return len(payload).to_bytes(3, "little") + b"\x01" + payload


def mysql_packet(buf: bytes) -> Optional[tuple[bytes, bytes]]:
    """(payload, rest) of the first whole packet in `buf`, None if incomplete."""
    if len(buf) < 4:
        return None
    length = int.from_bytes(buf[:3], "little")
    if len(buf) < 4 + length:
        return None
    return buf[4:4 + length], buf[4 + length:]


class Probe:
    """One probe in flight, on a raw non-blocking socket in a ProbePoller's
    epoll set: connect, then for http one write and one read of the status
    line. With `tls` (a ServerTLS: the server's check-ssl), a TLS
    handshake comes first, driven through memory BIOs on the same socket:
    a tcp probe then passes as L6OK, and a failed handshake is L6RSP (L6TOUT
    when it runs out of time), as HAProxy's. No task, no stream, no timeout context: whoever starts
    it calls `expire()` when its deadline passes (the checker's timer wheel,
    or a loop timer for a lone probe). `on_done(result)` is called once."""

    __slots__ = ("poller", "loop", "address", "request", "expect", "on_done", "fd",
                 "started", "connected", "unsent", "buf", "finished",
                 "tls", "tls_object", "tls_in", "tls_out", "handshaken", "send_proxy")

    RESET = True  # closed with a reset, as HAProxy closes its checks (see probesock)
    DELAY_ACK = True  # the client speaks first (or never): see probesock

    def __init__(self, poller: ProbePoller, address, request: Optional[bytes],
                 expect: frozenset, on_done: Callable[[ProbeResult], None], tls=None,
                 send_proxy: Optional[str] = None) -> None:
        self.poller = poller
        self.loop = loop = poller.loop
        self.address = address  # probesock.address(host, port)
        self.request = request  # None: a tcp probe, done once connected
        self.expect = expect
        self.on_done = on_done
        self.fd = -1
        self.started = loop.time()
        self.connected = False
        self.unsent = b""
        self.buf = b""
        self.finished = False
        self.tls = tls
        self.tls_object = None
        self.tls_in = self.tls_out = None
        self.handshaken = False
        self.send_proxy = send_proxy  # "v1" | "v2": a PROXY header first, as the server's traffic gets

    def start(self) -> None:
        try:
            self.fd = probesock.connect(self.address, self.RESET, self.DELAY_ACK)
        except OSError as exc:
            self._finish(_connect_failure(exc, self._ms()))
            return
        self.poller.watch(self, self.fd, OUT)  # writable: connected, or failed

    def expire(self) -> None:
        """The deadline passed: L4TOUT before the connection was up, L7TOUT after."""
        if self.finished:
            return
        if self.tls is not None and self.connected and not self.handshaken:
            self._finish(ProbeResult(False, "L6TOUT", None, self._ms(), "TLS handshake timeout"))
        elif self.connected:
            self._finish(ProbeResult(False, "L7TOUT", None, self._ms(), "no status line in time"))
        else:
            self._finish(ProbeResult(False, "L4TOUT", None, self._ms(), "connect timeout"))

    def abort(self) -> None:
        """Stop without a verdict (the server left the config, or checks stop)."""
        if not self.finished:
            self.finished = True
            self._close()

    def ready(self, events: int) -> None:
        """The poller's call: the socket is ready for what the probe waits
        for (the connect's end, room to send, an answer), or in error."""
        if not self.connected:
            # Writable without an error is a connection made, as HAProxy
            # reads it: the error is asked for only when there is one.
            if events & ERR:
                err = probesock.error(self.fd)
                if err:
                    self._finish(_connect_failure(OSError(err, os.strerror(err)), self._ms()))
                    return
            self._established()
        elif self.unsent:
            self._send()
        elif self.tls_object is not None:
            self._on_tls_readable()
        else:
            self._on_readable()

    def _established(self) -> None:
        """The TCP connection is up: the PROXY header (before any TLS, as
        HAProxy's checks send it, built from the probe's own addresses),
        then the probe itself."""
        if self.send_proxy is not None:
            try:
                header = proxy_protocol.header(self.send_proxy, *probesock.endpoints(self.fd))
                # A few bytes into a fresh socket's empty buffer: never partial.
                os.write(self.fd, header)
            except OSError as exc:
                self._io_error(exc)
                return
        self._connected()

    def _connected(self) -> None:
        self.connected = True
        if self.tls is not None:
            self._start_tls()
            return
        if self.request is None:
            self._finish(ProbeResult(True, "L4OK", None, self._ms()))
            return
        self.unsent = self.request
        self._send()

    # -- TLS (check-ssl) ---------------------------------------------------------

    def _start_tls(self) -> None:
        tls = self.tls
        self.tls_in, self.tls_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls_object = tls.check_context.wrap_bio(self.tls_in, self.tls_out,
                                                     server_hostname=tls.check_sni or None)
        self.poller.watch(self, self.fd, IN)
        self._handshake()

    def _handshake(self) -> None:
        try:
            self.tls_object.do_handshake()
        except ssl.SSLWantReadError:
            self._send_tls()
            return
        except ssl.SSLError as exc:
            self._tls_failed(f"TLS handshake failed: {exc.reason or exc}")
            return
        why = check_name(self.tls_object, self.tls.check_verify_name)
        if why is not None:
            self._tls_failed(f"TLS handshake failed: {why}")
            return
        self.handshaken = True
        if self.request is None:
            self._finish(ProbeResult(True, "L6OK", None, self._ms()))
            return
        self.tls_object.write(self.request)
        self._send_tls()

    def _tls_failed(self, why: str) -> None:
        self._finish(ProbeResult(False, "L6RSP", None, self._ms(), why))

    def _send_tls(self) -> None:
        data = self.tls_out.read()
        if self.finished or not data:
            return
        self.unsent += data
        self._send()

    def _on_tls_readable(self) -> None:
        try:
            data = os.read(self.fd, 16384)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if not self.handshaken:
                self._tls_failed(f"TLS handshake failed: {exc.strerror or exc}")
            else:
                self._io_error(exc)
            return
        if not data:
            if not self.handshaken:
                self._tls_failed("connection closed during the TLS handshake")
                return
            self.tls_in.write_eof()
        else:
            self.tls_in.write(data)
        if not self.handshaken:
            self._handshake()
            return
        while not self.finished:
            try:
                chunk = self.tls_object.read(16384)
            except ssl.SSLWantReadError:
                if not data:
                    self._received(b"")  # the connection ended
                return
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                chunk = b""
            except ssl.SSLError as exc:
                self._io_error(exc)
                return
            self._received(chunk)
            if not chunk:
                return

    def _send(self) -> None:
        try:
            sent = os.write(self.fd, self.unsent)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._io_error(exc)
            return
        self.unsent = self.unsent[sent:]
        # A full send buffer (a few hundred bytes rarely meet one): wait for
        # room; else for the answer.
        self.poller.watch(self, self.fd, OUT if self.unsent else IN)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._io_error(exc)
            return
        self._received(data)

    def _received(self, data: bytes) -> None:
        """What the server sent (b"": it closed): the http probe's status line."""
        if data:
            self.buf += data
            end = self.buf.find(b"\n")
            if end >= 0:
                self._status_line(self.buf[:end + 1])
            elif len(self.buf) > MAX_STATUS_LINE:
                self._finish(ProbeResult(False, "L7RSP", None, self._ms(), "status line too long"))
            return
        if not self.buf:
            self._finish(ProbeResult(False, "L7RSP", None, self._ms(), "empty response"))
        else:
            self._status_line(self.buf)  # the connection ended the line

    def _status_line(self, line: bytes) -> None:
        elapsed = self._ms()
        code = parse_status_line(line)
        if code is None:
            result = ProbeResult(False, "L7RSP", None, elapsed, "invalid status line")
        elif code in self.expect:
            result = ProbeResult(True, "L7OK", code, elapsed)
        else:
            result = ProbeResult(False, "L7STS", code, elapsed)
        self._finish(result)

    def _io_error(self, exc: OSError) -> None:
        # An I/O error after the connection was established: HAProxy's SOCKERR.
        self._finish(ProbeResult(False, "SOCKERR", None, self._ms(),
                                 exc.strerror or str(exc) or type(exc).__name__))

    def _finish(self, result: Optional[ProbeResult]) -> None:
        # None: lbcore had no descriptor to probe with (nothing learnt).
        if self.finished:
            return
        self.finished = True
        self._close()
        self.on_done(result)

    def _close(self) -> None:
        fd = self.fd
        if fd < 0:
            return
        self.fd = -1
        self.poller.forget(fd)  # the close takes it out of the epoll set
        probesock.close(fd)

    def _ms(self) -> float:
        # Microseconds rounded, in ms (round(x, 3) costs ten times more).
        return int((self.loop.time() - self.started) * 1e6 + 0.5) / 1000.0


class MysqlProbe(Probe):
    """HAProxy's mysql-check: read the server's greeting (an error packet
    there, such as "host blocked", is L7STS with the MySQL error code); with
    a user, answer it with a login packet for that user without password,
    read the answer (OK: L7OK; an error such as "access denied": L7STS),
    then send COM_QUIT so the server counts a clean session, not an aborted
    one. Without a user the greeting alone decides. `request` is the login
    packet, or None."""

    __slots__ = ("greeted", "version")

    # Closed with a FIN, not a reset (HAProxy's "connect linger" for this
    # check): a reset can overtake the COM_QUIT, and the server would count
    # an aborted client for every probe.
    RESET = False
    DELAY_ACK = False  # the server speaks first: it must see the connection at once

    def __init__(self, poller: ProbePoller, address, request: Optional[bytes],
                 on_done: Callable[[ProbeResult], None], send_proxy: Optional[str] = None) -> None:
        super().__init__(poller, address, request, frozenset(), on_done, send_proxy=send_proxy)
        self.greeted = False
        self.version = ""  # the server's, from its greeting: the L7OK detail

    def expire(self) -> None:
        if not self.finished and self.connected:
            what = "an answer to the login" if self.greeted else "the greeting"
            self._finish(ProbeResult(False, "L7TOUT", None, self._ms(), f"no MySQL {what} in time"))
            return
        super().expire()

    def _connected(self) -> None:
        self.connected = True
        self.poller.watch(self, self.fd, IN)  # the server speaks first

    def _received(self, data: bytes) -> None:
        if not data:
            what = "after the login" if self.greeted else "before its greeting"
            self._finish(ProbeResult(False, "L7RSP", None, self._ms(), f"connection closed {what}"))
            return
        self.buf += data
        if len(self.buf) >= 3 and int.from_bytes(self.buf[:3], "little") > MYSQL_MAX_PACKET:
            self._finish(ProbeResult(False, "L7RSP", None, self._ms(), "not a MySQL packet (too long)"))
            return
        packet = mysql_packet(self.buf)
        if packet is None:
            return
        payload, self.buf = packet
        if payload[:1] == bytes((MYSQL_ERR,)):
            self._finish(self._error(payload))
            return
        if self.greeted or self.request is None:
            if self.greeted:
                self._quit()
            else:
                self.version = self._version(payload)
            self._finish(ProbeResult(True, "L7OK", None, self._ms(), self.version))
            return
        self.greeted = True
        self.version = self._version(payload)
        self.unsent = self.request
        self._send()  # then waits for the answer

    def _error(self, payload: bytes) -> ProbeResult:
        code = int.from_bytes(payload[1:3], "little") if len(payload) >= 3 else None
        message = payload[3:]
        if message[:1] == b"#":  # post-4.1 errors carry "#" and a 5-character SQL state
            message = message[6:]
        return ProbeResult(False, "L7STS", code, self._ms(), message.decode("utf-8", "replace")[:200])

    @staticmethod
    def _version(greeting: bytes) -> str:
        """The server version of a greeting (protocol byte, then a NUL-ended string)."""
        end = greeting.find(b"\0", 1)
        return greeting[1:end if end > 0 else 64].decode("latin-1")[:64]

    def _quit(self) -> None:
        try:
            os.write(self.fd, MYSQL_QUIT)
        except OSError:
            pass  # the verdict is in; the server notices the close either way


MAX_EXPECT_BUFFER = 16384  # HAProxy's check buffer: no match within it fails the expect


def step_bytes(text: str) -> bytes:
    """A step's text as sent or matched: code points below 256 as those
    bytes (the config's \\xHH escapes), anything else as UTF-8."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


class ScriptProbe(Probe):
    """HAProxy's tcp-check rules: once connected (and through TLS with the
    server's check-ssl), send and expect in order on one connection. A send
    forgets what was read before it, as HAProxy's does; an expect waits for
    its string (or regex) in what came since, and fails when the server
    closes first (L7RSP) or the probe's time runs out (L7TOUT). All steps
    done: L7OK. TripleO checks its Redis master so (PING/+PONG, role:master)."""

    __slots__ = ("steps", "step")

    DELAY_ACK = False  # the server may speak first (a banner to expect)

    def __init__(self, poller: ProbePoller, address, steps: tuple, on_done: Callable[[ProbeResult], None],
                 tls=None, send_proxy: Optional[str] = None) -> None:
        self.steps = [(kind, step_bytes(text) if kind != "expect_regex" else re.compile(step_bytes(text)))
                      for kind, text in steps]
        self.step = 0
        super().__init__(poller, address, self._sends(), frozenset(), on_done, tls, send_proxy)

    def _sends(self) -> bytes:
        """The sends from the current step up to the next expect, consumed."""
        out = b""
        while self.step < len(self.steps) and self.steps[self.step][0] == "send":
            out += self.steps[self.step][1]
            self.step += 1
        return out

    def expire(self) -> None:
        if not self.finished and self.connected and (self.tls is None or self.handshaken):
            self._finish(ProbeResult(False, "L7TOUT", None, self._ms(), self._where("no match in time")))
            return
        super().expire()

    def _send(self) -> None:
        super()._send()
        if not self.finished and not self.unsent and self.step >= len(self.steps):
            self._finish(ProbeResult(True, "L7OK", None, self._ms(), "tcp-check"))

    def _received(self, data: bytes) -> None:
        if not data:
            self._finish(ProbeResult(False, "L7RSP", None, self._ms(), self._where("closed before a match")))
            return
        self.buf += data
        while self.step < len(self.steps):
            kind, pattern = self.steps[self.step]
            found = pattern in self.buf if kind == "expect" else pattern.search(self.buf) is not None
            if not found:
                if len(self.buf) > MAX_EXPECT_BUFFER:
                    self._finish(ProbeResult(False, "L7RSP", None, self._ms(), self._where("no match")))
                return
            self.step += 1
            data = self._sends()
            if data:
                self.buf = b""  # a send forgets what was read before it
                if self.tls_object is not None:
                    self.tls_object.write(data)
                    self._send_tls()
                else:
                    self.unsent += data
                    self._send()
                return
        self._finish(ProbeResult(True, "L7OK", None, self._ms(), "tcp-check"))

    def _where(self, what: str) -> str:
        if self.step >= len(self.steps):
            return what
        kind, pattern = self.steps[self.step]
        shown = pattern.pattern if kind == "expect_regex" else pattern
        return f"{what} at step {self.step + 1} ({kind} {shown[:40]!r})"


def new_probe(poller: ProbePoller, server, address, health: HealthSpec, request: Optional[bytes],
              on_done: Callable[[Optional[ProbeResult]], None]) -> Probe:
    """The probe `health` asks for against `server` at `address` (from
    probesock.address); `request` from `probe_request`. As HAProxy's, a
    probe to the server's own port speaks like its traffic: TLS with the
    server's check_tls (not for mysql, whose TLS is negotiated inside its
    protocol), and its PROXY header first."""
    send_proxy = server.send_proxy if health.port is None else None
    if health.type == "mysql":
        return MysqlProbe(poller, address, request, on_done, send_proxy)
    if health.type == "tcp" and health.steps:
        return ScriptProbe(poller, address, health.steps, on_done, server.check_tls, send_proxy)
    return Probe(poller, address, request, health.expect_status, on_done, server.check_tls, send_proxy)


def probe_request(server, health: HealthSpec) -> Optional[bytes]:
    """What the probe of `health` sends to `server`: None for tcp (and a
    mysql check without user); ValueError for a request the config cannot
    make safe."""
    if health.type == "http":
        return build_request(health.method, health.path, health.host or str(server.address),
                             health.headers)
    if health.type == "mysql" and health.user:
        return mysql_login(health.user, health.client)
    return None


@functools.lru_cache(maxsize=4096)  # a check per server at start, the same few hosts over and over
def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _run_probe(host: str, port: int, timeout: float, make) -> Optional[ProbeResult]:
    """One probe, awaited: for a lone probe (tests, a host name to resolve).
    `make(poller, address, on_done)` builds it once the host is resolved,
    with a poller of its own."""
    loop = asyncio.get_running_loop()
    if not is_ip(host):
        started = loop.time()
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            return ProbeResult(False, "L4TOUT", None, _ms(loop, started), "name resolution timeout")
        except OSError as exc:
            return _connect_failure(exc, _ms(loop, started))
        host = infos[0][4][0]
        timeout = max(0.0, timeout - (loop.time() - started))
    done = loop.create_future()

    def on_done(result):
        done.done() or done.set_result(result)

    try:
        address = probesock.address(host, port)
    except (OSError, OverflowError) as exc:
        return ProbeResult(False, "SOCKERR", None, 0.0, f"cannot connect to {host} port {port}: {exc}")
    poller = ProbePoller(loop)
    probe = make(poller, address, on_done)
    timer = loop.call_later(timeout, probe.expire)
    probe.start()
    try:
        return await done
    finally:
        timer.cancel()
        probe.abort()
        poller.close()


async def tcp_probe(host: str, port: int, timeout: float) -> ProbeResult:
    """Connect, then close: L4OK, L4CON, L4TOUT or SOCKERR."""
    return await _run_probe(host, port, timeout,
                            lambda poller, address, on_done: Probe(poller, address, None, frozenset(), on_done))


async def http_probe(host: str, port: int, timeout: float, request: bytes,
                     expect_status: frozenset[int]) -> Optional[ProbeResult]:
    """Send `request`, read the status line: L7OK / L7STS with the code,
    or L4CON, L4TOUT, L7TOUT, L7RSP, SOCKERR."""
    return await _run_probe(host, port, timeout,
                            lambda poller, address, on_done: Probe(poller, address, request, expect_status, on_done))


async def probe_server(server, health: HealthSpec) -> Optional[ProbeResult]:
    """Run the probe `health` asks for against `server`; None for type none,
    or when lbcore is out of descriptors (the check is skipped, not failed)."""
    if health.type not in ("tcp", "http", "mysql"):
        return None
    try:
        request = probe_request(server, health)
    except ValueError as exc:
        return ProbeResult(False, "SOCKERR", None, 0.0, str(exc))
    port = health.port or server.port
    return await _run_probe(server.host, port, health.timeout, lambda poller, address, on_done: new_probe(
        poller, server, address, health, request, on_done))


async def mysql_probe(host: str, port: int, timeout: float, user: Optional[str] = None,
                      client: str = "post-41") -> Optional[ProbeResult]:
    """HAProxy's mysql-check against host:port: L7OK (the detail is the
    server version), L7STS with the MySQL error code, L7RSP, L7TOUT, L4*."""
    request = mysql_login(user, client) if user else None
    return await _run_probe(host, port, timeout,
                            lambda poller, address, on_done: MysqlProbe(poller, address, request, on_done))


def _ms(loop: asyncio.AbstractEventLoop, start: float) -> float:
    return round((loop.time() - start) * 1000.0, 3)
