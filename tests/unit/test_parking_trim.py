"""When lbcore/proxy/parking.py hands freed heap back (malloc_trim): after
TRIM_AFTER parks, then again while a crowd goes on parking, and no more
once it has settled. Real sockets in a real epoll set on a real loop; the
proxy and sweeper are the few attributes Parking touches."""

from __future__ import annotations

import asyncio
import socket
import time
from types import SimpleNamespace

import pytest

from lbcore.proxy import parking


@pytest.fixture
def setup(monkeypatch):
    monkeypatch.setattr(parking, "TRIM_AFTER", 8)
    monkeypatch.setattr(parking, "TRIM_TAIL", 3)
    # Long enough that parks made right after a trim come before the next
    # look, however loaded the machine running the test.
    monkeypatch.setattr(parking, "TRIM_DELAY", 0.4)
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

    def run_until(done, what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"no {what} in {timeout} s"
            loop.run_until_complete(asyncio.sleep(0.01))

    yield SimpleNamespace(park=park, proxy=proxy, arrive=arrive, run_until=run_until)
    for parked in list(proxy.parked.values()):
        parked.fd, fd = -1, parked.fd
        park.leave(parked)
        socket.close(fd)
    park.close()
    loop.close()
    for peer in peers:
        peer.close()


def test_a_burst_is_trimmed_after_its_last_parks_too(setup):
    park = setup.park
    setup.arrive(8)  # TRIM_AFTER: a trim TRIM_DELAY later
    setup.run_until(lambda: park.trims == 1, "first trim")
    setup.arrive(5)  # the crowd goes on arriving after that trim
    setup.run_until(lambda: park.trims == 2, "trim of the burst's tail")  # before: none until 8 more
    setup.run_until(lambda: park.trim is None, "end of the trims")  # nothing more parked
    assert park.trims == 2
    assert len(setup.proxy.parked) == 13


def test_a_few_parks_do_not_trim(setup):
    park = setup.park
    setup.arrive(5)  # fewer than TRIM_AFTER: no trim is even planned
    assert park.trim is None
    setup.arrive(3)  # 8 since the start: one is due
    setup.run_until(lambda: park.trims == 1, "trim")
    setup.arrive(2)  # after it, fewer than TRIM_TAIL: not worth another
    setup.run_until(lambda: park.trim is None, "end of the trims")
    assert park.trims == 1
