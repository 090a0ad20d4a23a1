"""The health checker's timer wheel: callbacks fire in time order, within
a resolution of their time, from one loop timer (a real loop, no sockets)."""

import asyncio
import math

import uvloop

from lbcore.health.wheel import RESOLUTION, TimerWheel


def run(coro):
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def test_callbacks_fire_in_order_and_on_time():
    async def scenario():
        loop = asyncio.get_running_loop()
        wheel = TimerWheel(loop)
        fired = []
        start = loop.time()
        for delay in (0.08, 0.02, 0.05, 0.02):
            wheel.call_at(start + delay, lambda d: fired.append((d, loop.time() - start)), delay)
        await asyncio.sleep(0.15)
        assert [d for d, _ in fired] == [0.02, 0.02, 0.05, 0.08]
        for delay, at in fired:
            assert at >= delay - RESOLUTION, (delay, at)  # never early (late only on a busy machine)
        assert len(wheel) == 0

    run(scenario())


def test_a_callback_that_schedules_later_work_leaves_the_earliest_armed():
    """Regression: a callback arming a far tick must not hide a nearer one."""
    async def scenario():
        loop = asyncio.get_running_loop()
        wheel = TimerWheel(loop)
        fired = []
        start = loop.time()

        def first(_):
            wheel.call_at(start + 0.5, fired.append, "far")

        wheel.call_at(start + 0.01, first, None)
        wheel.call_at(start + 0.05, fired.append, "near")
        await asyncio.sleep(0.1)
        assert fired == ["near"]
        wheel.close()
        await asyncio.sleep(0.5)
        assert fired == ["near"]  # closed: the far one never fires

    run(scenario())


def test_a_failing_callback_does_not_stop_the_others():
    async def scenario():
        loop = asyncio.get_running_loop()
        wheel = TimerWheel(loop)
        fired = []
        wheel.call_at(loop.time() + 0.01, lambda _: 1 / 0, None)
        wheel.call_at(loop.time() + 0.01, fired.append, "ok")
        await asyncio.sleep(0.05)
        assert fired == ["ok"]

    run(scenario())


def test_slack_lets_nearby_callbacks_share_one_wakeup_never_early():
    async def scenario():
        loop = asyncio.get_running_loop()
        wheel = TimerWheel(loop)
        fired = []
        # Three times in one 50 ms cell of the grid the slack rounds up to.
        cell = math.ceil((loop.time() + 0.02) / 0.05) * 0.05
        for delay in (0.005, 0.02, 0.04):
            wheel.call_at(cell + delay, lambda d: fired.append((d, loop.time())), delay, 0.05)
        wheel.call_at(cell + 0.005, lambda d: fired.append((d, loop.time())), "exact")
        await asyncio.sleep(cell + 0.2 - loop.time())
        exact = [at for d, at in fired if d == "exact"]
        slack = {at for d, at in fired if d != "exact"}
        assert len(slack) == 1, fired  # one wake-up for the three
        (at,) = slack
        assert at >= cell + 0.04 - RESOLUTION  # never early
        assert at < cell + 0.05 + 0.05  # within the slack (and a busy machine's lag)
        assert exact and exact[0] < at  # without slack: its own tick
        assert len(wheel) == 0

    run(scenario())
