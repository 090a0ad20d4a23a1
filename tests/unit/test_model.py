"""Runtime model: which servers take new work, and what a reload keeps."""

from lbcore.config import loads
from lbcore.model import DOWN, DRAIN, MAINT, NOLB, READY, UP, Runtime


def runtime(servers_yaml, balance="roundrobin", health="none"):
    text = f"""
frontends:
  web: {{bind: "127.0.0.1:8080", mode: http, backend: pool}}
backends:
  pool:
    mode: http
    balance: {balance}
    health: {{type: {health}}}
    servers:
{servers_yaml}
"""
    return Runtime.build(loads(text))


SERVERS = """      - {name: a, address: "127.0.0.1:1"}
      - {name: b, address: "127.0.0.1:2"}
      - {name: k, address: "127.0.0.1:3", backup: true}
"""


def names(backend, n=30):
    return {backend.pick(b"x").name for _ in range(n)}


def test_backups_serve_only_while_no_primary_is_up():
    rt = runtime(SERVERS, health="tcp")
    pool = rt.backends["pool"]
    assert names(pool) == {"a", "b"}
    pool.by_name["a"].set_health(False, "L4CON")
    assert names(pool) == {"b"}
    pool.by_name["b"].set_health(False, "L4CON")
    assert names(pool) == {"k"}
    pool.by_name["a"].set_health(True, "L7OK")
    assert names(pool) == {"a"}


def test_only_the_first_usable_backup_serves_unless_all_backups():
    backups = """      - {name: a, address: "127.0.0.1:1"}
      - {name: k1, address: "127.0.0.1:2", backup: true}
      - {name: k2, address: "127.0.0.1:3", backup: true}
"""
    pool = runtime(backups, health="tcp").backends["pool"]
    pool.by_name["a"].set_health(False, "L4CON")
    assert names(pool) == {"k1"}  # HAProxy: the first usable backup takes everything
    pool.by_name["k1"].set_health(False, "L4CON")
    assert names(pool) == {"k2"}
    rt = Runtime.build(loads(f"""
frontends:
  web: {{bind: "127.0.0.1:8080", mode: http, backend: pool}}
backends:
  pool:
    mode: http
    health: {{type: tcp}}
    all_backups: true
    servers:
{backups}
"""))
    pool = rt.backends["pool"]
    pool.by_name["a"].set_health(False, "L4CON")
    assert names(pool) == {"k1", "k2"}


def test_weight_zero_drain_and_maint_take_nothing_new():
    rt = runtime(SERVERS)
    pool = rt.backends["pool"]
    a, b = pool.by_name["a"], pool.by_name["b"]
    a.set_weight(0)
    assert a.status == NOLB and names(pool) == {"b"}
    a.set_weight(1)
    a.set_admin(DRAIN)
    assert a.status == DRAIN and names(pool) == {"b"}
    b.set_admin(MAINT)
    assert b.status == MAINT and names(pool) == {"k"}  # only the backup is left
    a.set_admin(READY)
    b.set_admin(READY)
    assert names(pool) == {"a", "b"}


def test_unchecked_server_is_always_up():
    rt = runtime(SERVERS)
    assert all(s.status == UP for s in rt.backends["pool"].servers)


def test_full_servers_are_skipped_and_none_when_all_are_full():
    rt = runtime("""      - {name: a, address: "127.0.0.1:1", maxconn: 1}
      - {name: b, address: "127.0.0.1:2", maxconn: 1}
""")
    pool = rt.backends["pool"]
    first = pool.pick(b"")
    first.cur_sessions += 1
    second = pool.pick(b"")
    assert second is not first
    second.cur_sessions += 1
    assert pool.pick(b"") is None
    assert pool.candidates  # usable, merely full: the caller queues


def test_pick_excludes_tried_servers():
    rt = runtime(SERVERS)
    pool = rt.backends["pool"]
    a = pool.by_name["a"]
    assert {pool.pick(b"", {a}).name for _ in range(10)} == {"b"}
    assert pool.pick(b"", {a, pool.by_name["b"]}) is None


def test_listeners_hear_every_change():
    rt = runtime(SERVERS, health="tcp")
    pool = rt.backends["pool"]
    heard = []
    pool.listeners.append(lambda s: heard.append((s.name, s.status)))
    pool.by_name["a"].set_health(False, "L4CON")
    pool.by_name["a"].set_health(False, "L4CON")  # no flip, no event
    pool.by_name["b"].set_admin(DRAIN)
    assert heard == [("a", DOWN), ("b", DRAIN)]


