"""SIGHUP reload: listeners stay open, pools change, state and counters
survive, a broken file is refused and the running config keeps going."""

import http.client
import socket
import time


from tests.support import Load, free_port, get_json, http_config, wait_port


def _config(port, stats_port, backends, names, **extra):
    config = http_config([backends[n].address for n in names], port, **extra)
    config["backends"]["pool"]["servers"] = [
        {"name": n, "address": backends[n].address} for n in names]
    config["stats"] = {"bind": f"127.0.0.1:{stats_port}"}
    return config


def _servers(stats_port):
    data = get_json(stats_port)
    return {s["name"]: s for s in data["backends"]["pool"]["servers"]}


def _wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_seven_reloads_under_load_lose_nothing(start_backend, start_lbcore):
    backends = {n: start_backend(n) for n in ("s1", "s2", "s3", "s4", "s5")}
    port, stats_port = free_port(), free_port()
    lb = start_lbcore(_config(port, stats_port, backends, ["s1", "s2", "s3"]))
    plans = [["s1", "s2", "s3", "s4"], ["s2", "s3", "s4"], ["s4", "s5"], ["s1", "s5"],
             ["s1", "s2", "s3", "s4", "s5"], ["s3"], ["s2", "s4"]]
    with Load(port, clients=6) as load:
        time.sleep(0.3)
        for names in plans:
            lb.reload(_config(port, stats_port, backends, names))
            assert _wait_for(lambda: set(_servers(stats_port)) == set(names)), lb.logs()
            time.sleep(0.3)
        load.stop()
    assert load.failures == [], load.failures[:5]
    assert load.ok > 100
    # After the last reload only s2 and s4 take new requests.
    before = {n: s["total_sessions"] for n, s in _servers(stats_port).items()}
    with Load(port, clients=2) as load:
        time.sleep(0.5)
    assert set(load.servers) == {"s2", "s4"}
    after = {n: s["total_sessions"] for n, s in _servers(stats_port).items()}
    assert all(after[n] > before[n] for n in ("s2", "s4"))


def test_a_sighup_as_soon_as_the_port_answers_is_a_reload(start_backend, start_lbcore):
    """Service managers signal as soon as the port answers: the handler must
    already be there (SIGHUP's default action kills the process)."""
    backends = {"s1": start_backend("s1")}
    for _ in range(3):
        port, stats_port = free_port(), free_port()
        lb = start_lbcore(_config(port, stats_port, backends, ["s1"]), wait_ports=[port])
        lb.reload()
        assert _wait_for(lambda: "reloaded" in lb.logs() or lb.proc.poll() is not None, timeout=10)
        assert lb.proc.poll() is None, lb.logs()
        assert "reloaded" in lb.logs()


def test_surviving_server_keeps_counters(start_backend, start_lbcore):
    backends = {n: start_backend(n) for n in ("s1", "s2")}
    port, stats_port = free_port(), free_port()
    lb = start_lbcore(_config(port, stats_port, backends, ["s1"]))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    for _ in range(10):
        conn.request("GET", "/echo")
        conn.getresponse().read()
    assert _servers(stats_port)["s1"]["total_sessions"] == 10
    lb.reload(_config(port, stats_port, backends, ["s1", "s2"]))
    assert _wait_for(lambda: "s2" in _servers(stats_port))
    assert _servers(stats_port)["s1"]["total_sessions"] == 10
    # The same keep-alive client connection goes on working across the reload.
    conn.request("GET", "/echo")
    assert conn.getresponse().status == 200


def test_broken_config_is_refused_and_old_one_keeps_running(start_backend, start_lbcore):
    backends = {"s1": start_backend("s1")}
    port, stats_port = free_port(), free_port()
    lb = start_lbcore(_config(port, stats_port, backends, ["s1"]))
    good = lb.config
    lb.reload("frontends:\n  web:\n    bind: 127.0.0.1:1\n    mode: http\n    backend: nowhere\n")
    assert _wait_for(lambda: "reload refused" in lb.logs()), lb.logs()
    assert "frontends.web.backend" in lb.logs()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/echo")
    assert conn.getresponse().status == 200
    # Broken YAML too.
    lb.reload("frontends: [unclosed\n")
    assert _wait_for(lambda: lb.logs().count("reload refused: keeping") >= 2), lb.logs()
    assert lb.proc.poll() is None
    lb.reload(good)
    time.sleep(0.3)
    assert lb.proc.poll() is None


