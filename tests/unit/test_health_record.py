"""The machine applied to real model.Server objects: what gets recorded,
when set_health is called, and the passive observe hook. No I/O."""

import logging
import random

import pytest

from lbcore.config import BackendSpec, HealthSpec, ServerSpec, Address
from lbcore.health import HealthChecker, ProbeResult, RiseFall, apply_result
from lbcore.model import DOWN, MAINT, UP, Backend

OK = ProbeResult(True, "L7OK", 200, 1.5)
BAD = ProbeResult(False, "L7STS", 503, 2.0)
REFUSED = ProbeResult(False, "L4CON", None, 0.2, "Connection refused")


def make_backend(n=2, rise=2, fall=2, initial_state="up", type_="http", check=True, backup=()):
    health = HealthSpec(type=type_, path="/healthcheck", rise=rise, fall=fall,
                        interval=0.2, timeout=0.5, initial_state=initial_state)
    servers = tuple(
        ServerSpec(name=f"s{i + 1}", address=Address("127.0.0.1", 9000 + i), check=check,
                   backup=(i in backup))
        for i in range(n))
    backend = Backend(BackendSpec(name="pool", health=health, servers=servers))
    changes = []
    backend.listeners.append(lambda s: changes.append((s.name, s.health)))
    return backend, changes


class FakeRuntime:
    def __init__(self, *backends):
        self.backends = {b.name: b for b in backends}

    def servers(self):
        for b in self.backends.values():
            yield from b.servers


def feed(server, machine, *results, t0=100.0):
    flips = []
    for i, r in enumerate(results):
        flip = apply_result(server, machine, r, t0 + i)
        if flip is not None:
            flips.append(flip)
    return flips


def test_check_fields_are_recorded():
    backend, _ = make_backend()
    s = backend.servers[0]
    m = RiseFall(2, 2)
    apply_result(s, m, BAD, 123.0)
    assert (s.check_status, s.check_code, s.check_duration_ms, s.last_check_at) == ("L7STS", 503, 2.0, 123.0)
    apply_result(s, m, REFUSED, 124.0)
    assert (s.check_status, s.check_code, s.check_duration_ms, s.last_check_at) == ("L4CON", None, 0.2, 124.0)


def test_flips_go_through_set_health_once_with_the_reason(caplog):
    backend, changes = make_backend(rise=2, fall=2)
    s = backend.servers[0]
    m = RiseFall(2, 2)
    with caplog.at_level(logging.WARNING, logger="lbcore"):
        assert feed(s, m, OK, BAD, BAD, BAD, BAD) == [False]
    assert s.health == DOWN and s.status == DOWN
    assert changes == [("s1", DOWN)]
    flips = [r.getMessage() for r in caplog.records if "is DOWN" in r.getMessage()]
    assert len(flips) == 1
    assert "reason: L7STS 503, check duration: 2ms" in flips[0]
    assert s.down_transitions == 1
    assert s not in backend.candidates

    assert feed(s, m, OK, OK, OK) == [True]
    assert s.health == UP and s in backend.candidates
    assert changes == [("s1", DOWN), ("s1", UP)]


def test_check_failures_and_streak_mirrors():
    backend, _ = make_backend(rise=2, fall=3)
    s = backend.servers[0]
    m = RiseFall(2, 3)
    feed(s, m, OK, BAD, BAD)
    assert (s.consecutive_ok, s.consecutive_fail, s.check_failures) == (0, 2, 2)
    feed(s, m, BAD, BAD, BAD)  # DOWN on the first, the next two not counted
    assert s.health == DOWN and s.check_failures == 3
    feed(s, m, OK)
    assert (s.consecutive_ok, s.consecutive_fail) == (1, 0)


def test_initial_state_down_comes_up_on_first_good_probe():
    backend, changes = make_backend(initial_state="down", rise=3)
    s = backend.servers[0]
    assert s.health == DOWN and not backend.candidates
    assert feed(s, RiseFall(3, 2), OK) == [True]
    assert changes == [("s1", UP)]


def test_stale_epoch_result_is_recorded_but_not_fed():
    backend, _ = make_backend(rise=1)
    s = backend.servers[0]
    m = RiseFall(1, 2)
    m.feed(True, True)
    s.set_health(False, "observed")
    epoch = m.epoch
    m.force_down()
    assert apply_result(s, m, OK, 5.0, epoch) is None
    assert s.health == DOWN and s.check_status == "L7OK"
    assert apply_result(s, m, OK, 6.0, m.epoch) is True


# -- observe_failure -----------------------------------------------------------


def checker_for(backend):
    return HealthChecker(lambda: FakeRuntime(backend), rng=random.Random(1))


def test_observe_failure_takes_a_checked_up_server_down_at_once(caplog):
    backend, changes = make_backend(rise=2, fall=3)
    s = backend.servers[0]
    checker = checker_for(backend)
    with caplog.at_level(logging.WARNING, logger="lbcore"):
        checker.observe_failure(s, "L4CON")
    assert s.health == DOWN and s not in backend.candidates
    assert changes == [("s1", DOWN)]
    assert s.observed_failures == 1
    assert (s.check_status, s.check_code) == ("HANA", None)
    assert any("reason: L4CON (observed)" in r.getMessage() for r in caplog.records)
    # Only rise probes bring it back, not the first one.
    m = checker._machines[s]
    assert feed(s, m, OK) == []
    assert feed(s, m, OK) == [True]


def test_observe_failure_on_a_down_server_restarts_its_rise():
    backend, changes = make_backend(rise=2, fall=2)
    s = backend.servers[0]
    checker = checker_for(backend)
    checker.observe_failure(s, "L4CON")
    m = checker._machines[s]
    feed(s, m, OK)
    checker.observe_failure(s, "SOCKERR")
    assert feed(s, m, OK) == []
    assert s.health == DOWN
    assert changes == [("s1", DOWN)], "no second flip for an already DOWN server"
    assert s.observed_failures == 2


def test_observe_failure_never_takes_an_unchecked_server_out():
    backend, changes = make_backend(check=False)
    s = backend.servers[0]
    assert not s.checked
    checker = checker_for(backend)
    for _ in range(10):
        checker.observe_failure(s, "L4CON")
    assert s.health == UP and s in backend.candidates
    assert s.observed_failures == 10
    assert changes == []


def test_observe_failure_with_health_none_only_counts():
    backend, changes = make_backend(type_="none")
    s = backend.servers[0]
    checker_for(backend).observe_failure(s, "L4CON")
    assert s.health == UP and s.observed_failures == 1 and changes == []


def test_observe_failure_ignores_maint_servers():
    backend, changes = make_backend()
    s = backend.servers[0]
    s.set_admin(MAINT)
    changes.clear()
    checker_for(backend).observe_failure(s, "L4CON")
    assert s.health == UP and changes == []


def test_backup_takes_over_when_primaries_are_observed_down():
    backend, _ = make_backend(n=3, backup=(2,))
    s1, s2, b = backend.servers
    checker = checker_for(backend)
    assert backend.candidates == [s1, s2]
    checker.observe_failure(s1, "L4CON")
    assert backend.candidates == [s2]
    checker.observe_failure(s2, "SOCKERR")
    assert backend.candidates == [b]
    for server in (s1, s2):
        feed(server, checker._machines[server], OK, OK)
    assert backend.candidates == [s1, s2]


def test_reload_before_start_is_a_clear_error():
    backend, _ = make_backend()
    with pytest.raises(RuntimeError, match="before start"):
        checker_for(backend).reload()
