"""lbcore.control.Channel over a real socketpair: framing, descriptors, EOF."""

import asyncio
import socket

from lbcore.control import Channel


def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return Channel(a), Channel(b)


def test_messages_larger_than_the_socket_buffer_arrive_whole_and_in_order():
    async def main():
        loop = asyncio.get_running_loop()
        sender, receiver = pair()
        got, closed = [], loop.create_future()
        sender.start(loop, lambda m: None, lambda: None)
        receiver.start(loop, got.append, lambda: closed.set_result(True))
        big = "x" * (3 << 20)  # far beyond a unix socket's buffer: many partial writes
        sender.send({"t": "one", "data": big})
        sender.send({"t": "two", "text": "line\nbreak"})
        while len(got) < 2:
            await asyncio.sleep(0.01)
        sender.close()
        await asyncio.wait_for(closed, 5)
        return got

    got = asyncio.run(main())
    assert [m["t"] for m in got] == ["one", "two"]
    assert len(got[0]["data"]) == 3 << 20
    assert got[1]["text"] == "line\nbreak"


def test_descriptors_ride_with_their_message():
    async def main():
        loop = asyncio.get_running_loop()
        sender, receiver = pair()
        received = []
        sender.start(loop, lambda m: None, lambda: None)
        receiver.start(loop, lambda m: received.append((m, receiver.take_fds(m["n"]))), lambda: None)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        sender.send({"t": "sockets", "n": 1}, [listener.fileno()])
        sender.send({"t": "none", "n": 0})
        while len(received) < 2:
            await asyncio.sleep(0.01)
        sender.close()
        receiver.close()
        return listener, received

    listener, received = asyncio.run(main())
    (first, fds), (second, none) = received
    assert none == [] and len(fds) == 1 and fds[0] != listener.fileno()
    # The received descriptor is the same listening socket, not a copy of its address.
    copy = socket.socket(fileno=fds[0])
    assert copy.getsockname() == listener.getsockname()
    client = socket.create_connection(listener.getsockname())
    accepted, _ = copy.accept()
    for sock in (accepted, client, copy, listener):
        sock.close()


def test_a_line_that_is_not_json_is_dropped_and_the_next_one_still_arrives():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.sendall(b'not json\n["no type"]\n{"t": "ok"}\n')
    receiver = Channel(b)
    assert receiver.receive_blocking(5) == {"t": "ok"}
    a.close()
    receiver.close()


def test_receive_blocking_keeps_what_followed_the_first_message():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.sendall(b'{"t": "hello"}\n{"t": "next"}\n')

    async def main():
        receiver = Channel(b)
        first = receiver.receive_blocking(5)
        later = []
        receiver.start(asyncio.get_running_loop(), later.append, lambda: None)
        receiver.close()
        return first, later

    first, later = asyncio.run(main())
    assert first == {"t": "hello"} and later == [{"t": "next"}]
    a.close()


def test_eof_calls_on_close_once_and_send_then_reports_false():
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        receiver = Channel(b)
        closes = []
        receiver.start(loop, lambda m: None, lambda: closes.append(1))
        a.close()
        while not closes:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        return closes, receiver.send({"t": "late"})

    closes, sent = asyncio.run(main())
    assert closes == [1] and sent is False
