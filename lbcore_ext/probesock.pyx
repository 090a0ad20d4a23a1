# cython: language_level=3, boundscheck=False, wraparound=False
"""Health-probe sockets on raw descriptors, the system calls made from C.

The compiled twin of probesock_py.py: read its docstring for the contract.
A probe's socket(), two setsockopt() and connect() cost one call from
Python here, without the socket module's argument parsing (its SO_LINGER
path alone formats and discards two TypeErrors per call).
"""

import functools
import os
import socket
import sys

from . import probesock_py

from libc.errno cimport errno
from libc.string cimport memcpy

cdef extern from *:
    """
    #include <sys/types.h>
    #include <sys/socket.h>
    #include <netinet/in.h>
    #include <netinet/tcp.h>
    #include <arpa/inet.h>
    #include <unistd.h>
    #ifndef TCP_QUICKACK
    #define TCP_QUICKACK 12
    #endif
    static int lb_probe_socket(int family, const char *addr, int addrlen, int reset, int delay_ack) {
        int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        if (reset) {
            struct linger nolinger = {1, 0};
            if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &nolinger, sizeof(nolinger)) < 0)
                goto fail;
        }
        if (delay_ack) {
            int zero = 0;
            if (setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &zero, sizeof(zero)) < 0)
                goto fail;
        }
        if (connect(fd, (const struct sockaddr *)addr, addrlen) < 0 && errno != EINPROGRESS && errno != EAGAIN)
            goto fail;
        return fd;
    fail:
        {
            int saved = errno;
            close(fd);
            errno = saved;
        }
        return -1;
    }
    static int lb_socket_error(int fd) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            return errno;
        return err;
    }
    """
    int lb_probe_socket(int family, const char *addr, int addrlen, int reset, int delay_ack)
    int lb_socket_error(int fd)
    int c_close "close"(int fd)

IMPLEMENTATION = "cython"

endpoints = probesock_py.endpoints  # rare (PROXY headers of probes): no C twin needed


@functools.lru_cache(maxsize=8192)  # once per distinct address, as probesock_py.address
def address(str host, int port):
    """A struct sockaddr_in / sockaddr_in6, packed: what connect() hands to
    the kernel as is."""
    family, where = probesock_py.address(host, port)
    packed = socket.inet_pton(family, where[0].partition("%")[0])
    head = int(family).to_bytes(2, sys.byteorder) + port.to_bytes(2, "big")
    if family == socket.AF_INET6:  # family, port, flow info, address, scope id
        return head + where[2].to_bytes(4, "big") + packed + where[3].to_bytes(4, sys.byteorder)
    return head + packed + bytes(8)  # family, port, address, padding


def connect(bytes addr, bint reset, bint delay_ack):
    cdef unsigned short family
    memcpy(&family, <const char *>addr, 2)
    cdef int fd = lb_probe_socket(family, addr, len(addr), reset, delay_ack)
    if fd < 0:
        err = errno
        raise OSError(err, os.strerror(err))
    return fd


def error(int fd):
    return lb_socket_error(fd)


def close(int fd):
    if c_close(fd) < 0:
        err = errno
        raise OSError(err, os.strerror(err))