def test_reload_keeps_surviving_servers_state_and_counters():
    rt = runtime(SERVERS, health="tcp")
    pool = rt.backends["pool"]
    a = pool.by_name["a"]
    a.total_sessions = 42
    a.set_health(False, "L4CON")
    a.set_weight(7)  # an admin's reweight
    text = """
frontends:
  web: {bind: "127.0.0.1:8080", mode: http, backend: pool}
backends:
  pool:
    mode: http
    health: {type: tcp}
    servers:
      - {name: a, address: "127.0.0.1:1", weight: 3}
      - {name: c, address: "127.0.0.1:4"}
"""
    rt2 = Runtime.build(loads(text), previous=rt)
    pool2 = rt2.backends["pool"]
    assert pool2 is pool and rt2.frontends["web"] is rt.frontends["web"]
    assert pool2.by_name["a"] is a
    assert a.total_sessions == 42 and a.status == DOWN and a.weight == 7
    assert set(pool2.by_name) == {"a", "c"}
    assert names(pool2) == {"c"}


def test_changed_address_is_a_new_server():
    rt = runtime(SERVERS)
    a = rt.backends["pool"].by_name["a"]
    a.total_sessions = 5
    text = """
frontends:
  web: {bind: "127.0.0.1:8080", mode: http, backend: pool}
backends:
  pool:
    mode: http
    servers:
      - {name: a, address: "127.0.0.1:9"}
"""
    rt2 = Runtime.build(loads(text), previous=rt)
    assert rt2.backends["pool"].by_name["a"] is not a
    assert rt2.backends["pool"].by_name["a"].total_sessions == 0


def test_disabled_server_starts_in_maint_and_a_reload_follows_the_config_change_only():
    def build(flags, previous=None):
        servers = "".join(f'      - {{name: {n}, address: "127.0.0.1:{i}", disabled: {str(d).lower()}}}\n'
                          for i, (n, d) in enumerate(flags.items(), 1))
        text = f"""
frontends:
  web: {{bind: "127.0.0.1:8080", mode: http, backend: pool}}
backends:
  pool:
    mode: http
    servers:
{servers}"""
        return Runtime.build(loads(text), previous=previous)

    rt = build({"a": False, "b": True, "c": True})
    pool = rt.backends["pool"]
    a, b, c = (pool.by_name[n] for n in "abc")
    assert (a.status, b.status, c.status) == (UP, MAINT, MAINT)
    assert names(pool) == {"a"}
    c.set_admin(READY)  # an operator enables c (runtime API, stats page)
    rt = build({"a": True, "b": False, "c": True}, previous=rt)
    # a and b changed in the config: it decides; c did not: the operator's READY stays.
    assert (a.status, b.status, c.status) == (MAINT, UP, UP)
    assert names(pool) == {"b", "c"}


def test_leastconn_through_the_model_sessions_health_backups_and_maxconn():
    rt = runtime("""      - {name: a, address: "127.0.0.1:1", maxconn: 2}
      - {name: b, address: "127.0.0.1:2"}
      - {name: c, address: "127.0.0.1:3"}
      - {name: k, address: "127.0.0.1:4", backup: true}
""", balance="leastconn", health="tcp")
    pool = rt.backends["pool"]
    a, b, c, k = (pool.by_name[n] for n in "abck")
    for server in (a, a, b):
        server.session_start()
    assert pool.pick(b"") is c  # the only idle one
    c.session_start()
    a.session_end()
    # a, b and c have one session each: the tie goes to the one whose load
    # moved longest ago (b), and a pick sends it behind the others.
    assert [pool.pick(b"") for _ in range(3)] == [b, c, a]
    a.session_start()  # a is full now (maxconn 2): skipped
    assert {pool.pick(b"") for _ in range(4)} == {b, c}
    b.set_health(False, "L4CON")
    assert {pool.pick(b"") for _ in range(4)} == {c}
    b.session_end()  # ends while DOWN
    b.set_health(True, "L4OK")  # back with 0 sessions, read again
    assert pool.pick(b"") is b
    for server in (a, b, c):
        server.set_health(False, "L4CON")
    assert pool.pick(b"") is k  # only the backup is left
    k.session_start()
    assert pool.pick(b"") is k
    a.session_end()
    a.set_health(True, "L4OK")
    assert {pool.pick(b"") for _ in range(3)} == {a}  # a primary is back: backups step aside
