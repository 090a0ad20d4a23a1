"""The HTML stats page: structure, colours by HAProxy's class names, escaping."""

from html.parser import HTMLParser

import pytest

from lbcore.model import DRAIN, MAINT
from lbcore.stats.htmlpage import human_bytes, human_duration, render_html, server_class
from lbcore.stats.snapshot import snapshot
from tests.unit.test_stats_snapshot import add_traffic, make_runtime


class Page(HTMLParser):
    """Collects server rows (class, cell texts), tags and meta refresh."""

    def __init__(self):
        super().__init__()
        self.tags = []
        self.rows = {}
        self.meta_refresh = None
        self._row = None
        self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "meta" and attrs.get("http-equiv") == "refresh":
            self.meta_refresh = attrs["content"]
        if tag == "tr" and "server" in (attrs.get("class") or "").split():
            self._row = (attrs["data-server"], attrs["class"], [])
        if tag == "td" and self._row is not None:
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag == "td" and self._row is not None:
            self._row[2].append(self._cell)
            self._cell = None
        if tag == "tr" and self._row is not None:
            name, cls, cells = self._row
            self.rows[name] = (cls, cells)
            self._row = None


def parse(page: bytes) -> Page:
    parser = Page()
    parser.feed(page.decode("utf-8"))
    return parser


def test_page_has_tables_rows_states_and_refresh():
    runtime = make_runtime()
    add_traffic(runtime)
    be = runtime.backends["keystone"]
    be.by_name["ks2"].set_admin(DRAIN)
    be.by_name["ks3"].set_admin(MAINT)
    runtime.backends["galera"].by_name["db1"].set_health(False)
    page = render_html(snapshot(runtime), refresh=7)
    text = page.decode()
    parsed = parse(page)
    assert parsed.meta_refresh == "7"
    assert "script" not in parsed.tags
    for name in ("frontend-keystone", "backend-keystone", "frontend-galera", "backend-galera"):
        assert f'id="{name}"' in text
    assert set(parsed.rows) == {"ks1", "ks2", "ks3", "db1", "db2"}
    classes = {name: cls.split()[1] for name, (cls, _) in parsed.rows.items()}
    assert classes == {"ks1": "active_up", "ks2": "active_draining", "ks3": "maintain",
                       "db1": "active_down", "db2": "backup_no_check"}
    ks1_cells = parsed.rows["ks1"][1]
    assert ks1_cells[:3] == ["ks1", "UP", "L7OK/200 in 3ms"]
    assert ks1_cells[4] == "10"  # weight
    assert parsed.rows["db1"][1][1] == "DOWN"


def test_going_up_and_down_are_shown_like_haproxy():
    runtime = make_runtime()
    ks1 = runtime.backends["keystone"].by_name["ks1"]
    ks1.consecutive_fail = 1
    db1 = runtime.backends["galera"].by_name["db1"]
    ks2 = runtime.backends["keystone"].by_name["ks2"]
    ks2.set_health(False)
    ks2.consecutive_ok = 1
    parsed = parse(render_html(snapshot(runtime)))
    assert parsed.rows["ks1"][0].split()[1] == "active_going_down"
    assert parsed.rows["ks1"][1][1] == "UP 2/3"
    assert parsed.rows["ks2"][0].split()[1] == "active_going_up"
    assert parsed.rows["ks2"][1][1] == "DOWN 1/2"
    assert db1.checked is False


def test_names_are_escaped():
    snap = snapshot(make_runtime())
    snap["backends"]["<script>alert(1)</script>"] = snap["backends"].pop("galera")
    snap["backends"]["<script>alert(1)</script>"]["servers"][0]["name"] = '"><img src=x>'
    page = render_html(snap)
    parsed = parse(page)
    assert "script" not in parsed.tags and "img" not in parsed.tags
    assert b"&lt;script&gt;" in page
    assert '"><img src=x>' in parsed.rows


def test_no_refresh_when_disabled():
    assert parse(render_html(snapshot(make_runtime()), refresh=0)).meta_refresh is None


@pytest.mark.parametrize("seconds, text", [
    (None, "-"), (0, "0s"), (42.9, "42s"), (312, "5m12s"), (3720, "1h2m"), (3 * 86400 + 4 * 3600 + 5, "3d4h"),
])
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


def test_human_bytes():
    assert human_bytes(512) == "512 B"
    assert human_bytes(34000) == "33.2 KiB"
    assert human_bytes(5 * 1024 ** 3) == "5.0 GiB"


def test_server_class_for_backup_states():
    assert server_class({"status": "UP", "backup": True, "checked": True}) == "backup_up"
    assert server_class({"status": "DOWN", "backup": True, "checked": True}) == "backup_down"
    assert server_class({"status": "NOLB", "backup": False}) == "active_nolb"


def test_admin_controls_only_with_admin():
    runtime = make_runtime()
    plain = render_html(snapshot(runtime)).decode()
    assert "<form" not in plain and 'type="checkbox"' not in plain
    page = render_html(snapshot(runtime), admin=True)
    text = page.decode()
    assert text.count('<form class="admin"') == 2
    for action in ("ready", "drain", "maint", "weight", "shutdown"):
        assert f'<option value="{action}">' in text
    assert 'name="s" value="ks1" form="admin-keystone"' in text
    assert parse(page).rows["ks1"][1][0] == "ks1"  # the checkbox sits in the name cell


def test_hide_down_and_norefresh_switches():
    runtime = make_runtime()
    runtime.backends["galera"].by_name["db1"].set_health(False)
    runtime.backends["keystone"].by_name["ks3"].set_admin(MAINT)
    page = render_html(snapshot(runtime), refresh=5, options=["up", "norefresh"])
    parsed = parse(page)
    assert "db1" not in parsed.rows and "ks3" not in parsed.rows and "ks1" in parsed.rows
    assert parsed.meta_refresh is None
    text = page.decode()
    assert 'href="/;norefresh">Show all servers' in text and 'href="/;up">Enable refresh' in text
    assert 'href="/;up;norefresh">Refresh now' in text


def test_process_block_and_new_columns():
    runtime = make_runtime()
    add_traffic(runtime)
    text = render_html(snapshot(runtime), status="DONE").decode()
    assert 'id="process"' in text and "Action processed successfully." in text
    for column in ("Session rate", "LbTot", "Last", "Denied", "Warnings", "retr", "redis", "Downtime"):
        assert f">{column}<" in text
