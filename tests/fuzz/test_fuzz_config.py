"""The lb.yaml loader and the haproxy.cfg reader on broken input: each
either gives a Config or a ConfigError whose problems name the file;
never another exception (a traceback at start-up or on reload)."""

import os
import tempfile
from pathlib import Path

import yaml
from hypothesis import given, strategies as st

from lbcore import haproxy_cfg
from lbcore.config import Config, ConfigError, load

from .strategies import mutated, seeds

ROOT = Path(__file__).resolve().parents[2]
YAML_SEEDS = [p.read_bytes() for p in sorted((ROOT / "conf").rglob("*.yaml"))] + seeds("lb_yaml")
CFG_SEEDS = seeds("haproxy_cfg")
WORKDIR = tempfile.mkdtemp(prefix="lbcore-fuzz-config-")

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
    st.text(max_size=20), st.sampled_from(["", "0", "-1s", "1x", "10s", "127.0.0.1:", ":80",
                                           "[::1]:99999", "http", "tcp", "roundrobin", "auto",
                                           "a" * 300, "${HOME}", "~", "null", "0o777", "1e9"]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)


@st.composite
def edited_trees(draw):
    """A parsed seed config with a few values replaced, keys dropped or
    unknown keys added, dumped back to YAML."""
    tree = yaml.safe_load(draw(st.sampled_from(YAML_SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        node, key = tree, None
        parent = None
        for _ in range(draw(st.integers(0, 5))):
            if isinstance(node, dict) and node:
                key = draw(st.sampled_from(sorted(node, key=str)))
            elif isinstance(node, list) and node:
                key = draw(st.integers(0, len(node) - 1))
            else:
                break
            parent, node = node, node[key]
        if parent is None:
            continue
        op = draw(st.integers(0, 2))
        if op == 0:
            parent[key] = draw(VALUES)
        elif op == 1 and isinstance(parent, dict):
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(VALUES)
    return yaml.safe_dump(tree, sort_keys=False).encode()


def write(data: bytes, name: str) -> str:
    path = os.path.join(WORKDIR, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def check_loads(path: str, loader) -> None:
    try:
        result = loader(path)
    except ConfigError as exc:
        assert exc.problems, "a ConfigError with no problem"
        for problem in exc.problems:
            assert isinstance(problem, str) and problem.startswith(path), problem
        return
    assert result is not None


@given(st.one_of(edited_trees(), mutated(YAML_SEEDS), st.binary(max_size=300)))
def test_lb_yaml_loader_gives_a_config_or_clean_errors(data):
    path = write(data, "lb.yaml")
    check_loads(path, lambda p: isinstance(load(p), Config) or True)


@st.composite
def edited_cfg_lines(draw):
    """A seed haproxy.cfg with lines dropped, duplicated, moved or their
    words changed."""
    lines = draw(st.sampled_from(CFG_SEEDS)).split(b"\n")
    for _ in range(draw(st.integers(1, 5))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.integers(0, 3))
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(draw(st.integers(0, len(lines))), lines[i])
        elif op == 2:
            words = lines[i].split()
            if words:
                j = draw(st.integers(0, len(words) - 1))
                words[j] = draw(st.sampled_from([b"", b"x", b"-1", b"99999999999", b"\"", b"\\",
                                                 b"'", b"${X}", b"#", b"if", b"{", b"}", b"0s"]))
                lines[i] = b"    " + b" ".join(words)
        else:
            lines[i] = draw(st.binary(max_size=30))
        if not lines:
            break
    return b"\n".join(lines)


@given(st.one_of(edited_cfg_lines(), mutated(CFG_SEEDS)))
def test_haproxy_cfg_reader_gives_a_config_or_clean_errors(data):
    path = write(data, "haproxy.cfg")
    check_loads(path, lambda p: haproxy_cfg.load([p], env={}))
