"""The loader's quick readings give what its full ones give.

A large config is thousands of small mappings, nearly all of them plain:
mapping() takes one whose keys are all known and written once without
the checks of its full reading (_known_entries), read() parses only the
keys a mapping has rather than asking for every key it may have, and a
server of a name and an address alone is made straight from the two
(_Builder.plain_server).
Over varied configs, valid and broken (unknown, repeated and merged keys,
keys that are not scalars, bad values side by side on one line), turning
the quick reading off, or reading key by key with get(), must give the
same specs and the same problems, in the same order.
"""

import gc
import random

from lbcore import config
from lbcore.config import ConfigError, loads

SERVER = {
    "name": ["s0", "s1", "'bad name'", "1", "null"],
    "address": ["'10.0.0.2:8080'", "'127.0.0.1:80'", "'*:80'", "x", "[a]"],
    "weight": ["1", "0", "300", "x"],
    "backup": ["true", "no", "2"],
    "maxconn": ["10", "null", "0"],
    "check": ["false", "x"],
    "send_proxy": ["v1", "v2", "v3", "null"],
    "cookie": ["A", "B", "'b c'", "null"],
    "disabled": ["true", "1"],
    "wieght": ["1"],
}
FRONTEND = {
    "mode": ["http", "tcp", "udp"],
    "maxconn": ["100", "-1"],
    "forwarded_for": ["false", "maybe"],
    "forwarded_proto": ["true", "{}"],
    "forwarded_for_except": ["127.0.0.0/8", "nonsense"],
    "monitor_uri": ["/_up", "up", "null"],
    "stick_table": ["{type: string, size: 10}", "{size: 0}"],
    "bnd": ["x"],
}
BACKEND = {
    "mode": ["http", "tcp", "udp"],
    "balance": ["roundrobin", "leastconn", "uri", "rundrobin"],
    "retries": ["0", "2", "-1"],
    "redispatch": ["false", "x"],
    "hash": ["consistent", "ring"],
    "pool_max_conn": ["0", "null", "x"],
    "pool_purge_delay": ["1s", "soon"],
    "on_marked_down": ["shutdown_sessions", "null", "x"],
    "all_backups": ["true", "3"],
    "cookie": ["SRV", "{name: SRV, mode: rewrite}", "'bad cookie'"],
    "stick_table": ["{type: ip, size: 1k}", "{type: ipv5}"],
    "stick_on": ["src", "req.hdr(x)"],
    "retry": ["1"],
}
HEALTH = {
    "type": ["tcp", "http", "mysql", "icmp"],
    "interval": ["2s", "0"],
    "timeout": ["1s", "x"],
    "rise": ["2", "0"],
    "fall": ["3"],
    "port": ["8080", "70000"],
    "path": ["/health", "health"],
    "user": ["haproxy"],
    "expect_status": ["200", "[200, '3xx']", "'6xx'"],
    "intreval": ["2s"],
}


def value(rng: random.Random, values: list) -> str:
    """Most often the first (a valid value), else any."""
    return values[0] if rng.random() < 0.9 else rng.choice(values)


def flow(rng: random.Random, choices: dict, keys: list, extra: int) -> str:
    """A flow mapping of `keys` and up to `extra` others, now and then with
    a key written twice, a merge key or a key that is not a scalar."""
    keys = keys + rng.sample(sorted(choices), rng.randint(0, extra))
    items = [f"{key}: {value(rng, choices[key])}" for key in keys]
    roll = rng.random()
    if roll < 0.04 and keys:
        items.append(f"{keys[0]}: {rng.choice(choices[keys[0]])}")
    elif roll < 0.08:
        items.insert(0, "<<: *common")
    elif roll < 0.09:
        items.append("[a, b]: 1")
    rng.shuffle(items)
    return "{" + ", ".join(items) + "}"


def document(rng: random.Random) -> str:
    count = rng.randint(1, 3)
    lines = ["x-common: &common {weight: 2, check: false}", "frontends:"]
    for i in range(count):
        backend = f"be{i}" if rng.random() < 0.95 else "nope"
        keys = [f"bind: '127.0.0.1:{20000 + i}'", f"backend: {backend}"]
        lines.append(f"  fe{i}: {{{', '.join(keys)}}}" if rng.random() < 0.8 else
                     f"  fe{i}: " + flow(rng, FRONTEND, [], 2)[:-1] + f", {', '.join(keys)}}}")
    lines.append("backends:")
    for i in range(count):
        lines.append(f"  be{i}:")
        for key in rng.sample(sorted(BACKEND), rng.choice([0, 0, 1, 2])):
            lines.append(f"    {key}: {value(rng, BACKEND[key])}")
        if rng.random() < 0.7:
            lines.append("    health: " + flow(rng, HEALTH, ["type"], 3))
        lines.append("    servers:")
        for index in range(rng.randint(0, 3)):
            required = [key for key in ("name", "address") if rng.random() < 0.97]
            lines.append("      - " + flow(rng, SERVER, required, rng.choice([0, 0, 0, 1, 3])).replace(
                "name: s0", f"name: s{index}"))
    return "\n".join(lines) + "\n"


