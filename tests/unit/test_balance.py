"""Balancing algorithms: pure choices over candidates, checked on their
distributions and on what a pool change disturbs (no sockets)."""

from collections import Counter

import pytest

from lbcore import balance


class S:
    def __init__(self, name, weight=1, cur=0, maxconn=0):
        self.name, self.weight, self.cur_sessions, self.maxconn = name, weight, cur, maxconn

    def has_room(self):
        return self.maxconn == 0 or self.cur_sessions < self.maxconn

    def __repr__(self):
        return self.name


def make(name, servers, hash_type="map-based"):
    algo = balance.make(name, hash_type)
    algo.update(servers)
    return algo


def picks(algo, n, key=None):
    return [algo.pick(key).name for _ in range(n)]


def test_roundrobin_equal_weights_rotates_evenly():
    seq = picks(make("roundrobin", [S("a"), S("b"), S("c")]), 300)
    assert Counter(seq) == {"a": 100, "b": 100, "c": 100}
    # Strict rotation: never the same server twice in a row.
    assert all(x != y for x, y in zip(seq, seq[1:]))


def test_roundrobin_smooth_weights():
    servers = [S("a", 5), S("b", 1), S("c", 1)]
    seq = picks(make("roundrobin", servers), 7)
    assert Counter(seq) == {"a": 5, "b": 1, "c": 1}
    # Smooth: a never takes five in a row.
    assert "aaaaa" not in "".join(seq)
    assert Counter(picks(make("roundrobin", servers), 700)) == {"a": 500, "b": 100, "c": 100}


@pytest.mark.parametrize("weights", [(1, 2), (3, 7, 10), (256, 1), (2, 2, 1), (1,) * 499 + (2,)])
def test_roundrobin_proportional_to_weight(weights):
    servers = [S(f"s{i}", w) for i, w in enumerate(weights)]
    total = sum(weights)
    counts = Counter(picks(make("roundrobin", servers), total * 20))
    assert counts == {f"s{i}": w * 20 for i, w in enumerate(weights)}


