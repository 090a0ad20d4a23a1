"""The README and docs link only inside the repository: a clone has no ../shared."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_relative_links_resolve_inside_the_repository():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # http(s):, mailto:
            path = (doc.parent / target).resolve()
            assert ROOT in path.parents or path == ROOT, f"{doc.name} links outside the repository: {target}"
            if doc.name == "README.md":  # docs/ may link a page another change is adding
                assert path.exists(), f"{doc.name} links to a missing file: {target}"


def test_readme_links_the_operations_reference():
    assert "(docs/stats-api.md)" in (ROOT / "README.md").read_text()


def test_readme_says_how_to_run_lbcore_after_its_two_commands():
    """After ./demo.sh and ./test.sh, `lbcore` is in .venv/bin, not on the PATH."""
    text = (ROOT / "README.md").read_text()
    assert ".venv/bin/lbcore -c lb.yaml" in text and ". .venv/bin/activate" in text