DOCUMENTS = [document(random.Random(seed)) for seed in range(300)]


def outcome(text: str):
    try:
        return loads(text, "lb.yaml")
    except ConfigError as exc:
        return exc.problems


def test_the_corpus_holds_valid_and_broken_configs():
    outcomes = [outcome(text) for text in DOCUMENTS]
    valid = sum(isinstance(result, config.Config) for result in outcomes)
    assert 40 <= valid <= len(DOCUMENTS) - 40, valid


def test_known_entries_give_what_the_full_reading_gives(monkeypatch):
    quick = [outcome(text) for text in DOCUMENTS]
    monkeypatch.setattr(config, "_known_entries", lambda node, known: None)
    full = [outcome(text) for text in DOCUMENTS]
    for text, a, b in zip(DOCUMENTS, quick, full):
        assert a == b, text


def test_plain_servers_give_what_the_full_reading_gives(monkeypatch):
    quick = [outcome(text) for text in DOCUMENTS]
    monkeypatch.setattr(config._Builder, "plain_server", lambda self, node, maxconn: None)
    full = [outcome(text) for text in DOCUMENTS]
    for text, a, b in zip(DOCUMENTS, quick, full):
        assert a == b, text


def test_sections_without_features_give_what_reading_them_gives(monkeypatch):
    quick = [outcome(text) for text in DOCUMENTS]
    monkeypatch.setattr(config, "_FEATURE_KEYS", frozenset(config._FRONTEND_KEYS + config._BACKEND_KEYS))
    full = [outcome(text) for text in DOCUMENTS]
    for text, a, b in zip(DOCUMENTS, quick, full):
        assert a == b, text


def test_read_gives_what_a_get_per_key_gives(monkeypatch):
    def key_by_key(self, mapping, parsers, **defaults):
        values = dict(defaults)
        for key, parse in parsers.items():
            value = self.get(mapping, key, parse, _ABSENT)
            if value is not _ABSENT:
                values[key] = value
        return values

    quick = [outcome(text) for text in DOCUMENTS]
    monkeypatch.setattr(config._Reader, "read", key_by_key)
    full = [outcome(text) for text in DOCUMENTS]
    for text, a, b in zip(DOCUMENTS, quick, full):
        assert a == b, text


_ABSENT = object()


def test_bad_values_on_one_line_are_reported_in_reading_order():
    # Same line, so file order cannot sort them: the order is the reading's.
    problems = outcome("frontends: {fe: {bind: '127.0.0.1:20000', backend: be}}\n"
                       "backends: {be: {servers: [{disabled: 1, name: s0, cookie: 'a b', weight: x, "
                       "address: '*:80', maxconn: 0}]}}\n")
    assert [problem.split(": ")[1] for problem in problems] == [
        "backends.be.servers[0].maxconn", "backends.be.servers[0].address", "backends.be.servers[0].weight",
        "backends.be.servers[0].cookie", "backends.be.servers[0].disabled"], problems


def test_a_repeated_server_is_one_spec():
    loaded = loads("frontends: {fe: {bind: '127.0.0.1:20000', backend: a}}\n"
                   "backends:\n"
                   "  a: {servers: [{name: s1, address: '10.0.0.1:80'}, {name: s2, address: '10.0.0.1:80'}]}\n"
                   "  b: {servers: [{name: s1, address: '10.0.0.1:80'}, {name: s2, address: '10.0.0.1:80', "
                   "weight: 1}]}\n"
                   "  c: {maxconn: 5, servers: [{name: s1, address: '10.0.0.1:80'}]}\n")
    a, b, c = (loaded.backends[name].servers for name in "abc")
    assert a[0] is b[0] and a[0].address is a[1].address  # immutable, so shared
    assert a[1] == b[1] and a[1] is not b[1]  # (the second read in full)
    assert c[0] == config.ServerSpec("s1", config.Address("10.0.0.1", 80), maxconn=5) != a[0]


def test_a_load_leaves_no_cycles_behind():
    # The parsers a load makes once refer back to its reader and builder;
    # left as cycles, the reader, the builder and the nodes they hold would
    # wait for a garbage collection (disabled while a config is read).
    gc.collect()
    gc.disable()
    try:
        for text in DOCUMENTS[:20]:
            outcome(text)
        assert gc.collect() == 0
    finally:
        gc.enable()
