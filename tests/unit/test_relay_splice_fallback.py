"""The compiled relay falls back from splice(2) to recv/send when the kernel
refuses splice with EINVAL or ENOSYS, and no byte is lost or reordered.

No real socket makes splice fail that way, so a tiny LD_PRELOAD shim
replaces libc's splice(): relay.pyx calls it from C (lb_splice), so only an
interposed symbol reaches it; a Python mock could not. LD_PRELOAD acts only
on a new process, so each scenario runs this file as a script in a
subprocess (see `main`) and reports what it saw as JSON. The shim counts its
calls, which proves the relay did try splice before it fell back.

The shim refuses every splice (stage "in": socket -> pipe fails first), or
only pipe -> socket (stage "out": the bytes already sit in the pipe and must
be taken back into user space), or pipe -> socket after letting half of the
first one through (stage "partial": the rest is taken back later, when the
socket is writable again). A control run without the shim shows that splice
works here, so the shim is what made the difference.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import lbcore_ext

ROOT = Path(__file__).resolve().parents[2]
SIZE = 8 << 20  # per direction, per relay
RELAYS = 2  # in one process: ENOSYS must keep the second one off splice

SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static long calls, refused;
static int refuse_errno, stage;  /* 0 in, 1 out, 2 partial */
static unsigned char partial_done[4096];  /* by pipe fd; pooled pipes keep theirs */

long lbtest_splice_calls(void) { return calls; }
long lbtest_splice_refused(void) { return refused; }

__attribute__((constructor)) static void lbtest_init(void) {
    const char *e = getenv("LBTEST_SPLICE_ERRNO"), *s = getenv("LBTEST_SPLICE_STAGE");
    if (e && !strcmp(e, "EINVAL")) refuse_errno = EINVAL;
    else if (e && !strcmp(e, "ENOSYS")) refuse_errno = ENOSYS;
    else { fprintf(stderr, "shim: LBTEST_SPLICE_ERRNO=%s?\n", e ? e : ""); abort(); }
    stage = !s || !strcmp(s, "in") ? 0 : !strcmp(s, "out") ? 1 : 2;
}

ssize_t splice(int fd_in, loff_t *off_in, int fd_out, loff_t *off_out, size_t len,
               unsigned int flags) {
    static ssize_t (*real)(int, loff_t *, int, loff_t *, size_t, unsigned int);
    struct stat st;
    int from_pipe = fstat(fd_in, &st) == 0 && S_ISFIFO(st.st_mode);
    calls++;
    if (!real) real = dlsym(RTLD_NEXT, "splice");
    if (stage > 0 && !from_pipe)
        return real(fd_in, off_in, fd_out, off_out, len, flags);
    if (stage == 2 && fd_in < 4096 && !partial_done[fd_in]) {
        partial_done[fd_in] = 1;
        return real(fd_in, off_in, fd_out, off_out, (len + 1) / 2, flags);
    }
    refused++;
    errno = refuse_errno;
    return -1;
}
"""


# -- the scenario, run in the subprocess ----------------------------------------


def tcp_pair():
    """Two ends of one loopback TCP connection, non-blocking."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    for s in (a, b):
        s.setblocking(False)
    return a, b


def shim_counts():
    """(calls, refused) so far, or (None, None) when the shim is not preloaded."""
    try:
        lib = ctypes.CDLL(None)
        calls, refused = lib.lbtest_splice_calls, lib.lbtest_splice_refused
    except AttributeError:
        return None, None
    calls.restype = refused.restype = ctypes.c_long
    return calls(), refused()


async def send_then_drain(loop, sock, payload):
    """Send everything, half-close, then read until the peer's FIN."""
    await loop.sock_sendall(sock, payload)
    sock.shutdown(socket.SHUT_WR)
    chunks = []
    while data := await loop.sock_recv(sock, 1 << 20):
        chunks.append(data)
    return b"".join(chunks)


def digest(data):
    return {"len": len(data), "sha256": hashlib.sha256(data).hexdigest()}


async def relay_once(relay_mod, loop):
    """client <-> Relay <-> server, SIZE random bytes each way at once."""
    client, relay_client = tcp_pair()
    relay_server, server = tcp_pair()
    up, down = os.urandom(SIZE), os.urandom(SIZE)
    closed, close_calls = loop.create_future(), []

    def on_close(relay):
        close_calls.append(relay.termination)
        if not closed.done():
            closed.set_result(relay.termination)

    relay = relay_mod.Relay(loop, relay_client, relay_server, on_close)
    calls_before, refused_before = shim_counts()
    relay.start()
    try:
        at_server, at_client, _ = await asyncio.wait_for(asyncio.gather(
            send_then_drain(loop, server, down), send_then_drain(loop, client, up), closed), 20)
    finally:
        client.close()
        server.close()
        relay.close("KD")  # a no-op unless the scenario failed
    calls, refused = shim_counts()
    return {
        "up_sent": digest(up), "up_at_server": digest(at_server),
        "down_sent": digest(down), "down_at_client": digest(at_client),
        "bytes_in": relay.bytes_in, "bytes_out": relay.bytes_out,
        "spliced_in": relay.spliced_in, "spliced_out": relay.spliced_out,
        "termination": relay.termination, "close_calls": close_calls,
        "relay_sockets_closed": relay_client.fileno() == relay_server.fileno() == -1,
        "splice_calls": None if calls is None else calls - calls_before,
        "splice_refused": None if refused is None else refused - refused_before,
        "splice_available_after": relay_mod.splice_available(),
    }


