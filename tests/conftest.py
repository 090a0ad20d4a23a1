import pytest

from tests.support import BackendProcess, LbcoreProcess


@pytest.fixture
def start_backend():
    """start_backend("s1") -> a running tests/backend.py process, killed at teardown."""
    started = []

    def start(name="s1", port=None, tcp_echo=False, env=None):
        b = BackendProcess(name, port=port, tcp_echo=tcp_echo, env=env).start()
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


@pytest.fixture
def start_lbcore():
    """start_lbcore(config_dict) -> a running lbcore process, stopped at teardown."""
    started = []

    def start(config, env=None, wait_ports=()):
        lb = LbcoreProcess(config, env=env)
        started.append(lb)
        return lb.start(wait_ports=wait_ports)

    yield start
    for lb in started:
        lb.stop()
