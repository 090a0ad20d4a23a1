"""Peers: stick-table entries shared between LB nodes, over HAProxy's
peers protocol (version 2.1, HAProxy's doc/peers-v2.0.txt and src/peers.c),
so lbcore nodes share tables with each other and with haproxy 2.6 nodes
during a migration.

A `peers` section names this node and the others. Each node listens on
its own address and connects to the others; one TCP session per pair
carries both directions. The handshake is three text lines
(`HAProxyS 2.1`, the peer we call, `our-name pid 1`) answered by a status
line (`200`). Then binary messages, a class and a type byte, and for
types >= 128 a varint length and data:

- control (class 0): resync request/finished/partial/confirm, heartbeat;
- stick table (class 10): table definition (id, name, key type and
  size, the stored data types and their periods, expire), entry updates
  (key, then each stored datum in data-type order: counters as varints,
  rates as three varints - age of the current period, current, previous -
  the server's name as a dictionary entry), acknowledgements.

Every local change of a shared table's entry (a client stuck to a server,
a counter moved) is pushed to every connected peer soon after; a new
session asks its peer for a full resync and answers one in kind. A peer
that says nothing for `DEAD_AFTER` seconds is dropped and called again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import struct
from typing import Callable, Optional

from .heap import without_traceback
from .stick import RATE_TYPES, StickTable

log = logging.getLogger("lbcore")

PROTOCOL = b"HAProxyS"
VERSION = b"2.1"
STATUS_OK = b"200"
STATUS_BAD_VERSION, STATUS_BAD_HOST, STATUS_BAD_PEER, STATUS_PROTOCOL = b"502", b"503", b"504", b"501"

CLASS_CONTROL, CLASS_ERROR, CLASS_TABLE = 0, 1, 10
CTRL_RESYNC_REQ, CTRL_RESYNC_FINISHED, CTRL_RESYNC_PARTIAL, CTRL_RESYNC_CONFIRM, CTRL_HEARTBEAT = range(5)
MSG_UPDATE, MSG_INCUPDATE, MSG_DEFINE, MSG_SWITCH, MSG_ACK, MSG_UPDATE_TIMED, MSG_INCUPDATE_TIMED = range(0x80, 0x87)

HEARTBEAT = 3.0  # seconds of silence before we send a heartbeat (HAProxy's)
DEAD_AFTER = 8.0  # seconds without a byte from a peer before its session is dropped
RECONNECT = (0.5, 1.5)  # seconds before calling a peer again, random in this range
MAX_MESSAGE = 1 << 20  # a longer message is a protocol error
DICT_SLOTS = 128  # HAProxy's PEER_STKT_CACHE_MAX_ENTRIES

# HAProxy's stick-table data types by id: (name, kind). kind: u = one varint,
# f = freq_ctr (three varints), d = dictionary entry, a/af = arrays.
DATA_TYPES = {
    0: ("server_id", "u"), 1: ("gpt0", "u"), 2: ("gpc0", "u"), 3: ("gpc0_rate", "f"),
    4: ("conn_cnt", "u"), 5: ("conn_rate", "f"), 6: ("conn_cur", "u"), 7: ("sess_cnt", "u"),
    8: ("sess_rate", "f"), 9: ("http_req_cnt", "u"), 10: ("http_req_rate", "f"),
    11: ("http_err_cnt", "u"), 12: ("http_err_rate", "f"), 13: ("bytes_in_cnt", "u"),
    14: ("bytes_in_rate", "f"), 15: ("bytes_out_cnt", "u"), 16: ("bytes_out_rate", "f"),
    17: ("gpc1", "u"), 18: ("gpc1_rate", "f"), 19: ("server_key", "d"), 20: ("http_fail_cnt", "u"),
    21: ("http_fail_rate", "f"), 22: ("gpt", "a"), 23: ("gpc", "a"), 24: ("gpc_rate", "af"),
}
DATA_IDS = {name: dt for dt, (name, _) in DATA_TYPES.items()}
LOCAL_ONLY = frozenset(("conn_cur",))  # HAProxy's is_local: never taken from a peer
# lbcore table types -> the protocol's key types and key sizes.
KEY_TYPES = {"integer": 2, "ip": 4, "ipv6": 5, "string": 6}


class ProtocolError(Exception):
    pass


# -- encoding --------------------------------------------------------------------

def intencode(i: int) -> bytes:
    """HAProxy's varint: < 240 in one byte, then 4 + 7 bits per byte."""
    if i < 0xF0:
        return bytes((i,))
    out = bytearray(((i & 0xFF) | 0xF0,))
    i = (i - 0xF0) >> 4
    while i >= 0x80:
        out.append((i & 0xFF) | 0x80)
        i = (i - 0x80) >> 7
    out.append(i)
    return bytes(out)


