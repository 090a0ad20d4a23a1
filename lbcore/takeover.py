"""Upgrades without loss: `lbcore -c lb.yaml -sf OLDPID` takes the
listening sockets of the running lbcore instead of binding new ones, as
haproxy's `expose-fd listeners` + `-x` do, then tells the old one to
finish (SIGUSR1, a graceful stop: it stops accepting and drains).

Both processes accept from the very same sockets for a moment, so no
connection is refused and none waits for nobody: the kernel's accept
queues never close. Server states (health, admin state, weight) and
counters come along, so the stats do not start again from zero and no
server has to earn its way back UP.

The running process listens on an abstract unix socket named after its
pid (no file to clean up, nothing for a path to collide with); only a
peer running as the same user, or root, is answered (SO_PEERCRED): the
listening sockets are the service itself.

Protocol: the new process sends `listeners\\n`; the old one sends the
descriptors (SCM_RIGHTS, in batches, each with one NUL byte), then one
JSON object {"sockets": [[kind, name, count], ...], "state": state} and a
newline; as it exits, one more JSON line: its final state. Descriptors
come in the order of "sockets". A state has the shape of a stats snapshot
({"frontends": {name: row}, "backends": {name: row with "servers"}}) but
only what a successor takes on (Carry): server health, admin state and
weight, and the counters that are not zero. The final state holds only
the rows that changed since the handover.

Both processes serve while this happens: the old one until the new one
is ready, the new one from then on. The whole stats snapshot of a
1,000-pair config is 4 MB of JSON, ~60 ms to make and ~110 ms to read and
apply, each of them a stall of every connection of the process doing it;
the Carry is made a few milliseconds at a time, and the final state is
small.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct
import time
from typing import Any, Awaitable, Callable, Optional, Union

from .model import STATUS_CLASSES, Runtime

log = logging.getLogger("lbcore")

MAX_FDS = 253  # SCM_MAX_FD
TIMEOUT = 10.0
READ_SIZE = 256 * 1024

# Cumulative counters a new process carries on from the old one:
# snapshot field -> Counters attribute, and how two values combine.
CARRIED = {
    "total_sessions": "total_sessions", "bytes_in": "bytes_in", "bytes_out": "bytes_out",
    "http_requests": "http_requests", "denied_requests": "denied_req", "denied_responses": "denied_resp",
    "request_errors": "request_errors", "connection_errors": "connection_errors",
    "response_errors": "response_errors", "retries": "retries", "redispatches": "redispatches",
    "client_aborts": "client_aborts", "server_aborts": "server_aborts",
}
PEAKS = {"max_sessions": "max_sessions", "queue_max": "queue_max"}
TIMERS = {"queue_time_avg_s": "time_queue", "connect_time_avg_s": "time_connect",
          "response_time_avg_s": "time_response", "total_time_avg_s": "time_total"}
# Carry.build holds the event loop this long at most before it yields.
SLICE = 0.002


def socket_name(pid: int) -> bytes:
    return b"\0lbcore-takeover-%d" % pid


class TakeoverError(Exception):
    pass


# -- what a successor takes on -------------------------------------------------

def _counters(c: Any) -> dict:
    """The counters of `c` a successor adds to its own, those not zero."""
    row = {}
    for field, attr in CARRIED.items():
        value = getattr(c, attr)
        if value:
            row[field] = value
    for field, attr in PEAKS.items():
        value = getattr(c, attr)
        if value:
            row[field] = value
    timed = c.timed_requests
    if timed:
        row["timed_requests"] = timed
        for field, attr in TIMERS.items():
            row[field] = getattr(c, attr) / timed
    if any(c.http_responses):
        row["http_responses"] = dict(zip(STATUS_CLASSES, c.http_responses))
    return row


def _snapshot_counters(row: dict) -> dict:
    """_counters() of a stats snapshot row (field for field the same)."""
    out = {}
    for field in (*CARRIED, *PEAKS):
        value = row.get(field)
        if value:
            out[field] = value
    timed = row.get("timed_requests")
    if timed:
        out["timed_requests"] = timed
        for field in TIMERS:
            out[field] = row.get(field, 0.0)
    responses = row.get("http_responses")
    if isinstance(responses, dict) and any(responses.values()):
        out["http_responses"] = responses
    return out


def _frontend_row(frontend: Any) -> str:
    return json.dumps(_counters(frontend), separators=(",", ":"))


def _backend_row(backend: Any) -> str:
    row = _counters(backend)
    servers = []
    for server in backend.servers:
        entry = {"name": server.name, "address": str(server.address), "health": server.health,
                 "admin": server.admin, "weight": server.weight}
        entry.update(_counters(server))
        servers.append(entry)
    row["servers"] = servers
    return json.dumps(row, separators=(",", ":"))


class Carry:
    """What a successor takes on from this process (see the module's
    docstring), each frontend's and backend's row kept as JSON text:
    the final state sends only the rows whose text changed."""

    __slots__ = ("rows",)

    def __init__(self, rows: dict[tuple[str, str], str]) -> None:
        self.rows = rows  # ("frontends" | "backends", name) -> JSON row

    @classmethod
    def now(cls, runtime: Runtime) -> "Carry":
        """At once (stopping: nothing else to serve)."""
        rows = {("frontends", name): _frontend_row(f) for name, f in runtime.frontends.items()}
        rows.update((("backends", name), _backend_row(b)) for name, b in runtime.backends.items())
        return cls(rows)

    @classmethod
    async def build(cls, runtime: Runtime) -> "Carry":
        """While serving: a slice of SLICE seconds at a time. Each row is
        read at one moment; the successor adds each row's own difference
        (final less handover), so rows read at different moments add up."""
        rows = {}
        work = [("frontends", name, _frontend_row, f) for name, f in list(runtime.frontends.items())]
        work += [("backends", name, _backend_row, b) for name, b in list(runtime.backends.items())]
        deadline = time.monotonic() + SLICE
        for section, name, encode, item in work:
            rows[section, name] = encode(item)
            if time.monotonic() > deadline:
                await asyncio.sleep(0)
                deadline = time.monotonic() + SLICE
        return cls(rows)

    @classmethod
    def from_snapshot(cls, state: dict) -> "Carry":
        """The Carry of a stats snapshot (lbcore.workers' master hands the
        merge of its workers' snapshots): 20 times smaller to send and to
        read, and its final state can be sent as the changed rows only."""
        rows = {("frontends", name): json.dumps(_snapshot_counters(row), separators=(",", ":"))
                for name, row in (state.get("frontends") or {}).items()}
        for name, row in (state.get("backends") or {}).items():
            out = _snapshot_counters(row)
            servers = []
            for entry in row.get("servers") or ():
                server = {key: entry.get(key) for key in ("name", "address", "health", "admin", "weight")}
                server.update(_snapshot_counters(entry))
                servers.append(server)
            out["servers"] = servers
            rows["backends", name] = json.dumps(out, separators=(",", ":"))
        return cls(rows)

    def since(self, before: Optional["Carry"]) -> "Carry":
        """Only the rows that differ from `before`'s."""
        if before is None:
            return self
        return Carry({key: row for key, row in self.rows.items() if before.rows.get(key) != row})

    def json(self) -> str:
        sections = {"frontends": [], "backends": []}
        for (section, name), row in self.rows.items():
            sections[section].append(json.dumps(name) + ":" + row)
        return ('{"frontends":{' + ",".join(sections["frontends"]) + '},"backends":{'
                + ",".join(sections["backends"]) + "}}")


State = Union[Carry, dict]  # a dict: a stats snapshot (lbcore.workers' master hands those)


def _carry(state: State) -> Carry:
    return state if isinstance(state, Carry) else Carry.from_snapshot(state)


# -- the running process's side -----------------------------------------------

Handover = Callable[[], list[tuple[str, str, list[int]]]]  # [(kind, name, fds)]


class TakeoverServer:
    """Answers `listeners` requests on the abstract socket of this pid.

    `handover()` lists what to give: (kind, name, descriptors) with kind
    "bind" (a frontend address) or "stats"; `state()` is what the new
    process takes on: a Carry (Carry.build) or a stats snapshot."""

    def __init__(self, handover: Handover, state: Callable[[], Awaitable[State]]) -> None:
        self.handover = handover
        self.state = state
        self.sock: Optional[socket.socket] = None
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.handed_over = False
        # Successors' connections, kept open for the counters this process
        # adds while it drains (finish()), with the state each was handed.
        self.successors: list[tuple[socket.socket, Carry]] = []

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(socket_name(os.getpid()))
            sock.listen(8)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            log.warning("takeover socket not available (-sf upgrades will bind anew): %s", exc)
            return
        self.sock, self.loop = sock, loop
        loop.add_reader(sock.fileno(), self._accept)

    def close(self) -> None:
        """No more takeovers (stopping); successors still get finish()."""
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    def finish(self, state: State) -> None:
        """At exit: the final state to each successor, which adds what was
        counted here since the handover: the rows that changed since."""
        final = _carry(state)
        for conn, handed in self.successors:
            try:
                conn.sendall(final.since(handed).json().encode() + b"\n")
            except OSError:
                pass
            conn.close()
        self.successors = []

    def _accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        self.loop.create_task(self._serve(conn))

    async def _serve(self, conn: socket.socket) -> None:
        try:
            pid, uid, _ = struct.unpack("3i", conn.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
            if uid not in (0, os.getuid()):
                log.warning("takeover request from pid %d refused: uid %d", pid, uid)
                return
            conn.setblocking(False)
            request = await asyncio.wait_for(self.loop.sock_recv(conn, 64), TIMEOUT)
            if request.strip() != b"listeners":
                log.warning("takeover: unknown request %r from pid %d", request[:32], pid)
                return
            # The state first: it is made between other work, during which
            # a reload may close listeners; the descriptors are listed
            # right before they are sent.
            state = _carry(await self.state())
            given = self.handover()
            fds = [fd for _, _, group in given for fd in group]
            conn.setblocking(True)
            conn.settimeout(TIMEOUT)
            for i in range(0, len(fds), MAX_FDS):
                socket.send_fds(conn, [b"\0"], fds[i:i + MAX_FDS])
            sockets = json.dumps([[kind, name, len(group)] for kind, name, group in given], separators=(",", ":"))
            conn.sendall(('{"sockets":' + sockets + ',"state":' + state.json() + "}\n").encode())
            self.handed_over = True
            self.successors.append((conn, state))
            conn = None
            log.info("handed %d listening sockets to pid %d (-sf upgrade)", len(fds), pid)
        except (OSError, asyncio.TimeoutError) as exc:
            log.warning("takeover: %s", exc)
        except Exception:
            log.exception("takeover failed")
        finally:
            if conn is not None:
                conn.close()


# -- the new process's side -----------------------------------------------------

def fetch(pid: int, timeout: float = TIMEOUT) -> tuple[list[tuple[str, str, list[socket.socket]]], dict,
                                                      socket.socket]:
    """The running lbcore `pid`'s listening sockets and state, and the
    connection on which its final counters will come (follow())."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    data, fds = bytearray(), []
    try:
        try:
            conn.connect(socket_name(pid))
        except OSError as exc:
            raise TakeoverError(f"no lbcore to take over at pid {pid}: {exc.strerror or exc}") from None
        conn.sendall(b"listeners\n")
        try:
            while True:
                chunk, got, _, _ = socket.recv_fds(conn, READ_SIZE, MAX_FDS)
                fds.extend(got)
                if not chunk:
                    raise OSError("closed before its answer was complete")
                data += chunk
                if b"\n" in chunk:  # JSON text holds none: the answer's end
                    break
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            raise TakeoverError(f"takeover from pid {pid} failed: {exc}") from None
    except TakeoverError:
        conn.close()
        raise
    sockets = [socket.socket(fileno=fd) for fd in fds]
    try:
        header = json.loads(bytes(data).replace(b"\0", b""))
        given = []
        for kind, name, count in header["sockets"]:
            given.append((kind, name, sockets[:count]))
            sockets = sockets[count:]
        if sockets:
            raise ValueError(f"{len(sockets)} descriptors too many")
    except (ValueError, KeyError, TypeError) as exc:
        for sock in sockets:
            sock.close()
        conn.close()
        raise TakeoverError(f"takeover from pid {pid}: bad answer: {exc}") from None
    return given, header.get("state") or {}, conn


# -- carrying the state over ---------------------------------------------------

carried: Optional[dict] = None  # the snapshot fetched at start, applied once
previous: dict = {}  # conn: to the process replaced, state: its snapshot at the handover
replacing = False  # this process was started to replace another (-sf/-st)


def take_over(pids: list[int]) -> None:
    """At start, before binding: take the listening sockets and state of
    the first of `pids` that answers. A process that cannot be taken over
    (gone, not an lbcore) is only logged: this one then binds anew."""
    global carried, replacing
    from .listeners import inherited

    replacing = bool(pids)
    for pid in pids:
        try:
            given, state, conn = fetch(pid)
        except TakeoverError as exc:
            log.warning("%s; binding anew", exc)
            continue
        for _, _, sockets in given:
            for sock in sockets:
                inherited.add(sock)
        carried = state
        # Logged by restore(): the event log is not set up yet.
        previous.update(conn=conn, state=state, summary=f"{sum(len(s) for _, _, s in given)} listening "
                                                       f"sockets from pid {pid}")
        return


def _add_counters(target: Any, row: dict, base: Optional[dict] = None) -> None:
    """Add `row`'s counters (less `base`'s, the part already added) to `target`."""
    base = base or {}

    def delta(field):
        value, before = row.get(field), base.get(field, 0)
        ok = isinstance(value, (int, float)) and isinstance(before, (int, float))
        return value - before if ok else 0

    for field, attr in CARRIED.items():
        setattr(target, attr, getattr(target, attr) + int(delta(field)))
    for field, attr in PEAKS.items():
        value = row.get(field)
        if isinstance(value, int):
            setattr(target, attr, max(getattr(target, attr), value))
    timed = int(delta("timed_requests"))
    if timed > 0:
        target.timed_requests += timed
        for field, attr in TIMERS.items():
            total = row.get(field, 0) * row.get("timed_requests", 0) - \
                base.get(field, 0) * base.get("timed_requests", 0)
            setattr(target, attr, getattr(target, attr) + max(0.0, total))
    responses, before = row.get("http_responses"), base.get("http_responses") or {}
    if isinstance(responses, dict):
        for i, (cls, value) in enumerate(responses.items()):
            if i < len(target.http_responses) and isinstance(value, int):
                target.http_responses[i] += value - before.get(cls, 0)


def _apply(runtime: Runtime, state: dict, base: dict, states: bool) -> int:
    """Counters of `state` less `base` onto `runtime`; with `states`, each
    server's health, admin state and weight too. Servers are matched by
    backend, name and address. Returns how many servers matched."""
    from .state_file import restore_server

    base_frontends = base.get("frontends") or {}
    for name, row in (state.get("frontends") or {}).items():
        frontend = runtime.frontends.get(name)
        if frontend is not None and isinstance(row, dict):
            _add_counters(frontend, row, base_frontends.get(name))
    matched = 0
    base_backends = base.get("backends") or {}
    for name, row in (state.get("backends") or {}).items():
        backend = runtime.backends.get(name)
        if backend is None or not isinstance(row, dict):
            continue
        base_row = base_backends.get(name) or {}
        _add_counters(backend, row, base_row)
        base_servers = {s.get("name"): s for s in base_row.get("servers") or [] if isinstance(s, dict)}
        for entry in row.get("servers") or []:
            server = backend.by_name.get(entry.get("name")) if isinstance(entry, dict) else None
            if server is None or entry.get("address") != str(server.address):
                continue
            if states:
                restore_server(server, entry, "previous process")
            _add_counters(server, entry, base_servers.get(entry.get("name")))
            matched += 1
    return matched


def restore(runtime: Runtime) -> None:
    """Apply the state taken over at start (once): server states and the
    counters of the process replaced, as they were at the handover."""
    global carried
    state, carried = carried, None
    if state is not None:
        matched = _apply(runtime, state, {}, states=True)
        log.info("took over %s, %d server states and the counters of that process",
                 previous.get("summary", "?"), matched)


def follow(loop: asyncio.AbstractEventLoop, get_runtime: Callable[[], Runtime]) -> None:
    """Wait (off the hot path) for the replaced process's final counters,
    sent as it exits, and add what it counted while draining."""
    conn, base = previous.pop("conn", None), previous.pop("state", None) or {}
    previous.pop("summary", None)
    if conn is None:
        return
    conn.setblocking(False)
    data = bytearray()

    def readable() -> None:
        try:
            chunk = conn.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        data.extend(chunk)
        if chunk and b"\n" not in chunk:
            return
        loop.remove_reader(conn.fileno())
        conn.close()
        if b"\n" not in data:
            log.warning("the previous process exited without its final counters")
            return
        try:
            final = json.loads(bytes(data).split(b"\n", 1)[0])
        except ValueError:
            log.warning("the previous process sent unreadable final counters")
            return
        _apply(get_runtime(), final, base, states=False)
        log.info("added the counters of the previous process's drain")

    loop.add_reader(conn.fileno(), readable)