def test_roundrobin_longer_cycles_than_the_precomputed_limit():
    """A cycle longer than CYCLE_LIMIT turns comes from the heap as it
    goes: the same proportions and smoothness."""
    weights = (256,) * (balance.CYCLE_LIMIT // 256) + (3, 1)
    assert sum(weights) > balance.CYCLE_LIMIT
    servers = [S(f"s{i}", w) for i, w in enumerate(weights)]
    seq = picks(make("roundrobin", servers), sum(weights) * 2)
    assert Counter(seq) == {f"s{i}": w * 2 for i, w in enumerate(weights)}
    short = [S("a", 5), S("b", 1), S("c", 1)]
    assert picks(make("roundrobin", short), 14) == list("aaabcaa") * 2


def test_the_key_mix_is_the_same_in_both_builds():
    # Fixed values: the compiled build computes in C unsigned ints.
    assert [balance.mix32(x) for x in (0, 1, 0xFFFFFFFF, 123456789, 0x80000000)] == [
        1800329511, 3028713910, 4268016002, 3651903009, 2122005522]
    assert balance.key_hash(b"/v2/images/1") == 2477138464


def test_roundrobin_survives_pool_changes():
    a, b, c = S("a", 2), S("b", 1), S("c", 1)
    rr = make("roundrobin", [a, b, c])
    picks(rr, 10)
    rr.update([a, c])  # b left the pool
    assert Counter(picks(rr, 300)) == {"a": 200, "c": 100}


def test_roundrobin_skips_excluded_and_full_servers():
    a, b, c = S("a"), S("b", maxconn=1, cur=1), S("c")
    rr = make("roundrobin", [a, b, c])
    seen = Counter(rr.pick(None, None, True).name for _ in range(100))
    assert set(seen) == {"a", "c"}
    assert {rr.pick(None, (a,), True).name for _ in range(10)} == {"c"}
    assert rr.pick(None, (a, c), True) is None
    heavy = S("h", 256, maxconn=1, cur=1)
    light = S("l", 1)
    rr = make("roundrobin", [heavy, light])
    assert rr.pick(None, None, True) is light  # not hidden behind the heavy one's turns


def test_leastconn_prefers_fewest_relative_to_weight():
    a, b = S("a", weight=1, cur=3), S("b", weight=1, cur=1)
    assert make("leastconn", [a, b]).pick().name == "b"
    # 4 sessions on weight 4 is lighter than 2 on weight 1.
    a, b = S("a", weight=4, cur=4), S("b", weight=1, cur=2)
    assert make("leastconn", [a, b]).pick().name == "a"


def test_leastconn_ties_are_round_robin():
    lc = make("leastconn", [S("a"), S("b"), S("c")])
    seq = picks(lc, 300)
    assert Counter(seq) == {"a": 100, "b": 100, "c": 100}
    assert all(x != y for x, y in zip(seq, seq[1:]))


def test_leastconn_fills_the_emptiest_as_sessions_grow():
    servers = [S("a"), S("b"), S("c", cur=5)]
    lc = make("leastconn", servers)
    for _ in range(10):
        server = lc.pick()
        server.cur_sessions += 1
        lc.load_changed(server)
    assert [s.cur_sessions for s in servers] == [5, 5, 5]


def test_leastconn_follows_sessions_ending_anywhere_in_a_large_pool():
    servers = [S(f"s{i}", cur=10) for i in range(500)]
    lc = make("leastconn", servers)
    for i in (417, 3, 250):
        servers[i].cur_sessions = 2
        lc.load_changed(servers[i])
    first = [lc.pick().name for _ in range(3)]
    assert sorted(first) == ["s250", "s3", "s417"]
    servers[99].cur_sessions = 0
    lc.load_changed(servers[99])
    assert lc.pick().name == "s99"
    lc.load_changed(S("stranger"))  # a server no longer in the pool: ignored


def test_leastconn_equal_loads_of_different_weights_take_turns():
    # 1 session on weight 1 weighs as 2 on weight 2: equals take turns
    # whatever their weights (HAProxy compares sessions/weight only).
    a, b = S("a", weight=1, cur=1), S("b", weight=2, cur=2)
    lc = make("leastconn", [a, b, S("c", weight=1, cur=3)])
    assert picks(lc, 4) == ["a", "b", "a", "b"]


def test_leastconn_follows_jumps_far_above_and_back():
    servers = [S(f"s{i}", cur=1) for i in range(4)]
    lc = make("leastconn", servers)
    servers[2].cur_sessions = 10_000  # beyond every queue it had: they grow
    lc.load_changed(servers[2])
    assert "s2" not in picks(lc, 6)
    for s in servers:
        if s is not servers[2]:
            s.cur_sessions = 20_000
            lc.load_changed(s)
    assert picks(lc, 2) == ["s2", "s2"]
    servers[2].cur_sessions = 0
    lc.load_changed(servers[2])
    assert lc.pick().name == "s2"


def test_leastconn_skips_excluded():
    a, b = S("a", cur=0), S("b", cur=5)
    lc = make("leastconn", [a, b])
    assert lc.pick(None, (a,)).name == "b"


def test_leastconn_reorders_when_a_weight_changes():
    a, b = S("a", weight=1, cur=2), S("b", weight=1, cur=1)
    lc = make("leastconn", [a, b])
    assert lc.pick().name == "b"
    a.weight = 4  # a reweight reaches the balancer as an update (Backend.server_changed)
    lc.update([a, b])
    assert lc.pick().name == "a"  # 2/4 < 1/1
    a.weight = 1
    lc.update([a, b])
    assert lc.pick().name == "b"


def test_leastconn_server_down_then_up_with_its_sessions():
    a, b, c = S("a"), S("b"), S("c")
    lc = make("leastconn", [a, b, c])
    lc.update([a, c])  # b went DOWN
    for _ in range(4):
        server = lc.pick()
        assert server is not b
        server.cur_sessions += 1
        lc.load_changed(server)
    b.cur_sessions = 5  # sessions it kept while DOWN; their ends went unseen
    lc.load_changed(b)  # not a candidate: ignored
    lc.update([a, b, c])  # back UP: its load is read again
    assert {lc.pick().name for _ in range(6)} == {"a", "c"}
    b.cur_sessions = 0
    lc.load_changed(b)
    assert lc.pick() is b


def test_leastconn_skips_full_servers_to_the_next_lightest():
    a, b, c = S("a", maxconn=1, cur=1), S("b", cur=3), S("c", cur=2)
    lc = make("leastconn", [a, b, c])
    assert lc.pick().name == "a"  # no limit asked: the lightest
    assert lc.pick(None, None, True).name == "c"
    assert lc.pick(None, (c,), True).name == "b"
    assert lc.pick(None, (b, c), True) is None
    assert lc.pick(None, None, False).name == "a"


def test_leastconn_empty_pool():
    lc = make("leastconn", [])
    assert lc.pick() is None
    assert lc.pick(None, None, True) is None


@pytest.mark.parametrize("seed", range(6))
def test_leastconn_picks_as_the_plain_definition(seed):
    """The queues give exactly what the definition says: the lowest
    sessions/weight among acceptable servers, and among equals the one
    that moved (was picked, or changed load) longest ago; checked against
    a brute-force model through random sessions, exclusions, full
    servers, reweights and servers leaving and coming back."""
    import random
    rng = random.Random(seed)
    pool = [S(f"s{i}", rng.choice((1, 1, 2, 3, 7)), 0, rng.choice((0, 0, 0, 2))) for i in range(30)]
    lc = balance.make("leastconn")
    stamp, clock = {}, [0]

    def key(s):
        return s.cur_sessions * balance.LOAD_SCALE // s.weight

    def update(candidates):
        lc.update(candidates)
        stamp.clear()
        stamp.update({s: i for i, s in enumerate(candidates)})
        clock[0] = len(candidates)
        loads.clear()
        loads.update({s: key(s) for s in candidates})

    def moved(s):
        stamp[s] = clock[0]
        clock[0] += 1

    def changed(s):
        lc.load_changed(s)
        if s in stamp and key(s) != loads[s]:
            loads[s] = key(s)
            moved(s)

    loads = {}
    candidates = list(pool)
    update(candidates)
    for _ in range(3000):
        op = rng.random()
        if op < 0.55:
            exclude = tuple(rng.sample(candidates, rng.randint(1, 3))) if candidates and rng.random() < 0.2 else None
            limited = rng.random() < 0.5
            ok = [s for s in candidates
                  if (exclude is None or s not in exclude) and (not limited or s.has_room())]
            want = min(ok, key=lambda s: (loads[s], stamp[s])) if ok else None
            got = lc.pick(None, exclude, limited)
            assert got is want
            if got is not None:
                moved(got)
                got.cur_sessions += 1
                changed(got)
        elif op < 0.9:
            busy = [s for s in pool if s.cur_sessions]
            if busy:
                s = rng.choice(busy)
                s.cur_sessions -= 1
                changed(s)
        elif op < 0.95:
            rng.choice(pool).weight = rng.choice((1, 2, 5))
            update(candidates)
        else:
            candidates = [s for s in pool if rng.random() < 0.8]
            update(candidates)


def test_first_takes_declaration_order():
    servers = [S("a"), S("b"), S("c")]
    first = make("first", servers)
    assert set(picks(first, 10)) == {"a"}
    servers[0].maxconn = servers[0].cur_sessions = 1  # a is full: next one
    assert first.pick(None, None, True).name == "b"
    assert first.pick(None, (servers[1],), True).name == "c"


HASHES = [("source", "map-based"), ("source", "consistent"),
          ("uri", "map-based"), ("hdr(X-Tenant)", "consistent")]


@pytest.mark.parametrize("name,hash_type", HASHES)
def test_hash_is_stable_per_key_and_spreads_keys(name, hash_type):
    algo = make(name, [S("a"), S("b"), S("c")], hash_type)
    for ip in (b"10.0.0.1", b"10.0.0.2", b"192.168.1.77"):
        assert len(set(picks(algo, 20, ip))) == 1
    spread = Counter(algo.pick(b"10.0.%d.%d" % (i // 256, i % 256)).name for i in range(3000))
    assert set(spread) == {"a", "b", "c"}
    assert min(spread.values()) > 700  # roughly a third each


@pytest.mark.parametrize("hash_type", balance.HASH_TYPES)
def test_hash_honours_weights(hash_type):
    algo = make("source", [S("a", 3), S("b", 1)], hash_type)
    spread = Counter(algo.pick(b"client-%d" % i).name for i in range(4000))
    assert 2600 < spread["a"] < 3400


@pytest.mark.parametrize("hash_type", balance.HASH_TYPES)
def test_hash_mapping_changes_only_when_pool_changes(hash_type):
    servers = [S("a"), S("b"), S("c")]
    algo = make("source", servers, hash_type)
    before = {i: algo.pick(b"c%d" % i).name for i in range(100)}
    algo.update(list(servers))
    assert before == {i: algo.pick(b"c%d" % i).name for i in range(100)}


def test_consistent_hash_moves_only_the_departed_servers_keys():
    servers = [S(f"s{i}") for i in range(10)]
    algo = make("uri", servers, "consistent")
    keys = [b"/v2/images/%d" % i for i in range(5000)]
    before = {k: algo.pick(k).name for k in keys}
    algo.update([s for s in servers if s.name != "s4"])
    after = {k: algo.pick(k).name for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert moved and all(before[k] == "s4" for k in moved)
    assert len(moved) == sum(1 for k in keys if before[k] == "s4")
    algo.update(servers)  # back: everything as it was
    assert before == {k: algo.pick(k).name for k in keys}


def test_map_based_hash_remaps_on_removal_as_haproxy():
    servers = [S(f"s{i}") for i in range(10)]
    algo = make("source", servers)
    keys = [b"10.1.%d.%d" % (i // 256, i % 256) for i in range(2000)]
    before = {k: algo.pick(k).name for k in keys}
    algo.update(servers[:-1])
    moved = sum(1 for k in keys if before[k] != algo.pick(k).name)
    assert moved > len(keys) // 2  # modulo hashing: most keys move


def test_consistent_hash_skips_excluded_to_the_next_point():
    servers = [S("a"), S("b"), S("c")]
    algo = make("source", servers, "consistent")
    owner = algo.pick(b"k")
    other = algo.pick(b"k", (owner,))
    assert other is not owner and algo.pick(b"k", (owner,)) is other


def test_hash_without_a_key_is_round_robin():
    algo = make("hdr(X-Tenant)", [S("a"), S("b")])
    assert Counter(picks(algo, 10, None)) == {"a": 5, "b": 5}


def test_request_keys():
    head = b"GET /a/b?x=1&tenant=t7&y= HTTP/1.1\r\nHost: h\r\nX-Tenant:  acme \r\n\r\n"
    url = b"/a/b?x=1&tenant=t7&y="
    assert balance.request_key("uri", None, url, head, b"1.2.3.4") == b"/a/b"
    assert balance.request_key("source", None, url, head, b"1.2.3.4") == b"1.2.3.4"
    assert balance.request_key("hdr", "x-tenant", url, head, b"") == b"acme"
    assert balance.request_key("hdr", "X-Missing", url, head, b"") is None
    assert balance.request_key("url_param", "tenant", url, head, b"") == b"t7"
    assert balance.request_key("url_param", "y", url, head, b"") is None
    assert balance.request_key("url_param", "z", url, head, b"") is None
    assert balance.request_key("roundrobin", None, url, head, b"") is None


def test_parse_and_unknown_algorithm():
    assert balance.parse("hdr(X-Tenant)") == ("hdr", "X-Tenant")
    assert balance.parse("url_param(id)") == ("url_param", "id")
    for bad in ("random", "hdr()", "hdr", "uri(x)"):
        with pytest.raises(ValueError):
            balance.parse(bad)
    with pytest.raises(KeyError):
        balance.make("random")


def test_the_first_interface_still_picks_among_given_candidates():
    """pick(candidates, client_key), the interface before update(): the
    same distributions, loads read again at each call."""
    rr = balance.make("roundrobin")
    a, b, c = S("a", 2), S("b", 1), S("c", 1)
    assert Counter(rr.pick([a, b, c]).name for _ in range(40)) == {"a": 20, "b": 10, "c": 10}
    assert Counter(rr.pick([a, c]).name for _ in range(30)) == {"a": 20, "c": 10}
    lc = balance.make("leastconn")
    servers = [S("x"), S("y"), S("z", cur=5)]
    for _ in range(10):
        lc.pick(servers).cur_sessions += 1
    assert [s.cur_sessions for s in servers] == [5, 5, 5]
    src = balance.make("source")
    assert len({src.pick([a, b, c], b"10.0.0.1").name for _ in range(5)}) == 1
    assert balance.make("first").pick([b, c]).name == "b"