def intdecode(data: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos >= end:
        raise ProtocolError("truncated integer")
    i = data[pos]
    pos += 1
    if i >= 0xF0:
        shift = 4
        while True:
            if pos >= end:
                raise ProtocolError("truncated integer")
            byte = data[pos]
            pos += 1
            i += byte << shift
            shift += 7
            if byte < 0x80:
                break
    return i, pos


def message(cls: int, kind: int, data: bytes = b"") -> bytes:
    if kind < 0x80:
        return bytes((cls, kind))
    return bytes((cls, kind)) + intencode(len(data)) + data


def key_size(table: StickTable) -> int:
    return {"integer": 4, "ip": 4, "ipv6": 16}.get(table.type, table.length + 1)


def encode_key(table: StickTable, key) -> bytes:
    if table.type == "ip":
        return socket.inet_aton(key)
    if table.type == "ipv6":
        return socket.inet_pton(socket.AF_INET6, key)
    if table.type == "integer":
        return struct.pack("!I", key & 0xFFFFFFFF)
    raw = key.encode("latin-1")[:table.length]
    return intencode(len(raw)) + raw


def decode_key(table: StickTable, data: bytes, pos: int, end: int):
    if table.type == "string":
        n, pos = intdecode(data, pos, end)
        if pos + n > end:
            raise ProtocolError("truncated key")
        return data[pos:pos + min(n, table.length)].decode("latin-1"), pos + n
    size = key_size(table)
    if pos + size > end:
        raise ProtocolError("truncated key")
    raw = data[pos:pos + size]
    if table.type == "ip":
        return socket.inet_ntoa(raw), pos + size
    if table.type == "ipv6":
        return table.key(socket.inet_ntop(socket.AF_INET6, raw)), pos + size
    return struct.unpack("!I", raw)[0], pos + size


def sent_types(table: StickTable) -> list[int]:
    """The data type ids a table's updates carry, in id order."""
    ids = [DATA_IDS[name] for name in table.store if name in DATA_IDS]
    if table.sticky:
        ids.append(DATA_IDS["server_key"])
    return sorted(set(ids))


def define_message(table: StickTable, local_id: int) -> bytes:
    name = table.name.encode()
    types = sent_types(table)
    bits = 0
    params = b""
    for dt in types:
        bits |= 1 << dt
        if DATA_TYPES[dt][1] == "f":
            params += intencode(dt) + intencode(table.store[DATA_TYPES[dt][0]])
    data = (intencode(local_id) + intencode(len(name)) + name + intencode(KEY_TYPES[table.type])
            + intencode(key_size(table)) + intencode(bits) + intencode(table.expire_ms) + params)
    return message(CLASS_TABLE, MSG_DEFINE, data)


def update_message(table: StickTable, entry, update_id: int, now: int, server_names: dict) -> bytes:
    out = [struct.pack("!I", update_id & 0xFFFFFFFF)]
    timed = bool(table.expire_ms)
    if timed:
        out.append(struct.pack("!I", table.expires_in(entry, now)))
    out.append(encode_key(table, entry.key))
    for dt in sent_types(table):
        name, kind = DATA_TYPES[dt]
        if kind == "d":  # the server's name: HAProxy finds the server by it first
            server = server_names.get(entry.server_id)
            if server is None:
                out.append(intencode(0))
            else:
                value = server.encode()
                body = intencode(1 + (hash(server) % DICT_SLOTS)) + intencode(len(value)) + value
                out.append(intencode(len(body)) + body)
        elif kind == "f":
            ctr = getattr(entry, name)
            age, curr, prev = ctr.state(now, table.store[name]) if ctr is not None else (0, 0, 0)
            out.append(intencode(max(0, age) & 0xFFFFFFFF) + intencode(curr) + intencode(prev))
        else:
            value = getattr(entry, name, None)
            out.append(intencode(value if value is not None and value >= 0 else 0))
    return message(CLASS_TABLE, MSG_UPDATE_TIMED if timed else MSG_UPDATE, b"".join(out))


class RemoteTable:
    """What a peer's table definition told us: our table it maps to and
    the layout of the updates that follow."""

    __slots__ = ("table", "types", "array_sizes", "last_update")

    def __init__(self, table: Optional[StickTable], types: list[int], array_sizes: dict) -> None:
        self.table = table
        self.types = types
        self.array_sizes = array_sizes
        self.last_update = 0


def parse_define(data: bytes, tables: dict) -> tuple[int, RemoteTable]:
    end = len(data)
    remote_id, pos = intdecode(data, 0, end)
    n, pos = intdecode(data, pos, end)
    if not n or pos + n > end:
        raise ProtocolError("bad table name")
    name = data[pos:pos + n].decode("latin-1")
    pos += n
    key_type, pos = intdecode(data, pos, end)
    size, pos = intdecode(data, pos, end)
    bits, pos = intdecode(data, pos, end)
    types = [dt for dt in range(64) if bits >> dt & 1]
    array_sizes = {}
    if pos < end:
        _, pos = intdecode(data, pos, end)  # expire: ours rules our entries
        for dt in types:
            kind = DATA_TYPES.get(dt, ("?", "?"))[1]
            if kind in ("a", "af"):
                _, pos = intdecode(data, pos, end)
                array_sizes[dt], pos = intdecode(data, pos, end)
                if kind == "af":
                    _, pos = intdecode(data, pos, end)
            elif kind == "f":
                _, pos = intdecode(data, pos, end)
                _, pos = intdecode(data, pos, end)
    table = tables.get(name)
    if table is not None and (KEY_TYPES[table.type] != key_type or key_size(table) != size):
        log.warning("peers: table %s differs in key type or size from the peer's: ignoring its updates", name)
        table = None
    if any(dt not in DATA_TYPES for dt in types):
        table = None  # a data type we cannot skip: we cannot read its updates
    return remote_id, RemoteTable(table, types, array_sizes)


def apply_update(remote: RemoteTable, data: bytes, with_id: bool, timed: bool, now: int,
                 servers_by_name: dict) -> None:
    table = remote.table
    end = len(data)
    pos = 0
    if with_id:
        if end < 4:
            raise ProtocolError("truncated update id")
        remote.last_update = struct.unpack_from("!I", data, 0)[0]
        pos = 4
    else:
        remote.last_update += 1
    if timed:
        if pos + 4 > end:
            raise ProtocolError("truncated expire")
        pos += 4
    if table is None:
        return
    key, pos = decode_key(table, data, pos, end)
    values: dict = {}
    server_name = None
    for dt in remote.types:
        name, kind = DATA_TYPES[dt]
        if kind == "u":
            values[name], pos = intdecode(data, pos, end)
        elif kind == "f":
            age, pos = intdecode(data, pos, end)
            curr, pos = intdecode(data, pos, end)
            prev, pos = intdecode(data, pos, end)
            values[name] = (age, curr, prev)
        elif kind == "d":
            n, pos = intdecode(data, pos, end)
            if n:
                stop = pos + n
                if stop > end:
                    raise ProtocolError("truncated dictionary entry")
                _, pos = intdecode(data, pos, stop)
                if pos < stop:
                    length, pos = intdecode(data, pos, stop)
                    server_name = data[pos:pos + length].decode("latin-1")
                pos = stop
        else:  # arrays: skipped, lbcore stores none
            for _ in range(remote.array_sizes.get(dt, 0)):
                _, pos = intdecode(data, pos, end)
                if kind == "af":
                    _, pos = intdecode(data, pos, end)
                    _, pos = intdecode(data, pos, end)
    entry = table.get(key, now)
    if entry is None:
        return
    server = servers_by_name.get(server_name) if server_name else None
    if server is not None:
        entry.server_id = server.puid
    elif "server_id" in values and values["server_id"]:
        entry.server_id = values["server_id"]
    for name, value in values.items():
        if name in LOCAL_ONLY or name == "server_id" or name not in table.store:
            continue
        if name in RATE_TYPES:
            ctr = getattr(entry, name)
            if ctr is not None:
                age, curr, prev = value
                ctr.set_state(now, age, curr, prev)
        else:
            setattr(entry, name, value)


# -- sessions ---------------------------------------------------------------------

class PeerSession(asyncio.Protocol):
    """One TCP session with a peer, either direction."""

    def __init__(self, peers: "Peers", outgoing_to: Optional[str] = None) -> None:
        self.peers = peers
        self.name = outgoing_to  # the peer's name once known
        self.outgoing = outgoing_to is not None
        self.transport = None
        self.buf = b""
        self.established = False
        self.remote_tables: dict[int, RemoteTable] = {}
        self.current: Optional[RemoteTable] = None
        self.defined: dict[str, int] = {}  # our table name -> the id we gave it
        self.update_ids: dict[str, int] = {}
        self.last_heard = 0.0
        self.last_sent = 0.0
        self.unacked: set = set()

    # transport events
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.last_heard = self.peers.loop.time()
        if self.outgoing:
            self._send(b"%s %s\n%s\n%s %d 1\n" % (PROTOCOL, VERSION, self.name.encode(),
                                                  self.peers.local.encode(), os.getpid()))

    def connection_lost(self, exc) -> None:
        self.peers.session_lost(self)

    def data_received(self, data: bytes) -> None:
        self.last_heard = self.peers.loop.time()
        self.buf += data
        try:
            if not self.established:
                self._handshake()
            if self.established:
                self._messages()
        except ProtocolError as exc:
            log.warning("peers: %s: protocol error: %s", self.name or "incoming peer", exc)
            self._send(message(CLASS_ERROR, 0))
            self.close()
        except Exception:
            log.exception("peers: %s: session failed", self.name or "incoming peer")
            self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.last_sent = self.peers.loop.time()

    # handshake
    def _lines(self, count: int) -> Optional[list[bytes]]:
        parts = self.buf.split(b"\n", count)
        if len(parts) <= count:
            if len(self.buf) > 1024:
                raise ProtocolError("handshake too long")
            return None
        self.buf = parts[count]
        return parts[:count]

    def _handshake(self) -> None:
        if self.outgoing:
            lines = self._lines(1)
            if lines is None:
                return
            if lines[0].strip() != STATUS_OK:
                log.warning("peers: %s refused the session: status %s", self.name,
                            lines[0].decode("latin-1", "replace"))
                self.close()
                return
        else:
            lines = self._lines(3)
            if lines is None:
                return
            hello, called, caller = (line.strip() for line in lines)
            proto, _, version = hello.partition(b" ")
            if proto != PROTOCOL or not version.startswith(b"2."):
                self._refuse(STATUS_BAD_VERSION)
                return
            if called.decode("latin-1") != self.peers.local:
                self._refuse(STATUS_BAD_HOST)
                return
            name = caller.split(b" ", 1)[0].decode("latin-1")
            if name not in self.peers.remotes:
                self._refuse(STATUS_BAD_PEER)
                return
            self.name = name
            self._send(STATUS_OK + b"\n")
        self.established = True
        self.peers.session_up(self)

    def _refuse(self, status: bytes) -> None:
        self._send(status + b"\n")
        self.close()

    # messages
    def _messages(self) -> None:
        buf = self.buf
        pos = 0
        end = len(buf)
        acks = set()
        while end - pos >= 2:
            cls, kind = buf[pos], buf[pos + 1]
            start = pos + 2
            data = b""
            if kind >= 0x80:
                try:
                    length, start = intdecode(buf, start, end)
                except ProtocolError:
                    break  # the length is not all here yet
                if length > MAX_MESSAGE:
                    raise ProtocolError("message too long")
                if start + length > end:
                    break
                data = buf[start:start + length]
                start += length
            pos = start
            if cls == CLASS_TABLE:
                self._table_message(kind, data, acks)
            elif cls == CLASS_CONTROL:
                self._control(kind)
            elif cls == CLASS_ERROR:
                raise ProtocolError(f"the peer reported error {kind}")
            # Other classes (reserved) are skipped, as HAProxy does.
        self.buf = buf[pos:]
        for remote_id in acks:
            remote = self.remote_tables.get(remote_id)
            if remote is not None:
                self._send(message(CLASS_TABLE, MSG_ACK, intencode(remote_id)
                                   + struct.pack("!I", remote.last_update & 0xFFFFFFFF)))

    def _table_message(self, kind: int, data: bytes, acks: set) -> None:
        peers = self.peers
        if kind == MSG_DEFINE:
            remote_id, remote = parse_define(data, peers.tables())
            self.remote_tables[remote_id] = remote
            self.current = remote
        elif kind == MSG_SWITCH:
            remote_id, _ = intdecode(data, 0, len(data))
            self.current = self.remote_tables.get(remote_id)
        elif kind in (MSG_UPDATE, MSG_INCUPDATE, MSG_UPDATE_TIMED, MSG_INCUPDATE_TIMED):
            remote = self.current
            if remote is None:
                return
            table = remote.table
            servers = peers.servers_by_name(table.name) if table is not None else {}
            if table is not None:
                peers.applying = True
            try:
                apply_update(remote, data, kind in (MSG_UPDATE, MSG_UPDATE_TIMED),
                             kind in (MSG_UPDATE_TIMED, MSG_INCUPDATE_TIMED),
                             table.clock() if table is not None else 0, servers)
            finally:
                peers.applying = False
            for remote_id, known in self.remote_tables.items():
                if known is remote:
                    acks.add(remote_id)
        # MSG_ACK: our updates arrived; nothing is resent, so nothing to do.

    def _control(self, kind: int) -> None:
        if kind == CTRL_RESYNC_REQ:
            self.teach_all()
            self._send(message(CLASS_CONTROL, CTRL_RESYNC_FINISHED))
        elif kind in (CTRL_RESYNC_FINISHED, CTRL_RESYNC_PARTIAL):
            self._send(message(CLASS_CONTROL, CTRL_RESYNC_CONFIRM))
            if kind == CTRL_RESYNC_FINISHED:
                self.peers.resynced = True
        # CTRL_RESYNC_CONFIRM, CTRL_HEARTBEAT: the peer is alive, nothing more.

    # pushing our entries
    def push(self, table: StickTable, entries) -> None:
        if not self.established or self.transport is None:
            return
        out = []
        local_id = self.defined.get(table.name)
        if local_id is None:
            local_id = self.defined[table.name] = len(self.defined) + 1
        # A definition before each batch: it also switches the peer to this table.
        out.append(define_message(table, local_id))
        now = table.clock()
        names = self.peers.server_names(table.name)
        update_id = self.update_ids.get(table.name, 0)
        for entry in entries:
            update_id += 1
            out.append(update_message(table, entry, update_id, now, names))
        self.update_ids[table.name] = update_id
        self._send(b"".join(out))

    def teach_all(self) -> None:
        for table in self.peers.tables().values():
            now = table.clock()
            live = [e for e in table if table.lookup(e.key, now) is e]
            if live:
                self.push(table, live)

    def tick(self, now: float) -> None:
        if now - self.last_heard > DEAD_AFTER:
            log.warning("peers: %s said nothing for %.0fs: session dropped", self.name, now - self.last_heard)
            self.close()
        elif self.established and now - self.last_sent >= HEARTBEAT:
            self._send(message(CLASS_CONTROL, CTRL_HEARTBEAT))


class Peers:
    """One peers section at run time: the listener, a session per peer,
    and the tables that name the section."""

    def __init__(self, loop, spec, get_runtime: Callable) -> None:
        self.loop = loop
        self.spec = spec
        self.local = spec.local
        self.remotes = {name: address for name, address in spec.nodes if name != spec.local}
        self.address = dict(spec.nodes).get(spec.local)
        self.get_runtime = get_runtime
        self.sessions: dict[str, PeerSession] = {}
        self.connecting: set[str] = set()
        self.pending: dict[str, dict] = {}  # table name -> {key: entry} to push
        self.flush_scheduled = False
        self.applying = False  # entries changed by a peer are not echoed back
        self.resynced = False
        self.server = None
        self.timer = None
        self.closed = False

    # tables
    def tables(self) -> dict:
        runtime = self.get_runtime()
        return {name: t for name, t in runtime.stick_tables.items() if t.peers == self.spec.name}

    def servers_by_name(self, table_name: str) -> dict:
        backend = self.get_runtime().backends.get(table_name)
        return backend.by_name if backend is not None else {}

    def server_names(self, table_name: str) -> dict:
        backend = self.get_runtime().backends.get(table_name)
        return {puid: s.name for puid, s in backend.by_id.items()} if backend is not None else {}

    def attach(self) -> None:
        """(Re)hook the runtime's shared tables: their local changes are pushed."""
        for table in self.tables().values():
            table.on_update = (lambda entry, name=table.name: self.changed(name, entry))

    def changed(self, table_name: str, entry) -> None:
        if self.applying or not self.sessions:
            return
        self.pending.setdefault(table_name, {})[entry.key] = entry
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        pending, self.pending = self.pending, {}
        tables = self.tables()
        for name, entries in pending.items():
            table = tables.get(name)
            if table is None:
                continue
            for session in list(self.sessions.values()):
                session.push(table, list(entries.values()))

    # lifecycle
    async def start(self) -> None:
        self.attach()
        if self.address is not None:
            host = self.address.host or None
            self.server = await self.loop.create_server(lambda: PeerSession(self), host, self.address.port,
                                                        reuse_address=True)
        self.timer = self.loop.call_later(random.uniform(0.0, 0.3), self._tick)

    def close(self) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        if self.server is not None:
            self.server.close()
        for session in list(self.sessions.values()):
            session.close()

    def _tick(self) -> None:
        if self.closed:
            return
        now = self.loop.time()
        for name in self.remotes:
            session = self.sessions.get(name)
            if session is not None:
                session.tick(now)
            elif name not in self.connecting:
                self.connecting.add(name)
                self.loop.create_task(self._connect(name))
        self.timer = self.loop.call_later(random.uniform(*RECONNECT), self._tick)

    async def _connect(self, name: str) -> None:
        address = self.remotes[name]
        try:
            await asyncio.wait_for(self.loop.create_connection(
                lambda: PeerSession(self, name), address.host, address.port), timeout=2.0)
        except (OSError, asyncio.TimeoutError) as exc:
            without_traceback(exc)  # no cycle left per attempt at a peer that is down
            # the next tick calls again
        finally:
            self.connecting.discard(name)

    def session_up(self, session: PeerSession) -> None:
        old = self.sessions.get(session.name)
        if old is not None and old is not session:
            old.close()  # the newest session wins, as HAProxy's
        self.sessions[session.name] = session
        log.info("peers: session with %s established", session.name)
        if not self.resynced:
            session._send(message(CLASS_CONTROL, CTRL_RESYNC_REQ))
        session.teach_all()

    def session_lost(self, session: PeerSession) -> None:
        if session.name is not None and self.sessions.get(session.name) is session:
            del self.sessions[session.name]
            if not self.closed:
                log.info("peers: session with %s closed", session.name)
