"""Runtime API commands on stick tables: `show table`, `clear table`,
`set table`, in HAProxy 2.6's words and formats (src/stick_table.c):

    > show table
    # table: be, type: ip, size:1000, used:1
    > show table be
    # table: be, type: ip, size:1000, used:1
    0x7f3a...: key=127.0.0.1 use=0 exp=1793993 server_id=1 server_key=s1
    > show table fe data.http_req_rate gt 10
    > clear table fe key 10.0.0.1
    > set table fe key 10.0.0.1 data.http_req_cnt 0
"""

from __future__ import annotations

import ipaddress
import re
import socket

from ..stick import RATE_TYPES, StickTable
from .runtime_api import LEVEL_RANK, Call, CommandError, register

# Stored data in the order HAProxy's data type enum lists them (its dumps
# follow that order); server_key (the server's name) follows server_id.
DUMP_ORDER = ("server_id", "conn_cnt", "conn_rate", "conn_cur", "http_req_cnt", "http_req_rate",
              "http_err_cnt", "http_err_rate", "bytes_in_cnt", "bytes_in_rate", "bytes_out_cnt",
              "bytes_out_rate", "server_key")
OPERATORS = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "le": lambda a, b: a <= b,
    "ge": lambda a, b: a >= b, "lt": lambda a, b: a < b, "gt": lambda a, b: a > b,
}
FILTERS = 4  # HAProxy's STKTABLE_FILTER_LEN


def _tables(call: Call) -> dict:
    return call.service.get_runtime().stick_tables


def _operator(call: Call) -> bool:
    return LEVEL_RANK[call.session.level] >= LEVEL_RANK["operator"]


def head(table: StickTable) -> str:
    return f"# table: {table.name}, type: {table.type}, size:{table.size}, used:{table.used}\n"


def _stored(table: StickTable) -> list[str]:
    names = [name for name in DUMP_ORDER if name in table.store and name != "server_id"]
    if table.sticky:
        names = ["server_id", "server_key"] + names
    return [name for name in DUMP_ORDER if name in names]


def entry_line(table: StickTable, entry, servers: dict, now: int) -> str:
    parts = [f"0x{id(entry):x}: key={entry.key} use={entry.refs} exp={table.expires_in(entry, now)}"]
    for name in _stored(table):
        if name == "server_key":
            server = servers.get(entry.server_id)
            parts.append(f"server_key={server.name if server is not None else '-'}")
        elif name in RATE_TYPES:
            parts.append(f"{name}({table.store[name]})={table.read(entry, name, now)}")
        else:
            value = table.read(entry, name, now)
            parts.append(f"{name}={0 if value is None else value}")
    return " ".join(parts) + "\n"


def _servers_of(call: Call, table: StickTable) -> dict:
    """puid -> server of the backend whose table this is (server_key)."""
    backend = call.service.get_runtime().backends.get(table.name)
    return backend.by_id if backend is not None else {}


def parse_key(table: StickTable, text: str):
    """A key typed by an operator, read as HAProxy reads it: an ip key that
    is not an address is 0.0.0.0 (inetaddr_host), an integer key is its
    leading digits (strtoul)."""
    if table.type == "ip":
        try:
            return socket.inet_ntoa(socket.inet_aton(text))
        except OSError:
            return "0.0.0.0"
    if table.type == "ipv6":
        try:
            return table.key(str(ipaddress.IPv6Address(text)))
        except ValueError:
            raise CommandError("Invalid key") from None
    if table.type == "integer":
        digits = re.match(r"\s*\+?([0-9]+)", text)
        if digits is None or int(digits.group(1)) > 0xFFFFFFFF:
            raise CommandError("Invalid key")
        return int(digits.group(1))
    return table.key(text)


def _target(call: Call, action: str) -> StickTable:
    table = _tables(call).get(call.args[0])
    if table is None:
        raise CommandError("No such table")
    return table


