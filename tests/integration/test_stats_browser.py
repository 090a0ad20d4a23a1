"""The stats page as an operator sees it: rendered by headless Chromium
(Debian's package) from the running endpoint, with basic auth."""

import os
import shutil
import struct
import subprocess
import tempfile
import zlib

import pytest

from lbcore.config import Address, StatsSpec
from lbcore.model import DRAIN, MAINT
from lbcore.stats import AdminAction, snapshot
from tests.integration.test_stats_endpoint import AUTH, Running
from tests.unit.test_stats_html import Page
from tests.unit.test_stats_snapshot import add_traffic, make_runtime

# HAProxy's stats colours, as the page's classes paint them.
COLOURS = {
    "active_up": (0xC0, 0xFF, 0xC0),
    "active_down": (0xFF, 0x90, 0x90),
    "active_draining": (0x20, 0xA0, 0xFF),
    "maintain": (0xC0, 0x78, 0x20),
}


def find_chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def chromium():
    path = find_chromium()
    if path is None:
        if os.geteuid() != 0:
            pytest.skip("chromium is not installed and installing it needs root (apt-get install chromium)")
        try:
            result = subprocess.run(
                ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
                env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
                capture_output=True, text=True, timeout=900,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"chromium could not be installed: {exc}")
        path = find_chromium()
        if path is None:
            pytest.skip("chromium could not be installed with apt-get: " + (result.stderr or result.stdout)[-500:])
    return path


def run_chromium(binary, url, *extra):
    profile = tempfile.mkdtemp(prefix="lbcore-chromium-")
    try:
        result = subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", *extra, url],
            capture_output=True, text=True, timeout=120,
            env=dict(os.environ, HOME=profile),
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture
def page_url():
    runtime = make_runtime()
    add_traffic(runtime)
    keystone = runtime.backends["keystone"]
    keystone.by_name["ks2"].set_admin(DRAIN)
    keystone.by_name["ks3"].set_admin(MAINT)
    galera = runtime.backends["galera"]
    galera.by_name["db1"].set_health(False, "Layer4 connection problem")
    spec = StatsSpec(bind=Address("127.0.0.1", 0), auth=AUTH, refresh=30)
    running = Running(spec, lambda: snapshot(runtime), AdminAction(lambda: runtime))
    yield f"http://{AUTH[0]}:{AUTH[1]}@127.0.0.1:{running.port}/"
    running.stop()


def test_operator_sees_servers_states_and_colours(chromium, page_url):
    dom = run_chromium(chromium, page_url, "--dump-dom")
    page = Page()
    page.feed(dom)
    assert "lbcore statistics" in dom and "authentication required" not in dom
    assert page.meta_refresh == "30"
    assert set(page.rows) == {"ks1", "ks2", "ks3", "db1", "db2"}
    seen = {name: (cls.split()[1], cells[1]) for name, (cls, cells) in page.rows.items()}
    assert seen == {
        "ks1": ("active_up", "UP"),
        "ks2": ("active_draining", "DRAIN"),
        "ks3": ("maintain", "MAINT"),
        "db1": ("active_down", "DOWN"),
        "db2": ("backup_no_check", "UP"),
    }
    assert page.rows["ks1"][1][2] == "L7OK/200 in 3ms"
    for caption in ("frontend keystone", "backend keystone", "frontend galera", "backend galera"):
        assert caption in dom


def png_colours(data: bytes) -> set:
    """The RGB colours in an 8-bit, non-interlaced RGB/RGBA PNG, as Chromium
    writes them (decoded here: the test needs no imaging library)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
    width, height, depth, colour_type, _, _, interlace = header
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, header
    bpp = 3 if colour_type == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    previous = bytearray(stride)
    colours = set()
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = previous[i]
                c = previous[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        colours.update(zip(line[0::bpp], line[1::bpp], line[2::bpp]))
        previous = line
    return colours


def test_screenshot_shows_the_state_colours(chromium, page_url, tmp_path):
    shot = tmp_path / "stats.png"
    run_chromium(chromium, page_url, f"--screenshot={shot}", "--window-size=1280,600", "--hide-scrollbars")
    assert shot.exists() and shot.stat().st_size > 5000
    keep = os.environ.get("LBCORE_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
    colours = png_colours(shot.read_bytes())
    for cls, rgb in COLOURS.items():
        assert rgb in colours, f"no {cls} colour #{bytes(rgb).hex()} on the rendered page"
