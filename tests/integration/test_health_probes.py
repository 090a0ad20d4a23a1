"""Probes and the HealthChecker against real backends on loopback.

Backends are tests/backend.py processes (killed with SIGKILL, made to answer
503 or to hang on /healthcheck) or small socket servers in a thread where a
test needs to see the raw request or misbehave at the byte level. The
checker runs on uvloop, as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import time

import pytest
import uvloop
import yaml

from lbcore.config import loads
from lbcore.health import HealthChecker, build_request, http_probe, probe_server, tcp_probe
from lbcore.model import DOWN, MAINT, READY, UP, Runtime
from tests.support import free_port

# The drill settings.
HEALTH = {"type": "http", "path": "/healthcheck", "interval": "200ms", "timeout": "500ms",
          "fall": 2, "rise": 2}
FLIP_WITHIN = 1.5  # seconds: issue 3's bound for DOWN after death and UP after return


def run(coro):
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def build_runtime(servers, health=None, previous=None) -> Runtime:
    """A Runtime from real lb.yaml text: servers as dicts or 'name=address'."""
    server_list = []
    for s in servers:
        if isinstance(s, str):
            name, address = s.split("=")
            s = {"name": name, "address": address}
        server_list.append(s)
    config = {
        "frontends": {"web": {"bind": f"127.0.0.1:{free_port()}", "backend": "pool"}},
        "backends": {"pool": {"health": dict(HEALTH if health is None else health), "servers": server_list}},
    }
    return Runtime.build(loads(yaml.safe_dump(config)), previous)


@contextlib.asynccontextmanager
async def checking(runtime, seed=3):
    holder = {"runtime": runtime}
    checker = HealthChecker(lambda: holder["runtime"], rng=random.Random(seed))
    checker.start(asyncio.get_running_loop())
    checker.holder = holder
    try:
        yield checker
    finally:
        await checker.stop()


async def wait_until(predicate, timeout, what):
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def closed_port() -> int:
    """A port nothing listens on: connects are refused."""
    return free_port()


class FullBacklog:
    """A listener whose accept queue is full: the kernel drops new SYNs, so
    a connect hangs (the only honest way to get L4TOUT on loopback)."""

    def __enter__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.fillers = []
        for _ in range(2):  # listen(0) still queues one; fill it, then check
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(c)
        time.sleep(0.05)
        probe = socket.socket()
        probe.settimeout(0.3)
        try:
            probe.connect(("127.0.0.1", self.port))
            raise RuntimeError("backlog did not fill: this kernel answers SYNs on a full queue")
        except TimeoutError:
            pass
        finally:
            probe.close()
        return self

    def __exit__(self, *exc):
        for c in self.fillers:
            c.close()
        self.listener.close()


class RawServer:
    """A thread serving each connection with `handler(conn)`; remembers the
    bytes it received and how many connections were open at once."""

    def __init__(self, handler):
        self.handler = handler
        self.requests: list[bytes] = []
        self.open = 0
        self.max_open = 0
        self.accepted = 0
        self.lock = threading.Lock()

    def __enter__(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.stopping = True
        self.listener.close()

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.open += 1
                self.max_open = max(self.max_open, self.open)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            self.handler(self, conn)
        except OSError:
            pass
        finally:
            conn.close()
            with self.lock:
                self.open -= 1

    @staticmethod
    def read_head(conn) -> bytes:
        data = b""
        conn.settimeout(5)
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def answer(status_line: bytes):
    def handler(server, conn):
        server.requests.append(RawServer.read_head(conn))
        conn.sendall(status_line)
    return handler


def hang_until_client_closes(server, conn):
    server.requests.append(RawServer.read_head(conn))
    conn.settimeout(None)
    while conn.recv(4096):
        pass


# -- single probes -------------------------------------------------------------


def test_tcp_probe_ok_refused_and_connect_timeout(start_backend):
    backend = start_backend("s1")

    async def scenario():
        ok = await tcp_probe("127.0.0.1", backend.port, 1.0)
        assert (ok.ok, ok.status) == (True, "L4OK")
        refused = await tcp_probe("127.0.0.1", closed_port(), 1.0)
        assert (refused.ok, refused.status) == (False, "L4CON")
        assert "refused" in refused.info.lower()
        with FullBacklog() as blocked:
            tout = await tcp_probe("127.0.0.1", blocked.port, 0.3)
        assert (tout.ok, tout.status) == (False, "L4TOUT")
        assert 250 <= tout.duration_ms < 1300, tout

    run(scenario())


def test_http_probe_ok_wrong_status_killed_and_hang(start_backend):
    backend = start_backend("s1")
    request = build_request("GET", "/healthcheck", backend.address)

    async def probe(expect=frozenset({200}), timeout=0.4):
        return await http_probe("127.0.0.1", backend.port, timeout, request, expect)

    async def scenario():
        r = await probe()
        assert (r.ok, r.status, r.code) == (True, "L7OK", 200)
        backend.set_health(503)
        r = await probe()
        assert (r.ok, r.status, r.code) == (False, "L7STS", 503)
        assert r.reason().startswith("L7STS 503")
        # expect_status as a class ("5xx"): 503 is then the good answer.
        r = await probe(frozenset(range(500, 600)))
        assert (r.ok, r.status, r.code) == (True, "L7OK", 503)
        backend.set_health("hang")
        r = await probe()
        assert (r.ok, r.status, r.code) == (False, "L7TOUT", None)
        assert 350 <= r.duration_ms < 1400, r
        await asyncio.to_thread(backend.kill)
        r = await probe()
        assert (r.ok, r.status) == (False, "L4CON")

    run(scenario())


def test_http_probe_connect_timeout_is_l4tout():
    async def scenario():
        with FullBacklog() as blocked:
            r = await http_probe("127.0.0.1", blocked.port, 0.3,
                                 build_request("GET", "/", "x"), frozenset({200}))
        assert (r.ok, r.status) == (False, "L4TOUT")

    run(scenario())


def test_http_probe_sends_method_path_host_close_user_agent():
    async def scenario(server):
        runtime = build_runtime([f"s1=127.0.0.1:{server.port}"],
                                dict(HEALTH, method="HEAD", path="/hc?deep=1"))
        s1 = runtime.backends["pool"].servers[0]
        r = await probe_server(s1, runtime.backends["pool"].spec.health)
        assert (r.status, r.code) == ("L7OK", 200)
        runtime = build_runtime([f"s1=127.0.0.1:{server.port}"], dict(HEALTH, host="keystone.internal"))
        s1 = runtime.backends["pool"].servers[0]
        await probe_server(s1, runtime.backends["pool"].spec.health)

    with RawServer(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")) as server:
        run(scenario(server))
    first, second = server.requests
    lines = first.split(b"\r\n")
    assert lines[0] == b"HEAD /hc?deep=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in lines
    assert b"Connection: close" in lines
    assert b"User-Agent: lbcore-health" in lines
    assert b"Host: keystone.internal" in second.split(b"\r\n")


@pytest.mark.parametrize("reply,status,info", [
    (b"SSH-2.0-OpenSSH_9.6\r\n", "L7RSP", "invalid status line"),
    (b"", "L7RSP", "empty response"),
])
def test_http_probe_bad_responses_are_l7rsp(reply, status, info):
    async def scenario(server):
        return await http_probe("127.0.0.1", server.port, 1.0,
                                build_request("GET", "/", "x"), frozenset({200}))

    with RawServer(answer(reply)) as server:
        r = run(scenario(server))
    assert (r.ok, r.status, r.info) == (False, status, info)


def test_http_probe_reset_after_connect_is_sockerr():
    def reset(server, conn):
        RawServer.read_head(conn)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    async def scenario(server):
        return await http_probe("127.0.0.1", server.port, 1.0,
                                build_request("GET", "/", "x"), frozenset({200}))

    with RawServer(reset) as server:
        r = run(scenario(server))
    assert (r.ok, r.status) == (False, "SOCKERR"), r


def test_alternate_port_is_probed_instead_of_the_server_port(start_backend):
    backend = start_backend("s1")

    async def scenario():
        # The traffic port is dead; the check port (health.port) is alive.
        dead = f"s1=127.0.0.1:{closed_port()}"
        for type_ in ("http", "tcp"):
            runtime = build_runtime([dead], dict(HEALTH, type=type_, port=backend.port))
            server = runtime.backends["pool"].servers[0]
            r = await probe_server(server, runtime.backends["pool"].spec.health)
            assert r.ok, (type_, r)
        runtime = build_runtime([f"s1={backend.address}"], dict(HEALTH, port=closed_port()))
        server = runtime.backends["pool"].servers[0]
        r = await probe_server(server, runtime.backends["pool"].spec.health)
        assert r.status == "L4CON"

    run(scenario())


# -- the checker: transitions ----------------------------------------------------


def test_killed_server_goes_down_and_comes_back_up(start_backend):
    s1, s2 = start_backend("s1"), start_backend("s2")
    runtime = build_runtime([f"s1={s1.address}", f"s2={s2.address}"])
    one, two = runtime.backends["pool"].servers

    async def scenario():
        async with checking(runtime) as checker:
            assert set(checker.probed_servers) == {one, two}
            await wait_until(lambda: one.last_check_at and two.last_check_at, 1.0, "first probes")
            assert (one.health, one.check_status, one.check_code) == (UP, "L7OK", 200)
            await asyncio.to_thread(s1.kill)
            await wait_until(lambda: one.health == DOWN, FLIP_WITHIN, "s1 DOWN after SIGKILL")
            assert one.check_status == "L4CON"
            assert one.down_transitions == 1 and one.check_failures >= 2
            assert two.health == UP
            assert runtime.backends["pool"].candidates == [two]
            await asyncio.to_thread(s1.start)  # same port
            await wait_until(lambda: one.health == UP, FLIP_WITHIN, "s1 UP after restart")
            assert (one.check_status, one.check_code) == ("L7OK", 200)
            assert runtime.backends["pool"].candidates == [one, two]

    run(scenario())


def test_503_takes_server_down_and_200_brings_it_back(start_backend):
    s1 = start_backend("s1")
    runtime = build_runtime([f"s1={s1.address}"])
    one = runtime.backends["pool"].servers[0]

    async def scenario():
        async with checking(runtime):
            await wait_until(lambda: one.check_status == "L7OK", 1.0, "first probe")
            s1.set_health(503)
            await wait_until(lambda: one.health == DOWN, FLIP_WITHIN, "DOWN on 503")
            assert (one.check_status, one.check_code) == ("L7STS", 503)
            assert runtime.backends["pool"].status == DOWN
            s1.set_health(None)
            await wait_until(lambda: one.health == UP, FLIP_WITHIN, "UP on 200")

    run(scenario())


def test_expect_status_class(start_backend):
    s1 = start_backend("s1")
    s1.set_health(503)
    runtime = build_runtime([f"s1={s1.address}"], dict(HEALTH, expect_status="5xx"))
    one = runtime.backends["pool"].servers[0]

    async def scenario():
        async with checking(runtime):
            await wait_until(lambda: one.check_status, 1.0, "first probe")
            await asyncio.sleep(0.5)
            assert (one.health, one.check_status, one.check_code) == (UP, "L7OK", 503)
            s1.set_health(None)  # 200 is now the wrong answer
            await wait_until(lambda: one.health == DOWN, FLIP_WITHIN, "DOWN on 200 outside 5xx")
            assert (one.check_status, one.check_code) == ("L7STS", 200)

    run(scenario())


def test_hanging_server_times_out_without_delaying_others_or_piling_up(start_backend):
    healthy = start_backend("s2")
    with RawServer(hang_until_client_closes) as hung:
        runtime = build_runtime([f"s1=127.0.0.1:{hung.port}", f"s2={healthy.address}"],
                                dict(HEALTH, timeout="400ms"))
        one, two = runtime.backends["pool"].servers

        async def scenario():
            async with checking(runtime):
                seen = set()
                start = time.monotonic()
                while time.monotonic() - start < 1.4:
                    if two.last_check_at:
                        seen.add(two.last_check_at)
                    await asyncio.sleep(0.01)
                await wait_until(lambda: one.health == DOWN, FLIP_WITHIN, "hung server DOWN")
                assert one.check_status == "L7TOUT"
                assert 350 <= one.check_duration_ms < 1400
                # 1.4 s at a 200 ms interval: s2 keeps its pace while s1 hangs
                # 400 ms per probe.
                assert len(seen) >= 4, seen
                assert two.health == UP

        run(scenario())
    assert hung.accepted >= 2
    assert hung.max_open == 1, "probes of one server must never overlap"


def test_tcp_check_connect_timeout_takes_server_down():
    with FullBacklog() as blocked:
        runtime = build_runtime([f"s1=127.0.0.1:{blocked.port}"],
                                dict(HEALTH, type="tcp", timeout="300ms"))
        one = runtime.backends["pool"].servers[0]

        async def scenario():
            async with checking(runtime):
                await wait_until(lambda: one.health == DOWN, FLIP_WITHIN, "DOWN on L4TOUT")
                assert one.check_status == "L4TOUT"

        run(scenario())


def test_unchecked_servers_are_never_probed_and_stay_up(start_backend):
    live = start_backend("s2")
    dead = f"127.0.0.1:{closed_port()}"
    runtime = build_runtime([{"name": "s1", "address": dead, "check": False},
                             {"name": "s2", "address": live.address}])
    one, two = runtime.backends["pool"].servers
    unchecked_backend = build_runtime([f"s1={dead}"], {"type": "none"})

    async def scenario():
        async with checking(runtime) as checker:
            assert checker.probed_servers == [two]
            await asyncio.sleep(0.6)
            assert (one.health, one.check_status, one.last_check_at) == (UP, "no check", None)
            assert two.last_check_at is not None
            checker.observe_failure(one, "L4CON")
            assert one.health == UP
        async with checking(unchecked_backend) as checker:
            assert checker.probed_servers == []

    run(scenario())


def test_maint_server_is_not_probed_and_resumes_after(start_backend):
    s1 = start_backend("s1")
    runtime = build_runtime([f"s1={s1.address}"])
    one = runtime.backends["pool"].servers[0]

    async def scenario():
        async with checking(runtime):
            await wait_until(lambda: one.last_check_at, 1.0, "first probe")
            one.set_admin(MAINT)
            await asyncio.sleep(0.3)  # let a probe in flight finish
            frozen = one.last_check_at
            failures = one.check_failures
            s1.set_health(503)
            await asyncio.sleep(0.6)
            assert one.last_check_at == frozen, "a MAINT server must not be probed"
            assert one.check_failures == failures
            one.set_admin(READY)
            # Out of maintenance the first probe decides (HAProxy): one 503.
            await wait_until(lambda: one.health == DOWN, FLIP_WITHIN, "probed again after MAINT")

    run(scenario())


def test_observed_failure_takes_server_out_until_rise_probes_pass(start_backend):
    s1 = start_backend("s1")
    runtime = build_runtime([f"s1={s1.address}"], dict(HEALTH, interval="300ms"))
    one = runtime.backends["pool"].servers[0]

    async def scenario():
        async with checking(runtime) as checker:
            await wait_until(lambda: one.last_check_at, 1.0, "first probe")
            checker.observe_failure(one, "L4CON")
            assert one.health == DOWN and not runtime.backends["pool"].candidates
            observed_at = time.monotonic()
            probes_after = set()

            def back_up():
                if one.last_check_at and one.last_check_at > observed_at:
                    probes_after.add(one.last_check_at)
                return one.health == UP

            await wait_until(back_up, FLIP_WITHIN, "back UP through rise")
            assert len(probes_after) >= 2, "UP again only after rise (2) probes that followed the failure"

    run(scenario())


def test_first_probes_are_spread_over_the_interval(start_backend):
    s1 = start_backend("s1")
    names = [f"n{i}={s1.address}" for i in range(8)]
    runtime = build_runtime(names, dict(HEALTH, interval="1s"))
    servers = runtime.backends["pool"].servers

    async def scenario():
        start = time.monotonic()
        async with checking(runtime, seed=11):
            await wait_until(lambda: all(s.last_check_at for s in servers), 1.5, "every first probe")
            firsts = sorted(s.last_check_at - start for s in servers)
        assert firsts[-1] - firsts[0] > 0.3, firsts

    run(scenario())


# -- the checker: reload -----------------------------------------------------------


def test_reload_keeps_surviving_servers_state_and_follows_changes(start_backend):
    s1, s2, s3 = start_backend("s1"), start_backend("s2"), start_backend("s3")
    first = build_runtime([f"s1={s1.address}", f"s2={s2.address}"])
    one, two = first.backends["pool"].servers

    async def scenario():
        async with checking(first) as checker:
            await wait_until(lambda: one.last_check_at and two.last_check_at, 1.0, "first probes")
            await asyncio.to_thread(s2.kill)
            await wait_until(lambda: two.health == DOWN, FLIP_WITHIN, "s2 DOWN")
            task_two = checker._checks[two]

            # Reload: s1 removed, s2 kept (same name and address), s3 new.
            second = build_runtime([f"s2={s2.address}", f"s3={s3.address}"], previous=first)
            kept, new = second.backends["pool"].servers
            assert kept is two
            checker.holder["runtime"] = second
            checker.reload(second)
            assert set(checker.probed_servers) == {two, new}
            assert checker._checks[two] is task_two, "a surviving server keeps its probe loop"
            assert two.health == DOWN and two.down_transitions == 1
            await asyncio.sleep(0.5)
            removed_last = one.last_check_at
            await wait_until(lambda: new.check_status == "L7OK", 1.0, "new server probed")
            await asyncio.sleep(0.5)
            assert one.last_check_at == removed_last, "a removed server must not be probed"

            # A changed health spec applies: /status/404 answers 404.
            third = build_runtime([f"s2={s2.address}", f"s3={s3.address}"],
                                  dict(HEALTH, path="/status/404"), previous=second)
            assert third.backends["pool"].servers[1] is new
            checker.reload(third)
            assert checker._checks[two] is not task_two
            await wait_until(lambda: new.health == DOWN, FLIP_WITHIN, "new spec applied")
            assert (new.check_status, new.check_code) == ("L7STS", 404)
            # The survivor restarted with its streaks: it is still DOWN, and
            # comes back through rise once its server returns.
            # Back to /healthcheck, and s2's process returns on its port.
            await asyncio.to_thread(s2.start)
            checker.reload(build_runtime([f"s2={s2.address}", f"s3={s3.address}"], previous=third))
            await wait_until(lambda: two.health == UP, FLIP_WITHIN, "s2 UP after return")

    run(scenario())


def test_stop_ends_every_probe_loop(start_backend):
    s1 = start_backend("s1")
    runtime = build_runtime([f"s1={s1.address}"])
    one = runtime.backends["pool"].servers[0]

    async def scenario():
        checker = HealthChecker(lambda: runtime)
        checker.start(asyncio.get_running_loop())
        await wait_until(lambda: one.last_check_at, 1.0, "first probe")
        tasks = list(checker._checks.values())
        await checker.stop()
        assert all(t.done() for t in tasks)
        assert checker.probed_servers == []
        last = one.last_check_at
        await asyncio.sleep(0.5)
        assert one.last_check_at == last

    run(scenario())


# -- the checker: a start in steps --------------------------------------------------


def test_a_start_in_steps_makes_every_check_while_the_loop_turns(start_backend):
    """start(in_steps=True) (the server's start): the checks are made a
    slice at a time, the loop running callbacks between the slices, and
    every server ends up probed. A reload or a stop meanwhile takes over."""
    s1 = start_backend("s1")
    count = 2000
    runtime = build_runtime([f"n{i}={s1.address}" for i in range(count)], dict(HEALTH, interval="1s"))
    servers = runtime.backends["pool"].servers

    async def scenario():
        loop = asyncio.get_running_loop()
        checker = HealthChecker(lambda: runtime, rng=random.Random(5))
        turns = []

        def turn():  # a callback of the loop, run between two slices or after the last
            turns.append(len(checker.probed_servers))
            if checker.starting:
                loop.call_soon(turn)
        checker.start(loop, in_steps=True)
        assert checker.starting and checker.probed_servers == []
        loop.call_soon(turn)
        await wait_until(lambda: not checker.starting, 2.0, "every check made")
        assert len(checker.probed_servers) == count
        assert any(0 < made < count for made in turns), turns  # the loop turned between slices
        await wait_until(lambda: all(s.last_check_at for s in servers), 3.0, "every server probed")
        await checker.stop()

        # A reload during the steps makes the rest at once; a stop ends them.
        for finish in ("reload", "stop"):
            checker = HealthChecker(lambda: runtime)
            checker.start(loop, in_steps=True)
            await asyncio.sleep(0)
            if finish == "reload":
                checker.reload(runtime)
                assert not checker.starting and len(checker.probed_servers) == count
                await checker.stop()
            else:
                await checker.stop()
                assert not checker.starting
                await asyncio.sleep(0.05)
                assert checker.probed_servers == []

    run(scenario())
