"""The libFuzzer harness (atheris_heads.py) for a few seconds, when atheris
is installed: it starts from the seeds, and no input breaks a property."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

HARNESS = Path(__file__).resolve().parent / "atheris_heads.py"


def test_head_scanner_harness_runs_clean(tmp_path):
    corpus = tmp_path / "corpus"
    subprocess.run([sys.executable, str(HARNESS), "--seed", str(corpus)], check=True, capture_output=True,
                   timeout=60)
    result = subprocess.run([sys.executable, str(HARNESS), str(corpus), "-runs=20000"], cwd=tmp_path,
                            capture_output=True, timeout=120)
    tail = result.stderr.decode(errors="replace")[-3000:]
    assert result.returncode == 0, tail
    assert "Done 20000 runs" in tail, tail
