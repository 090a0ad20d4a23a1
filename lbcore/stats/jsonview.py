"""/stats.json: the snapshot itself, which already has the contract's shape
(`frontends`, `backends` with `servers` rows) plus extra fields."""

from __future__ import annotations

import json
from typing import Any


def _rounded(value: Any) -> Any:
    # Float noise (uptime 12.000000123) helps nobody reading the JSON.
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def render_json(snapshot: dict[str, Any]) -> bytes:
    return (json.dumps(_rounded(snapshot), separators=(",", ":")) + "\n").encode("utf-8")


def render_row(row: dict[str, Any]) -> bytes:
    """One server row (the admin API's answer)."""
    return render_json(row)
