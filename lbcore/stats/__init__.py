"""The stats and admin endpoint: HTML, JSON, HAProxy CSV, Prometheus, admin API.

Renderers take a snapshot dict (see snapshot.py), never the runtime, so one
process and the merge of several workers render the same way.
"""

from .admin import AdminAction, AdminError, AdminHandler
from .csvview import render_csv
from .endpoint import StatsEndpoint
from .htmlpage import render_html
from .jsonview import render_json
from .prometheus import SnapshotCollector, render_metrics
from .snapshot import merge, server_row, snapshot

__all__ = [
    "AdminAction", "AdminError", "AdminHandler", "StatsEndpoint", "SnapshotCollector",
    "merge", "render_csv", "render_html", "render_json", "render_metrics", "server_row", "snapshot",
]