def main():
    import uvloop

    from lbcore_ext import relay as relay_mod  # the compiled one, whatever LBCORE_NO_EXT says

    errors = []

    class Collect(logging.Handler):
        def emit(self, record):
            errors.append(record.getMessage())

    logging.getLogger("lbcore").addHandler(Collect(logging.WARNING))
    relay_mod.configure(splice=True, splice_min=1024, splice_after=1)
    report = {"splice_available_at_start": relay_mod.splice_available(), "relays": []}
    loop = uvloop.new_event_loop()
    try:
        for _ in range(RELAYS):
            report["relays"].append(loop.run_until_complete(relay_once(relay_mod, loop)))
    finally:
        loop.close()
    report["log_errors"] = errors
    print(json.dumps(report))


# -- the tests ------------------------------------------------------------------

pytestmark = pytest.mark.skipif(
    "cython" not in lbcore_ext.implementations(),
    reason="lbcore_ext.relay is not built (python setup.py build_ext --inplace)")


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    """Path of the compiled splice-refusing shim."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler (cc/gcc) to build the LD_PRELOAD splice shim")
    src = tmp_path_factory.mktemp("splice_shim") / "shim.c"
    src.write_text(SHIM_C)
    lib = src.with_suffix(".so")
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(lib), str(src), "-ldl"],
                   check=True, capture_output=True, timeout=60)
    return lib


def run_scenario(shim=None, errno_name=None, stage=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("LBCORE_NO_SPLICE", "LBCORE_PIPE_SIZE", "LD_PRELOAD")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if shim is not None:
        env.update(LD_PRELOAD=str(shim), LBTEST_SPLICE_ERRNO=errno_name, LBTEST_SPLICE_STAGE=stage)
    proc = subprocess.run([sys.executable, __file__], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=40)
    assert proc.returncode == 0, f"scenario failed (rc {proc.returncode}):\n{proc.stderr}"
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["log_errors"] == [], proc.stderr
    return report


def assert_intact(r):
    """Every byte arrived, in order, both ways; the relay closed normally."""
    assert r["up_at_server"] == r["up_sent"]
    assert r["down_at_client"] == r["down_sent"]
    assert (r["bytes_in"], r["bytes_out"]) == (SIZE, SIZE)
    assert r["termination"] == "--"
    assert r["close_calls"] == ["--"]
    assert r["relay_sockets_closed"]


def test_control_without_shim_splices():
    report = run_scenario()
    if not report["splice_available_at_start"]:
        pytest.skip("this build of lbcore_ext.relay has no splice(2)")
    for r in report["relays"]:
        assert_intact(r)
        assert r["splice_calls"] is None  # no shim in this process
        assert r["spliced_in"] > 0 and r["spliced_out"] > 0, r
        assert r["splice_available_after"]


@pytest.mark.parametrize("stage", ["in", "out", "partial"],
                         ids=["socket-to-pipe", "pipe-to-socket", "pipe-to-socket-after-partial"])
@pytest.mark.parametrize("errno_name", ["EINVAL", "ENOSYS"])
def test_refused_splice_falls_back_to_recv_send(shim, errno_name, stage):
    report = run_scenario(shim, errno_name, stage)
    if not report["splice_available_at_start"]:
        pytest.skip("this build of lbcore_ext.relay has no splice(2)")
    first, second = report["relays"]
    for r in (first, second):
        assert_intact(r)
        if stage == "in":  # nothing ever reached a pipe
            assert r["spliced_in"] == r["spliced_out"] == 0, r
        else:  # one splice into the pipe per direction at most, taken back
            assert r["spliced_in"] + r["spliced_out"] <= 2 * (1 << 20), r

    if errno_name == "EINVAL":
        # Per direction: each one tries splice once, is refused, and stays
        # on recv/send; the next relay tries again.
        for r in (first, second):
            assert r["splice_refused"] == 2, r
            assert r["splice_available_after"]
            if stage != "in":
                assert r["spliced_in"] > 0 and r["spliced_out"] > 0, r
    else:
        # Process-wide: the first refusal turns splice off for good; a
        # direction already splicing may try once more, the next relay never.
        assert 1 <= first["splice_refused"] <= 2, first
        assert not first["splice_available_after"]
        assert second["splice_calls"] == 0, second
        assert second["spliced_in"] == second["spliced_out"] == 0, second


if __name__ == "__main__":
    main()
