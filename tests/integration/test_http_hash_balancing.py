"""Hash balancing (`balance source|uri|hdr(NAME)|url_param(NAME)`, `hash:
map-based|consistent`), each case run against lbcore and haproxy 2.6 on the
same pool: requests with the same key stick to one server, keys spread over
the pool, and under consistent hashing a server that goes DOWN takes only
its own keys with it."""

from __future__ import annotations

import collections
import time

import pytest

from tests.haproxy import HaproxyProcess, http_cfg, need_haproxy
from tests.support import free_port, http_config

from .rawhttp import KeepAliveClient, no_crash_in_lbcore, start_backends, start_lbcore  # noqa: F401

NAMES = ["s1", "s2", "s3", "s4"]
KEYS = [f"k{i}" for i in range(40)]

# (lb.yaml balance, haproxy.cfg balance, how a key goes into a request)
ALGORITHMS = {
    "uri": ("uri", "uri", lambda k: dict(path=f"/echo/{k}?nonce={time.monotonic_ns()}")),
    "hdr": ("hdr(X-Tenant)", "hdr(X-Tenant)", lambda k: dict(path="/echo", headers={"X-Tenant": k})),
    "url_param": ("url_param(tenant)", "url_param tenant",
                  lambda k: dict(path=f"/echo?a=1&tenant={k}&b=2")),
    "source": ("source", "source", None),
}


@pytest.fixture(scope="module")
def pool():
    procs = start_backends(NAMES)
    yield procs
    for b in procs:
        b.stop()


def start_target(target, pool, start_lbcore, balance, hash_type):
    port = free_port()
    addresses = [b.address for b in pool]
    if target == "lbcore":
        config = http_config(addresses, port, balance=balance[0], backend={
            "hash": hash_type,
            "health": {"type": "http", "path": "/healthcheck", "interval": "100ms",
                       "rise": 1, "fall": 1}})
        return start_lbcore(config, wait_ports=[port]), port
    need_haproxy()
    extra = (f"    balance {balance[1]}\n    hash-type {hash_type}\n"
             "    option httpchk GET /healthcheck\n    timeout check 2s\n"
             "    default-server check inter 100 fall 1 rise 1")  # without timeout check, inter is the timeout
    proc = HaproxyProcess(http_cfg(port, addresses, extra_backend=extra)).start(wait_ports=[port])
    return proc, port


def server_for(port, algorithm, key):
    """One request for `key` on a fresh connection: the server's name."""
    make = ALGORITHMS[algorithm][2]
    if make is None:  # source: the key is the client's address
        client = KeepAliveClient(port, source=f"127.0.0.{10 + int(key[1:])}")
        server = client.get_server()
    else:
        client = KeepAliveClient(port)
        request = make(key)
        resp, _ = client.request("GET", request["path"], headers=request.get("headers"))
        assert resp.status == 200, resp.status
        server = resp.getheader("X-Server")
    client.close()
    return server


def placement(port, algorithm):
    return {key: server_for(port, algorithm, key) for key in KEYS}


@pytest.mark.parametrize("hash_type", ["map-based", "consistent"])
@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
@pytest.mark.parametrize("target", ["lbcore", "haproxy"])
def test_same_key_same_server_and_consistent_moves_only_the_lost_servers_keys(
        target, algorithm, hash_type, pool, start_lbcore):
    proc, port = start_target(target, pool, start_lbcore, ALGORITHMS[algorithm], hash_type)
    victim = None
    try:
        time.sleep(0.3)  # first health verdicts
        first = placement(port, algorithm)
        assert placement(port, algorithm) == first  # sticky, connection after connection
        spread = collections.Counter(first.values())
        assert len(spread) >= 3, spread  # the keys spread over the pool

        lost = spread.most_common(1)[0][0]
        victim = pool[NAMES.index(lost)]
        victim.set_health(503)
        deadline = time.monotonic() + 10  # marked DOWN after one probe (inter 100ms, fall 1)
        while True:
            time.sleep(0.3)
            after = placement(port, algorithm)
            if lost not in after.values() or time.monotonic() > deadline:
                break
        assert lost not in after.values()
        assert placement(port, algorithm) == after  # sticky again on the smaller pool
        if hash_type == "consistent":
            moved = {k for k in KEYS if after[k] != first[k]}
            assert moved == {k for k in KEYS if first[k] == lost}, (first, after)
    finally:
        if victim is not None:
            victim.set_health(None)
        proc.stop()


def test_a_request_without_the_header_is_balanced_round_robin(pool, start_lbcore):
    proc, port = start_target("lbcore", pool, start_lbcore, ALGORITHMS["hdr"], "consistent")
    time.sleep(0.3)
    client = KeepAliveClient(port)
    seen = [client.get_server() for _ in range(8)]
    client.close()
    assert collections.Counter(seen) == {name: 2 for name in NAMES}, seen
