"""Generated configs accepted by the real servers, and the memory probe on a real nginx."""

import subprocess

import pytest

from bench import configs, memprobe
from bench.procs import ProcessSet, free_ports, which
from bench.targets import Bench, TargetSpec, start_backend, start_target

needs_servers = pytest.mark.skipif(
    not (which("nginx") and which("haproxy")), reason="nginx and haproxy not installed")


@needs_servers
@pytest.mark.parametrize("mode", ["http", "tcp", "rules"])
def test_haproxy_config_is_valid(tmp_path, mode):
    cfg = tmp_path / "h.cfg"
    cfg.write_text(configs.haproxy(mode, 8080, [9001, 9002], 5000))
    proc = subprocess.run([which("haproxy"), "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_servers
def test_nginx_configs_are_valid(tmp_path):
    for name, text in [("backend.conf", configs.nginx_backend(tmp_path, 9001, tmp_path, 4096)),
                       ("proxy.conf", configs.nginx_proxy(tmp_path, 8080, [9001, 9002], 4096))]:
        (tmp_path / name).write_text(text)
        proc = subprocess.run([which("nginx"), "-t", "-p", str(tmp_path), "-c",
                               str(tmp_path / name), "-e", "stderr"],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_lbcore_config_loads():
    config = pytest.importorskip("lbcore.config")
    if not hasattr(config, "loads"):
        pytest.skip("lbcore config loader not there yet")
    for mode in ("http", "tcp"):
        loaded = config.loads(configs.lbcore(mode, 8080, [9001, 9002], 5000))
        assert loaded.global_.log.format == "none"
        assert loaded.global_.workers == 1
        assert loaded.frontends["bench"].mode == mode
        assert [s.address.port for s in loaded.backends["pool"].servers] == [9001, 9002]
    # the rules case: 3 ACLs, 4 http_request rules, 2 use_backend entries
    rules = config.loads(configs.lbcore("rules", 8080, [9001, 9002], 5000)).frontends["bench"]
    assert (rules.mode, len(rules.acls), len(rules.http_request), len(rules.use_backend)) == ("http", 3, 4, 2)


@needs_servers
def test_haproxy_in_front_of_two_backends_and_memory_probe(tmp_path):
    procs = ProcessSet(tmp_path)
    try:
        configs.write_bodies(tmp_path / "www")
        bench = Bench(procs, tmp_path, free_ports(2), max_fds=4096, maxconn=1000)
        for i in range(2):
            start_backend(bench, i, tmp_path / "www")
        # start_target fetches both bodies through the proxy and compares them.
        target = start_target(TargetSpec("haproxy-http", "http", "haproxy", True), bench)
        result = memprobe.probe("haproxy-http", target.pid, target.port, 50, settle=0.2)
        assert result.still_open == 50
        assert result.fds_after - result.fds_before >= 50
        assert result.rss_after >= result.rss_before
    finally:
        procs.stop_all()
    assert procs.children == []
