"""Active/active behind ECMP: three lbcore nodes announce the VIP over BGP
(BIRD, conf/ecmp/) to a router namespace with a multipath route (L4 hash),
a client opens a connection every 20 ms (tests/drills.py). A SIGKILLed
node's route is withdrawn within a few tenths of a second; a SIGTERMed one
is withdrawn before it stops accepting (global.stop_delay), so its drain
fails nothing."""

import pytest

from tests.drills import ecmp_drill
from tests.netns import drill_skip_reason

reason = drill_skip_reason("bird", "birdc")
pytestmark = pytest.mark.skipif(reason is not None, reason=reason or "")


def test_a_killed_node_is_withdrawn_and_the_others_take_its_flows():
    result = ecmp_drill("kill")
    print(result.line())
    assert result.states["lb1 exit"] == -9
    assert result.states["routes"] == ["192.0.2.12", "192.0.2.13"]
    assert set(result.served_by) == {"lb1", "lb2", "lb3"}  # spread before the kill
    assert result.states["withdrawn after (s)"] < 1.0, result.line()
    # Only flows hashed to lb1 between the kill and the withdraw fail.
    assert result.outage_s < 1.0, result.line()
    assert result.failed <= 20, result.line()


def test_a_drained_node_is_withdrawn_first_and_fails_nothing():
    result = ecmp_drill("drain")
    print(result.line())
    assert result.states["lb1 exit"] == 0
    assert result.states["routes"] == ["192.0.2.12", "192.0.2.13"]
    assert set(result.served_by) == {"lb1", "lb2", "lb3"}
    # Nothing sent to lb1 fails: it is withdrawn while still accepting. What
    # the network may still do is rehash: removing one next hop from a
    # hash-threshold multipath route moves some flows between the others,
    # and a connection in flight at that instant (a few ms of each 20 ms
    # here) is reset by a node that never saw it. Resilient hashing
    # (nexthop groups) avoids it; BIRD installs plain multipath routes.
    withdrawn = result.states["withdrawn after (s)"]
    rehashed = [(start, end) for start, end in result.failures if start <= withdrawn + 0.05 and end >= withdrawn - 0.05]
    assert result.failures == rehashed and len(rehashed) <= 2, (result.failures, result.line())
    assert set(result.errors) <= {"ConnectionResetError"}, result.line()
