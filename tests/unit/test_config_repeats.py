"""Large configs repeat blocks (the same health and timeouts in every
backend): the loader reads a repeated valid block once, yet still reports
a broken block at every place it is written, and reads every scalar as
PyYAML's safe loader does."""

import textwrap

import pytest
import yaml

from lbcore import haproxy_cfg
from lbcore.config import ConfigError, loads

HEALTH = "{type: tcp, interval: 2s, timeout: 1s, rise: 2, fall: 3}"


def pairs(count: int, health: str = HEALTH, timeouts: str = "{connect: 3s}") -> str:
    out = ["frontends:\n"]
    for i in range(count):
        out.append(f"  fe{i}: {{bind: \"127.0.0.1:{20000 + i}\", backend: be{i}}}\n")
    out.append("backends:\n")
    for i in range(count):
        out.append(f"  be{i}:\n    health: {health}\n    timeouts: {timeouts}\n"
                   f"    servers: [{{name: s0, address: \"127.0.0.1:{30000 + i}\"}}]\n")
    return "".join(out)


def test_repeated_blocks_give_equal_specs():
    config = loads(pairs(3))
    specs = [config.backends[f"be{i}"] for i in range(3)]
    assert all(spec.health == specs[0].health for spec in specs)
    assert specs[0].health.type == "tcp" and specs[0].health.interval == 2.0
    assert specs[0].health.timeout == 1.0 and (specs[0].health.rise, specs[0].health.fall) == (2, 3)
    assert all(spec.timeouts.connect == 3.0 for spec in specs)


def test_a_repeated_broken_block_is_reported_where_each_copy_is():
    with pytest.raises(ConfigError) as info:
        loads(pairs(3, health="{type: tcp, interval: soon}", timeouts="{connect: -1}"), "lb.yaml")
    problems = info.value.problems
    for i in range(3):
        line = 7 + 4 * i  # each backend's health line; its timeouts line follows
        assert f"lb.yaml:{line}: backends.be{i}.health.interval: invalid duration 'soon' " \
            "(expected a number of seconds or a number with a unit: ms, s, m, h, d, e.g. '500ms', '2s')" \
            in problems, problems
        assert f"lb.yaml:{line + 1}: backends.be{i}.timeouts.connect: duration must be greater than 0, " \
            "got -1" in problems, problems


def test_the_same_block_under_other_inherited_timeouts_is_read_again():
    # A health block without its own timeout takes timeouts.check: equal
    # text, different spec.
    text = pairs(2, health="{type: tcp}", timeouts="{check: 4s}").replace(
        "    timeouts: {check: 4s}\n", "", 1)
    config = loads(text)
    assert config.backends["be0"].health.timeout == 2.0  # the default timeouts.check
    assert config.backends["be1"].health.timeout == 4.0


@pytest.mark.parametrize("text", [
    "on", "yes", "No", "~", "null", "", "0x1F", "0o17", "1_000", "+12", "-0", "1e3", ".5", ".inf", "-.Inf",
    ".nan", "2001-12-14", "'on'", "\"1\"", "1:30", "true", "FALSE", "s1", "127.0.0.1:80",
])
def test_scalars_are_read_as_pyyaml_reads_them(text):
    # monitor_uri takes any string and says what else it got: the loader's
    # view of each scalar, against PyYAML's safe loader.
    expected = yaml.safe_load(f"v: {text}")["v"]
    doc = textwrap.dedent(f"""\
        frontends:
          web:
            bind: 127.0.0.1:8080
            backend: pool
            maxconn: {text}
        backends:
          pool:
            servers: [{{name: s1, address: "10.0.0.1:80"}}]
        """)
    if isinstance(expected, int) and not isinstance(expected, bool) and expected >= 1:
        assert loads(doc).frontends["web"].maxconn == expected
        return
    with pytest.raises(ConfigError) as info:
        loads(doc)
    [problem] = info.value.problems
    assert "frontends.web.maxconn" in problem


def test_haproxy_cfg_values_reach_the_loader_as_written(tmp_path):
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(textwrap.dedent("""\
        defaults
            mode http
            timeout connect 4s
            timeout check 1500ms
        frontend web
            bind 127.0.0.1:8080
            default_backend pool
        backend pool
            server s1 10.0.0.1:80 check inter 3s rise 4 fall 5 weight 7
            server s2 10.0.0.2:80 check inter 3s rise 4 fall 5
        backend other
            server s1 10.0.0.3:80 check inter 3s rise 4 fall 5
        """))
    config = haproxy_cfg.load([str(cfg)]).config
    pool, other = config.backends["pool"], config.backends["other"]
    assert pool.health == other.health
    assert (pool.health.interval, pool.health.timeout, pool.health.rise, pool.health.fall) == (3.0, 1.5, 4, 5)
    assert pool.timeouts.connect == 4.0 and other.timeouts.connect == 4.0
    assert [s.weight for s in pool.servers] == [7, 1]
