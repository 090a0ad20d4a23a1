"""When lbcore/proxy/parking.py hands freed heap back (malloc_trim): after
TRIM_AFTER parks, then again while a crowd goes on parking, and no more
once it has settled. Real sockets in a real epoll set on a real loop; the
proxy and sweeper are the few attributes Parking touches."""

from __future__ import annotations

import asyncio
import socket
from types import SimpleNamespace

import pytest

from lbcore.proxy import parking


@pytest.fixture
def setup(monkeypatch):
    monkeypatch.setattr(parking, "TRIM_AFTER", 8)
    monkeypatch.setattr(parking, "TRIM_TAIL", 3)
    monkeypatch.setattr(parking, "TRIM_DELAY", 0.05)
    loop = asyncio.new_event_loop()
    proxy = SimpleNamespace(parked={}, frontend=SimpleNamespace(parked=0))
    park = parking.Parking(loop, SimpleNamespace(watched=set()))
    peers = []

    def arrive(count: int) -> None:
        for _ in range(count):
            ours, theirs = socket.socketpair()
            peers.append(theirs)
            assert park.park(proxy, ours, ("127.0.0.1", 1), 0.0, None) is not None
            ours.detach()  # the Parked holds the descriptor now

    def wait(seconds: float) -> None:
        loop.run_until_complete(asyncio.sleep(seconds))

    yield SimpleNamespace(park=park, proxy=proxy, arrive=arrive, wait=wait)
    for parked in list(proxy.parked.values()):
        parked.fd, fd = -1, parked.fd
        park.leave(parked)
        socket.close(fd)
    park.close()
    loop.close()
    for peer in peers:
        peer.close()


def test_a_burst_is_trimmed_after_its_last_parks_too(setup):
    setup.arrive(8)  # TRIM_AFTER: a trim TRIM_DELAY later
    assert setup.park.trim is not None
    setup.wait(0.08)
    assert setup.park.trims == 1
    setup.arrive(5)  # the crowd goes on arriving after that trim
    setup.wait(0.08)
    assert setup.park.trims == 2  # before, these waited for TRIM_AFTER more parks
    setup.wait(0.15)  # nothing more parked: the chain ends
    assert setup.park.trims == 2
    assert setup.park.trim is None
    assert len(setup.proxy.parked) == 13


def test_a_few_parks_do_not_trim(setup):
    setup.arrive(5)  # fewer than TRIM_AFTER
    setup.wait(0.15)
    assert setup.park.trims == 0 and setup.park.trim is None
    setup.arrive(8)  # 13 since the last trim: one is due
    setup.wait(0.08)
    assert setup.park.trims == 1
    setup.arrive(2)  # after it, fewer than TRIM_TAIL: not worth one
    setup.wait(0.15)
    assert setup.park.trims == 1 and setup.park.trim is None