def test_reload_binds_new_frontend_and_unbinds_removed(start_backend, start_lbcore):
    backends = {"s1": start_backend("s1")}
    port, port2, stats_port = free_port(), free_port(), free_port()
    config = _config(port, stats_port, backends, ["s1"])
    lb = start_lbcore(config)
    config2 = _config(port, stats_port, backends, ["s1"])
    config2["frontends"]["web2"] = {"bind": f"127.0.0.1:{port2}", "mode": "http", "backend": "pool"}
    lb.reload(config2)
    wait_port(port2)
    conn = http.client.HTTPConnection("127.0.0.1", port2, timeout=5)
    conn.request("GET", "/echo")
    assert conn.getresponse().status == 200
    conn.close()
    lb.reload(config)
    assert _wait_for(lambda: _refused(port2)), lb.logs()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/echo")
    assert conn.getresponse().status == 200


def _refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return False
    except OSError:
        return True


def test_health_state_survives_reload(start_backend, start_lbcore):
    backends = {n: start_backend(n) for n in ("s1", "s2")}
    port, stats_port = free_port(), free_port()
    health = {"type": "http", "path": "/healthcheck", "interval": "200ms", "rise": 2, "fall": 1}
    config = _config(port, stats_port, backends, ["s1", "s2"], backend={"health": health})
    lb = start_lbcore(config)
    backends["s2"].set_health(503)
    assert _wait_for(lambda: _servers(stats_port)["s2"]["status"] == "DOWN")
    # A reload with a much longer interval: s2 must stay DOWN, not reset to UP.
    slow = dict(health, interval="30s")
    lb.reload(_config(port, stats_port, backends, ["s1", "s2"], backend={"health": slow}))
    time.sleep(0.6)
    assert _servers(stats_port)["s2"]["status"] == "DOWN"


def test_admin_state_survives_restart_through_state_file(start_backend, start_lbcore, tmp_path):
    backends = {n: start_backend(n) for n in ("s1", "s2")}
    port, stats_port = free_port(), free_port()
    config = _config(port, stats_port, backends, ["s1", "s2"])
    config["global"]["state_file"] = str(tmp_path / "state.json")
    lb = start_lbcore(config)
    conn = http.client.HTTPConnection("127.0.0.1", stats_port, timeout=5)
    conn.request("POST", "/admin/backends/pool/servers/s2", body=b'{"state": "maint"}',
                 headers={"Content-Type": "application/json"})
    assert conn.getresponse().status == 200
    lb.signal(__import__("signal").SIGTERM)
    assert lb.wait(10) == 0
    lb2 = start_lbcore(config)
    assert _servers(stats_port)["s2"]["status"] == "MAINT"
    with Load(port, clients=2) as load:
        time.sleep(0.3)
    assert set(load.servers) == {"s1"}


def test_sighups_in_quick_succession_end_on_the_last_file(start_backend, start_lbcore):
    """The file is read on a thread while the loop serves: SIGHUPs that
    arrive meanwhile are folded into one more reload, which reads the file
    as it is by then, and traffic keeps flowing through all of it."""
    import signal as signals

    backends = {n: start_backend(n) for n in ("s1", "s2", "s3")}
    port, stats_port = free_port(), free_port()
    lb = start_lbcore(_config(port, stats_port, backends, ["s1"]))
    with Load(port, clients=2) as load:
        time.sleep(0.2)
        for names in (["s1", "s2"], ["s2"], ["s2", "s3"], ["s3"]):
            lb.write_config(_config(port, stats_port, backends, names))
            lb.signal(signals.SIGHUP)
        assert _wait_for(lambda: set(_servers(stats_port)) == {"s3"}), lb.logs()
        time.sleep(0.3)
        load.stop()
    assert load.failures == [], load.failures[:5]
    time.sleep(0.5)  # nothing left in flight would change it back
    assert set(_servers(stats_port)) == {"s3"}
    assert lb.proc.poll() is None
