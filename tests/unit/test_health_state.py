"""The rise/fall machine alone: sequences of results, no servers, no I/O."""

import pytest

from lbcore.health.state import ProbeResult, RiseFall


def run(machine: RiseFall, up: bool, results: str) -> list:
    """Feed 'o' (ok) / 'x' (fail) results, applying flips; the state after each."""
    states = []
    for r in results:
        verdict = machine.feed(r == "o", up)
        if verdict.flip is not None:
            assert verdict.flip != up, "a verdict never 'flips' to the current state"
            up = verdict.flip
        states.append("U" if up else "D")
    return states


def settled(rise, fall, up):
    """A machine past its first verdict, as after a first probe that agreed."""
    m = RiseFall(rise, fall)
    m.feed(up, up)
    return m


def test_up_needs_fall_consecutive_failures():
    m = settled(2, 3, True)
    assert run(m, True, "xxx") == list("UUD")


def test_down_needs_rise_consecutive_successes():
    m = settled(2, 3, False)
    assert run(m, False, "oo") == list("DU")


def test_success_restarts_the_fall_count():
    m = settled(2, 3, True)
    assert run(m, True, "xxoxxoxx") == list("UUUUUUUU")
    assert run(m, True, "x") == ["D"]


def test_failure_restarts_the_rise_count():
    m = settled(3, 2, False)
    assert run(m, False, "ooxooxoo") == list("DDDDDDDD")
    assert run(m, False, "o") == ["U"]


def test_flapping_server_keeps_its_state():
    up = settled(2, 2, True)
    assert run(up, True, "xoxoxoxoxo") == ["U"] * 10
    down = settled(2, 2, False)
    assert run(down, False, "oxoxoxoxox") == ["D"] * 10


def test_full_cycle_down_and_back():
    m = settled(2, 2, True)
    assert run(m, True, "oxxxxoo" "o") == list("UUDDDDUU")


def test_initial_up_goes_down_on_first_failed_probe():
    # HAProxy's "init-state up": up, but falls at the first failure.
    m = RiseFall(2, 3)
    assert run(m, True, "x") == ["D"]
    # ...then it needs the full rise.
    assert run(m, False, "oo") == ["D", "U"]


def test_initial_up_first_success_then_full_fall():
    m = RiseFall(2, 3)
    assert run(m, True, "oxxx") == list("UUUD")


def test_initial_down_comes_up_on_first_good_probe():
    m = RiseFall(3, 2)
    assert run(m, False, "o") == ["U"]
    assert run(m, True, "xx") == ["U", "D"]


def test_initial_down_first_failure_then_full_rise():
    m = RiseFall(3, 2)
    assert run(m, False, "xooo") == list("DDDU")


@pytest.mark.parametrize("rise,fall", [(1, 1), (1, 5), (5, 1), (3, 3)])
def test_thresholds_of_one_and_more(rise, fall):
    m = settled(rise, fall, True)
    assert run(m, True, "x" * fall)[-1] == "D"
    assert run(m, False, "o" * rise)[-1] == "U"
    if fall > 1:
        assert run(m, True, "x" * (fall - 1)) == ["U"] * (fall - 1)


def test_chkfail_counts_failures_while_up_or_rising_only():
    m = settled(2, 3, True)
    up = True
    counted = []
    for r in "xxx" "xx" "ox" "oo" "x":
        v = m.feed(r == "o", up)
        counted.append(v.counted)
        if v.flip is not None:
            up = v.flip
    assert counted == [
        True, True, True,  # while UP, the third takes it DOWN
        False, False,  # already DOWN: not counted again
        False, True,  # a success starts the rise, the failure breaks it
        False, False,  # back UP
        True,
    ]
    assert up is True


def test_successes_are_never_counted():
    m = settled(2, 2, True)
    assert not any(m.feed(True, True).counted for _ in range(5))


def test_force_down_restarts_the_rise_and_bumps_the_epoch():
    m = settled(2, 2, False)
    m.feed(True, False)  # one success towards rise
    epoch = m.epoch
    m.force_down()
    assert m.epoch == epoch + 1
    assert run(m, False, "o") == ["D"], "the success before the observed failure must not count"
    assert run(m, False, "o") == ["U"]


def test_force_down_on_an_unsettled_machine_needs_full_rise():
    m = RiseFall(3, 2)
    m.force_down()
    assert run(m, False, "ooo") == list("DDU")


def test_unsettle_makes_the_next_probe_decide():
    m = settled(3, 3, True)
    m.unsettle()
    assert run(m, True, "x") == ["D"]
    m.unsettle()
    assert run(m, False, "o") == ["U"]


def test_configure_changes_thresholds_and_keeps_streaks():
    m = settled(2, 5, True)
    run(m, True, "xx")
    m.configure(2, 3)
    assert run(m, True, "x") == ["D"]


@pytest.mark.parametrize("rise,fall", [(0, 1), (1, 0), (-1, 2), (2, 1.5), ("2", 2)])
def test_bad_thresholds_are_rejected_with_a_clear_error(rise, fall):
    with pytest.raises(ValueError, match="rise|fall"):
        RiseFall(rise, fall)


def test_reason_text():
    assert ProbeResult(False, "L7STS", 503, 2.4).reason() == "L7STS 503, check duration: 2ms"
    assert (ProbeResult(False, "L4CON", None, 0.3, "Connection refused").reason()
            == "L4CON (Connection refused), check duration: 0ms")
    assert ProbeResult(True, "L4OK", None, 1.0).reason() == "L4OK, check duration: 1ms"
