"""Balancing algorithms: pure choices over candidates, checked on their
distributions (no sockets)."""

from collections import Counter

import pytest

from lbcore import balance


class S:
    def __init__(self, name, weight=1, cur=0):
        self.name, self.weight, self.cur_sessions = name, weight, cur

    def __repr__(self):
        return self.name


def picks(algo, servers, n, key=b""):
    return [algo.pick(servers, key).name for _ in range(n)]


def test_roundrobin_equal_weights_rotates_evenly():
    servers = [S("a"), S("b"), S("c")]
    seq = picks(balance.make("roundrobin"), servers, 300)
    assert Counter(seq) == {"a": 100, "b": 100, "c": 100}
    # Strict rotation: never the same server twice in a row.
    assert all(x != y for x, y in zip(seq, seq[1:]))


def test_roundrobin_smooth_weights():
    servers = [S("a", 5), S("b", 1), S("c", 1)]
    seq = picks(balance.make("roundrobin"), servers, 7)
    assert Counter(seq) == {"a": 5, "b": 1, "c": 1}
    # Smooth: a never takes five in a row (nginx's sequence a a b a c a a).
    assert "aaaaa" not in "".join(seq)
    assert Counter(picks(balance.make("roundrobin"), servers, 700)) == {"a": 500, "b": 100, "c": 100}


@pytest.mark.parametrize("weights", [(1, 2), (3, 7, 10), (256, 1), (2, 2, 1)])
def test_roundrobin_proportional_to_weight(weights):
    servers = [S(f"s{i}", w) for i, w in enumerate(weights)]
    total = sum(weights)
    counts = Counter(picks(balance.make("roundrobin"), servers, total * 20))
    assert counts == {f"s{i}": w * 20 for i, w in enumerate(weights)}


def test_roundrobin_survives_pool_changes():
    rr = balance.make("roundrobin")
    a, b, c = S("a", 2), S("b", 1), S("c", 1)
    picks(rr, [a, b, c], 10)
    counts = Counter(picks(rr, [a, c], 300))  # b left the pool
    assert counts == {"a": 200, "c": 100}


def test_leastconn_prefers_fewest_relative_to_weight():
    lc = balance.make("leastconn")
    a, b = S("a", weight=1, cur=3), S("b", weight=1, cur=1)
    assert lc.pick([a, b]).name == "b"
    # 4 sessions on weight 4 is lighter than 2 on weight 1.
    a, b = S("a", weight=4, cur=4), S("b", weight=1, cur=2)
    assert lc.pick([a, b]).name == "a"


def test_leastconn_ties_are_round_robin():
    lc = balance.make("leastconn")
    servers = [S("a"), S("b"), S("c")]
    assert Counter(picks(lc, servers, 300)) == {"a": 100, "b": 100, "c": 100}


def test_leastconn_fills_the_emptiest_as_sessions_grow():
    lc = balance.make("leastconn")
    servers = [S("a"), S("b"), S("c", cur=5)]
    for _ in range(10):
        lc.pick(servers).cur_sessions += 1
    assert [s.cur_sessions for s in servers] == [5, 5, 5]


def test_source_is_stable_per_client_and_spreads_clients():
    src = balance.make("source")
    servers = [S("a"), S("b"), S("c")]
    for ip in (b"10.0.0.1", b"10.0.0.2", b"192.168.1.77"):
        assert len(set(picks(src, servers, 20, ip))) == 1
    spread = Counter(src.pick(servers, b"10.0.%d.%d" % (i // 256, i % 256)).name for i in range(3000))
    assert set(spread) == {"a", "b", "c"}
    assert min(spread.values()) > 700  # roughly a third each


def test_source_honours_weights():
    src = balance.make("source")
    servers = [S("a", 3), S("b", 1)]
    spread = Counter(src.pick(servers, b"client-%d" % i).name for i in range(4000))
    assert 2600 < spread["a"] < 3400


def test_source_mapping_changes_only_when_pool_changes():
    src = balance.make("source")
    servers = [S("a"), S("b"), S("c")]
    before = {i: src.pick(servers, b"c%d" % i).name for i in range(100)}
    again = {i: src.pick(list(servers), b"c%d" % i).name for i in range(100)}
    assert before == again


def test_first_takes_declaration_order():
    first = balance.make("first")
    servers = [S("a"), S("b"), S("c")]
    assert set(picks(first, servers, 10)) == {"a"}
    assert first.pick(servers[1:]).name == "b"  # a full or down: next one


def test_unknown_algorithm_is_refused():
    with pytest.raises(KeyError):
        balance.make("random")
