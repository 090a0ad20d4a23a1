"""The idle server connection pool's bound and purge (HAProxy's
pool-max-conn and pool-purge-delay), on its own with stand-in servers and
connections (no sockets)."""

import asyncio
import types

from lbcore.timers import Sweeper
from lbcore.upstream import UpstreamPool


class Conn:
    """Stands in for an idle UpstreamConnection: closing takes it off the list."""

    def __init__(self, idle):
        self.idle, self.closed = idle, False

    def close(self):
        self.closed = True
        self.idle.remove(self)


class Server:
    """Hashable like the real one: the pool keys its dicts by server."""

    def __init__(self, busy):
        self.cur_sessions = busy
        spec = types.SimpleNamespace(pool_max_conn=None, pool_purge_delay=5.0)
        self.backend = types.SimpleNamespace(spec=spec)


def server(busy=0):
    return Server(busy)


def pool_with_idle(srv, n):
    loop = asyncio.new_event_loop()
    pool = UpstreamPool(loop, Sweeper(loop), None)
    idle = pool.idle[srv] = []
    idle.extend(Conn(idle) for _ in range(n))
    return pool, idle


def test_a_burst_left_idle_is_halved_each_purge_down_to_the_recent_need():
    srv = server()
    pool, idle = pool_with_idle(srv, 500)  # 500 connections were busy at the peak
    pool.peak[srv] = 500
    oldest = idle[0]
    pool.purge(srv, idle)  # the burst's own period: all were needed
    assert len(idle) == 500
    sizes = []
    for _ in range(12):  # quiet periods: nothing busy any more
        pool.purge(srv, idle)
        sizes.append(len(idle))
    assert oldest.closed  # the oldest go first
    # The need estimate decays by half each period, the idle follow it.
    assert sizes[1] < 500 and sizes[-1] <= 8, sizes
    assert all(a >= b for a, b in zip(sizes, sizes[1:])), sizes


def test_connections_a_steady_load_uses_are_kept():
    srv = server(busy=10)
    pool, idle = pool_with_idle(srv, 10)
    for _ in range(5):
        pool.peak[srv] = 20  # 20 busy at the top of each period
        pool.purge(srv, idle)
    assert len(idle) == 10  # 10 busy + 10 idle = the need
