"""The health checker's timer wheel: callbacks fire in time order, within
a resolution of their time, from one loop timer (a real loop, no sockets)."""

import asyncio

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
