"""Session rates and last-session ages computed at scrape time (stats.rates)."""

from lbcore.stats.rates import RateMeter


def snap(total: int) -> dict:
    return {"frontends": {"web": {"total_sessions": total}},
            "backends": {"pool": {"total_sessions": total, "servers": [{"name": "s1", "total_sessions": total}]}}}


def test_rate_max_and_last_session():
    meter = RateMeter(window=10)
    first = meter.annotate(snap(0), now=100.0)
    assert first["frontends"]["web"]["session_rate"] == 0
    assert first["frontends"]["web"]["last_session_s"] is None  # never
    second = meter.annotate(snap(50), now=102.0)
    server = second["backends"]["pool"]["servers"][0]
    assert server["session_rate"] == 25 and server["session_rate_max"] == 25
    third = meter.annotate(snap(60), now=104.0)
    assert third["frontends"]["web"]["session_rate"] == 15  # 60 sessions over 4 s
    assert third["frontends"]["web"]["session_rate_max"] == 25
    assert third["frontends"]["web"]["last_session_s"] == 0.0
    fourth = meter.annotate(snap(60), now=109.0)
    assert fourth["frontends"]["web"]["last_session_s"] == 5.0


def test_sessions_before_the_first_scrape_have_no_known_age():
    row = RateMeter().annotate(snap(7), now=1.0)["frontends"]["web"]
    assert "last_session_s" not in row


def test_cleared_counters_start_over():
    meter = RateMeter()
    meter.annotate(snap(100), now=1.0)
    row = meter.annotate(snap(3), now=3.0)["frontends"]["web"]
    assert row["session_rate"] == 0 and row["session_rate_max"] == 0
