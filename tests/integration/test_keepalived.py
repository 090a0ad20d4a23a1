"""VIP failover under keepalived: two lbcore nodes in network namespaces
with conf/keepalived/ as shipped, the active lbcore SIGKILLed under a
client opening a connection every 20 ms (tests/drills.py). The outage is
bounded by keepalived's track script (~0.1 s) and VRRP's skew time, not
by anything in lbcore; docs/ha.md has the figures beside haproxy's."""

import pytest

from tests.drills import keepalived_drill
from tests.netns import drill_skip_reason

reason = drill_skip_reason("keepalived")
pytestmark = pytest.mark.skipif(reason is not None, reason=reason or "")


def test_killing_the_active_lbcore_moves_the_vip_within_a_second():
    result = keepalived_drill("lbcore")
    print(result.line())
    killed = next(state for node, state in result.states.items() if "killed" in node)
    backup = next(state for node, state in result.states.items() if "backup" in node)
    assert (killed, backup) == ("FAULT", "MASTER"), result.line()
    assert result.attempts >= 200, result.line()
    # Detection ~0.1-0.25 s (the track script), takeover ~10 ms (skew time):
    # a generous bound for a loaded CI machine, still far below VRRP's 3 s
    # master-down interval.
    assert result.outage_s < 1.5, result.line()
    assert result.failed <= 25, result.line()
