"""How the splice threshold in relay.pyx was measured:
`python -m lbcore_ext.measure_splice [SIZES]`.

For each size N, N bytes are queued on a loopback TCP socket and moved to
another loopback TCP socket either by recv_into+send or by
splice(socket -> pipe) + splice(pipe -> socket), timing only the move,
best of 3 runs of many iterations. Both paths pay the same Python call
overhead (two calls), so the difference is the kernel's.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time

F_SETPIPE_SZ = 1031


def _pair():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    for s in (a, b):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    return a, b


def measure(sizes):
    writer, src = _pair()
    dst, sink = _pair()
    src.setblocking(False)
    dst.setblocking(False)
    pipe_r, pipe_w = os.pipe2(os.O_NONBLOCK)
    try:
        fcntl.fcntl(pipe_w, F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass
    scratch = bytearray(1 << 20)
    view = memoryview(scratch)
    drain = bytearray(4 << 20)
    flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK

    def one(n, mode):
        payload = b"x" * n
        total = 0.0
        iterations = max(200, min(5000, (256 << 20) // n))
        for _ in range(iterations):
            writer.sendall(payload)
            while True:  # everything queued on src before the clock starts
                try:
                    if len(src.recv(n, socket.MSG_PEEK)) >= n:
                        break
                except BlockingIOError:
                    pass
            started = time.perf_counter()
            moved = 0
            while moved < n:
                if mode == "recv":
                    k = src.recv_into(scratch, n)
                    sent = 0
                    while sent < k:
                        sent += dst.send(view[sent:k])
                else:
                    k = os.splice(src.fileno(), pipe_w, n, flags=flags)
                    out = 0
                    while out < k:
                        out += os.splice(pipe_r, dst.fileno(), k - out, flags=flags)
                moved += k
            total += time.perf_counter() - started
            got = 0
            while got < n:
                got += sink.recv_into(drain)
        return total / iterations * 1e6

    for n in sizes:
        copy = min(one(n, "recv") for _ in range(3))
        spliced = min(one(n, "splice") for _ in range(3))
        print(f"{n:>8} B: recv+send {copy:7.1f} us   splice x2 {spliced:7.1f} us   "
              f"splice/copy {spliced / copy:.2f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sizes = [int(x) for x in sys.argv[1].split(",")]
    else:
        sizes = [1024, 4096, 8192, 16384, 32768, 65536, 131072, 262144]
    measure(sizes)
