"""lbcore.adoption's hand-over in one process, real sockets on loopback:
a worker's Journal and the master's Keeper joined as lbcore.workers joins
them, a real client connection accepted from a real listener.

What a SIGKILL leaves is what the kernel does at exit: the worker's
descriptors are closed and nothing of it runs again. So a connection
whose keep() has returned must already be the master's: these tests close
the worker's side right after keep() (no loop turn in between) and check
the master can still answer the client. Before the fix the descriptor
went once per loop turn, and a worker killed in the turn it accepted a
connection reset that connection (its request was lost).

The kill drill itself is tests/integration/test_worker_crash.py.
"""

from __future__ import annotations

import asyncio
import os
import socket

from lbcore.adoption import Journal, Keeper

REQUEST = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"


def _worker_and_master(loop) -> tuple[Journal, Keeper]:
    keeper = Keeper(loop)
    # The worker's copies of the table and of its end of the socket, as
    # the hello hands them over (Journal closes the table's after mapping it).
    journal = Journal(loop, os.dup(keeper.fd), keeper.slots, os.dup(keeper.their_fd))
    keeper.given()
    return journal, keeper


def _kill(journal: Journal, accepted: list[socket.socket]) -> None:
    """What SIGKILL does to the worker: its descriptors close, it runs no more."""
    for sock in accepted:
        sock.close()
    journal.channel.close()


def _run(scenario) -> None:
    import uvloop
    uvloop.run(scenario())


def test_a_connection_kept_is_the_masters_before_keep_returns():
    async def scenario():
        loop = asyncio.get_running_loop()
        journal, keeper = _worker_and_master(loop)
        with socket.create_server(("127.0.0.1", 0)) as listener:
            clients = [socket.create_connection(listener.getsockname(), timeout=5) for _ in range(8)]
            accepted = []
            try:
                for client in clients:
                    client.sendall(REQUEST)
                    sock, _ = listener.accept()
                    sock.setblocking(False)
                    accepted.append(sock)
                    assert journal.keep(sock, "web") is not None
                # Killed in the turn it accepted them: no callback ran since.
                _kill(journal, accepted)
                keeper.poll()
                carried, closed = keeper.orphans()
                assert closed == 0
                assert len(carried) == len(clients), "connections reset with their worker"
                # Each client's connection is alive, its request unread: the
                # master's descriptor has it (a surviving worker reads it there).
                for (frontend, fd, data), client in zip(carried, clients):
                    assert (frontend, data) == ("web", b"")
                    with socket.socket(fileno=fd) as ours:
                        ours.settimeout(5)
                        assert ours.recv(len(REQUEST), socket.MSG_WAITALL) == REQUEST
                        ours.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
                    assert client.recv(100).startswith(b"HTTP/1.1 204 ")
            finally:
                for client in clients:
                    client.close()
                keeper.close()
    _run(scenario)


def test_a_connection_that_ended_before_the_kill_is_not_carried_on():
    """The other direction still batches (GONE_DELAY): an ended connection
    rides with the next accepted one; the master drops it, it is not
    handed to anyone."""
    async def scenario():
        loop = asyncio.get_running_loop()
        journal, keeper = _worker_and_master(loop)
        with socket.create_server(("127.0.0.1", 0)) as listener:
            first = socket.create_connection(listener.getsockname(), timeout=5)
            second = socket.create_connection(listener.getsockname(), timeout=5)
            try:
                sock1, _ = listener.accept()
                kept1 = journal.keep(sock1, "web")
                kept1.release(shutdown=True)
                sock1.close()
                sock2, _ = listener.accept()
                second.sendall(REQUEST)
                journal.keep(sock2, "web")
                _kill(journal, [sock2])
                keeper.poll()
                carried, closed = keeper.orphans()
                assert closed == 0 and [c[0] for c in carried] == ["web"]
                with socket.socket(fileno=carried[0][1]) as ours:
                    ours.settimeout(5)
                    assert ours.recv(len(REQUEST), socket.MSG_WAITALL) == REQUEST
                assert first.recv(10) == b""  # ended, not kept open by the master
            finally:
                first.close()
                second.close()
                keeper.close()
    _run(scenario)
