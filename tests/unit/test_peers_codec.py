"""HAProxy's peers protocol encoding (lbcore/peers.py), without sockets."""

import pytest

from lbcore import peers
from lbcore.stick import StickTable


@pytest.mark.parametrize("value,encoded", [
    (0, b"\x00"), (239, b"\xef"), (240, b"\xf0\x00"), (2287, b"\xff\x7f"), (2288, b"\xf0\x80\x00"),
])
def test_varints_as_haproxy_writes_them(value, encoded):
    assert peers.intencode(value) == encoded
    assert peers.intdecode(encoded, 0, len(encoded)) == (value, len(encoded))


def test_varints_round_trip_and_truncation():
    for value in (0, 1, 239, 240, 2287, 2288, 264431, 264432, 33818863, 2**32 - 1, 2**40 + 7):
        data = peers.intencode(value)
        assert peers.intdecode(data + b"zz", 0, len(data)) == (value, len(data))
        with pytest.raises(peers.ProtocolError):
            peers.intdecode(data[:-1], 0, len(data) - 1)


class Server:
    def __init__(self, name, puid):
        self.name, self.puid = name, puid


def test_a_table_definition_and_update_carry_an_entry_to_the_other_side():
    store = {"http_req_rate": 10_000, "http_req_cnt": None, "conn_cur": None}
    mine = StickTable("be", "ip", 100, expire_ms=60_000, store=store, clock=lambda: 50_000)
    mine.sticky = True
    theirs = StickTable("be", "ip", 100, expire_ms=60_000, store=store, clock=lambda: 80_000)
    theirs.sticky = True
    entry = mine.stick("10.1.2.3", 2, now=40_000)
    for t in (41_000, 42_000, 45_000):
        mine.http_request(entry, t)
    entry.conn_cur = 5
    define = peers.define_message(mine, 1)
    update = peers.update_message(mine, entry, 1, 50_000, {2: "s2"})
    # Framing: class, type, varint length, data.
    assert define[:2] == bytes((peers.CLASS_TABLE, peers.MSG_DEFINE))
    length, start = peers.intdecode(define, 2, len(define))
    remote_id, remote = peers.parse_define(define[start:start + length], {"be": theirs})
    assert remote_id == 1 and remote.table is theirs
    length, start = peers.intdecode(update, 2, len(update))
    peers.apply_update(remote, update[start:start + length], True, True, 80_000,
                       {"s2": Server("s2", 7)})
    got = theirs.lookup("10.1.2.3", now=80_000)
    assert got.server_id == 7  # found by the server's name, as HAProxy does
    assert got.http_req_cnt == 3
    assert got.conn_cur == 0  # conn_cur is local to each node
    # The rate kept its age: read 5s after the last event on both sides.
    assert theirs.read(got, "http_req_rate", 80_000) == mine.read(entry, "http_req_rate", 50_000) == 3


def test_a_mismatched_definition_is_ignored_not_misread():
    mine = StickTable("be", "ipv6", 100)
    theirs = StickTable("be", "ip", 100)
    define = peers.define_message(mine, 3)
    length, start = peers.intdecode(define, 2, len(define))
    _, remote = peers.parse_define(define[start:start + length], {"be": theirs})
    assert remote.table is None


def test_string_and_integer_keys():
    for table_type, key in (("string", "alice"), ("integer", 4242)):
        table = StickTable("t", table_type, 10, store={"http_req_cnt": None})
        data = peers.encode_key(table, key)
        assert peers.decode_key(table, data, 0, len(data)) == (key, len(data))