def _filters(table: StickTable, args: tuple, action: str) -> list:
    if action not in ("show", "clear"):
        raise CommandError('content-based lookup is only supported with the "show" and "clear" actions')
    filters = []
    i = 0
    while i < FILTERS and len(args) > 3 * i:
        if i > 0 and not args[3 * i]:
            break
        word = args[3 * i]
        name = word[5:] if word.startswith("data.") else ""
        if name not in DUMP_ORDER and name not in RATE_TYPES:
            raise CommandError(f"Filter entry #{i + 1}: Unknown data type")
        if name not in table.store or (name == "server_id" and not table.sticky):
            raise CommandError(f"Filter entry #{i + 1}: Data type not stored in this table")
        op = args[3 * i + 1] if len(args) > 3 * i + 1 else ""
        if op not in OPERATORS:
            raise CommandError(f'Filter entry #{i + 1}: Require and operator among "eq", "ne", "le", "ge", '
                               '"lt", "gt"')
        value_text = args[3 * i + 2] if len(args) > 3 * i + 2 else ""
        try:
            value = int(value_text)
        except ValueError:
            raise CommandError(f"Filter entry #{i + 1}: Require a valid integer value to compare against") from None
        filters.append((name, OPERATORS[op], value))
        i += 1
    if len(args) > 3 * i:
        raise CommandError(f"Detected extra data in filter, {3 * i + 4}th word of input, after '{args[3 * i - 1]}'")
    return filters


def _matches(table: StickTable, entry, filters: list, now: int) -> bool:
    for name, op, value in filters:
        current = table.read(entry, name, now)
        if not op(current if current is not None else 0, value):
            return False
    return True


_USAGE = {
    "show": 'Optional argument only supports "data.<store_data_type>" <operator> <value> and key <key>',
    "clear": 'Required arguments: <table> "data.<store_data_type>" <operator> <value> or <table> key <key>',
    "set": "Required arguments: <table> key <key> [data.<store_data_type> <value>]*",
}


def _run(call: Call, action: str) -> str:
    if not call.args:
        if action != "show":
            raise CommandError(_USAGE[action])
        # HAProxy lists its tables newest first: the last declared on top.
        return "".join(head(t) for t in reversed(list(_tables(call).values())))
    table = _target(call, action)
    rest = call.args[1:]
    if rest and rest[0] == "key":
        return _per_key(call, table, action, rest)
    filters = []
    if rest and rest[0].startswith("data."):
        filters = _filters(table, rest, action)
    elif rest:
        raise CommandError(_USAGE[action])
    now = table.clock()
    if action == "show":
        out = [head(table)]
        if not _operator(call):
            out.append("# contents not dumped due to insufficient privileges\n")
            return "".join(out)
        servers = _servers_of(call, table)
        for entry in table:
            if table.lookup(entry.key, now) is entry and _matches(table, entry, filters, now):
                out.append(entry_line(table, entry, servers, now))
        return "".join(out)
    # clear: every entry not in use that the filters select
    for entry in table:
        if entry.refs == 0 and _matches(table, entry, filters, now):
            table.remove(entry.key)
    return ""


def _per_key(call: Call, table: StickTable, action: str, rest: tuple) -> str:
    if len(rest) < 2 or not rest[1]:
        raise CommandError("Key value expected")
    key = parse_key(table, rest[1])
    if not _operator(call):
        return ""
    now = table.clock()
    if action == "show":
        entry = table.lookup(key, now)
        if entry is None:
            return ""
        return head(table) + entry_line(table, entry, _servers_of(call, table), now)
    if action == "clear":
        entry = table.lookup(key, now)
        if entry is None:
            return ""
        if entry.refs:
            raise CommandError("Entry currently in use, cannot remove")
        table.remove(key)
        return ""
    entry = table.get(key, now)
    if entry is None:
        raise CommandError("Unable to allocate a new entry")
    args = rest[2:]
    for i in range(0, len(args), 2):
        word = args[i]
        if not word.startswith("data."):
            raise CommandError('"data.<type>" followed by a value expected')
        name = word[5:]
        if name not in DUMP_ORDER and name not in RATE_TYPES:
            raise CommandError("Unknown data type")
        if name not in table.store or name == "server_key":
            raise CommandError("Data type not stored in this table")
        try:
            value = int(args[i + 1]) if i + 1 < len(args) else None
        except ValueError:
            value = None
        if value is None:
            raise CommandError("Require a valid integer value to store")
        table.set(entry, name, value, now)
    return ""


@register("show table", "user", "show table <table> [<filter>]*",
          "report table usage stats or dump this table's contents (filter: data/key)")
def _show_table(call: Call) -> str:
    return _run(call, "show")


@register("clear table", "operator", "clear table <table> [<filter>]*",
          "remove an entry from a table (filter: data/key)")
def _clear_table(call: Call) -> str:
    return _run(call, "clear")


@register("set table", "operator", "set table <table> key <k> [data.* <v>]*",
          "update or create a table entry's data")
def _set_table(call: Call) -> str:
    return _run(call, "set")
