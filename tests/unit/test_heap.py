"""lbcore/heap.py: nothing that is garbage is frozen, and a server
connection's end or a refused connect leaves no cycle for the collector
(tests/integration/test_heap.py counts the same in a live lbcore)."""

import asyncio
import gc
import weakref
from collections import Counter

import uvloop

from lbcore.heap import settle_heap
from lbcore.timers import Sweeper
from lbcore.upstream import UpstreamPool
from tests.support import free_port
from tests.unit.test_model import runtime


class Node:
    pass


def test_settle_heap_freezes_no_garbage():
    node = Node()
    node.me = node  # a cycle: only the collector frees it
    gone = weakref.ref(node)
    del node
    try:
        settle_heap()
        gc.collect()
        assert gone() is None, "frozen garbage is never collected"
    finally:
        gc.unfreeze()


def server_at(port):
    return runtime(f'      - {{name: s1, address: "127.0.0.1:{port}"}}\n').backends["pool"].servers[0]


def left_for_the_collector(scenario) -> Counter:
    """The types of the cyclic garbage `scenario(loop, pool)` leaves."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            loop = runner.get_loop()
            runner.run(scenario(loop, UpstreamPool(loop, Sweeper(loop), None)))
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            return Counter(type(o).__name__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()
        gc.collect()


def test_refused_connects_leave_no_cycle():
    server = server_at(free_port())  # nothing listens there

    async def refused(loop, pool):
        for _ in range(10):
            try:
                await pool.connect(server, 1.0)
            except OSError:
                pass
            else:
                raise AssertionError("connected to a port nothing listens on")

    garbage = left_for_the_collector(refused)
    assert not garbage["ConnectionRefusedError"] and not garbage["UpstreamConnection"], garbage


def test_a_server_connection_its_server_closed_leaves_no_cycle():
    async def closing(loop, pool):
        async def hang_up(reader, writer):
            writer.close()

        listener = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        server = server_at(listener.sockets[0].getsockname()[1])
        for _ in range(5):
            conn = await pool.connect(server, 1.0)
            for _ in range(200):
                if conn.closed:
                    break
                await asyncio.sleep(0.01)
            assert conn.closed
        del conn
        listener.close()
        await listener.wait_closed()

    garbage = left_for_the_collector(closing)
    assert not garbage["UpstreamConnection"] and not garbage["HttpResponseParser"], garbage


def test_collections_held_at_start_up_come_back_only_if_they_were_on():
    from lbcore.heap import hold_collections, release_collections
    assert gc.isenabled()
    try:
        hold_collections()
        hold_collections()  # the server holds again what the command line held
        assert not gc.isenabled()
        release_collections()
        assert gc.isenabled()
        release_collections()  # once only
        gc.disable()  # off for a reason of its own: left off
        hold_collections()
        release_collections()
        assert not gc.isenabled()
    finally:
        gc.enable()
