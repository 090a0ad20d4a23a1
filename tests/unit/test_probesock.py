"""Health-probe sockets (lbcore_ext probesock): the compiled module and its
pure-Python twin behave the same on real loopback sockets."""

import errno
import select
import socket

import pytest

import lbcore_ext
from lbcore_ext import probesock_py

IMPLEMENTATIONS = [probesock_py]
try:
    from lbcore_ext import probesock as compiled
except ImportError:
    compiled = None
else:
    IMPLEMENTATIONS.append(compiled)


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda m: m.IMPLEMENTATION)
def ps(request):
    return request.param


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock
    sock.close()


def connected(fd, timeout=2.0):
    poll = select.poll()
    poll.register(fd, select.POLLOUT)
    return bool(poll.poll(timeout * 1000))


def test_the_build_in_use_is_the_selected_one():
    expected = "python" if lbcore_ext.IMPLEMENTATION == "python" or compiled is None else "cython"
    assert lbcore_ext.probesock.IMPLEMENTATION == expected


def test_connect_then_close_with_a_reset(ps, listener):
    fd = ps.connect(ps.address(*listener.getsockname()), True, False)
    assert connected(fd) and ps.error(fd) == 0
    peer, _ = listener.accept()
    with peer:
        ps.close(fd)
        peer.settimeout(2)
        with pytest.raises(ConnectionResetError):
            peer.recv(10)


def test_without_reset_the_close_is_a_fin(ps, listener):
    fd = ps.connect(ps.address(*listener.getsockname()), False, False)
    assert connected(fd)
    peer, _ = listener.accept()
    with peer:
        ps.close(fd)
        peer.settimeout(2)
        assert peer.recv(10) == b""


def test_a_delayed_ack_and_a_reset_leave_the_server_nothing_to_accept(ps, listener):
    """HAProxy's tcp check: the handshake's last ACK waits, the reset goes
    first, so the server never completes (nor accepts) the connection."""
    fd = ps.connect(ps.address(*listener.getsockname()), True, True)
    assert connected(fd) and ps.error(fd) == 0
    ps.close(fd)
    assert select.select([listener], [], [], 0.3)[0] == []


def test_a_refused_connect(ps):
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    addr = ps.address(*port.getsockname())
    port.close()
    try:
        fd = ps.connect(addr, True, True)
    except ConnectionRefusedError:
        return  # refused at once
    assert connected(fd) and ps.error(fd) == errno.ECONNREFUSED
    ps.close(fd)


def test_addresses(ps):
    with pytest.raises(OSError):
        ps.address("localhost", 80)  # a literal only: names go through the resolver
    with pytest.raises(OverflowError):
        ps.address("127.0.0.1", 70000)
    if socket.has_ipv6:
        ps.address("::1", 443)
    with pytest.raises(OSError):
        ps.close(-1)


def test_an_ipv4_literal_needs_no_resolver(ps, monkeypatch):
    # What connect() takes, as the resolver would give it (192.0.2.41: an
    # address no other test asks for, so not in address()'s cache yet).
    resolved = socket.getaddrinfo("192.0.2.41", 8080, socket.AF_INET, socket.SOCK_STREAM, 0,
                                  socket.AI_NUMERICHOST)[0][4]

    def no_resolver(*args):
        raise AssertionError("getaddrinfo() for an IPv4 literal")

    monkeypatch.setattr(probesock_py._socket, "getaddrinfo", no_resolver)
    monkeypatch.setattr(socket, "getaddrinfo", no_resolver)
    addr = ps.address("192.0.2.41", 8080)
    assert ps.address("192.0.2.41", 8080) is addr  # worked out once
    if ps is probesock_py:
        assert addr == (socket.AF_INET, resolved)
    else:  # a struct sockaddr_in: family, port, address, padding
        assert addr[2:8] == (8080).to_bytes(2, "big") + socket.inet_aton(resolved[0])
    for bad in ("127.1", "01.2.3.4", "1.2.3.4.5", "example.org"):
        with pytest.raises(OSError):
            ps.address(bad, 80)
